"""The 'lite' design (dfmvr/models/lite.py): DF-MVR's structure at 112 px with a spatial readout."""

from __future__ import annotations

import json

import pytest
import torch

from dfmvr.face.layout import COEFFS
from dfmvr.models.checkpoint import load_checkpoint, save_checkpoint
from dfmvr.models.heads import head_names
from dfmvr.models.lite import LiteFusion, LiteKeypointHead, LiteRegressor
from dfmvr.models.variants import build_model, make_card
from tests.models.conftest import assert_export_parity


def test_lite_keeps_the_contract_and_the_official_head_names():
    model = build_model("lite").eval()
    names = set(model.state_dict())
    for head, _ in head_names():
        assert f"rednet_fc.{head}.weight" in names
    assert any(n.startswith("uuunet.att_0.") for n in names) and any(n.startswith("uuunet.enc_2.") for n in names)
    coefficients, labels = model(torch.zeros(2, 3, 3, 224, 224))
    assert coefficients.shape == (2, COEFFS.size) and coefficients.dtype == torch.float32
    assert labels.shape == (2, 3, 224, 224) and labels.dtype == torch.int64


def test_labels_enter_as_class_fractions_not_as_a_number():
    """Label 9 must not be '9x label 1' (the official U-Net reads the index as an intensity): each class is
    its own channel, averaged 2x2 into the fraction of the cell that class covers."""
    fusion = LiteFusion(num_classes=10, width=8)
    x = torch.zeros(1, 4, 4, 4)
    x[0, 3, 0, 0], x[0, 3, 0, 1] = 9.0, 2.0          # top-left 2x2 cell: classes 9, 2, 0, 0
    cell = fusion.view_input(x)[0, 3:, 0, 0]
    want = torch.zeros(10)
    want[0], want[2], want[9] = 0.5, 0.25, 0.25
    torch.testing.assert_close(cell, want)


def test_the_regressor_reads_where_a_feature_is():
    """Same feature, two places: different coefficients (a global average could not tell them apart)."""
    torch.manual_seed(0)
    regressor = LiteRegressor(in_channels=16, channels=64).eval()
    here, there = torch.zeros(1, 16, 14, 14), torch.zeros(1, 16, 14, 14)
    here[:, :, 2, 3], there[:, :, 10, 9] = 1.0, 1.0
    with torch.no_grad():
        assert (regressor(here) - regressor(there)).abs().max() > 1e-4


def test_the_regressor_refuses_a_map_of_another_size():
    with pytest.raises(ValueError, match="14x14 map"):
        LiteRegressor(in_channels=16, channels=64)(torch.zeros(1, 16, 10, 10))


def test_side_views_reach_the_coefficients():
    """Multi-view: changing only the left image changes the prediction (through its gated feature)."""
    torch.manual_seed(0)
    model = build_model("lite").eval()
    x = torch.rand(1, 3, 3, 224, 224) * 2 - 1
    y = x.clone()
    y[:, 0] = torch.rand(1, 3, 224, 224) * 2 - 1
    with torch.no_grad():
        assert (model(x)[0] - model(y)[0]).abs().max() > 1e-5


def test_pool_option_is_refused_for_lite(tmp_path, synth4):
    from dfmvr.train.trainer import TrainConfig, Trainer

    with pytest.raises(ValueError, match="'lite' variant"):
        Trainer(TrainConfig(data=str(synth4), out=str(tmp_path / "run"), variant="lite", pool="spatial"))


def test_lite_trains_with_the_pose_term_and_records_it(tmp_path, synth4):
    """The real trainer on the lite variant (batch 2, one fixed batch): the loss with the supervised pose
    and shape terms goes down step by step, and the card records the design and the pose weight."""
    from dfmvr.train.trainer import TrainConfig, Trainer

    torch.manual_seed(0)
    cfg = TrainConfig(data=str(synth4), out=str(tmp_path / "run"), variant="lite", epochs=1, batch=2,
                      max_steps_per_epoch=1, progress=False, augment=False, view_dropout=False, lr=1e-4, seed=5)
    cfg.weights["supervised_pose"] = 1.0
    cfg.weights["supervised_shape"] = 1e-2
    trainer = Trainer(cfg)
    item = next(iter(trainer._loader(0)))
    losses = [trainer.train_step(item, 0, 0)["loss"] for _ in range(5)]
    # Adam's first step (no warm-up) moves every weight by ~lr at once and overshoots; from there on
    # the loss on the fixed batch must fall (measured: 2119, 4873, 4782, 4653, 4508)
    assert losses[4] < losses[3] < losses[2] < losses[1]
    trainer.save()
    _, card, _ = load_checkpoint(tmp_path / "run" / "checkpoint.safetensors", load_train_state=False)
    assert card.architecture["design"] == "lite" and card.provenance["supervised_pose_weight"] == 1.0


def _lite_with_keypoints():
    card = make_card("lite")
    card.architecture["unet"]["keypoints"] = 68
    return build_model(card)


def test_keypoint_head_reads_a_peak_as_that_cells_centre_in_input_pixels():
    """Soft-argmax over the 14 x 14 map: a dominant logit at row 3, column 10 puts the keypoint at the
    centre of that cell in 224-px input pixels, (10.5, 3.5) x 16; a flat map puts it at the centre."""
    head = LiteKeypointHead(in_channels=4, keypoints=2)

    class Peak(torch.nn.Module):
        def forward(self, x):
            logits = torch.zeros(x.shape[0], 2, 14, 14)
            logits[:, 0, 3, 10] = 50.0
            return logits
    head.net = Peak()
    kp = head(torch.zeros(1, 4, 14, 14))
    torch.testing.assert_close(kp[0, 0], torch.tensor([10.5 * 16, 3.5 * 16]), atol=1e-3, rtol=0)
    torch.testing.assert_close(kp[0, 1], torch.tensor([112.0, 112.0]), atol=1e-3, rtol=0)


