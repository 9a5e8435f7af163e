"""The parse net: BiSeNet with a ResNet-18 context path (face-parsing.PyTorch topology).

Module names follow face-parsing.PyTorch and DF-MVR's ``mask_model`` (``cp.resnet.*``, ``cp.arm16``,
``ffm``, ``conv_out``, ...) so that both public weight files load strictly:

- DF-MVR's own ``face_mask.pth``: 10 classes, exactly our ``PARSE_CLASSES``;
- face-parsing.PyTorch's ``79999_iter.pth``: 19 CelebAMask-HQ classes, merged onto our 10 with
  ``CELEBAMASK_TO_PARSE`` (see ``merge_matrix``).

Input: x [B, 3, H, W] float32, RGB normalised with mean 0.5 / std 0.5 (values in [-1, 1]); H, W
multiples of 32. Output (eval): logits [B, n, H, W] (log-probabilities when a class merge is set);
in training mode the two auxiliary heads' outputs follow: (main, out16, out32).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dfmvr.face.layout import NUM_PARSE_CLASSES, PARSE_CLASSES

__all__ = ["BiSeNet", "CELEBAMASK_CLASSES", "CELEBAMASK_TO_PARSE", "merge_matrix", "PAPER_PARSE_ARGS"]

# face-parsing.PyTorch / CelebAMask-HQ label order.
CELEBAMASK_CLASSES: tuple[str, ...] = (
    "background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear", "ear_r",
    "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat",
)
# CelebAMask-HQ class -> our parse class. Face parts map one to one (l_/r_ kept as CelebAMask-HQ
# names them). Eyeglasses -> skin: frames sit on the face region the morphable model covers, and
# the photo loss should keep using those pixels. Ears, neck, cloth, hair, hat -> background: the
# front-crop morphable model has none of them, so they must not pull the fit.
CELEBAMASK_TO_PARSE: dict[str, str] = {
    "background": "background", "skin": "skin", "l_brow": "left_brow", "r_brow": "right_brow",
    "l_eye": "left_eye", "r_eye": "right_eye", "eye_g": "skin", "l_ear": "background",
    "r_ear": "background", "ear_r": "background", "nose": "nose", "mouth": "mouth",
    "u_lip": "upper_lip", "l_lip": "lower_lip", "neck": "background", "neck_l": "background",
    "cloth": "background", "hair": "background", "hat": "background",
}

PAPER_PARSE_ARGS = {"num_classes": NUM_PARSE_CLASSES, "widths": [64, 128, 256, 512],
                    "context_channels": 128, "fuse_channels": 256, "aux_mid_channels": 64,
                    "class_map": None}


def merge_matrix(class_map: Sequence[int], num_out: int = NUM_PARSE_CLASSES) -> Tensor:
    """[num_out, num_in] float32 0/1 matrix: row t sums the probabilities of the sources mapped to t."""
    m = torch.zeros(num_out, len(class_map))
    for src, dst in enumerate(class_map):
        m[dst, src] = 1.0
    return m


def celebamask_class_map() -> list[int]:
    """For each of the 19 CelebAMask-HQ classes, the index of our parse class it merges into."""
    return [PARSE_CLASSES.index(CELEBAMASK_TO_PARSE[name]) for name in CELEBAMASK_CLASSES]


class ConvBNReLU(nn.Module):
    def __init__(self, cin: int, cout: int, ks: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, ks, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if cin != cout or stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class ResNet18Trunk(nn.Module):
    """ResNet-18 without its classifier; returns the 1/4, 1/8, 1/16 and 1/32 feature maps."""

    def __init__(self, widths: Sequence[int]):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = widths[0]
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            self.add_module(f"layer{i + 1}", nn.Sequential(BasicBlock(cin, w, stride), BasicBlock(w, w)))
            cin = w

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        feat4 = self.layer1(self.maxpool(F.relu(self.bn1(self.conv1(x)))))
        feat8 = self.layer2(feat4)
        feat16 = self.layer3(feat8)
        feat32 = self.layer4(feat16)
        return feat4, feat8, feat16, feat32


class AttentionRefinement(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = ConvBNReLU(cin, cout)
        self.conv_atten = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:
        feat = self.conv(x)
        atten = torch.sigmoid(self.bn_atten(self.conv_atten(feat.mean(dim=(2, 3), keepdim=True))))
        return feat * atten


class ContextPath(nn.Module):
    def __init__(self, widths: Sequence[int], ctx: int):
        super().__init__()
        self.resnet = ResNet18Trunk(widths)
        self.arm16 = AttentionRefinement(widths[2], ctx)
        self.arm32 = AttentionRefinement(widths[3], ctx)
        self.conv_head32 = ConvBNReLU(ctx, ctx)
        self.conv_head16 = ConvBNReLU(ctx, ctx)
        self.conv_avg = ConvBNReLU(widths[3], ctx, ks=1, padding=0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """-> (the trunk's 1/4 and 1/8 maps, the context at 1/8 and at 1/16)."""
        feat4, feat8, feat16, feat32 = self.resnet(x)
        avg = self.conv_avg(feat32.mean(dim=(2, 3), keepdim=True))   # global context, broadcast below
        feat32_sum = self.arm32(feat32) + avg
        feat32_up = self.conv_head32(F.interpolate(feat32_sum, size=feat16.shape[2:], mode="nearest"))
        feat16_sum = self.arm16(feat16) + feat32_up
        feat16_up = self.conv_head16(F.interpolate(feat16_sum, size=feat8.shape[2:], mode="nearest"))
        return feat4, feat8, feat16_up, feat32_up


class FeatureFusion(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.convblk = ConvBNReLU(cin, cout, ks=1, padding=0)
        self.conv1 = nn.Conv2d(cout, cout // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(cout // 4, cout, 1, bias=False)

    def forward(self, fsp: Tensor, fcp: Tensor) -> Tensor:
        feat = self.convblk(torch.cat([fsp, fcp], dim=1))
        atten = torch.sigmoid(self.conv2(F.relu(self.conv1(feat.mean(dim=(2, 3), keepdim=True)))))
        return feat * atten + feat


class SegmentationHead(nn.Module):
    def __init__(self, cin: int, mid: int, num_classes: int):
        super().__init__()
        self.conv = ConvBNReLU(cin, mid)
        self.conv_out = nn.Conv2d(mid, num_classes, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_out(self.conv(x))


class DetailHead(nn.Module):
    """Classifies at 1/4 of the input instead of 1/8 (``BiSeNet(detail_channels=N)``; not in the
    official topology, so off by default and absent from the paper variant).

    Why: the official parser classifies an 8 x 8 cell per logit and bilinearly upsamples, which rounds
    the corners of the small parts (eye and mouth corners, where landmarks sit) and blurs boundaries
    that cross a cell. The trunk's 1/4 map still sees them. A DeepLabv3+-style decoder: the fused 1/8
    feature, narrowed to N channels before it is upsampled (the 3x3 convolutions at 1/4 are the cost),
    beside a projection of the 1/4 map, then two 3x3 convolutions and the classifier."""

    def __init__(self, trunk_channels: int, fuse_channels: int, channels: int, num_classes: int):
        super().__init__()
        self.narrow = ConvBNReLU(fuse_channels, channels, ks=1, padding=0)
        self.project = ConvBNReLU(trunk_channels, channels, ks=1, padding=0)
        self.fuse = ConvBNReLU(2 * channels, channels)
        self.refine = ConvBNReLU(channels, channels)
        self.conv_out = nn.Conv2d(channels, num_classes, 1, bias=False)

    def forward(self, feat4: Tensor, fused8: Tensor) -> Tensor:
        up = F.interpolate(self.narrow(fused8), size=feat4.shape[2:], mode="bilinear", align_corners=True)
        return self.conv_out(self.refine(self.fuse(torch.cat([up, self.project(feat4)], dim=1))))


class BiSeNet(nn.Module):
    """BiSeNet face parser. ``class_map`` (optional, one target class per output channel) merges the
    classifier's classes onto ``NUM_PARSE_CLASSES`` by summing their softmax probabilities (the merged
    outputs are log-probabilities, so argmax and cross-entropy work on them unchanged).
    ``detail_channels`` > 0 classifies at 1/4 of the input with a ``DetailHead`` of that width (the 1/8
    classifier then becomes a fourth, auxiliary output in training); 0 is the official topology.
    """

    def __init__(self, num_classes: int = NUM_PARSE_CLASSES, widths: Sequence[int] = (64, 128, 256, 512),
                 context_channels: int = 128, fuse_channels: int = 256, aux_mid_channels: int = 64,
                 class_map: Sequence[int] | None = None, detail_channels: int = 0):
        super().__init__()
        self.num_classes = num_classes
        self.cp = ContextPath(widths, context_channels)
        self.ffm = FeatureFusion(widths[1] + context_channels, fuse_channels)
        self.conv_out = SegmentationHead(fuse_channels, fuse_channels, num_classes)
        self.conv_out16 = SegmentationHead(context_channels, aux_mid_channels, num_classes)
        self.conv_out32 = SegmentationHead(context_channels, aux_mid_channels, num_classes)
        self.detail = (DetailHead(widths[0], fuse_channels, detail_channels, num_classes)
                       if detail_channels > 0 else None)
        if class_map is not None:
            if len(class_map) != num_classes:
                raise ValueError(f"class_map has {len(class_map)} entries for {num_classes} classes")
            # Not persistent: the weight files have no such key; the map lives in the model card.
            self.register_buffer("class_merge", merge_matrix(class_map), persistent=False)
        else:
            self.class_merge = None

    @property
    def num_outputs(self) -> int:
        return self.num_classes if self.class_merge is None else int(self.class_merge.shape[0])

    def _merge(self, logits: Tensor) -> Tensor:
        if self.class_merge is None:
            return logits
        probs = torch.einsum("bchw,tc->bthw", logits.softmax(dim=1), self.class_merge)
        return torch.log(probs.clamp_min(1e-12))

    def _up(self, x: Tensor, size) -> Tensor:
        return F.interpolate(self._merge(x), size=size, mode="bilinear", align_corners=True)

    def forward(self, x: Tensor):
        """x [B, 3, H, W] normalised RGB -> logits [B, n, H, W] (eval) or, in training, (main, out16,
        out32), with a detail head (main, the 1/8 classifier's, out16, out32)."""
        size = x.shape[2:]
        feat4, feat8, feat_cp8, feat_cp16 = self.cp(x)
        fused = self.ffm(feat8, feat_cp8)
        if not self.training:
            # The main output only. Beside a detail head the 1/8 classifier is a training target, and
            # skipping it saves an eighth of the parser (88 of 703 MMAC per triplet at 224 px) wherever
            # torch runs it frozen: every main-stage step (the exporter already drops it from the graph).
            return self._up(self.conv_out(fused) if self.detail is None else self.detail(feat4, fused), size)
        coarse = self._up(self.conv_out(fused), size)
        aux = (self._up(self.conv_out16(feat_cp8), size), self._up(self.conv_out32(feat_cp16), size))
        if self.detail is None:
            return (coarse, *aux)
        return (self._up(self.detail(feat4, fused), size), coarse, *aux)

    @torch.no_grad()
    def labels(self, x: Tensor) -> Tensor:
        """x [B, 3, H, W] normalised RGB -> int64 labels [B, H, W] in our PARSE_CLASSES."""
        out = self.forward(x)
        main = out[0] if isinstance(out, tuple) else out
        return main.max(dim=1).indices       # argmax over dim 1 is several times slower on CPU
