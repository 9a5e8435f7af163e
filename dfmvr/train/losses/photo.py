"""Photometric loss with DF-MVR's label-derived pixel weights.

The weight map comes from the input's parse labels (``layout.PARSE_CLASSES``): facial features
(brows, eyes, nose, mouth, lips) weigh 254, skin within a 10x10 dilation of the features 254, other
skin 128, background 32. The same map is used for every view (the official code gives the left
view's features 0.99 by mistake; we do not).

Saturated photo values are bounds, not values (``docs/losses.md``): where a photo channel reads 255
the scene was at least that bright (at 0, at most that dark), so the rendered colour (SH-lit,
unclipped) is clipped to that bound there and only there. A render of 1.3 over a 255 pixel then costs nothing, while the same
render over a 200 pixel still costs and keeps its gradient (clipping the whole render would cut it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["FEATURE_CLASSES", "SKIN_CLASS", "PHOTO_WEIGHTS", "dilate_mask", "photo_weight_map",
           "downscale_photos_labels", "downscaled_dilation", "clip_to_saturation", "photometric_loss"]

SKIN_CLASS = 1
FEATURE_CLASSES = (2, 3, 4, 5, 6, 7, 8, 9)   # brows, eyes, nose, mouth (inner), upper/lower lip
# (feature, skin near features, other skin, background)
PHOTO_WEIGHTS = (254.0, 254.0, 128.0, 32.0)


def dilate_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Binary dilation of ``mask`` [..., H, W] (bool) by a ``size`` x ``size`` square.

    Same anchor as ``cv2.dilate`` with a ``size`` x ``size`` kernel: each output pixel reads offsets
    -(size // 2) .. (size - 1) // 2 of the input, so an even size is asymmetric like OpenCV's.
    Returns bool [..., H, W].
    """
    if size <= 1:
        return mask.clone()
    lead = mask.shape[:-2]
    x = mask.reshape(-1, 1, *mask.shape[-2:]).float()
    lo, hi = size // 2, (size - 1) // 2
    # The output pixel (i, j) must see rows i - lo .. i + hi (cv2's anchor at size // 2); max-pool
    # reads the window below/right of its origin, so pad lo before and hi after.
    x = F.pad(x, (lo, hi, lo, hi), value=0.0)
    out = F.max_pool2d(x, kernel_size=size, stride=1)
    return out.reshape(*lead, *mask.shape[-2:]) > 0.5


def photo_weight_map(labels: torch.Tensor, dilation: int = 10,
                     weights: tuple[float, float, float, float] = PHOTO_WEIGHTS) -> torch.Tensor:
    """Parse labels [..., H, W] (int, classes 0-9) -> per-pixel weights [..., H, W] float32.

    features -> weights[0]; skin within a ``dilation`` x ``dilation`` dilation of the features ->
    weights[1]; other skin -> weights[2]; everything else (background) -> weights[3].
    """
    feature = torch.zeros_like(labels, dtype=torch.bool)
    for c in FEATURE_CLASSES:
        feature |= labels == c
    skin = labels == SKIN_CLASS
    near = dilate_mask(feature, dilation) & skin
    w_feat, w_near, w_skin, w_bg = weights
    out = torch.full(labels.shape, w_bg, dtype=torch.float32, device=labels.device)
    out = torch.where(skin, torch.tensor(w_skin, device=labels.device), out)
    out = torch.where(near, torch.tensor(w_near, device=labels.device), out)
    out = torch.where(feature, torch.tensor(w_feat, device=labels.device), out)
    return out


def downscale_photos_labels(photos: torch.Tensor, labels: torch.Tensor, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """photos [..., 3, H, W] box-averaged and labels [..., H, W] subsampled (one pixel per
    ``factor`` x ``factor`` block: classes are not blendable) to 1/``factor`` of the size: what
    ``Camera.downscaled(factor)`` sees, for a render at that size."""
    if factor == 1:
        return photos, labels
    lead, (c, h, w) = photos.shape[:-3], photos.shape[-3:]
    small = F.avg_pool2d(photos.reshape(-1, c, h, w), factor).reshape(*lead, c, h // factor, w // factor)
    return small, labels[..., factor // 2::factor, factor // 2::factor].contiguous()


def downscaled_dilation(dilation: int, factor: int) -> int:
    """The weight map's dilation (pixels) for labels at 1/``factor`` of the size
    (``downscale_photos_labels``): the same reach on the face, at least one pixel."""
    return max(1, int(dilation) // int(factor))


def clip_to_saturation(rendered: torch.Tensor, target: torch.Tensor, level: float = 0.5 / 255.0) -> torch.Tensor:
    """``rendered`` with each channel clipped to 1 where ``target`` is saturated high (within
    ``level`` of 1, i.e. 8-bit 255) and to 0 where it is saturated low; unchanged elsewhere. Same
    shape as the inputs (any, elementwise)."""
    out = torch.where(target >= 1.0 - level, rendered.clamp(max=1.0), rendered)
    return torch.where(target <= level, out.clamp(min=0.0), out)


def photometric_loss(rendered: torch.Tensor, target: torch.Tensor, coverage: torch.Tensor,
                     weight_map: torch.Tensor, view_mask: torch.Tensor | None = None,
                     eps: float = 1e-10) -> torch.Tensor:
    """Weighted per-pixel L2 colour distance inside the rendered face (scalar).

    rendered   [B, V, 3, H, W] float, rendered colours, [0, 1] units
    target     [B, V, 3, H, W] float, input photos in [0, 1]
    coverage   [B, V, H, W]    float in [0, 1] (or bool): where the render covers the face
    weight_map [B, V, H, W]    float, from ``photo_weight_map``
    view_mask  [B, V] bool, optional: views that take part (missing / dropped views excluded)

    loss = Σ w·c·‖clip_to_saturation(rendered, target) − target‖₂ / Σ w·c, over every pixel of
    every used view.
    """
    rendered = clip_to_saturation(rendered, target)
    w = weight_map * coverage.to(weight_map.dtype)
    if view_mask is not None:
        w = w * view_mask.to(w.dtype)[:, :, None, None]
    # sqrt(x + eps) keeps the gradient finite where a pixel matches exactly.
    dist = torch.sqrt(((rendered - target) ** 2).sum(dim=2) + eps)
    return (w * dist).sum() / w.sum().clamp_min(1e-6)
