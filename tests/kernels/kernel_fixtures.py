"""Test data builders for the kernel tests: a small random morphable model and coefficients."""

from __future__ import annotations

import numpy as np

from dfmvr.face.geometry import build_vertex_triangles
from dfmvr.face.layout import COEFFS, NUM_VIEWS, Coefficients
from dfmvr.face.model import MorphableModel


def grid_model(rows: int = 12, cols: int = 14, seed: int = 0) -> MorphableModel:
    """A triangulated, gently curved grid (rows x cols vertices) with random BFM-sized bases."""
    rng = np.random.default_rng(seed)
    ys, xs = np.meshgrid(np.linspace(-1, 1, rows), np.linspace(-1, 1, cols), indexing="ij")
    zs = 0.3 * np.cos(xs) * np.cos(ys)  # a bump so that normals vary across the mesh
    mean = np.stack([xs, ys, zs], -1).reshape(-1, 3).astype(np.float32)
    mean -= mean.mean(0)
    idx = np.arange(rows * cols).reshape(rows, cols)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    # counter-clockwise seen from +z (outside): (a, b, d) and (a, d, c)
    tris = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)]).astype(np.int32)
    n = mean.shape[0]
    return MorphableModel(
        mean_shape=mean,
        id_basis=rng.normal(0, 0.01, (n, 3, COEFFS.identity)),
        exp_basis=rng.normal(0, 0.01, (n, 3, COEFFS.expression)),
        mean_albedo=rng.uniform(0.3, 0.8, (n, 3)),
        albedo_basis=rng.normal(0, 0.02, (n, 3, COEFFS.texture)),
        triangles=tris,
        vertex_triangles=build_vertex_triangles(tris, n),
        keypoints=rng.choice(n, 68, replace=False),
        skin_mask=np.ones(n, bool),
        parts=np.ones(n, np.uint8),
        front_region=np.ones(n, bool),
        name=f"grid-{rows}x{cols}-seed{seed}",
    )


def random_coefficients(batch: int, seed: int = 1) -> Coefficients:
    """Random coefficients in the ranges a trained network produces (poses up to ~50 degrees)."""
    rng = np.random.default_rng(seed)
    f = lambda *s, scale=1.0: (rng.normal(0, scale, s)).astype(np.float32)  # noqa: E731
    rot = rng.uniform(-0.9, 0.9, (batch, NUM_VIEWS, 3)).astype(np.float32)
    trans = np.concatenate([f(batch, NUM_VIEWS, 2, scale=0.1), f(batch, NUM_VIEWS, 1, scale=0.5)], -1)
    return Coefficients(identity=f(batch, COEFFS.identity), expression=f(batch, COEFFS.expression),
                        texture=f(batch, COEFFS.texture), lighting=f(batch, COEFFS.lighting, scale=0.2),
                        rotation=rot, translation=trans)
