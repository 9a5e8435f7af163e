"""The main-stage trainer, its CLI and the parse stage, end to end on the tiny variant."""

import json
import math

import numpy as np
import pytest
import torch

from dfmvr.train.checkpoint import load_checkpoint
from dfmvr.train.schedule import OFFICIAL_CONSTANT_FRACTION, VIEW_PATTERNS, lr_at, sample_view_masks
from dfmvr.train.trainer import METRICS_NAME, Trainer, TrainConfig


@pytest.fixture(scope="session")
def synth4(tmp_path_factory):
    """Four synthetic triplets (shared by the trainer, DDP and evaluation tests of this session)."""
    root = tmp_path_factory.getbasetemp() / "dfmvr-train-synth4"
    if not (root / "000003").is_dir():
        from dfmvr.train.synth import write_dataset
        write_dataset(root, 4, seed=11, progress=False)
    return root


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
    masks = sample_view_masks(60000, np.random.default_rng(0))
    full = masks.all(1)
    assert full.mean() == pytest.approx(2 / 3, abs=0.01)
    assert masks.any(1).all()                                   # never all views missing
    for pattern in VIEW_PATTERNS:
        share = (masks == pattern).all(1).mean()
        assert share == pytest.approx(1 / 18, abs=0.005)


def _config(data, out, **kw):
    base = dict(data=str(data), out=str(out), variant="tiny", epochs=2, batch=1, max_steps_per_epoch=1,
                progress=False, augment=True, view_dropout=True, seed=5)
    base.update(kw)
    return TrainConfig(**base)


def _steps(out):
    rows = [json.loads(line) for line in (out / METRICS_NAME).read_text().splitlines()]
    return [r for r in rows if r["kind"] == "step"], [r for r in rows if r["kind"] == "epoch"]


def test_resume_continues_exactly(synth4, tmp_path):
    # uninterrupted: two epochs of one step
    whole = tmp_path / "whole"
    Trainer(_config(synth4, whole)).run()
    # interrupted after the first epoch, then resumed
    parts = tmp_path / "parts"
    Trainer(_config(synth4, parts, stop_after_epoch=1)).run()
    model, card, state = load_checkpoint(parts / "checkpoint.safetensors")
    assert state["epoch"] == 1 and state["step"] == 1 and card.loss_weights["photo"] == 24.0
    assert card.provenance["stage"] == "main" and "supervised_weight" not in card.provenance
    Trainer(_config(synth4, parts, resume=True)).run()
    a, _ = _steps(whole)
    b, _ = _steps(parts)
    assert len(a) == len(b) == 2
    assert a[0]["loss"] == b[0]["loss"]
    assert math.isfinite(a[1]["loss"]) and a[1]["loss"] == b[1]["loss"]   # the next step after resume
    assert a[1]["lr"] == b[1]["lr"] < a[0]["lr"]
    wa = load_checkpoint(whole / "checkpoint.safetensors")[0].state_dict()
    wb = load_checkpoint(parts / "checkpoint.safetensors")[0].state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_training_reduces_the_loss_and_records_supervision(synth4, tmp_path):
    """A few steps on one fixed triplet (no dropout / augmentation): the loss goes down."""
    out = tmp_path / "fit"
    cfg = _config(synth4, out, epochs=1, max_steps_per_epoch=None, batch=2, augment=False,
                  view_dropout=False, lr=1e-3, val=str(synth4), val_limit=1)
    cfg.weights["supervised"] = 1.0
    trainer = Trainer(cfg)
    trainer.dataset.folders = trainer.dataset.folders[:2]          # the same batch every step
    trainer.steps_per_epoch = trainer.total_steps = 1
    losses = []
    for _ in range(3):
        item = next(iter(trainer._loader(0)))
        losses.append(trainer.train_step(item, 0, 0)["loss"])
    assert losses[-1] < losses[0]
    rec = trainer.validate()
    assert rec["val_mean_mm"] > 0 and rec["val_num_scans"] == 1
    trainer.save()
    _, card, _ = load_checkpoint(out / "checkpoint.safetensors")
    assert card.provenance["supervised_weight"] == 1.0 and card.loss_weights["supervised"] == 1.0


def test_cli_train_and_bad_input(synth4, tmp_path):
    from click.testing import CliRunner

    from dfmvr.cli.train import command

    out = tmp_path / "cli"
    r = CliRunner().invoke(command, ["--data", str(synth4), "--out", str(out), "--epochs", "1", "--batch", "1",
                                     "--max-steps", "1", "--quiet", "--val", str(synth4), "--val-limit", "1"])
    assert r.exit_code == 0, r.output
    _, epochs = _steps(out)
    assert epochs[0]["val_mean_mm"] > 0 and (out / "checkpoint.safetensors").is_file()
    # a folder without triplets: an InputError naming the folder
    empty = tmp_path / "empty"
    empty.mkdir()
    r = CliRunner().invoke(command, ["--data", str(empty), "--out", str(tmp_path / "x")])
    assert r.exit_code != 0 and "empty" in str(r.exception)


def test_parse_stage_trains_and_attaches(synth4, tmp_path):
    from dfmvr.train.models.variants import build_model
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
