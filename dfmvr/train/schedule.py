"""Learning-rate schedule and single-view input dropout.

Schedule: the official recipe is Adam at 1e-4 for 50 epochs, then cosine down to 1e-6 at epoch 280.
``lr_at`` keeps that shape for any length: constant for the first 50/280 of training, then cosine.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["OFFICIAL_CONSTANT_FRACTION", "lr_at", "VIEW_PATTERNS", "sample_view_masks"]

OFFICIAL_CONSTANT_FRACTION = 50.0 / 280.0


def lr_at(progress: float, base_lr: float = 1e-4, final_lr: float = 1e-6,
          constant_fraction: float = OFFICIAL_CONSTANT_FRACTION) -> float:
    """Learning rate at ``progress`` in [0, 1] (fraction of all training steps done)."""
    p = min(max(progress, 0.0), 1.0)
    if p <= constant_fraction or constant_fraction >= 1.0:
        return base_lr
    t = (p - constant_fraction) / (1.0 - constant_fraction)
    return final_lr + 0.5 * (base_lr - final_lr) * (1.0 + math.cos(math.pi * t))


# Missing-view patterns (left, front, right present), at least one view present, not all three.
VIEW_PATTERNS = np.array([
    [False, True, False], [True, False, False], [False, False, True],
    [True, True, False], [False, True, True], [True, False, True],
], dtype=bool)


def sample_view_masks(batch: int, rng: np.random.Generator, p_all: float = 2.0 / 3.0) -> np.ndarray:
    """The paper's single-view training (§5.3): per sample, all three views with probability
    ``p_all``, otherwise one of the six missing-view patterns, equally likely.

    Each view is kept in at least one sample of the batch: every view has its own encoder with
    batch norm, and an all-zero batch for one encoder has zero variance, which blows its gradients
    up by ~1/sqrt(eps) per BN layer (measured: gradient norms ~4e9 at batch 1). Where a view would be
    missing from the whole batch, one sample (chosen at random) gets it back; so batch 1 never drops.

    Returns bool [B, 3] (True = the view is fed to the network).
    """
    out = np.ones((batch, 3), dtype=bool)
    drop = rng.random(batch) >= p_all
    choice = rng.integers(0, len(VIEW_PATTERNS), size=batch)
    out[drop] = VIEW_PATTERNS[choice[drop]]
    for view in np.flatnonzero(~out.any(axis=0)):
        out[rng.integers(0, batch), view] = True
    return out
