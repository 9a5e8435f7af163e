"""The main-stage trainer, its CLI and the parse stage, end to end on the tiny variant."""

import json
import math

import numpy as np
import pytest
import torch

from dfmvr.models.checkpoint import load_checkpoint
from dfmvr.train.schedule import OFFICIAL_CONSTANT_FRACTION, VIEW_PATTERNS, lr_at, sample_view_masks
from dfmvr.train.trainer import METRICS_NAME, Trainer, TrainConfig


def test_lr_schedule_shape():
    assert lr_at(0.0) == lr_at(OFFICIAL_CONSTANT_FRACTION) == 1e-4
    assert lr_at(1.0) == pytest.approx(1e-6)
    mid = OFFICIAL_CONSTANT_FRACTION + (1 - OFFICIAL_CONSTANT_FRACTION) / 2
    assert lr_at(mid) == pytest.approx((1e-4 + 1e-6) / 2)
    xs = np.linspace(0, 1, 50)
    ys = [lr_at(x) for x in xs]
    assert all(a >= b for a, b in zip(ys, ys[1:]))
    # the official schedule in epochs: constant to epoch 50 of 280, then cosine
    assert lr_at(50 / 280) == 1e-4 and lr_at(51 / 280) < 1e-4


def test_view_dropout_frequencies():
    rng = np.random.default_rng(0)
    masks = np.concatenate([sample_view_masks(100, rng) for _ in range(600)])
    full = masks.all(1)
    assert full.mean() == pytest.approx(2 / 3, abs=0.01)
    assert masks.any(1).all()                                   # never all views missing
    for pattern in VIEW_PATTERNS:
        share = (masks == pattern).all(1).mean()
        assert share == pytest.approx(1 / 18, abs=0.005)
    # every view stays in at least one sample of a batch (BN needs a real image per encoder)
    for _ in range(200):
        assert sample_view_masks(2, rng).any(0).all()
    assert sample_view_masks(1, rng).all()


def _config(data, out, **kw):
    # batch 1: sample_view_masks keeps every view at batch 1 (BN), the draw itself still happens
    base = dict(data=str(data), out=str(out), variant="tiny", epochs=2, batch=1, max_steps_per_epoch=1,
                progress=False, augment=True, view_dropout=True, seed=5)
    base.update(kw)
    return TrainConfig(**base)


def _steps(out):
    rows = [json.loads(line) for line in (out / METRICS_NAME).read_text().splitlines()]
    return [r for r in rows if r["kind"] == "step"], [r for r in rows if r["kind"] == "epoch"]


def test_resume_continues_exactly(synth4, tmp_path):
    """An uninterrupted 2-epoch run (API) against the same run interrupted after epoch 1 and resumed
    (CLI): the step after the resume has the same loss and learning rate. To float rounding, not bit
    for bit: forward passes run earlier in a process (other tests, the end-of-epoch batch-norm
    recalibration) change which CPU kernels later steps pick (measured up to 3e-5 relative); a logic
    error (weights, Adam state, RNG streams, schedule) moves the loss by far more."""
    from click.testing import CliRunner

    from dfmvr.cli.train import command

    whole = tmp_path / "whole"
    Trainer(_config(synth4, whole)).run()
    parts = tmp_path / "parts"
    args = ["--data", str(synth4), "--out", str(parts), "--epochs", "2", "--batch", "1", "--max-steps", "1",
            "--seed", "5", "--quiet"]
    r = CliRunner().invoke(command, args + ["--stop-after", "1"])
    assert r.exit_code == 0, r.output
    model, card, state = load_checkpoint(parts / "checkpoint.safetensors")
    assert state["epoch"] == 1 and state["step"] == 1 and card.loss_weights["photo"] == 24.0
    assert card.provenance["stage"] == "main" and "supervised_weight" not in card.provenance
    assert card.provenance["bn_recalibration_triplets"] == 64
    r = CliRunner().invoke(command, args + ["--resume", "--val", str(synth4), "--val-limit", "1"])
    assert r.exit_code == 0, r.output
    a, _ = _steps(whole)
    b, epochs = _steps(parts)
    assert len(a) == len(b) == 2
    assert a[0]["loss"] == b[0]["loss"]
    assert math.isfinite(a[1]["loss"])                                       # the next step after resume
    assert b[1]["loss"] == pytest.approx(a[1]["loss"], rel=2e-4, abs=0)
    assert a[1]["loss"] != pytest.approx(a[0]["loss"], rel=1e-2)           # the comparison can tell steps apart
    assert a[1]["lr"] == b[1]["lr"] < a[0]["lr"]
    assert epochs[-1]["val_mean_mm"] > 0 and epochs[-1]["val_num_scans"] == 1
    assert 0 < epochs[-1]["val_max_abs_coefficient"] < float("inf")


def test_training_reduces_the_loss_and_records_supervision(synth4, tmp_path):
    """Steps on one fixed batch (no dropout / augmentation): the loss goes down."""
    out = tmp_path / "fit"
    cfg = _config(synth4, out, epochs=1, augment=False, view_dropout=False, lr=1e-3)
    cfg.weights["supervised"] = 1.0
    cfg.weights["supervised_shape"] = 1e-3
    trainer = Trainer(cfg)
    item = next(iter(trainer._loader(0)))
    losses = [trainer.train_step(item, 0, 0)["loss"] for _ in range(3)]
    # the dead conv9 (never called) is frozen, so Adam skips it and DDP does not wait for it
    dead = [p for n, p in trainer.model.named_parameters() if n.startswith("uuunet.conv9.")]
    assert dead and not any(p.requires_grad for p in dead)
    assert losses[-1] < losses[0]
    trainer.save()
    _, card, _ = load_checkpoint(out / "checkpoint.safetensors")
    assert card.provenance["supervised_weight"] == 1.0 and card.loss_weights["supervised"] == 1.0
    assert card.provenance["supervised_shape_weight"] == 1e-3
    # the checkpoint evaluates through the eval command (torch path), baselines included
    from click.testing import CliRunner

    from dfmvr.cli.eval import command
    report = out / "eval.json"
    r = CliRunner().invoke(command, ["--checkpoint", str(out / "checkpoint.safetensors"), "--data", str(synth4),
                                     "--limit", "1", "--json", str(report), "--quiet"])
    assert r.exit_code == 0, r.output
    rep = json.loads(report.read_text())
    assert rep["num_triplets"] == 1 and rep["model"]["rmse_mm"] >= rep["model"]["mean_mm"] > 0
    assert set(rep["baselines"]) == {"mean_face", "front_only"}


