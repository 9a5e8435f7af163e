"""The paper variant is exactly the official architecture: keys, shapes, dtypes, parameter counts."""

from __future__ import annotations

import pytest
import torch

from dfmvr.models.rednet import REDNET_STAGE_BLOCKS, RedNet


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_paper_state_dict_equals_official_key_list(paper_model, official_keys):
    sd = paper_model.state_dict()
    assert sorted(sd) == sorted(official_keys)
    for key, (shape, dtype) in official_keys.items():
        assert tuple(sd[key].shape) == shape, key
        assert str(sd[key].dtype).replace("torch.", "") == dtype, key


def test_paper_parameter_counts_equal_reference(paper_model):
    assert _count(paper_model.uuunet) == 80_263_236            # includes the dead conv9
    assert _count(paper_model.uuunet.conv9) == 64 * 256 * 9 + 64 + 2 * 64 + 64 * 64 * 9 + 64 + 2 * 64
    assert _count(paper_model.rednet_fc) == 16_901_963         # includes the dead pts_net
    assert _count(paper_model.rednet_fc.rednet.pts_net) == 2_786_112
    assert _count(paper_model.mask_model) == 13_296_960
    assert _count(paper_model) == 110_462_159
    assert sum(p.numel() for p in paper_model.parameters() if p.requires_grad) == 97_165_199


def test_parse_net_keys_match_official_mask_model(paper_model, official_keys):
    want = {k[len("mask_model."):] for k in official_keys if k.startswith("mask_model.")}
    assert set(paper_model.parse_net.state_dict()) == want
    assert len([k for k in official_keys if k.startswith("mask_model.")]) == 191


def test_rednet_depths_and_configurable_input_channels():
    for depth, blocks in REDNET_STAGE_BLOCKS.items():
        net = RedNet(depth=depth, in_channels=12, stem_channels=32, base_channels=16)
        assert [len(getattr(net, f"layer{i}")) for i in range(1, 5)] == list(blocks)
        assert net.stem[0].conv.in_channels == 12
        assert net.feat_dim == 16 * 4 * 8
    net = RedNet(depth=26, in_channels=12, stem_channels=32, base_channels=16).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 12, 64, 64))
    assert tuple(out.shape) == (2, 512, 1, 1)


def test_paper_forward_at_small_input(paper_model):
    # The full official graph (topology allows any multiple of 32); 224 is in the slow test below.
    paper_model.eval()
    with torch.no_grad():
        coeffs, labels = paper_model(torch.rand(1, 3, 3, 32, 32) * 2 - 1)
        feature = paper_model.uuunet(*(torch.zeros(1, 4, 32, 32),) * 3)
    assert coeffs.shape == (1, 269) and labels.shape == (1, 3, 32, 32)
    assert feature.shape == (1, 256, 32, 32)


@pytest.mark.slow
def test_paper_forward_at_224(paper_model):
    paper_model.eval()
    with torch.no_grad():
        coeffs, labels = paper_model(torch.rand(1, 3, 3, 224, 224) * 2 - 1)
    assert coeffs.shape == (1, 269) and labels.shape == (1, 3, 224, 224)
    assert torch.isfinite(coeffs).all()
