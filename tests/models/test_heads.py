"""The regressor's readout of RedNet's last map: the official global average, or the spatial readout."""

from __future__ import annotations

import pytest
import torch

from dfmvr.face.layout import COEFFS
from dfmvr.models.checkpoint import load_checkpoint, save_checkpoint
from dfmvr.models.heads import RedNetRegressor
from dfmvr.models.variants import build_model, make_card
from tests.models.conftest import assert_export_parity

SMALL_REDNET = {"depth": 26, "in_channels": 4, "stem_channels": 32, "base_channels": 16, "group_channels": 16}


def spatial_card():
    card = make_card("tiny")
    card.architecture = {**card.architecture, "rednet": {**card.architecture["rednet"], "pool": "spatial"}}
    return card


def test_only_the_spatial_readout_sees_where_a_feature_is():
    """Two maps with the same feature at two places: the global average cannot tell them apart (why the
    tiny demo learned no identity, docs/training.md); the spatial readout can."""
    torch.manual_seed(0)
    average = RedNetRegressor(**SMALL_REDNET).eval()
    spatial = RedNetRegressor(pool="spatial", **SMALL_REDNET).eval()
    here, there = torch.zeros(1, average.rednet.feat_dim, 7, 7), torch.zeros(1, average.rednet.feat_dim, 7, 7)
    here[:, :, 1, 2], there[:, :, 5, 4] = 1.0, 1.0
    with torch.no_grad():
        torch.testing.assert_close(average.readout(here), average.readout(there))
        assert (spatial.readout(here) - spatial.readout(there)).abs().max() > 1e-3
        assert spatial.readout(here).shape == (1, 32 * 7 * 7, 1, 1)


def test_spatial_readout_is_a_linear_map_of_the_whole_map():
    torch.manual_seed(1)
    spatial = RedNetRegressor(pool="spatial", spatial_channels=4, **SMALL_REDNET).eval()
    m = torch.randn(2, spatial.rednet.feat_dim, 7, 7)
    w, b = spatial.spatial_reduce.weight[:, :, 0, 0], spatial.spatial_reduce.bias
    want = (torch.einsum("kc,bchw->bkhw", w, m) + b[None, :, None, None]).reshape(2, -1)
    torch.testing.assert_close(spatial.readout(m)[:, :, 0, 0], want, atol=1e-5, rtol=1e-5)


def test_spatial_readout_rejects_a_map_of_another_size():
    spatial = RedNetRegressor(pool="spatial", **SMALL_REDNET)
    with pytest.raises(ValueError, match="7x7 map"):
        spatial(torch.randn(1, 4, 160, 160))


def test_unknown_pooling_is_an_error():
    with pytest.raises(ValueError, match="pool 'max'"):
        RedNetRegressor(pool="max", **SMALL_REDNET)


def test_cards_without_the_key_keep_the_official_average_and_key_layout():
    """Official and earlier checkpoints have no 'pool' key: they must build the same modules as before."""
    names = set(build_model("tiny").state_dict())
    assert not any("spatial_reduce" in n for n in names)
    spatial = build_model(spatial_card())
    extra = set(spatial.state_dict()) - names
    assert extra == {"rednet_fc.spatial_reduce.weight", "rednet_fc.spatial_reduce.bias"}
    coefficients, _ = spatial.eval()(torch.zeros(1, 3, 3, 224, 224))
    assert coefficients.shape == (1, COEFFS.size)


@pytest.mark.slow      # a full export (~30 s): the README's fast suite already exports tiny twice
def test_readout_options_round_trip_and_export_parity(tmp_path):
    """The card carries the readouts (spatial pooling and the keypoint readout, both in one model so
    that one export covers both): a checkpoint reloads with them, and the real export's parity gate
    (ONNX Runtime against PyTorch, coefficients and mesh mm) passes."""
    torch.manual_seed(0)
    card = spatial_card()
    card.architecture["rednet"]["keypoints"] = 68
    model = build_model(card).eval()
    path = save_checkpoint(tmp_path / "spatial.safetensors", model, model.card)
    loaded, card, _ = load_checkpoint(path, load_train_state=False)
    assert card.architecture["rednet"]["pool"] == "spatial" and card.architecture["rednet"]["keypoints"] == 68
    x = torch.randn(1, 3, 3, 224, 224).clamp(-1, 1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)[0], model(x)[0])
    assert_export_parity(path, tmp_path / "export")
