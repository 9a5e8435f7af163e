"""Regularisers on the coefficients, the lighting and the albedo (Deep3D / DF-MVR)."""

from __future__ import annotations

import torch

__all__ = ["COEFF_REG_WEIGHTS", "coefficient_regularizer", "gamma_regularizer", "reflectance_regularizer"]

# Relative weights of Σα² (identity), Σβ² (expression), Σδ² (texture).
COEFF_REG_WEIGHTS = (1.0, 0.8, 0.017)


def coefficient_regularizer(identity: torch.Tensor, expression: torch.Tensor, texture: torch.Tensor,
                            weights: tuple[float, float, float] = COEFF_REG_WEIGHTS) -> torch.Tensor:
    """Σα² + 0.8·Σβ² + 0.017·Σδ², averaged over the batch (scalar).

    identity [B, 80], expression [B, 64], texture [B, 80] (basis-std units).
    """
    wi, we, wt = weights
    per = wi * (identity ** 2).sum(-1) + we * (expression ** 2).sum(-1) + wt * (texture ** 2).sum(-1)
    return per.mean()


def gamma_regularizer(lighting: torch.Tensor) -> torch.Tensor:
    """Pushes the SH lighting towards white light: mean over bands of the colour-channel variance.

    lighting [B, 27] channel-major (R 9 bands, G, B). Scalar.
    """
    g = lighting.reshape(-1, 3, 9)
    return ((g - g.mean(1, keepdim=True)) ** 2).mean()


def reflectance_regularizer(albedo: torch.Tensor, skin_mask: torch.Tensor) -> torch.Tensor:
    """Flat skin albedo: squared deviation of each skin vertex's ALBEDO from the mean skin albedo.

    albedo [B, N, 3] in [0, 1] units (unlit; the official code used the lit colour); skin_mask [N]
    bool or float weights. Scalar: Σ_skin ‖a − ā‖² / (B · Σ skin).
    """
    m = skin_mask.to(albedo.dtype)[None, :, None]
    total = m.sum()
    mean = (albedo * m).sum(1, keepdim=True) / total.clamp_min(1e-6)
    return (((albedo - mean) * m) ** 2).sum() / (albedo.shape[0] * total.clamp_min(1e-6))
