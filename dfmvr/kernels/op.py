"""The involution operator's one definition: its name, attributes, shapes and numpy reference.

``dfmvr::Involution(X, W; kernel_size, stride, groups)``, version 1, is shared by the torch custom op
(dfmvr.models), the ONNX schema and function body (dfmvr.export) and the TensorRT plugin (kernels).

Semantics (d-li14's involution, as in RedNet):
    X  [B, C, H, W]                 input feature map
    W  [B, G, K*K, Ho, Wo]          per-pixel kernels, G = groups = C // group_channels
    Y  [B, C, Ho, Wo],  Ho = (H + 2p - K) // s + 1,  p = (K - 1) // 2
    Y[b, c, i, j] = sum_{di, dj} W[b, c // (C/G), di*K + dj, i, j] * Xpad[b, c, s*i + di, s*j + dj]
The network produces W as a [B, G*K*K, Ho, Wo] map ordered (G, K*K); it is the same memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["OpSpec", "INVOLUTION", "GROUP_CHANNELS", "involution_output_size", "involution_reference"]


@dataclass(frozen=True)
class OpSpec:
    domain: str
    name: str
    version: int

    @property
    def qualname(self) -> str:          # torch.library name: "dfmvr::Involution"
        return f"{self.domain}::{self.name}"

    @property
    def plugin_namespace(self) -> str:  # TensorRT plugin namespace
        return self.domain


INVOLUTION = OpSpec(domain="dfmvr", name="Involution", version=1)
GROUP_CHANNELS = 16  # channels per involution group in RedNet


def involution_output_size(size: int, kernel_size: int, stride: int) -> int:
    pad = (kernel_size - 1) // 2
    return (size + 2 * pad - kernel_size) // stride + 1


def involution_reference(x: np.ndarray, w: np.ndarray, kernel_size: int, stride: int, groups: int) -> np.ndarray:
    """Direct numpy reference (float64 accumulation). x [B,C,H,W], w [B,G*K*K,Ho,Wo] or [B,G,K*K,Ho,Wo]."""
    b, c, h, wd = x.shape
    k, s, g = kernel_size, stride, groups
    if c % g:
        raise ValueError(f"channels {c} not divisible by groups {g}")
    ho, wo = involution_output_size(h, k, s), involution_output_size(wd, k, s)
    w = np.asarray(w, np.float64).reshape(b, g, k * k, ho, wo)
    p = (k - 1) // 2
    xp = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (p, p), (p, p)))
    xg = xp.reshape(b, g, c // g, h + 2 * p, wd + 2 * p)
    y = np.zeros((b, g, c // g, ho, wo))
    for di in range(k):
        for dj in range(k):
            patch = xg[:, :, :, di: di + s * (ho - 1) + 1: s, dj: dj + s * (wo - 1) + 1: s]
            y += w[:, :, None, di * k + dj] * patch
    return y.reshape(b, c, ho, wo).astype(x.dtype)
