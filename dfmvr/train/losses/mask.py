"""Mask (parse-consistency) loss: the frozen parse net reads the rendered face, its labels must match.

The rendered face is composited over the input photo (outside the render's coverage the photo shows
through), the frozen parse net segments the composite, and the cross entropy against the input's
label map is the loss. Unlike the official code the render is not detached, so the gradient flows
through the (frozen) parse net into the rendered colours and the geometry, and any batch size works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["parse_logits", "composite", "mask_loss"]


def parse_logits(parse_net: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Run ``parse_net`` on images [N, 3, H, W] in [-1, 1]; return the main logits [N, C, H, W].

    BiSeNet returns (main, aux16, aux32) in training mode; only the main output is used.
    """
    out = parse_net(images)
    if isinstance(out, (tuple, list)):
        out = out[0]
    if out.shape[-2:] != images.shape[-2:]:
        out = F.interpolate(out, size=images.shape[-2:], mode="bilinear", align_corners=True)
    return out


def composite(rendered: torch.Tensor, coverage: torch.Tensor, photo: torch.Tensor) -> torch.Tensor:
    """rendered [..., 3, H, W] over photo [..., 3, H, W] with coverage [..., H, W] in [0, 1]."""
    c = coverage.to(rendered.dtype).unsqueeze(-3)
    return rendered * c + photo * (1.0 - c)


def mask_loss(parse_net: nn.Module, rendered: torch.Tensor, coverage: torch.Tensor,
              photo: torch.Tensor, labels: torch.Tensor, view_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Cross entropy of the parse net on the rendered composite against the input labels (scalar).

    rendered [B, V, 3, H, W] float in [0, 1]; coverage [B, V, H, W] in [0, 1]; photo [B, V, 3, H, W]
    in [0, 1]; labels [B, V, H, W] int64 (parse classes); view_mask [B, V] bool, optional.
    ``parse_net`` must be in eval mode with frozen parameters (the caller's job); gradients still
    flow through it to ``rendered``.
    """
    b, v, _, h, w = rendered.shape
    comp = composite(rendered, coverage, photo).reshape(b * v, 3, h, w)
    logits = parse_logits(parse_net, comp * 2.0 - 1.0)                      # [B*V, C, H, W]
    ce = F.cross_entropy(logits.float(), labels.reshape(b * v, h, w).long(), reduction="none")
    ce = ce.reshape(b, v, h * w).mean(-1)                                    # [B, V]
    if view_mask is None:
        return ce.mean()
    m = view_mask.to(ce.dtype)
    return (ce * m).sum() / m.sum().clamp_min(1.0)
