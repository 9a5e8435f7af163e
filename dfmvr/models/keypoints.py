"""Keypoint readout: per-view 2D landmarks from the fusion feature, by soft-argmax, for the heads.

Why (docs/training.md, "Where identity is lost"): a ridge regression from the true 2D landmarks of
the three views recovers 75-82 % of the identity and 95-97 % of the expression, while the pooled
RedNet feature that the official heads read holds none of the identity. Identity is mostly where the
face's parts are, and a global average discards where. This module makes "where" explicit:

    fusion feature [B, C, H, W] (full resolution; for each view its gated skip channels)
      -> average pool by ``stride`` / 2, with two coordinate channels (x, y in [-1, 1]) appended
      -> 3x3 conv -> 3x3 conv stride 2 -> 3x3 conv dilation 2 -> 3x3 conv dilation 4 (ReLU each)
      -> 1x1 conv -> heatmaps [B, views * K, H / stride, W / stride]
      -> softmax over each map -> expected position (soft-argmax)
      -> keypoints [B, views, K, 2] in input pixels (x right, y down; pixel j spans [j, j + 1))

The heads then read the keypoints (centred and scaled, see ``as_head_input``) beside RedNet's
feature, and training can supervise the keypoints with the 2D landmarks of ``gt.npz``
(``dfmvr-train --keypoint-weight``). Everything is standard ONNX (AveragePool, Conv, Softmax,
MatMul), so the export contract is unchanged.

Why coordinates and a wide receptive field: a first version (two 3x3 convs after the pooling, ~20 px
of receptive field, no coordinates) ended 500 steps at 68 px^2 of keypoint error, worse than the
34 px^2 of predicting each slot's mean landmark positions: translation-equivariant convolutions with a
small field cannot say where in the image they are, nor which eye they see. The coordinate channels
give it the mean positions, and ~120 px of receptive field the context to tell the landmarks apart.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["KeypointReadout", "with_coordinates", "soft_argmax"]


def with_coordinates(x: Tensor) -> Tensor:
    """[B, C, H, W] -> [B, C + 2, H, W]: x and y in [-1, 1] appended (convolutions cannot otherwise
    tell where on the map they are)."""
    b, _, h, w = x.shape
    ys = torch.linspace(-1.0, 1.0, h, dtype=x.dtype, device=x.device)
    xs = torch.linspace(-1.0, 1.0, w, dtype=x.dtype, device=x.device)
    coords = torch.stack([xs.expand(h, w), ys[:, None].expand(h, w)])[None].expand(b, 2, h, w)
    return torch.cat([x, coords], dim=1)


def soft_argmax(heat: Tensor, cell_px: float) -> Tensor:
    """Logits [B, N, h, w] -> expected positions [B, N, 2] (x, y) in pixels, cell j spanning
    [j, j + 1) x cell_px (so a dominant cell reads as its centre)."""
    b, n, h, w = heat.shape
    prob = heat.reshape(b, n, h * w).softmax(dim=-1)
    ys = (torch.arange(h, dtype=prob.dtype, device=prob.device) + 0.5) * cell_px
    xs = (torch.arange(w, dtype=prob.dtype, device=prob.device) + 0.5) * cell_px
    grid = torch.stack([xs.repeat(h), ys.repeat_interleave(w)], dim=1)  # [h*w, 2] (x, y) per cell
    return prob @ grid


class KeypointReadout(nn.Module):
    """fusion feature [B, in_channels, H, W] -> keypoints [B, views, keypoints, 2] (pixels)."""

    def __init__(self, in_channels: int, keypoints: int = 68, views: int = 3, stride: int = 8,
                 channels: int = 64, head_scale: float = 16.0):
        super().__init__()
        if stride % 2:
            raise ValueError(f"keypoint stride must be even, got {stride}")
        self.keypoints, self.views, self.stride = keypoints, views, stride
        self.head_scale = head_scale
        self.pool = nn.AvgPool2d(stride // 2)
        relu = lambda: nn.ReLU(inplace=True)   # noqa: E731
        self.net = nn.Sequential(
            nn.Conv2d(in_channels + 2, channels // 2, 3, padding=1), relu(),
            nn.Conv2d(channels // 2, channels, 3, stride=2, padding=1), relu(),
            nn.Conv2d(channels, channels, 3, padding=2, dilation=2), relu(),
            nn.Conv2d(channels, channels, 3, padding=4, dilation=4), relu(),
            nn.Conv2d(channels, views * keypoints, 1))

    @property
    def head_inputs(self) -> int:
        return self.views * self.keypoints * 2

    def heatmaps(self, feature: Tensor) -> Tensor:
        """[B, C, H, W] -> logits [B, V*K, H / stride, W / stride]."""
        return self.net(with_coordinates(self.pool(feature)))

    def forward(self, feature: Tensor) -> Tensor:
        points = soft_argmax(self.heatmaps(feature), self.stride)         # [B, V*K, 2]
        return points.reshape(points.shape[0], self.views, self.keypoints, 2)

    def as_head_input(self, keypoints: Tensor, image_size: int) -> Tensor:
        """keypoints [B, V, K, 2] px -> [B, V*K*2, 1, 1]: centred on the image, in units of
        ``head_scale`` px, so that a few pixels of identity make an input change of order 0.1-1
        for the linear heads (raw pixels would need weights ~100x their initial size)."""
        centred = (keypoints - image_size / 2) / self.head_scale
        return centred.flatten(1)[:, :, None, None]
