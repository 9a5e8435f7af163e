"""Landmark losses, similarity alignment and the regularisers on constructed cases."""

import numpy as np
import pytest
import torch

from dfmvr.face.geometry import rotation_matrix
from dfmvr.train.losses.landmarks import (landmark_2d_loss, landmark_3d_loss, landmark_weights,
                                          similarity_transform)
from dfmvr.train.losses.regularizers import (coefficient_regularizer, gamma_regularizer,
                                             reflectance_regularizer)


def test_landmark_weights_paper_and_official():
    w = landmark_weights()
    assert w[[28, 29, 30]].tolist() == [20.0] * 3 and w[60:68].eq(20).all()
    assert w[27] == 1 and w[31] == 1 and w[36:48].eq(1).all() and w[59] == 1
    assert landmark_weights(eyes=True)[36:48].eq(20).all()
    assert int((w == 20).sum()) == 11


def test_landmark_2d_loss_weighting():
    target = torch.zeros(1, 3, 68, 2)
    pred = target.clone()
    pred[0, 1, 30] = torch.tensor([3.0, 4.0])           # nose tip 5 px off in the front view
    w = landmark_weights()
    assert landmark_2d_loss(pred, target, w).item() == pytest.approx(20 * 25 / (3 * 68))
    vis = torch.ones(1, 3, 68)
    vis[0, 1, 30] = 0
    assert landmark_2d_loss(pred, target, w, visibility=vis).item() == 0.0
    pred2 = target.clone()
    pred2[0, 1, 0] = torch.tensor([3.0, 4.0])           # a jaw point counts 1
    assert landmark_2d_loss(pred2, target, w).item() == pytest.approx(25 / (3 * 68))
    assert landmark_2d_loss(pred, target, w, view_mask=torch.tensor([[True, False, True]])).item() == 0.0


def test_similarity_transform_recovers_known_transform():
    rng = np.random.default_rng(0)
    src = torch.from_numpy(rng.normal(size=(2, 10, 3)).astype(np.float32))
    rot = torch.from_numpy(rotation_matrix(np.array([[0.3, -0.5, 0.2], [1.0, 0.1, -0.7]])))
    scale = torch.tensor([1.7, 0.6])
    t = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.5]])
    dst = scale[:, None, None] * src @ rot.transpose(1, 2) + t[:, None]
    s, r, tt = similarity_transform(src, dst)
    assert torch.allclose(s, scale, atol=1e-4) and torch.allclose(r, rot, atol=1e-4)
    assert torch.allclose(tt, t, atol=1e-4)


def test_landmark_3d_loss_invariant_to_similarity_not_to_shape():
    rng = np.random.default_rng(1)
    gt = torch.from_numpy(rng.normal(size=(1, 68, 3)).astype(np.float32))
    rot = torch.from_numpy(rotation_matrix(np.array([[0.2, 0.4, -0.1]])))
    moved = 2.0 * gt @ rot.transpose(1, 2) + torch.tensor([0.5, -1.0, 3.0])
    assert landmark_3d_loss(moved, gt).item() == pytest.approx(0.0, abs=1e-8)
    bent = moved.clone().requires_grad_(True)
    with torch.no_grad():
        bent[0, 0] += torch.tensor([0.0, 1.0, 0.0])       # a jaw point off (not one of the 7)
    loss = landmark_3d_loss(bent, gt)
    assert loss.item() > 1e-3
    loss.backward()
    assert bent.grad[0, 0].abs().sum() > 0 and bent.grad[0, 1].abs().sum() < 1e-6


def test_coefficient_regularizer_weights():
    i, e, t = torch.zeros(2, 80), torch.zeros(2, 64), torch.zeros(2, 80)
    i[:, 0] = 1.0
    e[:, 0] = 1.0
    t[:, 0] = 1.0
    assert coefficient_regularizer(i, e, t).item() == pytest.approx(1.0 + 0.8 + 0.017)
    assert coefficient_regularizer(2 * i, 0 * e, 0 * t).item() == pytest.approx(4.0)


def test_gamma_regularizer_zero_for_white_light():
    white = torch.arange(9.0).repeat(3)[None]             # identical R, G, B bands
    assert gamma_regularizer(white).item() == 0.0
    red = white.clone()
    red[0, 0] += 3.0                                      # more red DC
    assert gamma_regularizer(red).item() == pytest.approx((4 + 1 + 1) / 27)


def test_reflectance_regularizer_uses_albedo_on_skin_only():
    albedo = torch.full((1, 4, 3), 0.5)
    skin = torch.tensor([True, True, True, False])
    albedo[0, 3] = 0.0                                    # non-skin vertex: ignored
    assert reflectance_regularizer(albedo, skin).item() == 0.0
    albedo[0, 0] = 0.8                                    # one skin vertex differs
    mean = torch.tensor([0.6, 0.6, 0.6])
    want = (((albedo[0, :3] - mean) ** 2).sum() / 3).item()
    assert reflectance_regularizer(albedo, skin).item() == pytest.approx(want, rel=1e-5)
