"""The keypoint readout (soft-argmax landmarks from the fusion feature) and its loss."""

from __future__ import annotations

import pytest
import torch

from dfmvr.face.layout import COEFFS
from dfmvr.train.losses.keypoints import keypoint_loss
from dfmvr.models.keypoints import KeypointReadout
from dfmvr.models.variants import build_model, make_card


def keypoint_card(pool: str | None = None):
    card = make_card("tiny")
    rednet = {**card.architecture["rednet"], "keypoints": 68}
    if pool:
        rednet["pool"] = pool
    card.architecture = {**card.architecture, "rednet": rednet}
    return card


def test_soft_argmax_finds_a_peak_where_it_is():
    """A heat map that is one sharp peak reads the centre of that cell, in input pixels."""
    readout = KeypointReadout(in_channels=1, keypoints=2, views=1, stride=4)
    heat = torch.full((1, 2, 8, 10), -1e4)
    heat[0, 0, 3, 7] = 0.0                  # cell (row 3, col 7): x = (7 + 0.5) * 4, y = (3 + 0.5) * 4
    heat[0, 1, 0, 0] = 0.0
    readout.heatmaps = lambda feature: heat  # feed the heat map straight in
    kp = readout(torch.zeros(1, 1, 32, 40))
    torch.testing.assert_close(kp[0, 0], torch.tensor([[30.0, 14.0], [2.0, 2.0]]))


def test_uniform_heat_reads_the_centre_and_gradients_reach_the_feature():
    readout = KeypointReadout(in_channels=4, keypoints=3, views=3, stride=8)
    for p in readout.net[-1].parameters():
        torch.nn.init.zeros_(p)             # every map flat
    feature = torch.randn(2, 4, 32, 48, requires_grad=True)
    kp = readout(feature)
    assert kp.shape == (2, 3, 3, 2)
    torch.testing.assert_close(kp, torch.tensor([24.0, 16.0]).expand(2, 3, 3, 2))
    torch.nn.init.normal_(readout.net[-1].weight)
    readout(feature).sum().backward()
    assert feature.grad is not None and feature.grad.abs().sum() > 0


def test_coordinate_channels_let_a_readout_place_a_point_on_a_blank_image():
    """With the coordinate channels, even a constant feature gives position-dependent heat maps (the
    first version could not: its keypoints on a blank input sat at the image centre)."""
    torch.manual_seed(0)
    readout = KeypointReadout(in_channels=4, keypoints=5, views=1, stride=8)
    heat = readout.heatmaps(torch.zeros(1, 4, 64, 64))
    assert heat.flatten(2).std(dim=-1).min() > 0


def test_keypoint_loss_is_the_mean_squared_pixel_distance_over_selected_views():
    kp = torch.zeros(2, 3, 4, 2)
    lm = torch.zeros(2, 3, 4, 2)
    lm[0, 0, :, 0] = 3.0                    # view 0 of sample 0: every point 3 px off (9 px^2)
    lm[1, 2, :, 1] = 100.0                  # a view that is not selected
    views = torch.tensor([[True, True, False], [True, False, False]])
    assert keypoint_loss(kp, lm, views).item() == pytest.approx(9.0 / 3)
    assert keypoint_loss(kp, lm, torch.zeros(2, 3, dtype=torch.bool)).item() == 0.0


def test_card_builds_the_readout_and_the_heads_read_it():
    model = build_model(keypoint_card()).eval()
    extra = set(model.state_dict()) - set(build_model("tiny").state_dict())
    assert extra and all(k.startswith("rednet_fc.keypoint_readout.") for k in extra)
    assert model.rednet_fc.conv2_id.in_channels == model.rednet_fc.rednet.feat_dim + 3 * 68 * 2
    with torch.no_grad():
        coefficients, _ = model(torch.zeros(1, 3, 3, 224, 224))
    assert coefficients.shape == (1, COEFFS.size)
    kp = model.rednet_fc.last_keypoints
    assert kp.shape == (1, 3, 68, 2) and ((kp >= 0) & (kp <= 224)).all()
