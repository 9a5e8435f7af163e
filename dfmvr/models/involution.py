"""Involution: the ``dfmvr::Involution`` torch custom op and the RedNet ``Involution`` module.

The op's name, attributes and semantics are defined once in :mod:`dfmvr.kernels.op` (``INVOLUTION``,
``involution_reference``); this module registers the torch side of it:

- an eager CPU/GPU implementation that loops over the K*K kernel offsets and accumulates strided
  slices of the padded input, so it never materialises the unfolded [B, C*K*K, Ho*Wo] tensor
  (``involution_unfold`` is the unfold formulation, kept for comparison and benchmarks);
- a fake (meta) implementation, so ``torch.export`` / ``torch.compile`` trace it as one node;
- an autograd formula giving gradients for both ``x`` and ``w``.

Shapes (float32 or float64):
    x [B, C, H, W]          input feature map
    w [B, G*K*K, Ho, Wo]    per-pixel kernels ordered (G, K*K); G = groups, C % G == 0
    y [B, C, Ho, Wo]        Ho = (H + 2p - K) // s + 1, p = (K - 1) // 2
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dfmvr.kernels.op import GROUP_CHANNELS, INVOLUTION, involution_output_size

__all__ = ["involution", "involution_unfold", "Involution", "ConvModule"]


def _check(x: Tensor, w: Tensor, kernel_size: int, stride: int, groups: int) -> tuple[int, int]:
    # Shape errors here are programming errors inside the network, not user input.
    if x.dim() != 4 or w.dim() != 4:
        raise ValueError(f"involution expects x [B,C,H,W] and w [B,G*K*K,Ho,Wo]; got {tuple(x.shape)}, {tuple(w.shape)}")
    if kernel_size % 2 != 1 or stride < 1 or groups < 1 or x.shape[1] % groups:
        raise ValueError(f"involution: bad kernel_size={kernel_size} stride={stride} groups={groups} "
                         f"for {x.shape[1]} channels")
    ho = involution_output_size(x.shape[2], kernel_size, stride)
    wo = involution_output_size(x.shape[3], kernel_size, stride)
    want = (x.shape[0], groups * kernel_size * kernel_size, ho, wo)
    if tuple(w.shape) != want:
        raise ValueError(f"involution: w has shape {tuple(w.shape)}, expected {want} for x {tuple(x.shape)}")
    return ho, wo


def _offset_slice(xp: Tensor, di: int, dj: int, ho: int, wo: int, stride: int) -> Tensor:
    """The [.., Ho, Wo] view of padded ``xp`` read by kernel tap (di, dj)."""
    return xp[..., di: di + stride * (ho - 1) + 1: stride, dj: dj + stride * (wo - 1) + 1: stride]


def _forward_eager(x: Tensor, w: Tensor, kernel_size: int, stride: int, groups: int) -> Tensor:
    b, c, h, wd = x.shape
    k, s, g = kernel_size, stride, groups
    ho, wo = _check(x, w, k, s, g)
    p = (k - 1) // 2
    xg = F.pad(x, (p, p, p, p)).reshape(b, g, c // g, h + 2 * p, wd + 2 * p)
    wg = w.reshape(b, g, k * k, 1, ho, wo)
    # K*K multiply-accumulates of [B, G, C/G, Ho, Wo]: peak extra memory is one output-sized buffer.
    y = torch.zeros((b, g, c // g, ho, wo), dtype=x.dtype, device=x.device)
    for di in range(k):
        for dj in range(k):
            y.addcmul_(wg[:, :, di * k + dj], _offset_slice(xg, di, dj, ho, wo, s))
    return y.reshape(b, c, ho, wo)


@torch.library.custom_op(INVOLUTION.qualname, mutates_args=())
def involution(x: Tensor, w: Tensor, kernel_size: int, stride: int, groups: int) -> Tensor:
    """y [B, C, Ho, Wo] = involution of x [B, C, H, W] with per-pixel kernels w [B, G*K*K, Ho, Wo]."""
    return _forward_eager(x, w, kernel_size, stride, groups)


@involution.register_fake
def _involution_fake(x, w, kernel_size, stride, groups):
    b, c, h, wd = x.shape
    p = (kernel_size - 1) // 2
    ho = (h + 2 * p - kernel_size) // stride + 1
    wo = (wd + 2 * p - kernel_size) // stride + 1
    return x.new_empty((b, c, ho, wo))


def _backward_eager(gy: Tensor, x: Tensor, w: Tensor, kernel_size: int, stride: int, groups: int,
                    need_x: bool, need_w: bool) -> tuple[Tensor | None, Tensor | None]:
    b, c, h, wd = x.shape
    k, s, g = kernel_size, stride, groups
    ho, wo = gy.shape[2], gy.shape[3]
    p = (k - 1) // 2
    xg = F.pad(x, (p, p, p, p)).reshape(b, g, c // g, h + 2 * p, wd + 2 * p)
    wg = w.reshape(b, g, k * k, 1, ho, wo)
    gyg = gy.reshape(b, g, c // g, ho, wo)
    gxp = torch.zeros_like(xg) if need_x else None
    gw = torch.empty((b, g, k * k, ho, wo), dtype=w.dtype, device=w.device) if need_w else None
    for di in range(k):
        for dj in range(k):
            kk = di * k + dj
            if need_w:   # dL/dW[b,g,kk,i,j] = sum over the group's channels of gy * x tap
                gw[:, :, kk] = (gyg * _offset_slice(xg, di, dj, ho, wo, s)).sum(dim=2)
            if need_x:   # scatter each tap's contribution back onto the padded input grid
                _offset_slice(gxp, di, dj, ho, wo, s).addcmul_(wg[:, :, kk], gyg)
    gx = None
    if need_x:
        gx = gxp[..., p: p + h, p: p + wd].reshape(b, c, h, wd)
    if need_w:
        gw = gw.reshape(b, g * k * k, ho, wo)
    return gx, gw


def _setup_context(ctx, inputs, output):
    x, w, kernel_size, stride, groups = inputs
    ctx.save_for_backward(x, w)
    ctx.params = (kernel_size, stride, groups)


def _backward(ctx, grad_y):
    x, w = ctx.saved_tensors
    kernel_size, stride, groups = ctx.params
    need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    gx, gw = _backward_eager(grad_y.contiguous(), x, w, kernel_size, stride, groups, need_x, need_w)
    return gx, gw, None, None, None


involution.register_autograd(_backward, setup_context=_setup_context)


def involution_unfold(x: Tensor, w: Tensor, kernel_size: int, stride: int, groups: int) -> Tensor:
    """The same op through ``F.unfold`` (materialises [B, C*K*K, Ho*Wo]); for comparison only."""
    b, c, h, wd = x.shape
    k, s, g = kernel_size, stride, groups
    ho, wo = _check(x, w, k, s, g)
    cols = F.unfold(x, k, padding=(k - 1) // 2, stride=s).view(b, g, c // g, k * k, ho, wo)
    return (cols * w.view(b, g, 1, k * k, ho, wo)).sum(dim=3).view(b, c, ho, wo)


class ConvModule(nn.Module):
    """conv -> (BN) -> (ReLU), with mmcv's attribute names (``conv``, ``bn``) so official keys load."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, bias: bool = False, norm: bool = True, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=bias)
        self.bn = nn.BatchNorm2d(out_channels) if norm else None
        self.act = nn.ReLU(inplace=True) if act else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.act is not None:
            x = self.act(x)
        return x


