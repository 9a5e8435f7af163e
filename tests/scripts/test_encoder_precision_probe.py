"""scripts/encoder_precision_probe.py: each stem and map size builds and trains, the pool arm is the
shipped encoder, the cost counts grow with what an arm adds, and a run writes its record."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import REPO, load_script

torch = pytest.importorskip("torch")


@pytest.fixture
def probe(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "scripts"))      # its ridge stage imports two sibling probes
    return load_script("encoder_precision_probe")


@pytest.fixture
def parser_weights(tmp_path, one_torch_thread):
    """An untrained tiny parse net saved as 'dfmvr-train --stage parse' does (seeded: fixed labels)."""
    from dfmvr.models.parse_net import BiSeNet
    from dfmvr.models.variants import variant_architecture
    from dfmvr.train.parse_stage import save_parse_weights

    torch.manual_seed(0)
    args = dict(variant_architecture("tiny")["parse"])
    return save_parse_weights(tmp_path / "p.safetensors", BiSeNet(**args).eval(), args)


def _views(batch: int = 2):
    torch.manual_seed(0)
    rgb = torch.rand(batch, 3, 3, 224, 224) * 2 - 1
    labels = torch.randint(0, 10, (batch, 3, 224, 224))
    return rgb, labels


@pytest.mark.parametrize("stem,map_size", [("pool", 14), ("unshuffle", 14), ("conv", 14), ("pool", 28)])
def test_every_arm_places_68_points_per_view_and_learns(probe, stem, map_size, one_torch_thread):
    net = probe.StemmedFusion(stem, map_size)
    rgb, labels = _views()
    views = probe.views_of(rgb, labels)
    out = net.keypoints_of_views(views)
    assert out.shape == (2, 3, 68, 2)
    target = torch.full_like(out, 112.0)
    loss = (out - target).square().mean()
    loss.backward()
    touched = [p for p in net.parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert any(p is net.enc_0[0].weight for p in touched)                # the gradient reaches the encoders


def test_the_pool_arm_is_the_shipped_encoder_input(probe):
    from dfmvr.models.lite import LiteFusion

    rgb, labels = _views(1)
    x = probe.views_of(rgb, labels)[1]
    np.testing.assert_allclose(probe.StemmedFusion("pool", 14).stemmed(1, x).numpy(),
                               LiteFusion().view_input(x).numpy(), atol=1e-6)


def test_the_unshuffle_stem_loses_nothing_and_costs_are_ordered(probe):
    rgb, labels = _views(1)
    x = probe.views_of(rgb, labels)[0]
    net = probe.StemmedFusion("unshuffle", 14)
    back = torch.nn.functional.pixel_shuffle(net.stemmed(0, x), 2)
    assert torch.equal(back[:, :3], x[:, :3])                            # a permutation of the same values
    costs = {arm: probe.StemmedFusion(*arm).encoder_macs() for arm in [("pool", 14), ("unshuffle", 14),
                                                                       ("conv", 14), ("pool", 28)]}
    assert costs[("pool", 14)] < min(costs[("unshuffle", 14)], costs[("conv", 14)], costs[("pool", 28)])


def test_the_parser_arm_reads_the_parse_nets_own_labels(probe, parser_weights):
    from dfmvr.train.parse_stage import load_parse_weights

    rgb, truth = _views(1)
    got = probe.LabelSource("parser", str(parser_weights))(rgb, truth)
    parser = load_parse_weights(parser_weights)[0]
    assert got.shape == truth.shape and torch.equal(got[0, 2], parser.labels(rgb[:, 2])[0])
    assert not torch.equal(got[0, 0], got[0, 2])                         # views stay apart (they differ here)
    assert probe.LabelSource("truth")(rgb, truth) is truth and probe.LabelSource("none")(rgb, truth) is None


def test_a_run_writes_its_record_weights_and_ridge_scores(probe, synth4, tmp_path, one_torch_thread):
    from safetensors.torch import load_file

    out, weights = tmp_path / "probe.json", tmp_path / "encoders.safetensors"
    probe.main(["--train", str(synth4), "--val", str(synth4), "--unseen", str(synth4), "--stem", "conv",
                "--labels", "none", "--steps", "2", "--batch", "2", "--evals", "1", "--ridge-triplets", "4",
                "--save", str(weights), "--json", str(out)])
    record = json.loads(out.read_text())
    assert record["stem"] == "conv" and record["map"] == 14 and len(record["curve"]) == 1
    assert record["labels"].startswith("none")
    for key in ("held_out_rms_px", "held_out_rms_visible_px", "slot_prior_rms_px", "slot_prior_rms_visible_px"):
        assert len(record[key]) == 3 and all(np.isfinite(record[key])), key
    assert record["encoder_macs_per_triplet"] > 0
    ridge = record["ridge"]
    assert ridge["rows"] == {"fit": 3, "choose_strength": 1, "val": 4, "unseen": 4}
    for source in ("predicted keypoints", "exact landmarks", "exact landmarks + 1.5 px"):
        assert set(ridge[source]) == {"strength", "val", "unseen"}
        assert {"identity", "expression"} <= set(ridge[source]["val"])
    net = probe.StemmedFusion("conv", 14)
    net.load_state_dict(load_file(str(weights)))                      # the saved weights load back


def test_parser_labels_are_the_parse_nets_argmax_and_need_a_parse_net(probe, tmp_path):
    from dfmvr.models.variants import build_model
    from dfmvr.train.parse_stage import save_parse_weights

    with pytest.raises(SystemExit, match="--parse-net"):
        probe.LabelSource("parser")
    torch.manual_seed(0)
    model = build_model("lite").eval()
    weights = save_parse_weights(tmp_path / "parse_net.safetensors", model.mask_model, model.card.architecture["parse"])
    rgb, truth = _views(1)
    labels = probe.LabelSource("parser", str(weights))(rgb, truth)
    _, expected = model.view_inputs(rgb)                               # how the main stage reads its parser
    assert labels.shape == truth.shape and torch.equal(labels, expected)
    assert probe.LabelSource("truth")(rgb, truth) is truth and probe.LabelSource("none")(rgb, truth) is None


def test_the_soft_parser_arm_feeds_the_parse_nets_probabilities(probe, parser_weights):
    rgb, truth = _views(1)
    soft = probe.LabelSource("parser-soft", str(parser_weights))(rgb, truth)
    hard = probe.LabelSource("parser", str(parser_weights))(rgb, truth)
    assert soft.shape == (1, 3, 10, 224, 224)
    torch.testing.assert_close(soft.sum(dim=2), torch.ones(1, 3, 224, 224))
    # the same parser, before its argmax: each label is a most probable class (an untrained parser's classes
    # can tie after the softmax rounds, so the argmax of the probabilities may pick the other one)
    picked = soft.gather(2, hard.unsqueeze(2)).squeeze(2)
    torch.testing.assert_close(picked, soft.max(dim=2).values, rtol=0, atol=1e-6)
    assert float((soft.argmax(dim=2) == hard).float().mean()) > 0.999
    assert 0.0 < float(soft.max(dim=2).values.min()) < 1.0               # not one-hot: a belief per pixel
    views = probe.views_of(rgb, soft)
    assert views[2].shape == (1, 13, 224, 224) and torch.equal(views[2][:, 3:], soft[:, 2])
    net = probe.StemmedFusion("pool", 14)
    assert torch.equal(net.stemmed(2, views[2]), torch.nn.functional.avg_pool2d(views[2], 2))
    with pytest.raises(SystemExit, match="--parse-net"):
        probe.LabelSource("parser-soft")
