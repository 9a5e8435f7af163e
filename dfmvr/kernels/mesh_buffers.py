"""The flat arrays the mesh-assembly kernels take, packed from a MorphableModel and Coefficients.

Shared by the GPU launcher (``mesh_gpu``) and the host shim (``host``) so that both feed the
kernels' arithmetic exactly the same memory. numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..face.camera import Camera
from ..face.geometry import MeshResult
from ..face.layout import Coefficients
from ..face.model import MorphableModel

__all__ = ["BASIS_DTYPES", "PackedModel", "PackedCoefficients", "pack_model", "pack_coefficients",
           "MeshOutputs", "camera_args"]

BASIS_DTYPES = {"float32": np.float32, "float16": np.float16}


@dataclass
class PackedModel:
    """Model arrays in kernel layout. N vertices, T triangles, L landmarks.

    id_basis [3N, Ki], exp_basis [3N, Ke], tex_basis [3N, Kt]   basis dtype (float32 or float16)
    mean_shape, mean_albedo [3N] float32
    triangles [T, 3], vertex_triangles [N, A] (-1 = none), keypoints [L]   int32
    """

    id_basis: np.ndarray
    exp_basis: np.ndarray
    tex_basis: np.ndarray
    mean_shape: np.ndarray
    mean_albedo: np.ndarray
    triangles: np.ndarray
    vertex_triangles: np.ndarray
    keypoints: np.ndarray

    @property
    def num_vertices(self) -> int:
        return self.mean_shape.shape[0] // 3

    @property
    def num_triangles(self) -> int:
        return self.triangles.shape[0]

    @property
    def dims(self) -> tuple[int, int, int]:
        return self.id_basis.shape[1], self.exp_basis.shape[1], self.tex_basis.shape[1]

    @property
    def suffix(self) -> str:
        """Kernel name suffix of the basis dtype: "f32" or "f16"."""
        return "f16" if self.id_basis.dtype == np.float16 else "f32"


def pack_model(model: MorphableModel, basis_dtype: str = "float32") -> PackedModel:
    """MorphableModel -> PackedModel; ``basis_dtype`` "float32" or "float16" (bases only)."""
    if basis_dtype not in BASIS_DTYPES:
        raise ValueError(f"basis_dtype must be one of {sorted(BASIS_DTYPES)}, got {basis_dtype!r}")
    dt = BASIS_DTYPES[basis_dtype]
    n = model.num_vertices

    def rows(basis):
        return np.ascontiguousarray(basis.reshape(3 * n, -1), dtype=dt)

    return PackedModel(
        id_basis=rows(model.id_basis), exp_basis=rows(model.exp_basis), tex_basis=rows(model.albedo_basis),
        mean_shape=np.ascontiguousarray(model.mean_shape.reshape(-1), np.float32),
        mean_albedo=np.ascontiguousarray(model.mean_albedo.reshape(-1), np.float32),
        triangles=np.ascontiguousarray(model.triangles, np.int32),
        vertex_triangles=np.ascontiguousarray(model.vertex_triangles, np.int32),
        keypoints=np.ascontiguousarray(model.keypoints, np.int32),
    )


@dataclass
class PackedCoefficients:
    """coeffs [B, Ki + Ke + Kt] (identity | expression | texture), poses [B, V, 6] (rotation x, y, z
    radians | translation x, y, z), lighting [B, 27]; all float32, contiguous."""

    coeffs: np.ndarray
    poses: np.ndarray
    lighting: np.ndarray

    @property
    def batch(self) -> int:
        return self.coeffs.shape[0]

    @property
    def views(self) -> int:
        return self.poses.shape[1]


def pack_coefficients(c: Coefficients) -> PackedCoefficients:
    """Coefficients -> PackedCoefficients (the named fields are concatenated, never sliced)."""
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    coeffs = np.concatenate([f32(c.identity), f32(c.expression), f32(c.texture)], axis=-1)
    poses = np.concatenate([f32(c.rotation), f32(c.translation)], axis=-1)
    return PackedCoefficients(np.ascontiguousarray(coeffs), np.ascontiguousarray(poses),
                              np.ascontiguousarray(f32(c.lighting).reshape(-1, 27)))


@dataclass
class MeshOutputs:
    """Output and scratch arrays of one call (float32, contiguous), in kernel layout."""

    shape: np.ndarray        # [B, N, 3]
    albedo: np.ndarray       # [B, N, 3]
    tri_normals: np.ndarray  # [B, T, 3] scratch: unit normals of the unposed triangles
    rotations: np.ndarray    # [B, V, 9] scratch: R = Rz Ry Rx, row-major
    vertices: np.ndarray     # [B, V, N, 3]
    normals: np.ndarray      # [B, V, N, 3]
    colors: np.ndarray       # [B, V, N, 3]
    landmarks: np.ndarray    # [B, V, L, 2]

    @classmethod
    def empty(cls, batch: int, views: int, model: PackedModel) -> "MeshOutputs":
        n, t, l = model.num_vertices, model.num_triangles, model.keypoints.shape[0]
        e = lambda *s: np.empty(s, np.float32)  # noqa: E731
        return cls(e(batch, n, 3), e(batch, n, 3), e(batch, t, 3), e(batch, views, 9), e(batch, views, n, 3),
                   e(batch, views, n, 3), e(batch, views, n, 3), e(batch, views, l, 2))

    def result(self) -> MeshResult:
        return MeshResult(shape=self.shape, albedo=self.albedo, vertices=self.vertices, normals=self.normals,
                          colors=self.colors, landmarks=self.landmarks)


def camera_args(camera: Camera) -> tuple[float, float, float]:
    """(focal px, principal point px, distance model units) as the landmark kernel takes them."""
    return float(camera.focal), float(camera.center), float(camera.distance)
