"""``dfmvr-train --speed``: the execution modes of a training step (dfmvr/train/speed.py).

The speed of each mode is measured in benchmarks/bench_train.py, not here; these tests check that
each mode computes the same step, is recorded in the card and is refused where it cannot run.
"""

import pytest
import torch

from dfmvr.models.checkpoint import load_checkpoint
from dfmvr.train.speed import AUTO_MODE, SPEED_MODES, cpu_has_native_bf16, resolve_speed_mode, unsupported_reason
from dfmvr.train.trainer import Trainer, TrainConfig

CPU = torch.device("cpu")


def _config(data, out, **kw):
    base = dict(data=str(data), out=str(out), variant="tiny", epochs=1, batch=2, max_steps_per_epoch=1,
                progress=False, augment=False, view_dropout=False, seed=3, bn_recalibration=0)
    base.update(kw)
    return TrainConfig(**base)


def test_auto_resolves_to_a_supported_mode_and_unknown_modes_are_refused():
    assert resolve_speed_mode("auto", CPU) == AUTO_MODE and unsupported_reason(AUTO_MODE, CPU) is None
    assert resolve_speed_mode("auto", torch.device("cuda")) == "eager"
    with pytest.raises(ValueError, match="unknown speed mode"):
        unsupported_reason("turbo", CPU)


def test_bf16_only_where_the_cpu_computes_it_natively():
    if cpu_has_native_bf16():
        assert resolve_speed_mode("bf16", CPU) == "bf16"
    else:
        with pytest.raises(ValueError, match="no native bf16"):
            resolve_speed_mode("bf16", CPU)


def test_channels_last_takes_the_same_step_and_the_card_records_the_mode(synth4, tmp_path, one_torch_thread):
    """The same weights and batch through eager and channels_last: the loss of the first step agrees to
    float rounding amplified by the parse net's argmax (a few label flips: measured 1e-3 relative on tiny);
    the weights are NHWC during training and the checkpoint loads back to the trained values."""
    trainers = {m: Trainer(_config(synth4, tmp_path / m, speed=m)) for m in ("eager", "channels_last")}
    conv = next(p for p in trainers["channels_last"].model.parameters() if p.dim() == 4 and p.shape[-1] > 1)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    item = next(iter(trainers["eager"]._loader(0)))
    losses = {}
    for mode, trainer in trainers.items():
        torch.manual_seed(0)
        losses[mode] = trainer.train_step(item, 0, 0)["loss"]
    assert losses["channels_last"] == pytest.approx(losses["eager"], rel=1e-2)
    trainer = trainers["channels_last"]
    path = trainer.save()
    model, card, _ = load_checkpoint(path)
    assert card.provenance["speed_mode"] == "channels_last"
    trained = dict(trainer.model.named_parameters())
    for name, p in model.named_parameters():
        torch.testing.assert_close(p, trained[name].detach(), rtol=0, atol=0)   # a copy, not a computation


def test_resume_in_another_mode_is_listed_in_the_card(synth4, tmp_path, one_torch_thread):
    out = tmp_path / "run"
    Trainer(_config(synth4, out, epochs=2, stop_after_epoch=1)).run()
    resumed = Trainer(_config(synth4, out, epochs=2, resume=True, speed="channels_last"))
    prov = resumed.card.provenance
    assert prov["speed_mode"] == "channels_last"
    assert prov["speed_mode_changes"] == [{"at_step": 1, "before": AUTO_MODE, "after": "channels_last"}]


@pytest.mark.skipif(cpu_has_native_bf16(), reason="this CPU has native bf16, so --speed bf16 is accepted")
def test_cli_refuses_bf16_without_native_support(synth4, tmp_path):
    from click.testing import CliRunner

    from dfmvr.cli.train import command

    r = CliRunner().invoke(command, ["--data", str(synth4), "--out", str(tmp_path / "o"), "--speed", "bf16",
                                     "--max-steps", "1", "--epochs", "1", "--quiet"])
    assert r.exit_code == 2, r.output
    assert "no native bf16" in r.output and not (tmp_path / "o" / "checkpoint.safetensors").exists()


def test_every_mode_is_documented_in_the_cli():
    from click.testing import CliRunner

    from dfmvr.cli.train import command

    out = CliRunner().invoke(command, ["--help"]).output
    assert all(m in out for m in SPEED_MODES)
