"""Detector-like landmark error on synthetic data, drawn the same way wherever it is used.

Synthetic landmarks are the renderer's exact projections, which no user with real photos has. Training
(``dfmvr-train --landmark-noise``) and evaluation (``dfmvr eval --landmark-noise``, what ``--refine``
fits) add Gaussian error to them, drawn once per triplet from (seed, the triplet's index in its sorted
folder): the same photo gets the same error every epoch, as a detector errs the same way on the same
photo, and a triplet gets the same error in training and evaluation.
"""

from __future__ import annotations

import numpy as np

__all__ = ["draw_landmark_noise"]


def draw_landmark_noise(shape, px: float, seed: int, index: int) -> np.ndarray:
    """[shape] float64: Gaussian error of ``px`` pixels per coordinate for triplet ``index``."""
    return np.random.default_rng([int(seed), int(index)]).normal(0.0, float(px), shape)
