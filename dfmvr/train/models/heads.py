"""Regression heads: RedNet plus 1x1 convs on the pooled feature, in the official per-view layout.

``RedNetRegressor`` is the official ``rednet_fc`` (``rednet.*`` + ``conv2_id``, ``conv2_exp``,
``conv2_color``, ``conv2_gamma`` and per view ``conv2_rotate{sfx}``, ``conv2_offset_xy{sfx}``,
``conv2_offset_z{sfx}`` with sfx in ``VIEW_SUFFIXES``). Its output is the flat coefficient vector
[B, COEFFS.size] float32 in ``dfmvr.face.layout.COEFFS`` order.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dfmvr.face.layout import COEFFS, VIEW_SUFFIXES, CoefficientLayout

from .rednet import RedNet

__all__ = ["RedNetRegressor", "head_names"]


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

    def __init__(self, layout: CoefficientLayout = COEFFS, **rednet_args):
        super().__init__()
        self.rednet = RedNet(**rednet_args)
        self.head_order = [name for name, _ in head_names(layout)]
        for name, width in head_names(layout):
            self.add_module(name, nn.Conv2d(self.rednet.feat_dim, width, 1))

    def forward(self, feature: Tensor) -> Tensor:
        pooled = self.rednet(feature)
        return torch.cat([getattr(self, name)(pooled).flatten(1) for name in self.head_order], dim=1)