def test_unlabelled_data_needs_a_trained_parser(synth4, tmp_path):
    import shutil

    from dfmvr.errors import InputError
    bare = tmp_path / "bare" / "t0"
    bare.mkdir(parents=True)
    for v in ("left", "front", "right"):
        shutil.copy(synth4 / "000000" / f"{v}.png", bare / f"{v}.png")
    with pytest.raises(InputError, match="--parse-net"):
        Trainer(_config(bare.parent, tmp_path / "out"))


def test_cli_bad_input(tmp_path):
    from click.testing import CliRunner

    from dfmvr.cli.train import command

    empty = tmp_path / "empty"
    empty.mkdir()
    r = CliRunner().invoke(command, ["--data", str(empty), "--out", str(tmp_path / "x")])
    assert r.exit_code != 0 and "empty" in str(r.exception) and "dfmvr data synth" in str(r.exception)


def test_parse_stage_trains_and_attaches(synth4, tmp_path):
    from dfmvr.models.variants import build_model
    from dfmvr.train.parse_stage import ParseConfig, attach_parse_weights, load_parse_weights, train_parse_net

    path = train_parse_net(ParseConfig(data=str(synth4), out=str(tmp_path / "p"), epochs=1, batch=3,
                                       max_steps_per_epoch=2, progress=False))
    net, args = load_parse_weights(path)
    rows = [json.loads(x) for x in (tmp_path / "p" / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in rows] == ["parse_step", "parse_step", "parse_epoch"]
    model = build_model("tiny")
    attach_parse_weights(model, path)
    sd = net.state_dict()
    assert all(torch.equal(v, sd[k]) for k, v in model.parse_net.state_dict().items())
    assert not any(p.requires_grad for p in model.parse_net.parameters())
    assert model.card.provenance["parse_net"] == "parse_net.safetensors"


def test_class_balanced_parse_loss_weighs_the_small_parts_and_is_recorded(synth4, tmp_path):
    from dfmvr.face.layout import PARSE_CLASSES
    from dfmvr.train.parse_stage import ParseConfig, class_weights, load_parse_weights, parse_dataset, train_parse_net

    data = parse_dataset(synth4, augment=False)
    w = class_weights(data)
    counts = sum(torch.bincount(data[i][1].reshape(-1), minlength=len(PARSE_CLASSES)) for i in range(len(data)))
    freq = (counts.double() + 1) / (counts.sum() + len(PARSE_CLASSES))
    assert float((freq * w.double()).sum()) == pytest.approx(1.0, rel=1e-5)   # the loss keeps its scale
    by_name = dict(zip(PARSE_CLASSES, w.tolist()))
    assert by_name["left_eye"] > 3 * by_name["skin"] and by_name["background"] < 1
    # 1/sqrt(frequency): a class 4x rarer weighs 2x
    i, j = PARSE_CLASSES.index("skin"), PARSE_CLASSES.index("nose")
    assert float(w[j] / w[i]) == pytest.approx(float((freq[i] / freq[j]).sqrt()), rel=1e-4)

    path = train_parse_net(ParseConfig(data=str(synth4), out=str(tmp_path / "p"), epochs=1, batch=3,
                                       max_steps_per_epoch=1, progress=False, class_balanced=True))
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        recorded = json.loads(f.metadata()["provenance"])["class_weights"]
    assert recorded == pytest.approx(by_name, abs=1e-3)
    load_parse_weights(path)


def test_parse_resume_at_a_lower_lr_decays_and_records_it(synth4, tmp_path):
    from safetensors import safe_open

    from dfmvr.train.parse_stage import ParseConfig, train_parse_net

    cfg = dict(data=str(synth4), out=str(tmp_path / "p"), batch=3, max_steps_per_epoch=1, progress=False)
    train_parse_net(ParseConfig(epochs=1, lr=1e-3, **cfg))
    path = train_parse_net(ParseConfig(epochs=2, lr=1e-4, resume=True, **cfg))
    with safe_open(str(path), "pt") as f:
        prov = json.loads(f.metadata()["provenance"])
    assert prov["epochs"] == 2 and prov["lr_per_epoch"] == pytest.approx([1e-3, 1e-4])
    state = torch.load(tmp_path / "p" / "parse_net.train.pt", weights_only=True)
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-4)


def test_parse_resume_refuses_to_switch_the_loss(synth4, tmp_path):
    """A class-balanced file resumed without the flag (or a plain one with it) would record one loss
    for epochs trained on two: refused before any step, naming the file and the flag."""
    from dfmvr.errors import InputError
    from dfmvr.train.parse_stage import ParseConfig, train_parse_net

    cfg = dict(data=str(synth4), batch=3, max_steps_per_epoch=1, progress=False)
    balanced = train_parse_net(ParseConfig(epochs=1, out=str(tmp_path / "b"), class_balanced=True, **cfg))
    plain = train_parse_net(ParseConfig(epochs=1, out=str(tmp_path / "p"), **cfg))
    before = balanced.read_bytes()
    with pytest.raises(InputError, match="trained with --class-balanced") as err:
        train_parse_net(ParseConfig(epochs=2, out=str(tmp_path / "b"), resume=True, **cfg))
    assert err.value.path == str(balanced) and "add --class-balanced" in err.value.fix
    assert balanced.read_bytes() == before          # nothing trained or written
    with pytest.raises(InputError, match="trained without --class-balanced"):
        train_parse_net(ParseConfig(epochs=2, out=str(tmp_path / "p"), resume=True, class_balanced=True, **cfg))
    path = train_parse_net(ParseConfig(epochs=2, out=str(tmp_path / "b"), resume=True, class_balanced=True, **cfg))
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        assert json.loads(f.metadata()["provenance"])["epochs"] == 2
    path.write_bytes(path.read_bytes()[:100])          # truncated: the clear error, not the loss check's crash
    with pytest.raises(InputError, match="not a readable safetensors file"):
        train_parse_net(ParseConfig(epochs=3, out=str(tmp_path / "b"), resume=True, class_balanced=True, **cfg))