class Involution(nn.Module):
    """RedNet's involution layer: a kernel generator plus the ``dfmvr::Involution`` op.

    Kernel generator: 1x1 conv C -> C/r (no bias) + BN + ReLU (``conv1``), 1x1 conv C/r -> K*K*G with
    bias (``conv2``), reading AvgPool(s) of the input when stride s > 1. G = C / group_channels.
    x [B, C, H, W] float32 -> [B, C, Ho, Wo].
    """

    def __init__(self, channels: int, kernel_size: int, stride: int = 1,
                 group_channels: int = GROUP_CHANNELS, reduction_ratio: int = 4):
        super().__init__()
        if channels % group_channels:
            raise ValueError(f"involution channels {channels} must be a multiple of {group_channels}")
        self.kernel_size, self.stride = kernel_size, stride
        self.groups = channels // group_channels
        self.conv1 = ConvModule(channels, channels // reduction_ratio, 1)
        self.conv2 = ConvModule(channels // reduction_ratio, kernel_size * kernel_size * self.groups, 1,
                                bias=True, norm=False, act=False)
        self.avgpool = nn.AvgPool2d(stride, stride) if stride > 1 else None

    def forward(self, x: Tensor) -> Tensor:
        src = self.avgpool(x) if self.avgpool is not None else x
        weight = self.conv2(self.conv1(src))
        return involution(x, weight, self.kernel_size, self.stride, self.groups)
