"""RedNet (involution ResNet) regressor trunk, depths 26/38/50/101, input channels configurable.

Module names follow mmcls/RedNet as used by DF-MVR's ``rednet_fc.rednet`` (``stem.*``,
``layer{i}.{j}.conv1/bn1/conv2/bn2/conv3/bn3/downsample``, ``pts_net``).

Input: feature [B, in_channels, H, W]; output: pooled [B, feat_dim, 1, 1], feat_dim = 32 * base_channels
(after 4 stages with expansion 4). ``pts_net`` (an unused 3-layer MLP present in the official
checkpoint) is built only when asked for, so that official weights load strictly.
"""

from __future__ import annotations

from torch import Tensor, nn

from dfmvr.kernels.op import GROUP_CHANNELS

from .involution import ConvModule, Involution

__all__ = ["RedNet", "Bottleneck", "REDNET_STAGE_BLOCKS", "PAPER_REDNET_ARGS"]

REDNET_STAGE_BLOCKS = {26: (1, 2, 4, 1), 38: (2, 3, 5, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
PAPER_REDNET_ARGS = {"depth": 50, "in_channels": 256, "stem_channels": 64, "base_channels": 64,
                     "group_channels": GROUP_CHANNELS, "pts_net": True, "pts_outputs": 318}
EXPANSION = 4


class Bottleneck(nn.Module):
    """1x1 conv -> BN -> ReLU -> involution(7, stride) -> BN -> ReLU -> 1x1 conv -> BN, + identity, ReLU."""

    def __init__(self, cin: int, cout: int, stride: int, group_channels: int):
        super().__init__()
        mid = cout // EXPANSION
        self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = Involution(mid, 7, stride, group_channels)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class RedNet(nn.Module):
    def __init__(self, depth: int = 50, in_channels: int = 256, stem_channels: int = 64,
                 base_channels: int = 64, group_channels: int = GROUP_CHANNELS,
                 pts_net: bool = False, pts_outputs: int = 318):
        super().__init__()
        if depth not in REDNET_STAGE_BLOCKS:
            raise ValueError(f"RedNet depth {depth} is not one of {sorted(REDNET_STAGE_BLOCKS)}")
        self.in_channels = in_channels
        half = stem_channels // 2
        self.stem = nn.Sequential(
            ConvModule(in_channels, half, 3, stride=2, padding=1),
            Involution(half, 3, 1, group_channels),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            ConvModule(half, stem_channels, 3, stride=1, padding=1),
        )
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin, cout = stem_channels, base_channels * EXPANSION
        for i, blocks in enumerate(REDNET_STAGE_BLOCKS[depth]):
            stride = 1 if i == 0 else 2
            layer = [Bottleneck(cin, cout, stride, group_channels)]
            layer += [Bottleneck(cout, cout, 1, group_channels) for _ in range(blocks - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*layer))
            cin, cout = cout, cout * 2
        self.feat_dim = cin
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        # Unused by the official forward; only present so the official state dict loads strictly.
        self.pts_net = nn.Sequential(
            nn.Linear(cin, 1024), nn.PReLU(), nn.Linear(1024, 512), nn.PReLU(), nn.Linear(512, pts_outputs),
        ) if pts_net else None

    def feature_map(self, x: Tensor) -> Tensor:
        """x [B, in_channels, H, W] -> the last stage's map [B, feat_dim, H / 32, W / 32]."""
        x = self.maxpool(self.stem(x))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: Tensor) -> Tensor:
        """x [B, in_channels, H, W] -> pooled feature [B, feat_dim, 1, 1]."""
        return self.avgpool(self.feature_map(x))
