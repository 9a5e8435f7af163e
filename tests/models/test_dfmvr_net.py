"""The full model (tiny variant): shapes for 1-3 views and batch 1-4, labels, heads, freezing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dfmvr.card import ModelCard
from dfmvr.face.layout import COEFFS, VIEWS
from dfmvr.models.dfmvr_net import pack_views
from dfmvr.models.heads import head_names
from dfmvr.models.rednet import REDNET_STAGE_BLOCKS
from dfmvr.models.variants import VARIANTS, build_model


@pytest.mark.parametrize("batch,views,size", [
    (1, ("front",), 224), (2, ("left", "right"), 32), (3, ("left", "front", "right"), 32),
    (4, ("front", "right"), 32),
])
def test_output_shapes_and_missing_view_labels(tiny_model, batch, views, size):
    torch.manual_seed(batch)
    images = pack_views({v: torch.rand(batch, 3, size, size) * 2 - 1 for v in views})
    assert tuple(images.shape) == (batch, 3, 3, size, size)
    with torch.no_grad():
        coeffs, labels = tiny_model(images)
    assert coeffs.shape == (batch, COEFFS.size) and coeffs.dtype == torch.float32
    assert labels.shape == (batch, 3, size, size) and labels.dtype == torch.int64
    assert torch.isfinite(coeffs).all()
    with torch.no_grad():
        direct = tiny_model.parse_net(images.flatten(0, 1)).argmax(dim=1).view(batch, 3, size, size)
    for i, name in enumerate(VIEWS):
        if name in views:   # a present view gets exactly the parse net's argmax
            assert torch.equal(labels[:, i], direct[:, i])
        else:               # a missing (all-zero) view is background everywhere
            assert int(labels[:, i].abs().sum()) == 0
    assert int(labels.max()) <= 9 and int(labels.min()) >= 0


def test_batch_rows_are_independent(tiny_model):
    images = torch.rand(3, 3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        full, _ = tiny_model(images)
        one, _ = tiny_model(images[1:2])
    np.testing.assert_allclose(full[1:2].numpy(), one.numpy(), rtol=1e-4, atol=1e-5)


def test_wrong_view_count_is_refused(tiny_model):
    with pytest.raises(ValueError, match="pack_views"):
        tiny_model(torch.zeros(1, 2, 3, 64, 64))
    with pytest.raises(ValueError):
        pack_views({"top": torch.zeros(1, 3, 8, 8)})


def test_heads_fill_the_layout_in_official_order():
    model = build_model("tiny").eval()
    # Zero head weights and distinct biases: the output is the biases in head order.
    biases = []
    for i, (name, width) in enumerate(head_names()):
        conv = getattr(model.rednet_fc, name)
        torch.nn.init.zeros_(conv.weight)
        b = torch.arange(width, dtype=torch.float32) + 100 * i
        conv.bias.data.copy_(b)
        biases.append(b)
    with torch.no_grad():
        coeffs, _ = model(torch.zeros(1, 3, 3, 32, 32))
    assert torch.equal(coeffs[0], torch.cat(biases))
    c = COEFFS.split(coeffs.numpy())
    np.testing.assert_array_equal(c.identity[0], np.arange(80))                 # conv2_id
    np.testing.assert_array_equal(c.lighting[0], np.arange(27) + 300)          # conv2_gamma
    np.testing.assert_array_equal(c.rotation[0, 0], np.arange(3) + 400)        # conv2_rotate_lt
    np.testing.assert_array_equal(c.translation[0, 2], [1100, 1101, 1200])     # xy_rt, z_rt


def test_parse_net_frozen_and_always_eval_while_rest_trains():
    model = build_model("tiny")
    model.train()
    assert not model.parse_net.training and model.uuunet.training
    assert all(not p.requires_grad for p in model.parse_net.parameters())
    coeffs, _ = model(torch.rand(2, 3, 3, 32, 32) * 2 - 1)
    coeffs.square().mean().backward()
    assert all(p.grad is None for p in model.parse_net.parameters())
    assert model.uuunet.conv1_0.conv[0].weight.grad.abs().sum() > 0
    assert model.rednet_fc.conv2_id.weight.grad.abs().sum() > 0


def test_conv9_is_never_called(tiny_model):
    calls = []
    handle = tiny_model.uuunet.conv9.register_forward_hook(lambda *a: calls.append(1))
    try:
        with torch.no_grad():
            tiny_model(torch.zeros(1, 3, 3, 32, 32))
    finally:
        handle.remove()
    assert calls == []


def test_variants_and_cards_rebuild_the_same_architecture():
    assert {"paper", "tiny"} <= set(VARIANTS)
    model = build_model("tiny")
    card = ModelCard.from_json(model.card.to_json())
    again = build_model(card)
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert card.architecture["rednet"]["depth"] == 26 and card.variant == "tiny"
    with pytest.raises(KeyError, match="unknown model variant"):
        build_model("huge")


@pytest.mark.slow
def test_full_tiny_model_is_traceable_by_torch_export():
    model = build_model("tiny").eval()
    batch = torch.export.Dim("batch", min=1, max=8)
    ep = torch.export.export(model, (torch.zeros(2, 3, 3, 224, 224),), dynamic_shapes=({0: batch},))
    n_inv = sum(1 for n in ep.graph.nodes if n.target is torch.ops.dfmvr.Involution.default)
    depth = model.card.architecture["rednet"]["depth"]
    assert n_inv == 1 + sum(REDNET_STAGE_BLOCKS[depth])   # stem + one per bottleneck
    x = torch.rand(3, 3, 3, 224, 224) * 2 - 1
    with torch.no_grad():
        want = model(x)
    got = ep.module()(x)
    np.testing.assert_allclose(got[0].detach().numpy(), want[0].numpy(), rtol=1e-4, atol=1e-4)
    assert torch.equal(got[1], want[1])
