"""Batched torch mirror of ``dfmvr.face.geometry`` (shape, albedo, rotation, projection, normals, SH).

Every function here has a numpy reference in ``dfmvr.face`` and is tested against it to 1e-5. The
morphable model's bases live in ``FaceModelTorch`` as buffers, so ``.to(device)`` moves them and the
maths runs on CPU or CUDA with gradients to the coefficients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..face.camera import Camera
from ..face.geometry import SH_A, SH_C, SH_DC_OFFSET
from ..face.layout import COEFFS, Coefficients
from ..face.model import MorphableModel

__all__ = [
    "rotation_matrix", "project", "project_with_depth", "triangle_normals", "vertex_normals",
    "sh_basis", "sh_shade", "TorchMesh", "FaceModelTorch",
]


def rotation_matrix(angles: torch.Tensor) -> torch.Tensor:
    """Euler angles [..., 3] (x, y, z radians) -> rotation matrices [..., 3, 3], R = Rz @ Ry @ Rx."""
    cx, cy, cz = torch.cos(angles).unbind(-1)
    sx, sy, sz = torch.sin(angles).unbind(-1)
    rows = [
        cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx,
        sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx,
        -sy, cy * sx, cy * cx,
    ]
    return torch.stack(rows, dim=-1).reshape(*angles.shape[:-1], 3, 3)


def project_with_depth(points: torch.Tensor, camera: Camera) -> torch.Tensor:
    """Posed model-space points [..., 3] -> [..., 3] = (u, v, depth): pixels (u right, v down, pixel
    centres at +0.5) and camera-space depth ``distance - z`` in model units. Same maths as
    ``dfmvr.face.camera.project``; this is the input format of ``dfmvr.synth.render.rasterize``."""
    depth = camera.distance - points[..., 2]
    u = camera.center + camera.focal * points[..., 0] / depth
    v = camera.center - camera.focal * points[..., 1] / depth
    return torch.stack([u, v, depth], dim=-1)


def project(points: torch.Tensor, camera: Camera) -> torch.Tensor:
    """Posed points [..., 3] -> pixel coordinates [..., 2] (u right, v down)."""
    return project_with_depth(points, camera)[..., :2]


def triangle_normals(vertices: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """[..., N, 3], [T, 3] long -> unit normals [..., T, 3] = normalise(cross(v1 - v0, v2 - v0))."""
    v0 = vertices[..., triangles[:, 0], :]
    v1 = vertices[..., triangles[:, 1], :]
    v2 = vertices[..., triangles[:, 2], :]
    n = torch.cross(v1 - v0, v2 - v0, dim=-1)
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def vertex_normals(vertices: torch.Tensor, triangles: torch.Tensor,
                   vertex_triangles: torch.Tensor) -> torch.Tensor:
    """Unit vertex normals [..., N, 3]: normalised sum of the adjacent triangles' unit normals.

    ``vertex_triangles`` [N, 8] long, -1 for none (picks the appended zero normal, as in numpy).
    """
    tn = triangle_normals(vertices, triangles)
    tn = torch.cat([tn, torch.zeros_like(tn[..., :1, :])], dim=-2)
    index = torch.where(vertex_triangles < 0, tn.shape[-2] - 1, vertex_triangles)
    summed = tn[..., index, :].sum(dim=-2)
    return summed / summed.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """Unit normals [..., 3] -> the 9 real SH values [..., 9] (Deep3D scaling and signs)."""
    nx, ny, nz = normals.unbind(-1)
    a0, a1, a2 = SH_A
    c0, c1, c2 = SH_C
    y = [
        torch.full_like(nx, a0 * c0),
        -a1 * c1 * ny,
        a1 * c1 * nz,
        -a1 * c1 * nx,
        a2 * c2 * nx * ny,
        -a2 * c2 * ny * nz,
        a2 * c2 * 0.5 / math.sqrt(3.0) * (3.0 * nz * nz - 1.0),
        -a2 * c2 * nx * nz,
        a2 * c2 * 0.5 * (nx * nx - ny * ny),
    ]
    return torch.stack(y, dim=-1)


def sh_shade(albedo: torch.Tensor, normals: torch.Tensor, lighting: torch.Tensor) -> torch.Tensor:
    """Lit colour [B, (V,) N, 3] = albedo ⊙ (Y(normals) · γ); lighting [B, 27] channel-major, the DC
    offset (0.8) is added here. albedo broadcasts against normals ([B, 1, N, 3] with [B, V, N, 3])."""
    gamma = lighting.reshape(-1, 3, 9)
    dc = torch.zeros_like(gamma)
    dc[..., 0] = SH_DC_OFFSET
    gamma = gamma + dc
    y = sh_basis(normals)                                           # [B, (V,) N, 9]
    g = gamma.reshape((gamma.shape[0],) + (1,) * (y.dim() - 3) + (3, 9))
    shading = torch.einsum("...nk,...ck->...nc", y, g)
    return albedo * shading


@dataclass
class TorchMesh:
    """Output of ``FaceModelTorch.forward`` (torch, the dtype of the buffers). B batch, V views.

    shape [B, N, 3] dm; albedo [B, N, 3]; vertices [B, V, N, 3] posed dm; normals [B, V, N, 3] unit;
    colors [B, V, N, 3] SH-lit (unclipped); landmarks [B, V, 68, 2] pixels; pixels_depth
    [B, V, N, 3] (u, v, depth) of every vertex, ready for ``render.rasterize``.
    """

    shape: torch.Tensor
    albedo: torch.Tensor
    vertices: torch.Tensor
    normals: torch.Tensor
    colors: torch.Tensor
    landmarks: torch.Tensor
    pixels_depth: torch.Tensor


class FaceModelTorch(nn.Module):
    """A ``MorphableModel`` as an nn.Module: bases as buffers, ``forward(coefficients) -> TorchMesh``.

    Buffers (float32 unless stated): mean_shape [N, 3], id_basis [3N, Ki], exp_basis [3N, Ke],
    mean_albedo [N, 3], albedo_basis [3N, Kt], triangles [T, 3] long, vertex_triangles [N, 8] long,
    keypoints [68] long, parts [N] long, skin_mask [N] bool.
    """

    def __init__(self, model: MorphableModel, camera: Camera | None = None):
        super().__init__()
        self.camera = camera or Camera()
        self.face_model_identity = model.identity()
        n = model.num_vertices
        f32 = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32))  # noqa: E731
        i64 = lambda a: torch.from_numpy(np.asarray(a, np.int64))  # noqa: E731
        self.register_buffer("mean_shape", f32(model.mean_shape))
        self.register_buffer("id_basis", f32(model.id_basis.reshape(3 * n, -1)))
        self.register_buffer("exp_basis", f32(model.exp_basis.reshape(3 * n, -1)))
        self.register_buffer("mean_albedo", f32(model.mean_albedo))
        self.register_buffer("albedo_basis", f32(model.albedo_basis.reshape(3 * n, -1)))
        self.register_buffer("triangles", i64(model.triangles))
        self.register_buffer("vertex_triangles", i64(model.vertex_triangles))
        self.register_buffer("keypoints", i64(model.keypoints))
        self.register_buffer("parts", i64(model.parts))
        self.register_buffer("skin_mask", torch.from_numpy(model.skin_mask.copy()))

    @property
    def num_vertices(self) -> int:
        return int(self.mean_shape.shape[0])

    def shape(self, identity: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
        """[B, Ki], [B, Ke] -> unposed vertices [B, N, 3] (dm): mean + id·α + exp·β."""
        offset = identity @ self.id_basis.T + expression @ self.exp_basis.T     # [B, 3N]
        return self.mean_shape + offset.reshape(-1, self.num_vertices, 3)

    def albedo(self, texture: torch.Tensor) -> torch.Tensor:
        """[B, Kt] -> albedo [B, N, 3] in [0, 1] units (unclipped)."""
        return self.mean_albedo + (texture @ self.albedo_basis.T).reshape(-1, self.num_vertices, 3)

    def normals(self, vertices: torch.Tensor) -> torch.Tensor:
        """Vertices [..., N, 3] -> unit vertex normals [..., N, 3]."""
        return vertex_normals(vertices, self.triangles, self.vertex_triangles)

    def forward(self, coefficients) -> TorchMesh:
        """``coefficients``: flat [B, 269] tensor in COEFFS layout, or a ``Coefficients`` of tensors.

        Normals are computed on the unposed shape and rotated per view, as in ``assemble_mesh``.
        """
        c = COEFFS.split(coefficients) if isinstance(coefficients, torch.Tensor) else coefficients
        if not isinstance(c, Coefficients):
            raise TypeError("expected a [B, 269] tensor or a Coefficients of tensors")
        shape = self.shape(c.identity, c.expression)
        albedo = self.albedo(c.texture)
        normals0 = self.normals(shape)
        rot = rotation_matrix(c.rotation)                                        # [B, V, 3, 3]
        vertices = torch.einsum("bvij,bnj->bvni", rot, shape) + c.translation[:, :, None, :]
        normals = torch.einsum("bvij,bnj->bvni", rot, normals0)
        colors = sh_shade(albedo[:, None], normals, c.lighting)
        pixels_depth = project_with_depth(vertices, self.camera)
        landmarks = pixels_depth[:, :, self.keypoints, :2]
        return TorchMesh(shape=shape, albedo=albedo, vertices=vertices, normals=normals,
                         colors=colors, landmarks=landmarks, pixels_depth=pixels_depth)