def test_parse_detail_is_recorded_attached_and_kept_on_resume(synth4, tmp_path):
    """--parse-detail N: the weights record the architecture (a model attaching them rebuilds it), and
    --resume with another N is refused before any step rather than loading into the wrong shapes."""
    from safetensors import safe_open

    from dfmvr.errors import InputError
    from dfmvr.models.variants import build_model
    from dfmvr.train.parse_stage import ParseConfig, attach_parse_weights, load_parse_weights, train_parse_net

    cfg = dict(data=str(synth4), out=str(tmp_path / "d"), batch=3, max_steps_per_epoch=1, progress=False)
    path = train_parse_net(ParseConfig(epochs=1, detail_channels=8, **cfg))
    net, args = load_parse_weights(path)
    assert args["detail_channels"] == 8 and net.detail is not None
    model = attach_parse_weights(build_model("tiny"), path)
    assert model.card.architecture["parse"]["detail_channels"] == 8
    before = path.read_bytes()
    with pytest.raises(InputError, match="detail_channels 8") as err:
        train_parse_net(ParseConfig(epochs=2, resume=True, **cfg))
    assert err.value.path == str(path) and path.read_bytes() == before
    train_parse_net(ParseConfig(epochs=2, lr=1e-4, resume=True, detail_channels=8, **cfg))   # the 4 + 1 schedule's way
    _, args = load_parse_weights(path)
    with safe_open(str(path), "pt") as f:
        prov = json.loads(f.metadata()["provenance"])
    assert args["detail_channels"] == 8 and prov["epochs"] == 2 and prov["lr_per_epoch"] == pytest.approx([1e-3, 1e-4])
    assert path.read_bytes() != before                                   # it trained on, into the same file


def test_a_detail_parser_is_saved_with_the_model_and_the_checkpoint_loads_and_resumes(synth4, tmp_path):
    """The main stage with --parse-net of a --parse-detail parser, and --init with one: the checkpoint's
    card rebuilds the detail head, so the file loads (export, eval, the heads' refit) and resumes.
    (It did not: the parser's arguments went to a copy of the card, and the checkpoint held 25 tensors
    its own card had no place for.)"""
    from dfmvr.train.parse_stage import ParseConfig, load_parse_weights, train_parse_net

    parser = train_parse_net(ParseConfig(data=str(synth4), out=str(tmp_path / "p"), epochs=1, batch=3,
                                         max_steps_per_epoch=1, progress=False, detail_channels=8))
    net, _ = load_parse_weights(parser)
    out = tmp_path / "main"
    Trainer(_config(synth4, out, epochs=1, bn_recalibration=0, parse_net=str(parser))).run()
    model, card, _ = load_checkpoint(out / "checkpoint.safetensors")
    assert card.architecture["parse"]["detail_channels"] == 8 and model.mask_model.detail is not None
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in model.mask_model.state_dict().items())
    Trainer(_config(synth4, out, epochs=2, bn_recalibration=0, parse_net=str(parser), resume=True)).run()
    _, _, state = load_checkpoint(out / "checkpoint.safetensors")
    assert state["epoch"] == 2

    plain = tmp_path / "plain"
    Trainer(_config(synth4, plain, epochs=1, bn_recalibration=0)).run()
    fine = tmp_path / "fine"
    Trainer(_config(synth4, fine, epochs=1, bn_recalibration=0, init=str(plain / "checkpoint.safetensors"),
                    parse_net=str(parser))).run()
    model, card, _ = load_checkpoint(fine / "checkpoint.safetensors")
    assert card.architecture["parse"]["detail_channels"] == 8 and model.mask_model.detail is not None


def test_class_balanced_is_refused_outside_the_parse_stage(tmp_path):
    from click.testing import CliRunner

    from dfmvr.cli.train import command

    result = CliRunner().invoke(command, ["--data", str(tmp_path), "--out", str(tmp_path / "m"), "--class-balanced"])
    assert result.exit_code == 2 and "--stage parse" in result.output
    result = CliRunner().invoke(command, ["--data", str(tmp_path), "--out", str(tmp_path / "m"), "--parse-detail", "8"])
    assert result.exit_code == 2 and "--stage parse" in result.output and not (tmp_path / "m").exists()