def test_lite_keypoints_are_a_training_target_and_a_separate_output():
    """Training forward: keypoints [B, 3, 68, 2] for the loss. Eval forward: none, and the coefficients
    are those of the same weights without the keypoint heads; ``forward_with_keypoints`` (what is
    exported) adds the keypoints to the same coefficients, and a network without heads refuses it."""
    torch.manual_seed(0)
    model = _lite_with_keypoints()
    x = torch.rand(2, 3, 3, 224, 224) * 2 - 1
    model.train()
    model(x)
    assert model.last_keypoints.shape == (2, 3, 68, 2)
    plain = build_model("lite").eval()
    state = {k: v for k, v in model.state_dict().items() if ".kp_" not in k}
    assert set(state) == set(plain.state_dict())
    plain.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        got, want = model(x)[0], plain(x)[0]
    assert model.last_keypoints is None
    torch.testing.assert_close(got, want)
    assert model.predicts_keypoints and not plain.predicts_keypoints
    with torch.no_grad():
        coefficients, labels, keypoints = model.forward_with_keypoints(x)
    torch.testing.assert_close(coefficients, got)
    assert keypoints.shape == (2, 3, 68, 2) and model.last_keypoints is None
    with pytest.raises(ValueError, match="predicts no keypoints"):
        plain.forward_with_keypoints(x)
    # --no-keypoints: the heads are gone (the graph would have two outputs), the coefficients stay
    from dfmvr.export.onnx_export import graph_outputs

    assert graph_outputs(model) == ["coefficients", "labels", "keypoints"]
    model.drop_keypoint_heads()
    assert not model.predicts_keypoints and graph_outputs(model) == ["coefficients", "labels"]
    assert not any(".kp_" in k for k in model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], got)


def test_lite_trains_its_keypoint_target_and_records_it(tmp_path, synth4):
    """The real trainer: with --keypoints 68 on lite the keypoint loss (px^2 to gt.npz's landmarks) is
    in the step's terms and falls on a fixed batch; the card keeps the head in the 'unet' architecture."""
    from dfmvr.train.trainer import TrainConfig, Trainer

    torch.manual_seed(0)
    # 50 planned epochs of one step: the cosine schedule stays near 1e-3 for the 11 steps taken
    cfg = TrainConfig(data=str(synth4), out=str(tmp_path / "run"), variant="lite", epochs=50, batch=2,
                      max_steps_per_epoch=1, progress=False, augment=False, view_dropout=False, lr=1e-3,
                      seed=5, keypoints=68)
    cfg.weights["keypoint_2d"] = 1.0
    trainer = Trainer(cfg)
    item = next(iter(trainer._loader(0)))
    first = trainer.train_step(item, 0, 0)
    assert first["keypoint_2d"] > 100.0                  # px^2: the untrained heads point near the centre
    for _ in range(10):
        last = trainer.train_step(item, 0, 1)
    assert last["keypoint_2d"] < 0.5 * first["keypoint_2d"]   # measured: 2723 -> 957
    assert trainer.card.architecture["unet"]["keypoints"] == 68
    assert "keypoints" not in trainer.card.architecture["rednet"]


@pytest.mark.slow      # a full export (~30 s)
def test_lite_checkpoint_round_trip_and_export_parity(tmp_path):
    """A lite checkpoint reloads into the same network, and the real export's parity gate (ONNX Runtime
    against PyTorch, coefficients and mesh mm, the involution custom op included) passes."""
    torch.manual_seed(0)
    model = build_model("lite").eval()
    path = save_checkpoint(tmp_path / "lite.safetensors", model, model.card)
    _check_round_trip_and_export(model, path, tmp_path)


@pytest.mark.slow      # a full export (~30 s)
def test_lite_with_keypoint_heads_exports_with_parity(tmp_path):
    """The keypoint heads are saved and reloaded, and the export passes the same parity gate, its third
    output (keypoints) included."""
    torch.manual_seed(0)
    model = _lite_with_keypoints().eval()
    path = save_checkpoint(tmp_path / "lite_kp.safetensors", model, model.card)
    report = _check_round_trip_and_export(model, path, tmp_path)
    (fp32,) = [r for r in report["reports"] if r["backend"] == "onnxruntime-cpu"]
    assert fp32["keypoints_max_px"] is not None and fp32["keypoints_max_px"] <= 0.01


def _check_round_trip_and_export(model, path, tmp_path):
    loaded, card, _ = load_checkpoint(path, load_train_state=False)
    assert card.architecture["design"] == "lite"
    x = torch.randn(1, 3, 3, 224, 224).clamp(-1, 1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)[0], model(x)[0])
    return assert_export_parity(path, tmp_path / "export")


@pytest.mark.slow      # a full export of the bundled model (~25 s)
def test_export_without_keypoints_drops_the_output_and_keeps_parity(tmp_path):
    from dfmvr.cli.export import command as export_command
    from dfmvr.runtime.runners import OnnxrtRunner

    with pytest.raises(SystemExit) as exc:
        export_command(["default", "--out", str(tmp_path / "export"), "--no-keypoints"])
    assert exc.value.code == 0
    report = json.loads((tmp_path / "export" / "model.parity.json").read_text())
    assert report["passed"] and report["reports"][0]["keypoints_max_px"] is None
    with OnnxrtRunner(tmp_path / "export" / "model.onnx", threads=1) as runner:
        assert runner.output_names == ["coefficients", "labels"]
