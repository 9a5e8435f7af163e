"""Mesh assembly on the CPU, arranged for speed; the same numbers as ``dfmvr.face.geometry.assemble_mesh``.

The reference favours clarity (einsum, fancy-index sums); here the work per call is laid out once:
identity and expression bases are one [3N, Ki+Ke] matrix (one matrix-vector product per face), the
vertex -> adjacent-triangle sum is a sparse [N, T] matrix, and rotations and SH lighting are batched
matmuls. tests/runtime/test_assembly.py checks it against the reference.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from ..face.camera import Camera, project
from ..face.geometry import SH_DC_OFFSET, MeshResult, rotation_matrix, sh_basis
from ..face.layout import Coefficients
from ..face.model import MorphableModel

__all__ = ["CpuMeshAssembler"]


class CpuMeshAssembler:
    """``assemble(coeffs) -> MeshResult`` for one face model and camera (numpy/scipy, float32)."""

    def __init__(self, model: MorphableModel, camera: Camera):
        n = model.num_vertices
        self.model, self.camera, self.n = model, camera, n
        self.shape_basis = np.ascontiguousarray(np.concatenate(
            [model.id_basis.reshape(3 * n, -1), model.exp_basis.reshape(3 * n, -1)], axis=1), np.float32)
        self.albedo_basis = np.ascontiguousarray(model.albedo_basis.reshape(3 * n, -1), np.float32)
        self.mean_shape = model.mean_shape.reshape(-1).astype(np.float32)
        self.mean_albedo = model.mean_albedo.reshape(-1).astype(np.float32)
        self.tris = model.triangles.astype(np.int64)
        vt = model.vertex_triangles
        rows, cols = np.nonzero(vt >= 0)
        # adjacency[v, t] = 1 when triangle t touches vertex v (BFM's point_buf as a sparse matrix)
        self.adjacency = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, vt[rows, cols])),
                                           shape=(n, model.num_triangles))

    def _unit(self, x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)

    def assemble(self, coeffs: Coefficients) -> MeshResult:
        """Coefficients (batch B, V views) -> MeshResult, as ``geometry.assemble_mesh``."""
        b, n = coeffs.batch, self.n
        ie = np.concatenate([coeffs.identity, coeffs.expression], axis=1).astype(np.float32)   # [B, Ki+Ke]
        shape = (self.mean_shape + ie @ self.shape_basis.T).reshape(b, n, 3)
        albedo = (self.mean_albedo + np.asarray(coeffs.texture, np.float32) @ self.albedo_basis.T).reshape(b, n, 3)
        v0, v1, v2 = (shape[:, self.tris[:, k]] for k in range(3))
        tri_n = self._unit(np.cross(v1 - v0, v2 - v0))                                           # [B, T, 3]
        normals0 = self._unit(np.stack([self.adjacency @ tri_n[i] for i in range(b)]))          # [B, N, 3]
        rot_t = rotation_matrix(coeffs.rotation).transpose(0, 1, 3, 2)                          # [B, V, 3, 3]
        v = rot_t.shape[1]
        # all views in one [N, 3] x [3, 3V] product per face (BLAS), instead of V tiny 3x3 matmuls
        rot_cat = np.concatenate([rot_t[:, k] for k in range(v)], axis=2)                       # [B, 3, 3V]
        trans = np.asarray(coeffs.translation, np.float32)[:, :, None, :]
        vertices = (shape @ rot_cat).reshape(b, n, v, 3).transpose(0, 2, 1, 3) + trans          # [B, V, N, 3]
        normals = (normals0 @ rot_cat).reshape(b, n, v, 3).transpose(0, 2, 1, 3)
        gamma = np.asarray(coeffs.lighting, np.float32).reshape(b, 3, 9).copy()
        gamma[:, :, 0] += SH_DC_OFFSET
        y = sh_basis(normals).reshape(b, v * n, 9)
        shading = (y @ gamma.transpose(0, 2, 1)).reshape(b, v, n, 3)                           # [B, V, N, 3]
        colors = albedo[:, None] * shading
        landmarks = project(vertices[:, :, self.model.keypoints], self.camera)
        f32 = lambda a: np.ascontiguousarray(a, np.float32)  # noqa: E731
        return MeshResult(shape=f32(shape), albedo=f32(albedo), vertices=f32(vertices), normals=f32(normals),
                          colors=f32(colors), landmarks=f32(landmarks))
