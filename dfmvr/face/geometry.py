"""Face geometry, the numpy reference: rotation, shape, albedo, normals, SH lighting, mesh assembly.

Every other implementation (the torch mirror in ``dfmvr.synth.face_torch``, the CUDA kernel in
``dfmvr.kernels``) is tested against these functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .camera import Camera, project
from .layout import Coefficients
from .model import MAX_ADJACENT, MorphableModel

__all__ = [
    "rotation_matrix", "euler_from_matrix", "face_shape", "face_albedo", "triangle_normals",
    "vertex_normals", "build_vertex_triangles", "SH_A", "SH_C", "SH_DC_OFFSET", "sh_basis",
    "sh_shade", "MeshResult", "assemble_mesh",
]

# Real SH constants (Deep3D / DF-MVR): attenuation a_l and normalisation c_l for bands 0, 1, 2.
SH_A = (np.pi, 2.0 * np.pi / np.sqrt(3.0), 2.0 * np.pi / np.sqrt(8.0))
SH_C = (1.0 / np.sqrt(4.0 * np.pi), np.sqrt(3.0) / np.sqrt(4.0 * np.pi), 3.0 * np.sqrt(5.0) / np.sqrt(12.0 * np.pi))
SH_DC_OFFSET = 0.8  # added to each channel's DC coefficient so that zero lighting is a grey ambient


def rotation_matrix(angles: np.ndarray) -> np.ndarray:
    """Euler angles [..., 3] (x, y, z radians) -> rotation matrices [..., 3, 3], R = Rz @ Ry @ Rx."""
    a = np.asarray(angles, dtype=np.float64)
    cx, cy, cz = np.cos(a[..., 0]), np.cos(a[..., 1]), np.cos(a[..., 2])
    sx, sy, sz = np.sin(a[..., 0]), np.sin(a[..., 1]), np.sin(a[..., 2])
    r = np.empty(a.shape[:-1] + (3, 3))
    # Rz @ Ry @ Rx expanded.
    r[..., 0, 0] = cz * cy
    r[..., 0, 1] = cz * sy * sx - sz * cx
    r[..., 0, 2] = cz * sy * cx + sz * sx
    r[..., 1, 0] = sz * cy
    r[..., 1, 1] = sz * sy * sx + cz * cx
    r[..., 1, 2] = sz * sy * cx - cz * sx
    r[..., 2, 0] = -sy
    r[..., 2, 1] = cy * sx
    r[..., 2, 2] = cy * cx
    return r.astype(np.float32)


def euler_from_matrix(r: np.ndarray) -> np.ndarray:
    """Inverse of ``rotation_matrix`` for |y| < 90 degrees: [..., 3, 3] -> [..., 3] radians (x, y, z)."""
    r = np.asarray(r, dtype=np.float64)
    y = np.arcsin(np.clip(-r[..., 2, 0], -1.0, 1.0))
    x = np.arctan2(r[..., 2, 1], r[..., 2, 2])
    z = np.arctan2(r[..., 1, 0], r[..., 0, 0])
    return np.stack([x, y, z], axis=-1).astype(np.float32)


def face_shape(model: MorphableModel, identity: np.ndarray, expression: np.ndarray) -> np.ndarray:
    """[B, Ki], [B, Ke] -> unposed vertices [B, N, 3] (decimetres): mean + id·α + exp·β."""
    n = model.num_vertices
    offset = (model.id_basis.reshape(3 * n, -1) @ np.asarray(identity, np.float32).T
              + model.exp_basis.reshape(3 * n, -1) @ np.asarray(expression, np.float32).T)
    return (model.mean_shape[None] + offset.T.reshape(-1, n, 3)).astype(np.float32)


def face_albedo(model: MorphableModel, texture: np.ndarray) -> np.ndarray:
    """[B, Kt] -> albedo [B, N, 3] in [0, 1] units (not clipped): mean + tex·δ."""
    n = model.num_vertices
    offset = model.albedo_basis.reshape(3 * n, -1) @ np.asarray(texture, np.float32).T
    return (model.mean_albedo[None] + offset.T.reshape(-1, n, 3)).astype(np.float32)


def triangle_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """[..., N, 3], [T, 3] -> unit normals [..., T, 3] = normalise(cross(v1 - v0, v2 - v0))."""
    v0 = vertices[..., triangles[:, 0], :]
    v1 = vertices[..., triangles[:, 1], :]
    v2 = vertices[..., triangles[:, 2], :]
    n = np.cross(v1 - v0, v2 - v0)
    return (n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray, vertex_triangles: np.ndarray) -> np.ndarray:
    """Unit vertex normals [..., N, 3]: normalised sum of the unit normals of the adjacent triangles.

    ``vertex_triangles`` [N, 8] holds 0-based triangle ids, -1 for none (a zero normal is appended so
    that -1 picks it up).
    """
    tn = triangle_normals(vertices, triangles)
    pad = np.zeros(tn.shape[:-2] + (1, 3), np.float32)
    tn = np.concatenate([tn, pad], axis=-2)
    summed = tn[..., vertex_triangles, :].sum(axis=-2)
    return (summed / np.maximum(np.linalg.norm(summed, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def build_vertex_triangles(triangles: np.ndarray, num_vertices: int, width: int = MAX_ADJACENT) -> np.ndarray:
    """The vertex -> adjacent-triangle table [N, width], 0-based, -1 padded (BFM's point_buf, 0-based).

    Raises ValueError if a vertex touches more than ``width`` triangles.
    """
    table = np.full((num_vertices, width), -1, np.int32)
    count = np.zeros(num_vertices, np.int64)
    for t, tri in enumerate(np.asarray(triangles)):
        for v in tri:
            if count[v] >= width:
                raise ValueError(f"vertex {v} touches more than {width} triangles")
            table[v, count[v]] = t
            count[v] += 1
    return table


def sh_basis(normals: np.ndarray) -> np.ndarray:
    """Unit normals [..., 3] -> the 9 real SH basis values [..., 9] with Deep3D's scaling and signs."""
    nx, ny, nz = normals[..., 0], normals[..., 1], normals[..., 2]
    a0, a1, a2 = SH_A
    c0, c1, c2 = SH_C
    y = [
        np.full_like(nx, a0 * c0),
        -a1 * c1 * ny,
        a1 * c1 * nz,
        -a1 * c1 * nx,
        a2 * c2 * nx * ny,
        -a2 * c2 * ny * nz,
        a2 * c2 * 0.5 / np.sqrt(3.0) * (3.0 * nz * nz - 1.0),
        -a2 * c2 * nx * nz,
        a2 * c2 * 0.5 * (nx * nx - ny * ny),
    ]
    return np.stack(y, axis=-1).astype(np.float32)


def sh_shade(albedo: np.ndarray, normals: np.ndarray, lighting: np.ndarray) -> np.ndarray:
    """Lit colour [B, ..., N, 3] = albedo ⊙ (Y(normals) · γ).

    albedo [B, N, 3] or [B, V, N, 3]; normals [B, (V,) N, 3] unit, posed; lighting [B, 27] channel-major
    (R bands 0-8, G, B) without the DC offset, which is added here.
    """
    gamma = np.asarray(lighting, np.float32).reshape(-1, 3, 9).copy()
    gamma[:, :, 0] += SH_DC_OFFSET
    y = sh_basis(normals)                                    # [B, (V,) N, 9]
    extra = y.ndim - 3
    g = gamma.reshape((gamma.shape[0],) + (1,) * extra + (3, 9))
    shading = np.einsum("...nk,...ck->...nc", y, g)          # [B, (V,) N, 3]
    return (albedo * shading).astype(np.float32)


@dataclass
class MeshResult:
    """Output of ``assemble_mesh`` (numpy float32). B batch, V views, N vertices.

    shape      [B, N, 3]      unposed shape, decimetres
    albedo     [B, N, 3]      albedo in [0, 1] units (unclipped)
    vertices   [B, V, N, 3]   posed vertices R·shape + t per view
    normals    [B, V, N, 3]   unit vertex normals of the posed mesh
    colors     [B, V, N, 3]   SH-lit colour per view (lit with that view's rotation), unclipped
    landmarks  [B, V, 68, 2]  projected keypoints, pixels (u right, v down)
    """

    shape: np.ndarray
    albedo: np.ndarray
    vertices: np.ndarray
    normals: np.ndarray
    colors: np.ndarray
    landmarks: np.ndarray


def assemble_mesh(model: MorphableModel, coeffs: Coefficients, camera: Camera) -> MeshResult:
    """Coefficients -> per-view posed mesh, normals, albedo, lit colours and 2D landmarks.

    Normals are computed once on the unposed shape and rotated per view (rotation preserves them).
    """
    shape = face_shape(model, coeffs.identity, coeffs.expression)                # [B, N, 3]
    albedo = face_albedo(model, coeffs.texture)                                   # [B, N, 3]
    normals0 = vertex_normals(shape, model.triangles, model.vertex_triangles)     # [B, N, 3]
    rot = rotation_matrix(coeffs.rotation)                                        # [B, V, 3, 3]
    trans = np.asarray(coeffs.translation, np.float32)                            # [B, V, 3]
    vertices = np.einsum("bvij,bnj->bvni", rot, shape) + trans[:, :, None, :]
    normals = np.einsum("bvij,bnj->bvni", rot, normals0)
    colors = sh_shade(albedo[:, None], normals, coeffs.lighting)
    landmarks = project(vertices[:, :, model.keypoints, :], camera)
    return MeshResult(shape=shape, albedo=albedo, vertices=vertices.astype(np.float32),
                      normals=normals.astype(np.float32), colors=colors, landmarks=landmarks)
