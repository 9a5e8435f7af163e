"""Landmark losses: 2D (68 iBUG points, weighted) and 3D (after a 7-point similarity alignment)."""

from __future__ import annotations

import torch

from ...face.metrics import SEVEN_POINTS_IBUG

__all__ = ["NOSE", "EYES", "INNER_MOUTH", "ALIGN_7", "landmark_weights", "landmark_2d_loss",
           "similarity_transform", "landmark_3d_loss"]

# 0-based iBUG-68 indices.
NOSE = tuple(range(28, 31))          # nose bridge/tip 28-30
EYES = tuple(range(36, 48))          # both eyes 36-47 (the official code also weighs these 20)
INNER_MOUTH = tuple(range(60, 68))   # inner lip contour 60-67
# The 7 points the NoW protocol aligns on: eye corners, nose tip, mouth corners (one home: metrics).
ALIGN_7 = SEVEN_POINTS_IBUG


def landmark_weights(emphasis: float = 20.0, eyes: bool = False) -> torch.Tensor:
    """Per-landmark weights [68] float32: ``emphasis`` on nose 28-30 and inner mouth 60-67 (the
    paper), also on the eyes 36-47 when ``eyes`` (the official code), 1 elsewhere."""
    w = torch.ones(68, dtype=torch.float32)
    idx = list(NOSE) + list(INNER_MOUTH) + (list(EYES) if eyes else [])
    w[idx] = emphasis
    return w


def landmark_2d_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor,
                     visibility: torch.Tensor | None = None,
                     view_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted mean squared 2D landmark distance, pixels² (scalar).

    pred, target [B, V, 68, 2] pixels (u right, v down); weights [68]; visibility [B, V, 68]
    (bool/float, optional): invisible points are ignored; view_mask [B, V] bool, optional.
    loss = Σ w·m·‖pred − target‖² / Σ m   (m = visibility × view mask; Deep3D's normalisation by
    the point count, so that the weights raise the emphasised points' share).
    """
    m = torch.ones(pred.shape[:-1], dtype=pred.dtype, device=pred.device)
    if visibility is not None:
        m = m * visibility.to(pred.dtype)
    if view_mask is not None:
        m = m * view_mask.to(pred.dtype)[:, :, None]
    d2 = ((pred - target) ** 2).sum(-1)
    return (d2 * m * weights.to(pred)).sum() / m.sum().clamp_min(1.0)


def similarity_transform(src: torch.Tensor, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Least-squares similarity (Umeyama) taking src [B, K, 3] onto dst [B, K, 3].

    Returns scale [B], rotation [B, 3, 3] (proper, det +1) and translation [B, 3] with
    dst ≈ scale · R @ src + t. Computed in float64.
    """
    s64, d64 = src.double(), dst.double()
    mu_s, mu_d = s64.mean(1, keepdim=True), d64.mean(1, keepdim=True)
    xs, xd = s64 - mu_s, d64 - mu_d
    cov = xd.transpose(1, 2) @ xs / src.shape[1]                     # [B, 3, 3]
    u, sig, vh = torch.linalg.svd(cov)
    d = torch.ones_like(sig)
    d[:, 2] = torch.sign(torch.linalg.det(u @ vh))                   # reflection guard
    rot = u @ torch.diag_embed(d) @ vh
    var_s = (xs ** 2).sum((1, 2)) / src.shape[1]
    scale = (sig * d).sum(1) / var_s.clamp_min(1e-12)
    t = mu_d[:, 0] - scale[:, None] * (rot @ mu_s[:, 0, :, None])[..., 0]
    return scale.to(src.dtype), rot.to(src.dtype), t.to(src.dtype)


def landmark_3d_loss(pred: torch.Tensor, target: torch.Tensor, align_index=ALIGN_7) -> torch.Tensor:
    """Mean squared 3D landmark distance (model units²) after aligning pred onto target (scalar).

    pred, target [B, K, 3] (e.g. the 68 keypoint vertices of the unposed shape and of the ground
    truth). The similarity is fitted on the ``align_index`` points and held fixed (no gradient
    through the SVD), then applied to every predicted point.
    """
    idx = list(align_index)
    with torch.no_grad():
        scale, rot, t = similarity_transform(pred[:, idx], target[:, idx])
    aligned = scale[:, None, None] * pred @ rot.transpose(1, 2) + t[:, None, :]
    return ((aligned - target) ** 2).sum(-1).mean()
