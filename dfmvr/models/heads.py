"""Regression heads: RedNet plus 1x1 convs on the pooled feature, in the official per-view layout.

``RedNetRegressor`` is the official ``rednet_fc`` (``rednet.*`` + ``conv2_id``, ``conv2_exp``,
``conv2_color``, ``conv2_gamma`` and per view ``conv2_rotate{sfx}``, ``conv2_offset_xy{sfx}``,
``conv2_offset_z{sfx}`` with sfx in ``VIEW_SUFFIXES``). Its output is the flat coefficient vector
[B, COEFFS.size] float32 in ``dfmvr.face.layout.COEFFS`` order.

Pooling (architecture key ``rednet.pool``):
- ``average`` (the official network, and the default for cards without the key): global average of
  the last map. It keeps what is there but not where: fine for appearance cues such as an open
  mouth, blind to the relative positions of features that identity is made of.
- ``spatial``: a 1x1 conv to ``spatial_channels`` (``spatial_reduce``), then the whole
  ``spatial_size`` x ``spatial_size`` map flattened into the heads: a low-rank linear readout that
  knows where each feature is. Measured on the tiny demo (docs/training.md): with average pooling a
  ridge regression from the pooled feature recovers no identity, while one from the true 2D landmarks
  of the three views recovers 75 %.

Keypoints (architecture key ``rednet.keypoints``, 0 = off, the official layout): a
``KeypointReadout`` on the fusion feature predicts each view's 68 landmarks by soft-argmax, and the
heads read them beside the pooled feature ([B, head inputs + views * 68 * 2, 1, 1]). The keypoints of
the last forward pass stay in ``last_keypoints`` [B, views, K, 2] (pixels) for the training loss.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dfmvr.face.layout import COEFFS, VIEW_SUFFIXES, CoefficientLayout

from .keypoints import KeypointReadout
from .rednet import RedNet

__all__ = ["RedNetRegressor", "head_names", "POOLING"]

POOLING = ("average", "spatial")


def head_names(layout: CoefficientLayout = COEFFS) -> list[tuple[str, int]]:
    """(module name, width) of every head, in the order their outputs fill the coefficient vector."""
    if layout.translation != 3 or layout.views != len(VIEW_SUFFIXES):
        raise ValueError(f"the official head layout needs 3 views and translation (xy, z); got {layout}")
    names = [("conv2_id", layout.identity), ("conv2_exp", layout.expression),
             ("conv2_color", layout.texture), ("conv2_gamma", layout.lighting)]
    for sfx in VIEW_SUFFIXES:
        names += [(f"conv2_rotate{sfx}", layout.rotation), (f"conv2_offset_xy{sfx}", 2),
                  (f"conv2_offset_z{sfx}", 1)]
    return names


class RedNetRegressor(nn.Module):
    """feature [B, C, H, W] -> coefficients [B, layout.size] (float32, COEFFS order)."""

    def __init__(self, layout: CoefficientLayout = COEFFS, pool: str = "average", spatial_channels: int = 32,
                 spatial_size: int = 7, keypoints: int = 0, keypoint_stride: int = 8, **rednet_args):
        super().__init__()
        if pool not in POOLING:
            raise ValueError(f"rednet pool '{pool}' is not one of {POOLING}")
        self.rednet = RedNet(**rednet_args)
        self.pool = pool
        self.spatial_size = spatial_size
        head_inputs = self.rednet.feat_dim
        if pool == "spatial":
            self.spatial_reduce = nn.Conv2d(self.rednet.feat_dim, spatial_channels, 1)
            head_inputs = spatial_channels * spatial_size * spatial_size
        self.keypoint_readout = None
        self.last_keypoints: Tensor | None = None
        if keypoints:
            self.keypoint_readout = KeypointReadout(self.rednet.in_channels, keypoints, layout.views,
                                                    stride=keypoint_stride)
            head_inputs += self.keypoint_readout.head_inputs
        self.head_order = [name for name, _ in head_names(layout)]
        for name, width in head_names(layout):
            self.add_module(name, nn.Conv2d(head_inputs, width, 1))

    def readout(self, feature_map: Tensor) -> Tensor:
        """RedNet's last map [B, feat_dim, h, w] -> the heads' input [B, head inputs, 1, 1]."""
        if self.pool == "average":
            return self.rednet.avgpool(feature_map)
        if tuple(feature_map.shape[2:]) != (self.spatial_size,) * 2:
            raise ValueError(f"spatial pooling reads a {self.spatial_size}x{self.spatial_size} map (a "
                             f"{32 * self.spatial_size}-px input); got {tuple(feature_map.shape[2:])}")
        return self.spatial_reduce(feature_map).flatten(1)[:, :, None, None]

    def forward(self, feature: Tensor) -> Tensor:
        pooled = self.readout(self.rednet.feature_map(feature))
        if self.keypoint_readout is not None:
            self.last_keypoints = self.keypoint_readout(feature)
            kp = self.keypoint_readout.as_head_input(self.last_keypoints, int(feature.shape[-1]))
            pooled = torch.cat([pooled, kp], dim=1)
        return torch.cat([getattr(self, name)(pooled).flatten(1) for name in self.head_order], dim=1)
