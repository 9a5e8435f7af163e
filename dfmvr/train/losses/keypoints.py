"""The keypoint readout's loss: squared pixel distance to the 2D landmarks of each present view."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["keypoint_loss"]


def keypoint_loss(keypoints: Tensor, landmarks: Tensor, views: Tensor) -> Tensor:
    """keypoints, landmarks [B, V, K, 2] (pixels); views [B, V] bool (present and annotated).

    Mean over the selected views and their K points of the squared distance (px^2). Every landmark of
    a selected view counts, occluded ones too: on synthetic data their projected position is exact, and
    the readout needs the whole outline to see the face's shape. 0 when no view is selected."""
    per_view = (keypoints - landmarks).square().sum(dim=-1).mean(dim=-1)          # [B, V]
    weight = views.to(per_view.dtype)
    return (per_view * weight).sum() / weight.sum().clamp_min(1.0)
