"""Photometric weight map / loss and the mask loss on constructed cases."""

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from dfmvr.train.losses.mask import composite, mask_loss
from dfmvr.train.losses.photo import (dilate_mask, downscale_photos_labels, downscaled_dilation, photo_weight_map,
                                      photometric_loss)


@pytest.mark.parametrize("size", [3, 10, 11])
def test_dilation_matches_opencv(size):
    rng = np.random.default_rng(size)
    m = (rng.random((40, 37)) > 0.985).astype(np.uint8)
    want = cv2.dilate(m, np.ones((size, size), np.uint8)) > 0
    got = dilate_mask(torch.from_numpy(m > 0), size).numpy()
    assert (got == want).all()


def _label_map():
    lab = np.zeros((3, 64, 64), np.int64)          # 3 views
    lab[:, 10:54, 10:54] = 1                        # skin square
    lab[:, 30:33, 30:33] = 6                        # nose blob
    return torch.from_numpy(lab)


def test_weight_map_values_in_every_view():
    w = photo_weight_map(_label_map(), dilation=10).numpy()
    for view in range(3):                           # the left view gets 254 too (official bug: 0.99)
        assert w[view, 31, 31] == 254               # feature
        assert w[view, 26, 30] == 254               # skin 4 px above the feature, inside the dilation
        assert w[view, 30, 38] == 128               # skin 6 px right of the feature's last column
        assert w[view, 12, 12] == 128               # far skin
        assert w[view, 2, 2] == 32                  # background
    # the dilated region is exactly the cv2 dilation of the feature, restricted to skin
    feat = (_label_map()[0].numpy() == 6).astype(np.uint8)
    near = (cv2.dilate(feat, np.ones((10, 10), np.uint8)) > 0) & (_label_map()[0].numpy() == 1)
    assert ((w[0] == 254) == (near | (feat > 0))).all()


def test_weight_map_at_half_size_covers_the_same_skin():
    """Labels subsampled to half size with the dilation halved: the feature's near skin is the same
    region of the face (each half-size pixel agrees with the full-size map at its sample point)."""
    full = photo_weight_map(_label_map(), dilation=10).numpy()
    photos = torch.zeros(3, 3, 64, 64)
    _, small_labels = downscale_photos_labels(photos, _label_map(), 2)
    assert downscaled_dilation(10, 2) == 5 and downscaled_dilation(3, 4) == 1
    half = photo_weight_map(small_labels, downscaled_dilation(10, 2)).numpy()
    assert half.shape == (3, 32, 32)
    sampled = full[:, 1::2, 1::2]
    assert (half == sampled).mean() > 0.98              # 0.989; a dilation of 10, 2 or 1 here: 0.94-0.97


def test_photometric_loss_weighting_and_coverage():
    labels = _label_map()[None]                     # [1, 3, H, W]
    w = photo_weight_map(labels)
    target = torch.zeros(1, 3, 3, 64, 64)
    rendered = torch.zeros_like(target)
    coverage = torch.zeros(1, 3, 64, 64)
    coverage[..., 5:60, 5:60] = 1
    assert photometric_loss(rendered, target, coverage, w).item() == pytest.approx(0.0, abs=1e-3)
    # an error outside the coverage costs nothing
    rendered[..., 0:3, 0:3] = 1.0
    assert photometric_loss(rendered, target, coverage, w).item() == pytest.approx(0.0, abs=1e-3)
    # an error of colour distance sqrt(3) on the nose pixels: loss = sqrt(3)*Σw_nose / Σw
    rendered.zero_()
    rendered[..., 30:33, 30:33] = 1.0
    wc = w * coverage
    want = np.sqrt(3) * wc[..., 30:33, 30:33].sum() / wc.sum()
    assert photometric_loss(rendered, target, coverage, w).item() == pytest.approx(want.item(), abs=1e-4)
    # a dropped view contributes nothing
    only_left = torch.zeros_like(rendered)
    only_left[:, 0] = 1.0
    mask = torch.tensor([[False, True, True]])
    assert photometric_loss(only_left, target, coverage, w, mask).item() == pytest.approx(0.0, abs=1e-3)
    assert photometric_loss(only_left, target, coverage, w).item() > 0.5


class _ColourParser(nn.Module):
    """A tiny differentiable 'parse net': class 1 where red dominates, class 0 otherwise."""

    def forward(self, x):                           # x [N, 3, H, W] in [-1, 1]
        logit = 8.0 * (x[:, 0] - x[:, 2])
        return (torch.stack([-logit, logit], 1), None, None)


def test_mask_loss_composite_and_gradient():
    photo = torch.zeros(1, 3, 3, 16, 16)
    photo[:, :, 2] = 1.0                            # a blue photo -> class 0 everywhere
    labels = torch.zeros(1, 3, 16, 16, dtype=torch.long)
    labels[..., 4:12, 4:12] = 1                     # the face should be 'red'
    coverage = torch.zeros(1, 3, 16, 16)
    coverage[..., 4:12, 4:12] = 1
    rendered = torch.zeros(1, 3, 3, 16, 16, requires_grad=True)
    comp = composite(rendered, coverage, photo)
    assert torch.equal(comp[..., 0, 0], photo[..., 0, 0])
    loss = mask_loss(_ColourParser(), rendered, coverage, photo, labels)
    loss.backward()
    g = rendered.grad
    # the gradient asks the covered pixels to become redder, and only those
    assert (g[:, :, 0, 4:12, 4:12] < 0).all()
    assert g[:, :, 0, :4].abs().max() == 0
    red = torch.zeros_like(rendered)
    red[:, :, 0] = 1.0
    assert mask_loss(_ColourParser(), red, coverage, photo, labels) < loss * 1e-3
