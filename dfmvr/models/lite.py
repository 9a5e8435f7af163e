"""The ``lite`` design: DF-MVR's structure (three view encoders, attention-gated fusion, an
involution regressor, the official heads) built for a 2-core CPU and for learning identity.

Why a second design beside the official one (docs/training.md, "Why the tiny net learns no
identity: the readout"): measured with ``scripts/identity_learning_probe.py``, a plain per-view CNN at 112 px
learns identity from the photos when its regressor reads *where* features are (a spatial readout)
and learns none when it reads a global average, which is what the official heads read. The official
topology also spends most of its time on a full-resolution U-Net decoder whose output the regressor
then shrinks 32x again. Here:

    view v (left, front, right): RGB [3, 224, 224] + parse label
      -> 2x2 average (112 px), label as one channel per class (averaged: class fractions)
      -> ``LiteEncoder`` (six 3x3 convs, three of stride 2)           [B, 4w, 14, 14] per view
    fusion: the front view's feature gates each side view's (``AttentionGate``, as in MulEn-Unet),
      concatenated [front, gated left, gated right]                       [B, 12w, 14, 14]
    regressor: 1x1 conv -> ``Bottleneck`` (involution 7x7, the custom op) at 14 x 14
      -> 1x1 conv to ``readout_channels`` -> flattened (every position)   [B, 14*14*r, 1, 1]
      -> the official 1x1 heads (conv2_id, conv2_exp, ..., per-view pose)

Auxiliary keypoints (architecture key ``unet.keypoints``: 0 = off; the bundled demo trained with 68):
in training only, each view's encoder map also predicts that view's 68 2D landmarks (``LiteKeypointHead``: heat maps on
the 14 x 14 map, soft-argmax), supervised by ``gt.npz``'s landmarks (``dfmvr-train --keypoints 68
--keypoint-weight W``). Why: expression is the network's weakest number, a ridge regression on the
exact landmarks reaches 0.96 of it, and label maps localise the mouth poorly (docs/training.md,
"Weighting expression up"); the target asks the encoders to say where the parts are. The heads do not
read the keypoints, and in eval mode the forward pass does not compute them; the exported graph
outputs them (``fuse_with_keypoints``) as the refinement's landmarks, beside the unchanged coefficients.

Module names: ``uuunet`` holds the encoders and gates (``enc_{v}``, ``att_{v}``), ``rednet_fc`` the
regressor and the heads with the official head names, so the ONNX contract, the coefficient layout and
the trainer are unchanged. Input size is fixed at 224 (the readout is position-specific).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dfmvr.face.layout import COEFFS, CoefficientLayout

from .heads import head_names
from .keypoints import soft_argmax, with_coordinates
from .rednet import Bottleneck
from .unet import AttentionGate

__all__ = ["LiteFusion", "LiteRegressor", "LiteEncoder", "LiteKeypointHead", "LITE_INPUT_SIZE"]

LITE_INPUT_SIZE = 224
POOL = 2                       # 224 -> 112 px before the encoders
ENCODER_STRIDE = 8             # three stride-2 convs: 112 -> 14
MAP_SIZE = LITE_INPUT_SIZE // POOL // ENCODER_STRIDE


def _conv_bn_relu(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class LiteEncoder(nn.Sequential):
    """[B, in_channels, 112, 112] -> [B, 4 * width, 14, 14]: (conv stride 2, conv) x 3, widths w, 2w, 4w."""

    def __init__(self, in_channels: int, width: int):
        layers, cin = [], in_channels
        for cout in (width, 2 * width, 4 * width):
            layers += _conv_bn_relu(cin, cout, 2) + _conv_bn_relu(cout, cout, 1)
            cin = cout
        super().__init__(*layers)
        self.out_channels = cin


class LiteKeypointHead(nn.Module):
    """One view's encoder map [B, C, 14, 14] -> keypoints [B, K, 2] in input pixels (x right, y down).

    Coordinate channels, because convolutions cannot otherwise tell where on the map they are (the
    tiny's readout without them ended worse than each slot's mean landmarks: docs/training.md); a
    dilated 3x3 for context; a soft-argmax over the 14 x 14 cells, whose expectation resolves
    positions finer than a cell (16 px)."""

    def __init__(self, in_channels: int, keypoints: int = 68, channels: int = 64,
                 cell_px: float = float(POOL * ENCODER_STRIDE)):
        super().__init__()
        self.keypoints, self.cell_px = keypoints, cell_px
        self.net = nn.Sequential(
            nn.Conv2d(in_channels + 2, channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=2, dilation=2), nn.ReLU(inplace=True),
            nn.Conv2d(channels, keypoints, 1))

    def forward(self, feature: Tensor) -> Tensor:
        return soft_argmax(self.net(with_coordinates(feature)).float(), self.cell_px)


class LiteFusion(nn.Module):
    """Three views [B, 4, 224, 224] (RGB in [-1, 1] + label index) -> fused map [B, 3 * 4w, 14, 14]."""

    num_views = 3
    front = 1

    def __init__(self, num_classes: int = 10, width: int = 32, keypoints: int = 0):
        super().__init__()
        self.num_classes = num_classes
        for v in range(self.num_views):
            self.add_module(f"enc_{v}", LiteEncoder(3 + num_classes, width))
        c = self.enc_0.out_channels
        for v in (0, 2):
            self.add_module(f"att_{v}", AttentionGate(c, c, c // 2))
        self.out_features = self.num_views * c
        if keypoints:
            for v in range(self.num_views):
                self.add_module(f"kp_{v}", LiteKeypointHead(c, keypoints))
        self.keypoints = keypoints
        self.last_keypoints: Tensor | None = None   # [B, views, K, 2] px of the last training forward

    def full_resolution_input(self, x: Tensor) -> Tensor:
        """[B, 4, H, W] -> [B, 3 + classes, H, W]: RGB and the labels one-hot.
        One-hot by comparison (Equal + Cast in ONNX): the label index is a category, not a quantity."""
        classes = torch.arange(self.num_classes, dtype=x.dtype, device=x.device)[None, :, None, None]
        return torch.cat([x[:, :3], (x[:, 3:4] == classes).to(x.dtype)], dim=1)

    def view_input(self, x: Tensor) -> Tensor:
        """[B, 4, H, W] -> [B, 3 + classes, H/2, W/2]: RGB averaged 2x2, labels as class fractions."""
        return F.avg_pool2d(self.full_resolution_input(x), POOL)

    def encode(self, x0: Tensor, x1: Tensor, x2: Tensor) -> list[Tensor]:
        """Each view's encoder map [B, 4w, 14, 14], in view order."""
        return [getattr(self, f"enc_{v}")(self.view_input(x)) for v, x in enumerate((x0, x1, x2))]

    def keypoints_of(self, feats: list[Tensor]) -> Tensor:
        """Encoder maps -> keypoints [B, views, K, 2] px (needs the architecture's ``keypoints``)."""
        if not self.keypoints:
            raise ValueError("this network has no keypoint heads (architecture unet.keypoints = 0)")
        return torch.stack([getattr(self, f"kp_{v}")(f) for v, f in enumerate(feats)], dim=1)

    def forward(self, x0: Tensor, x1: Tensor, x2: Tensor) -> Tensor:
        feats = self.encode(x0, x1, x2)
        self.last_keypoints = None
        if self.keypoints and self.training:      # the training target (the export asks: fuse_with_keypoints)
            self.last_keypoints = self.keypoints_of(feats)
        return self.fuse(feats)

    def fuse_with_keypoints(self, x0: Tensor, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
        """(the fused map, keypoints [B, views, K, 2] px) in any mode: what the exported graph's
        ``keypoints`` output is made of (the refinement's detector-free landmarks)."""
        feats = self.encode(x0, x1, x2)
        return self.fuse(feats), self.keypoints_of(feats)

    def fuse(self, feats: list[Tensor]) -> Tensor:
        """Each view's encoder map -> the fused map (the side views gated by the front one)."""
        front = feats[self.front]
        gated = [front if v == self.front else getattr(self, f"att_{v}")(front, f) for v, f in enumerate(feats)]
        return torch.cat(gated, dim=1)


class LiteRegressor(nn.Module):
    """Fused map [B, C, 14, 14] -> coefficients [B, layout.size] (float32, COEFFS order)."""

    def __init__(self, layout: CoefficientLayout = COEFFS, in_channels: int = 384, channels: int = 128,
                 readout_channels: int = 8, group_channels: int = 16):
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, channels, 1, bias=False), nn.BatchNorm2d(channels),
                                    nn.ReLU(inplace=True))
        self.block = Bottleneck(channels, channels, 1, group_channels)
        self.spatial_reduce = nn.Conv2d(channels, readout_channels, 1)
        head_inputs = readout_channels * MAP_SIZE * MAP_SIZE
        self.head_order = [name for name, _ in head_names(layout)]
        for name, width in head_names(layout):
            self.add_module(name, nn.Conv2d(head_inputs, width, 1))

    def forward(self, fused: Tensor) -> Tensor:
        if tuple(fused.shape[2:]) != (MAP_SIZE, MAP_SIZE):
            raise ValueError(f"the lite regressor reads a {MAP_SIZE}x{MAP_SIZE} map (a {LITE_INPUT_SIZE}-px "
                             f"input); got {tuple(fused.shape[2:])}")
        x = self.block(self.reduce(fused))
        pooled = self.spatial_reduce(x).flatten(1)[:, :, None, None]
        return torch.cat([getattr(self, name)(pooled).flatten(1) for name in self.head_order], dim=1)
