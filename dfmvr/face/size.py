"""Setting a predicted identity to the mean face's size, in coefficient space.

An aligned crop shows a face's shape, not its absolute size: a larger face farther away draws the same
picture. A network trained without 3D supervision reads the size worse than not reading it (its
predicted size is mostly the camera distance; docs/training.md, "A prior on the size"), so after such
training the size is better set to the mean face's. That is a fixed linear map on the identity
coefficients, which ``dfmvr convert mean-size`` folds into the identity head (``dfmvr.models.mean_size``).

The map: with B the identity basis as a [V*3, K] matrix and r the unit vertex-space direction of a
uniform scaling of the mean shape (``metrics.uniform_scale_direction``), the size component of
coefficients a is rᵀB a. Among all a' with rᵀB a' = 0 the one nearest a in vertex space (the metric
G = BᵀB) is a' = P a with P = I - g cᵀ / (cᵀ g), c = Bᵀ r, g = G⁻¹ c: an oblique projection (P² = P)
that moves the vertices only along B g, the part of the uniform scaling the basis can express. Where
the basis holds the whole scaling (cᵀ g = 1: every model dfmvr makes, 0.9998 for the bundled one) the
vertices move exactly along r, as ``metrics.without_uniform_scale`` moves them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .metrics import uniform_scale_direction
from .model import MorphableModel

__all__ = ["MeanSizeProjection", "mean_size_projection", "identity_size_component"]


@dataclass(frozen=True)
class MeanSizeProjection:
    """matrix [K, K] float64: identity coefficients a -> matrix @ a, of the mean face's size.
    in_basis: the share (0-1) of a uniform scaling of the mean shape the identity basis can express,
    |projection of r onto the basis' span|²; the map removes that part of a predicted size."""
    matrix: np.ndarray
    in_basis: float


def _basis_matrix(face_model: MorphableModel) -> np.ndarray:
    basis = np.asarray(face_model.id_basis, np.float64)          # [V, 3, K]
    return basis.reshape(-1, basis.shape[2])                     # [V*3, K], rows in vertex-major order


def identity_size_component(face_model: MorphableModel, identity: np.ndarray) -> np.ndarray:
    """[..., K] identity coefficients -> [...]: the vertex offset's component along the unit uniform
    scaling of the mean shape, in model units (0: the mean face's size)."""
    row = _basis_matrix(face_model).T @ uniform_scale_direction(face_model.mean_shape)
    return np.asarray(identity, np.float64) @ row


def mean_size_projection(face_model: MorphableModel) -> MeanSizeProjection:
    """The map above for ``face_model``. Raises ValueError when the basis cannot express a uniform
    scaling at all (then no identity has a size to remove)."""
    basis = _basis_matrix(face_model)
    c = basis.T @ uniform_scale_direction(face_model.mean_shape)
    g = np.linalg.lstsq(basis.T @ basis, c, rcond=None)[0]
    in_basis = float(c @ g)
    if in_basis < 1e-6:
        raise ValueError("the face model's identity basis holds no uniform scaling of its mean shape")
    matrix = np.eye(c.size) - np.outer(g, c) / in_basis
    return MeanSizeProjection(matrix=matrix, in_basis=in_basis)
