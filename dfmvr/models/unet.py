"""MulEn-Unet: three unshared encoders (one per view) and a shared decoder with attention gates.

Module names follow the official ``uuunet`` (``conv{level}_{view}``, ``att{level}_{view}``,
``up6..up9``, ``conv6..conv9``). Widths are configurable; ``paper`` uses 64/128/256/512/1024.

Input: three views x_v [B, in_channels, H, W] (RGB in [-1, 1] + parse label value), H, W multiples of
16. Output: the fusion feature [B, 4 * widths[0], H, W] (the last concatenation; ``conv9`` exists so
that official weights load strictly, but the official forward never calls it, nor does this one).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["DoubleConv", "AttentionGate", "MulEnUnet", "PAPER_UNET_ARGS"]

PAPER_UNET_ARGS = {"in_channels": 4, "widths": [64, 128, 256, 512, 1024], "out_channels": 64}


class DoubleConv(nn.Module):
    """(3x3 conv with bias -> BN -> ReLU) x 2, as ``conv`` (indices 0, 1, 3, 4 hold weights)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class AttentionGate(nn.Module):
    """Additive attention gate: x * sigmoid(BN(psi(ReLU(BN(W_g g) + BN(W_x x))))). g, x [B, C, H, W]."""

    def __init__(self, f_g: int, f_l: int, f_int: int):
        super().__init__()
        self.W_g = nn.Sequential(nn.Conv2d(f_g, f_int, 1), nn.BatchNorm2d(f_int))
        self.W_x = nn.Sequential(nn.Conv2d(f_l, f_int, 1), nn.BatchNorm2d(f_int))
        self.psi = nn.Sequential(nn.Conv2d(f_int, 1, 1), nn.BatchNorm2d(1), nn.Sigmoid())

    def forward(self, g: Tensor, x: Tensor) -> Tensor:
        return x * self.psi(torch.relu(self.W_g(g) + self.W_x(x)))


class MulEnUnet(nn.Module):
    """Multi-encoder attention U-Net. ``widths`` are the five encoder level widths."""

    num_views = 3

    def __init__(self, in_channels: int = 4, widths: Sequence[int] = (64, 128, 256, 512, 1024),
                 out_channels: int = 64):
        super().__init__()
        if len(widths) != 5:
            raise ValueError(f"MulEn-Unet needs 5 level widths, got {widths}")
        w = list(widths)
        self.out_features = 4 * w[0]
        for v in range(self.num_views):
            cin = in_channels
            for level in range(5):
                self.add_module(f"conv{level + 1}_{v}", DoubleConv(cin, w[level]))
                cin = w[level]
        self.pool = nn.MaxPool2d(2)
        # Decoder: up6 reads the concatenated bottlenecks; each conv reads [up, 3 gated skips].
        self.up6 = nn.ConvTranspose2d(3 * w[4], w[3], 2, stride=2)
        self.conv6 = DoubleConv(4 * w[3], w[3])
        self.up7 = nn.ConvTranspose2d(w[3], w[2], 2, stride=2)
        self.conv7 = DoubleConv(4 * w[2], w[2])
        self.up8 = nn.ConvTranspose2d(w[2], w[1], 2, stride=2)
        self.conv8 = DoubleConv(4 * w[1], w[1])
        self.up9 = nn.ConvTranspose2d(w[1], w[0], 2, stride=2)
        self.conv9 = DoubleConv(4 * w[0], out_channels)   # dead in the official model; kept for loading
        for v in range(self.num_views):
            for level in range(4):
                self.add_module(f"att{level + 1}_{v}", AttentionGate(w[level], w[level], w[level] // 2))

    def _encode(self, x: Tensor, v: int) -> list[Tensor]:
        skips = []
        for level in range(5):
            if level:
                x = self.pool(x)
            x = getattr(self, f"conv{level + 1}_{v}")(x)
            skips.append(x)
        return skips

    def forward(self, x0: Tensor, x1: Tensor, x2: Tensor) -> Tensor:
        """Views left, front, right [B, in_channels, H, W] -> fusion feature [B, 4*w0, H, W]."""
        enc = [self._encode(x, v) for v, x in enumerate((x0, x1, x2))]
        d = torch.cat([e[4] for e in enc], dim=1)
        for level, up, conv in ((4, self.up6, self.conv6), (3, self.up7, self.conv7),
                                (2, self.up8, self.conv8), (1, self.up9, None)):
            g = up(d)
            gated = [getattr(self, f"att{level}_{v}")(g, enc[v][level - 1]) for v in range(self.num_views)]
            d = torch.cat([g, *gated], dim=1)
            if conv is not None:
                d = conv(d)
        return d