def test_celebamask_layout_maps_onto_our_classes(tmp_path):
    import cv2

    from dfmvr.face.layout import PARSE_CLASSES
    from dfmvr.train.parse_stage import CelebAMaskHQ, parse_dataset

    img_dir, ann = tmp_path / "CelebA-HQ-img", tmp_path / "CelebAMask-HQ-mask-anno" / "1"
    img_dir.mkdir()
    ann.mkdir(parents=True)
    cv2.imwrite(str(img_dir / "2001.jpg"), np.full((96, 96, 3), 128, np.uint8))

    def mask(name, rows, cols):
        m = np.zeros((64, 64), np.uint8)
        m[rows, cols] = 255
        cv2.imwrite(str(ann / f"02001_{name}.png"), m)

    mask("skin", slice(8, 56), slice(8, 56))
    mask("nose", slice(28, 36), slice(28, 36))      # painted after skin: wins
    mask("eye_g", slice(16, 20), slice(10, 54))     # eyeglasses -> skin
    mask("hair", slice(0, 8), slice(0, 64))         # hair -> background
    mask("u_lip", slice(44, 48), slice(24, 40))
    data = parse_dataset(tmp_path)
    assert isinstance(data, CelebAMaskHQ) and len(data) == 1
    x, y = data[0]
    assert x.shape == (3, 224, 224) and y.shape == (224, 224) and float(x.abs().max()) <= 1.0
    at = lambda r, c: PARSE_CLASSES[int(y[r * 224 // 64, c * 224 // 64])]   # noqa: E731
    assert at(32, 32) == "nose" and at(17, 12) == "skin" and at(4, 30) == "background"
    assert at(45, 30) == "upper_lip" and at(12, 12) == "skin" and at(60, 60) == "background"


def test_per_sample_norm_and_pool_are_recorded_and_survive_the_checkpoint(synth4, tmp_path):
    from dfmvr.models.sample_norm import SampleLayerNorm2d

    out = tmp_path / "per_sample"
    cfg = _config(synth4, out, epochs=1, augment=False, view_dropout=False)
    cfg.per_sample_norm, cfg.pool = "layer", "spatial"
    trainer = Trainer(cfg)
    item = next(iter(trainer._loader(0)))
    assert math.isfinite(trainer.train_step(item, 0, 0)["loss"])
    trainer.save()
    model, card, _ = load_checkpoint(out / "checkpoint.safetensors")
    assert card.architecture["training_norm"] == card.architecture["inference_norm"] == "per_sample_layer"
    assert card.provenance["per_sample_norm"] == "layer" and card.provenance["bn_recalibration_triplets"] == 0
    assert isinstance(model.rednet_fc.rednet.layer1[0].bn2, SampleLayerNorm2d)
    assert card.architecture["rednet"]["pool"] == "spatial" == card.provenance["pool"]
    assert model.rednet_fc.pool == "spatial"
    parse_norms = [type(m) for m in model.mask_model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert parse_norms and all(k is torch.nn.BatchNorm2d for k in parse_norms)   # the frozen parser keeps its own


def test_per_sample_norm_flag_takes_an_optional_kind(tmp_path):
    """The bare flag keeps its old meaning (instance statistics); ``layer`` chooses layer statistics."""
    from dfmvr.cli.train import command

    base = ["--data", str(tmp_path), "--out", str(tmp_path / "run")]
    parse = lambda extra: command.make_context("dfmvr-train", base + extra).params["per_sample_norm"]  # noqa: E731
    assert parse([]) is None
    assert parse(["--per-sample-norm"]) == "instance"
    assert parse(["--per-sample-norm", "layer"]) == "layer"
    assert parse(["--per-sample-norm", "--quiet"]) == "instance"
    assert command.make_context("dfmvr-train", base + ["--pool", "spatial"]).params["pool"] == "spatial"
    assert command.make_context("dfmvr-train", base).params["pool"] is None


@pytest.mark.slow      # ~4-6 s; the exact resume is tested fast (test_resume_continues_exactly)
def test_resume_with_more_epochs_stretches_the_schedule_and_the_card_says_so(synth4, tmp_path):
    out = tmp_path / "stretched"
    Trainer(_config(synth4, out, epochs=2, stop_after_epoch=1, bn_recalibration=0)).run()
    longer = Trainer(_config(synth4, out, epochs=4, resume=True, bn_recalibration=0))
    assert longer.total_steps == 4 and longer.epoch == 1
    longer.run()
    _, card, state = load_checkpoint(out / "checkpoint.safetensors")
    assert state["epoch"] == 4 and card.provenance["epochs"] == 4 and card.provenance["epochs_trained"] == 4
    assert card.provenance["schedule_changes"] == [{"at_step": 1, "at_epoch": 1, "epochs_before": 2, "epochs": 4}]
    steps, _ = _steps(out)
    assert steps[1]["lr"] == lr_at(1 / 4, 1e-4, 1e-6)      # the stretched schedule, not lr_at(1 / 2)
    with pytest.raises(ValueError, match="fewer than the 4 epochs"):
        Trainer(_config(synth4, out, epochs=3, resume=True, bn_recalibration=0))


@pytest.mark.slow      # ~9 s; the lite design's keypoint target is tested fast (tests/models/test_lite.py)
def test_trainer_supervises_the_keypoints_and_records_them(synth4, tmp_path):
    cfg = _config(synth4, tmp_path / "kp", epochs=1, augment=False, view_dropout=False)
    cfg.keypoints = 68
    cfg.weights = {**cfg.weights, "keypoint_2d": 1.0}
    trainer = Trainer(cfg)
    item = next(iter(trainer._loader(0)))
    first = trainer.train_step(item, 0, 0)
    assert first["keypoint_2d"] > 10.0                    # px^2: the untrained readout is far off
    for _ in range(15):
        last = trainer.train_step(item, 0, 1)
    assert last["keypoint_2d"] < first["keypoint_2d"]
    assert trainer.card.architecture["rednet"]["keypoints"] == 68
    assert trainer.card.provenance["keypoints"] == 68 and trainer.card.loss_weights["keypoint_2d"] == 1.0


def test_init_fine_tunes_from_a_checkpoint_with_this_runs_losses(synth4, tmp_path):
    """--init: the source's weights and architecture, this run's loss weights, a fresh optimizer and
    schedule, and a card that says where the weights came from (a fine-tuned model keeps its history)."""
    from dfmvr.train.losses.total import LossWeights

    source = tmp_path / "source"
    Trainer(_config(synth4, source, epochs=1, bn_recalibration=0, per_sample_norm="layer",
                    weights=LossWeights(supervised=1.0).to_dict())).run()
    _, source_card, _ = load_checkpoint(source / "checkpoint.safetensors", load_train_state=False)
    weak = LossWeights(supervised=0.0).to_dict()
    fine = Trainer(_config(synth4, tmp_path / "fine", epochs=1, bn_recalibration=0,
                           init=str(source / "checkpoint.safetensors"), weights=weak))
    assert fine.step == 0 and fine.epoch == 0
    source_model, _, _ = load_checkpoint(source / "checkpoint.safetensors", load_train_state=False)
    want = source_model.state_dict()
    for name, tensor in fine.model.state_dict().items():
        assert torch.equal(tensor.cpu(), want[name]), name
    assert fine.card.architecture == source_card.architecture
    fine.run()
    _, card, _ = load_checkpoint(tmp_path / "fine" / "checkpoint.safetensors")
    assert card.loss_weights == weak != source_card.loss_weights
    assert card.provenance["init_from"] == str(source / "checkpoint.safetensors")
    assert card.provenance["init_provenance"]["supervised_weight"] == 1.0
    assert card.provenance["per_sample_norm"] == "layer" and "supervised_weight" not in card.provenance
    with pytest.raises(ValueError, match="architecture from the checkpoint"):
        Trainer(_config(synth4, tmp_path / "bad", init=str(source / "checkpoint.safetensors"), pool="spatial"))


def test_init_trains_the_sources_keypoint_heads_and_refuses_a_source_without(synth4, tmp_path):
    """Fine-tuning a checkpoint that has keypoint heads (the bundled demo) may keep their loss: the
    heads come from the card, so --keypoint-weight needs no --keypoints (which --init refuses); a
    source without heads gets a clear error instead of a loss that is silently never computed."""
    from click.testing import CliRunner

    from dfmvr.cli.train import command
    from dfmvr.train.losses.total import LossWeights

    weights = LossWeights(supervised=1.0, keypoint_2d=1.0).to_dict()
    fine = Trainer(_config(synth4, tmp_path / "fine", epochs=1, init="default", weights=weights,
                           augment=False, view_dropout=False))
    assert fine.card.architecture["unet"]["keypoints"] == 68
    terms = fine.train_step(next(iter(fine._loader(0))), 0, 0)
    assert math.isfinite(terms["keypoint_2d"]) and terms["keypoint_2d"] > 0

    source = tmp_path / "plain"
    Trainer(_config(synth4, source, epochs=1, bn_recalibration=0)).run()
    with pytest.raises(ValueError, match="has none"):
        Trainer(_config(synth4, tmp_path / "bad", init=str(source / "checkpoint.safetensors"), weights=weights))
    result = CliRunner().invoke(command, ["--data", str(synth4), "--out", str(tmp_path / "cli"),
                                          "--init", str(source / "checkpoint.safetensors"), "--keypoint-weight", "1"])
    assert result.exit_code == 2 and "has none" in result.output


def test_init_is_refused_for_the_parse_stage(tmp_path):
    from click.testing import CliRunner

    from dfmvr.cli.train import command

    result = CliRunner().invoke(command, ["--data", str(tmp_path), "--out", str(tmp_path / "p"), "--stage", "parse",
                                          "--init", "default"])
    assert result.exit_code == 2 and "--init fine-tunes the main stage" in result.output


def test_resume_on_grown_data_trains_on_it_and_the_card_says_so(synth4, tmp_path, monkeypatch):
    """Growing the dataset mid-run (``dfmvr data synth --triplets N`` on the same folder) is part of the
    bundled demo's recipe; the card must list the change, or it would say the weights saw less data."""
    import shutil

    small = tmp_path / "two"
    small.mkdir()
    for name in ("000000", "000001"):
        shutil.copytree(synth4 / name, small / name)
    for extra in synth4.iterdir():
        if extra.is_file():
            shutil.copy(extra, small / extra.name)
    out = tmp_path / "grown"
    Trainer(_config(small, out, epochs=2, stop_after_epoch=1, bn_recalibration=0)).run()
    grown = Trainer(_config(synth4, out, epochs=2, resume=True, bn_recalibration=0))
    assert len(grown.dataset) == 4
    grown.run()
    _, card, _ = load_checkpoint(out / "checkpoint.safetensors")
    assert card.provenance["data"] == str(synth4) and card.provenance["triplets"] == 4
    assert card.provenance["data_changes"] == [{"at_step": 1, "at_epoch": 1, "data_before": str(small),
                                                "triplets_before": 2, "data": str(synth4), "triplets": 4}]
    again = Trainer(_config(synth4, out, epochs=2, resume=True, bn_recalibration=0))
    assert again.card.provenance["data_changes"] == card.provenance["data_changes"]   # same data: no new entry
    monkeypatch.chdir(synth4.parent)                     # the same folder, given as a relative path
    relative = Trainer(_config(synth4.name, out, epochs=2, resume=True, bn_recalibration=0))
    assert relative.card.provenance["data_changes"] == card.provenance["data_changes"]


def test_parser_labels_ignore_the_data_label_maps(synth4, tmp_path):
    """--parser-labels: the loss sees the parser's labels, not the exact ones synthetic data carries
    (weak runs on synthetic data then use nothing a real photo lacks); an untrained parser is refused."""
    from dfmvr.errors import InputError
    from dfmvr.train.data import TripletDataset
    from dfmvr.train.parse_stage import ParseConfig, train_parse_net

    with pytest.raises(InputError, match="--parser-labels"):
        Trainer(_config(synth4, tmp_path / "untrained", parser_labels=True))
    parser = train_parse_net(ParseConfig(data=str(synth4), out=str(tmp_path / "p"), epochs=1, batch=3,
                                         max_steps_per_epoch=1, progress=False))
    item = {k: v[None] if torch.is_tensor(v) else v for k, v in TripletDataset(synth4)[0].items()}
    assert bool(item["has_labels"]) and item["labels"].any()
    predicted = torch.full_like(item["labels"], 3)               # stands for the parser's output
    for ignore in (False, True):
        trainer = Trainer(_config(synth4, tmp_path / f"run{ignore}", parse_net=str(parser), parser_labels=ignore))
        labels = trainer._loss_batch(item, predicted)["labels"]
        assert torch.equal(labels, predicted if ignore else item["labels"])
        assert ("labels" in trainer.card.provenance) == ignore


def test_depth_and_size_prior_weights_reach_the_loss_and_the_card(synth4, tmp_path):
    """--depth-prior-weight and --size-prior-weight (weak terms: no ground truth) are logged with the
    step's terms and recorded in the card's loss weights, the depth's centre in the provenance; off by
    default."""
    from click.testing import CliRunner

    from dfmvr.cli.train import command

    args = ["--data", str(synth4), "--epochs", "1", "--batch", "1", "--max-steps", "1", "--quiet"]
    for weight in (None, 0.5):
        out = tmp_path / f"run{weight}"
        extra = [] if weight is None else ["--depth-prior-weight", str(weight), "--size-prior-weight", str(2 * weight)]
        r = CliRunner().invoke(command, args + ["--out", str(out)] + extra)
        assert r.exit_code == 0, r.output
        _, card, _ = load_checkpoint(out / "checkpoint.safetensors")
        assert card.loss_weights["depth_prior"] == (weight or 0.0)
        assert card.loss_weights["size_prior"] == 2 * (weight or 0.0)
        # the centre: where the crop alignment puts the mean face (synth.dataset.aligned_mean_face_pose)
        centre = card.provenance.get("depth_prior_centre_dm")
        assert (centre is None) == (weight is None)
        if centre is not None:
            assert len(centre) == 3 and all(-1.5 < z < -0.3 for z in centre), centre
        steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert ("depth_prior" in steps[0]) == ("size_prior" in steps[0]) == (weight is not None), steps[0]


def test_train_only_moves_the_named_head_and_nothing_else(synth4, lite_checkpoint, tmp_path):
    """--init C --train-only rednet_fc.conv2_id.: after a step the identity head's weights changed and no
    other parameter did; the card records the prefixes; an unknown prefix, or another one on resume, is
    refused with exit 2 (a usage error naming the option)."""
    from click.testing import CliRunner
    from safetensors.torch import load_file

    from dfmvr.cli.train import command

    out = tmp_path / "heads"
    args = ["--data", str(synth4), "--init", str(lite_checkpoint), "--batch", "2", "--max-steps", "1",
            "--no-view-dropout", "--bn-recalibration", "0", "--lr", "1e-2", "--quiet", "--out", str(out)]
    r = CliRunner().invoke(command, args + ["--epochs", "1", "--train-only", "rednet_fc.conv2_id."])
    assert r.exit_code == 0, r.output
    model, card, _ = load_checkpoint(out / "checkpoint.safetensors")
    assert card.provenance["train_only"] == ["rednet_fc.conv2_id."]
    before, after = load_file(str(lite_checkpoint)), load_file(str(out / "checkpoint.safetensors"))
    parameters = {name for name, _ in model.named_parameters()}
    moved = {k for k in parameters if not torch.equal(before[k].float(), after[k].float())}
    assert moved == {"rednet_fc.conv2_id.weight", "rednet_fc.conv2_id.bias"}, sorted(moved)[:8]

    r = CliRunner().invoke(command, args + ["--epochs", "2", "--resume", "--train-only", "rednet_fc.conv2_exp."])
    assert r.exit_code == 2 and "a resumed run keeps what it trains" in r.output, r.output
    r = CliRunner().invoke(command, args + ["--epochs", "2", "--resume"])       # keeps the run's own freeze
    assert r.exit_code == 0, r.output
    resumed = load_file(str(out / "checkpoint.safetensors"))
    moved = {k for k in parameters if not torch.equal(after[k].float(), resumed[k].float())}
    assert moved == {"rednet_fc.conv2_id.weight", "rednet_fc.conv2_id.bias"}, sorted(moved)[:8]
    r = CliRunner().invoke(command, args + ["--epochs", "1", "--out", str(tmp_path / "x"), "--train-only", "no_such."])
    assert r.exit_code == 2 and "no parameter of this network starts with it" in r.output, r.output
    assert not (tmp_path / "x" / "checkpoint.safetensors").exists()
    r = CliRunner().invoke(command, ["--data", str(synth4), "--out", str(tmp_path / "p"), "--stage", "parse",
                                     "--train-only", "x.", "--quiet"])
    assert r.exit_code == 2 and "--train-only" in r.output, r.output


def test_photo_weight_zero_trains_without_the_render(synth4, tmp_path):
    """``--photo-weight 0`` (with the mask term off) reaches the loss weights and the card, and the step
    computes no photometric term (the render is skipped: docs/training.md, "What the render costs");
    without the flag the official weight and the term are there; ``--photo-render-factor 2`` keeps the
    term, rendered at half size, and is recorded. That factor beside the mask term is refused."""
    from click.testing import CliRunner

    from dfmvr.cli.train import command

    r = CliRunner().invoke(command, ["--data", str(synth4), "--out", str(tmp_path / "refused"), "--epochs", "1",
                                     "--photo-render-factor", "2", "--quiet"])
    assert r.exit_code == 2 and "--mask-weight 0" in r.output, r.output
    assert not (tmp_path / "refused").exists()
    terms = {}
    for name, extra in (("default", []), ("bare", ["--photo-weight", "0"]), ("half", ["--photo-render-factor", "2"])):
        out = tmp_path / name
        r = CliRunner().invoke(command, ["--data", str(synth4), "--out", str(out), "--epochs", "1", "--batch", "1",
                                         "--max-steps", "1", "--mask-weight", "0", "--bn-recalibration", "0",
                                         "--quiet", *extra])
        assert r.exit_code == 0, r.output
        _, card, _ = load_checkpoint(out / "checkpoint.safetensors")
        (step,), _ = _steps(out)
        terms[name] = (card.loss_weights["photo"], card.loss_weights["photo_render_factor"], "photo" in step)
    assert terms == {"default": (24.0, 1, True), "bare": (0.0, 1, False), "half": (24.0, 2, True)}


def test_a_new_run_never_overwrites_a_finished_one(synth4, tmp_path):
    """Without --resume, a second run into the same --out replaced the first one's checkpoint (hours of
    training) and appended to its metrics. It is refused, the checkpoint untouched."""
    from dfmvr.errors import InputError

    out = tmp_path / "out"
    Trainer(_config(synth4, out, epochs=1, bn_recalibration=0)).run()
    before = (out / "checkpoint.safetensors").read_bytes()
    with pytest.raises(InputError, match="already here") as err:
        Trainer(_config(synth4, out, epochs=1, bn_recalibration=0))
    assert "--resume" in str(err.value) and (out / "checkpoint.safetensors").read_bytes() == before


def test_non_finite_ground_truth_a_missing_gt_and_a_diverged_loss_stop_before_a_checkpoint(synth4, tmp_path,
                                                                                          monkeypatch):
    """NaN coefficients in one gt.npz trained a checkpoint of NaN weights, exit 0; a synthetic set missing one
    gt.npz trained that triplet unsupervised, unnoticed; a loss gone NaN (a learning rate too high) saved NaN
    weights. The first two are input errors naming the file; the third stops the run with the last checkpoint kept."""
    import shutil

    from dfmvr.errors import DfmvrError, InputError
    from dfmvr.train.data import TripletDataset

    data = tmp_path / "data"
    shutil.copytree(synth4, data)
    gt = dict(np.load(data / "000001" / "gt.npz"))
    gt["coefficients"] = gt["coefficients"] * np.nan
    np.savez(data / "000001" / "gt.npz", **gt)
    with pytest.raises(InputError, match="'coefficients' holds NaN") as err:
        TripletDataset(data)[1]
    assert "000001" in str(err.value)
    (data / "000001" / "gt.npz").unlink()
    with pytest.raises(InputError, match="has no gt.npz"):
        TripletDataset(data)[1]

    trainer = Trainer(_config(synth4, tmp_path / "out", epochs=1, bn_recalibration=0))
    real = trainer.loss.forward

    def diverged(*args, **kwargs):
        total, terms = real(*args, **kwargs)
        return total * float("nan"), terms

    monkeypatch.setattr(trainer.loss, "forward", diverged)
    with pytest.raises(DfmvrError, match="training diverged at step 0: the loss is nan.*no checkpoint was written"):
        trainer.run()
    assert not (tmp_path / "out" / "checkpoint.safetensors").exists()


def test_a_validation_set_made_with_another_face_model_is_refused(synth4, tmp_path):
    """dfmvr eval refuses a set whose face_model.npz is not the network's; training validated on one silently
    (its val_mean_mm measured against the wrong mesh)."""
    import shutil

    from dfmvr.errors import InputError
    from dfmvr.face.synthetic import synthetic_face_model

    other = tmp_path / "other_val"
    shutil.copytree(synth4, other)
    synthetic_face_model(seed=5).save(other / "face_model.npz")
    with pytest.raises(InputError, match="--val's triplets were made with face model") as err:
        Trainer(_config(synth4, tmp_path / "out", epochs=1, val=str(other)))
    assert str(other) in str(err.value)
    empty = tmp_path / "empty_val"
    empty.mkdir()
    with pytest.raises(InputError, match="no triplet folders"):        # before any training, not after an epoch
        Trainer(_config(synth4, tmp_path / "out2", epochs=1, val=str(empty)))
    late = tmp_path / "late_val"        # only the first triplet was checked: a broken later one failed after an epoch
    shutil.copytree(synth4, late)
    last = sorted(p for p in late.iterdir() if p.is_dir())[-1]
    (last / "right.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="cannot decode") as err:
        Trainer(_config(synth4, tmp_path / "out3", epochs=1, val=str(late)))
    assert str(last / "right.png") in str(err.value)
    assert not (tmp_path / "out3").exists()
    with pytest.raises(ValueError, match="val_limit"):     # 0 once meant "all"; it would fail after an epoch
        Trainer(_config(synth4, tmp_path / "out4", epochs=1, val=str(synth4), val_limit=0))


@pytest.mark.parametrize("flag", ["--lr", "--clip-grad", "--supervised-weight", "--landmark-noise"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_numbers_that_are_not_finite_are_usage_errors(flag, value, tmp_path):
    """click's FloatRange lets NaN (and inf, with an open maximum) through: --lr nan crashed Adam with a
    traceback, --lr inf and --clip-grad nan trained NaN weights with exit 0."""
    from click.testing import CliRunner

    from dfmvr.cli.train import command

    r = CliRunner().invoke(command, ["--data", str(tmp_path), "--out", str(tmp_path / "x"), flag, value])
    assert r.exit_code == 2 and "is not a finite number" in r.output, r.output


def test_the_parse_stage_never_overwrites_and_resumes_only_what_it_can(synth4, tmp_path):
    """A second parse run without --resume overwrote the first; --resume without the state restarted at epoch 0
    over the weights; a truncated state or another variant's weights gave tracebacks. Each is an input error
    naming the file now, the weights untouched."""
    import shutil

    from dfmvr.errors import InputError
    from dfmvr.train.parse_stage import ParseConfig, train_parse_net

    out = tmp_path / "p"
    cfg = dict(data=str(synth4), out=str(out), batch=3, max_steps_per_epoch=1, progress=False)
    train_parse_net(ParseConfig(epochs=1, **cfg))
    weights, state = out / "parse_net.safetensors", out / "parse_net.train.pt"
    before = weights.read_bytes()
    with pytest.raises(InputError, match="already here"):
        train_parse_net(ParseConfig(epochs=2, **cfg))
    with pytest.raises(InputError, match="another parser than --variant paper"):
        train_parse_net(ParseConfig(epochs=2, resume=True, variant="paper", **cfg))
    kept = tmp_path / "state.pt"
    shutil.copy(state, kept)
    state.write_bytes(kept.read_bytes()[:1000])
    with pytest.raises(InputError, match="truncated or corrupt") as err:
        train_parse_net(ParseConfig(epochs=2, resume=True, **cfg))
    assert "parse_net.train.pt" in str(err.value)
    state.unlink()
    with pytest.raises(InputError, match="no training state"):
        train_parse_net(ParseConfig(epochs=2, resume=True, **cfg))
    assert weights.read_bytes() == before


def test_the_parse_stage_resumes_from_its_states_own_weights_after_a_hard_kill(synth4, tmp_path):
    """A hard kill between the parse stage's two renames left epoch 2's weights beside epoch 1's state: the
    resume trained epoch 2 again on top of epoch 2's weights with epoch 1's optimizer, and said nothing. It
    continues from the state's own copy of its weights now and ends where an unbroken run does."""
    from dfmvr.train.parse_stage import ParseConfig, load_parse_weights, train_parse_net

    def run(out, epochs, **kw):
        train_parse_net(ParseConfig(data=str(synth4), out=str(out), batch=3, max_steps_per_epoch=1,
                                    progress=False, epochs=epochs, **kw))

    whole, broken = tmp_path / "whole", tmp_path / "broken"
    run(whole, 2)
    run(broken, 1)
    state_after_epoch_1 = (broken / "parse_net.train.pt").read_bytes()
    run(broken, 2, resume=True)
    (broken / "parse_net.train.pt").write_bytes(state_after_epoch_1)     # epoch 2's weights, epoch 1's state
    run(broken, 2, resume=True)
    done, _ = load_parse_weights(broken / "parse_net.safetensors")
    reference, _ = load_parse_weights(whole / "parse_net.safetensors")
    for (name, a), b in zip(done.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_options_a_stage_or_a_resume_would_ignore_are_refused(synth4, tmp_path):
    """--stage heads took --epochs / loss weights, --stage parse took loss weights and --keypoints, and --resume
    took another --variant or other loss weights, all without a word (the run went on as before). Each is a
    usage error now; rerunning a run's own command line with --resume (what the recipe does) still resumes."""
    from click.testing import CliRunner

    from dfmvr.cli.train import command

    base = ["--data", str(synth4), "--out", str(tmp_path / "run"), "--batch", "1", "--max-steps", "1",
            "--bn-recalibration", "0", "--quiet", "--supervised-weight", "5"]
    r = CliRunner().invoke(command, base + ["--epochs", "1"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(command, base + ["--epochs", "2", "--resume"])               # the same command: resumes
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(command, base + ["--epochs", "2", "--resume", "--keypoints", "0", "--pool", "average"])
    assert r.exit_code == 0, r.output                                                  # what the run has: fine
    for extra, words in ((["--supervised-weight", "7"], "supervised 7 (the run: 5)"),
                         (["--variant", "lite"], "is a 'tiny' network"),
                         (["--keypoints", "68"], "has keypoints none"),
                         (["--per-sample-norm"], "has per-sample-norm none")):
        args = [a for a in base if a not in ("--supervised-weight", "5")] + extra + ["--epochs", "3", "--resume"]
        r = CliRunner().invoke(command, args)
        assert r.exit_code == 2 and words in r.output, r.output
    r = CliRunner().invoke(command, ["--stage", "heads", "--init", str(tmp_path / "run" / "checkpoint.safetensors"),
                                     "--data", str(synth4), "--val", str(synth4), "--out", str(tmp_path / "h"),
                                     "--epochs", "5", "--supervised-weight", "3"])
    assert r.exit_code == 2 and "--epochs, --supervised-weight: not read by --stage heads" in r.output, r.output
    r = CliRunner().invoke(command, ["--stage", "parse", "--data", str(synth4), "--out", str(tmp_path / "p"),
                                     "--keypoints", "68"])
    assert r.exit_code == 2 and "--keypoints: not read by --stage parse" in r.output, r.output


def test_a_resume_after_a_kill_lists_every_step_once(synth4, tmp_path):
    """The steps a killed run trained after its last checkpoint stayed in metrics.jsonl, and the resumed run
    trained and logged them again: they appeared twice. They are dropped on resume, with a line cut by the kill."""
    out = tmp_path / "out"
    Trainer(_config(synth4, out, epochs=2, stop_after_epoch=1, bn_recalibration=0)).run()
    steps, _ = _steps(out)
    last = steps[-1]["step"]
    with (out / METRICS_NAME).open("a") as f:        # what the killed attempt of epoch 2 had written
        f.write(json.dumps({"kind": "step", "epoch": 1, "step": last + 1, "loss": 1.0}) + "\n")
        f.write('{"kind": "step", "epo')
    Trainer(_config(synth4, out, epochs=2, resume=True, bn_recalibration=0)).run()
    steps, epochs = _steps(out)
    assert [s["step"] for s in steps] == list(range(1, len(steps) + 1))
    assert [e["epoch"] for e in epochs] == [0, 1]


def test_a_hard_kill_between_the_checkpoints_two_renames_resumes_from_the_last_whole_save(synth4, tmp_path, capsys):
    """SIGKILL or a power cut after the weights' rename and before the state's left new weights beside the
    previous state: --resume refused ("cannot resume exactly") and the run was stuck. The state carries its own
    copy of its weights, so the resume continues from the last whole save and ends where an unbroken run does."""
    import shutil

    from dfmvr.errors import InputError
    from dfmvr.models.checkpoint import sidecar_path

    whole, broken = tmp_path / "whole", tmp_path / "broken"
    Trainer(_config(synth4, whole, epochs=3, bn_recalibration=0)).run()
    Trainer(_config(synth4, broken, epochs=3, stop_after_epoch=1, bn_recalibration=0)).run()
    state_after_epoch_1 = sidecar_path(broken / "checkpoint.safetensors").read_bytes()
    Trainer(_config(synth4, broken, epochs=3, stop_after_epoch=2, resume=True, bn_recalibration=0)).run()
    sidecar_path(broken / "checkpoint.safetensors").write_bytes(state_after_epoch_1)   # epoch 2's weights, epoch 1's state
    with pytest.raises(InputError, match="other weights"):          # what export and eval read: the weights alone
        load_checkpoint(broken / "checkpoint.safetensors")
    capsys.readouterr()
    Trainer(_config(synth4, broken, epochs=3, resume=True, bn_recalibration=0)).run()
    assert "resuming from the state's own copy of its weights (epoch 1)" in capsys.readouterr().out
    done, card, state = load_checkpoint(broken / "checkpoint.safetensors")
    reference, _, _ = load_checkpoint(whole / "checkpoint.safetensors")
    assert state["epoch"] == 3 and card.provenance["epochs_trained"] == 3
    for (name, a), b in zip(done.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    shutil.rmtree(whole)


def test_an_output_folder_that_cannot_be_made_is_an_input_error_before_any_work(synth4, tmp_path):
    """--out under a file (or in /proc): the main stage raised from its metrics log after building the model."""
    from dfmvr.errors import InputError
    from dfmvr.train.parse_stage import ParseConfig, train_parse_net

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot create the output folder"):
        Trainer(_config(synth4, blocker / "run", epochs=1))
    with pytest.raises(InputError, match="cannot create the output folder"):
        train_parse_net(ParseConfig(data=str(synth4), out=str(blocker / "parse"), epochs=1, batch=3,
                                    max_steps_per_epoch=1, progress=False))
    Trainer(_config(synth4, tmp_path / "fresh" / "run", epochs=1))       # a creatable one: no folder left yet
    assert not (tmp_path / "fresh" / "run").exists()
