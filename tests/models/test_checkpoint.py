"""dfmvr checkpoints: safetensors weights + card, training-state sidecar, refusal of bad files."""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest
import torch

from dfmvr.errors import InputError
from dfmvr.models import checkpoint as ckpt
from dfmvr.models.checkpoint import (capture_rng_state, load_checkpoint, read_card, restore_rng_state,
                                    save_checkpoint, sidecar_path)
from dfmvr.models.variants import build_model
from tests.tolerances import SAME_COMPUTATION_FP32

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained_tiny():
    """A tiny model after one Adam step (so BN statistics and optimizer moments are non-trivial)."""
    torch.manual_seed(0)
    model = build_model("tiny")
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    coeffs, _ = model(torch.rand(2, 3, 3, 32, 32) * 2 - 1)
    coeffs.square().mean().backward()
    opt.step()
    return model.eval(), opt


def test_round_trip_weights_card_and_training_state(tmp_path, trained_tiny):
    model, opt = trained_tiny
    model.card.provenance = {"note": "round trip"}
    rng = capture_rng_state()
    path = save_checkpoint(tmp_path / "m.safetensors", model, model.card,
                           {"optimizer": opt.state_dict(), "epoch": 7, "rng": rng})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors", "m.train.pt"]
    loaded, card, state = load_checkpoint(path)
    assert card.to_dict() == model.card.to_dict() and read_card(path).variant == "tiny"
    loaded_state = loaded.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded_state[key], value), key
    x = torch.rand(1, 3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)[0], model(x)[0], **SAME_COMPUTATION_FP32)
    assert state["epoch"] == 7
    # The optimizer resumes exactly: same moments, and a fresh optimizer accepts the state dict.
    fresh = torch.optim.Adam([p for p in loaded.parameters() if p.requires_grad], lr=1e-3)
    fresh.load_state_dict(state["optimizer"])
    resumed = fresh.state_dict()["state"]
    for k, v in opt.state_dict()["state"].items():
        assert torch.equal(resumed[k]["exp_avg"], v["exp_avg"])
    # RNG states restore python, numpy and torch streams.
    restore_rng_state(state["rng"])
    first = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    restore_rng_state(state["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == first


def test_half_storage_halves_the_file_and_loads_float32_rounded_weights(tmp_path, trained_tiny):
    model, _ = trained_tiny
    full = save_checkpoint(tmp_path / "full.safetensors", model, model.card)
    half = save_checkpoint(tmp_path / "half.safetensors", model, model.card, half_storage=True)
    assert half.stat().st_size < 0.55 * full.stat().st_size
    loaded, card, _ = load_checkpoint(half)
    assert card.to_dict() == model.card.to_dict()
    got = loaded.state_dict()
    for key, value in model.state_dict().items():
        assert got[key].dtype == value.dtype, key                     # float32 again, int64 counters kept
        want = value.half().float() if value.dtype == torch.float32 else value
        assert torch.equal(got[key], want), key


def test_half_storage_refuses_weights_beyond_float16(tmp_path, trained_tiny):
    model, _ = trained_tiny
    big = copy.deepcopy(model)
    with torch.no_grad():
        next(big.parameters())[...] = 1e6
    with pytest.raises(ValueError, match="does not fit float16"):
        save_checkpoint(tmp_path / "big.safetensors", big, big.card, half_storage=True)
    assert not (tmp_path / "big.safetensors").exists()


def test_weights_only_checkpoint_has_no_sidecar(tmp_path, trained_tiny):
    model, _ = trained_tiny
    save_checkpoint(tmp_path / "w.safetensors", model, model.card)
    assert not sidecar_path(tmp_path / "w.safetensors").exists()
    assert load_checkpoint(tmp_path / "w.safetensors")[2] is None


def test_corrupt_truncated_and_foreign_files_are_refused(tmp_path, trained_tiny):
    model, _ = trained_tiny
    good = save_checkpoint(tmp_path / "good.safetensors", model, model.card)
    data = good.read_bytes()
    cases = {
        "truncated.safetensors": data[: len(data) // 2],
        "garbage.safetensors": b"\x00\x01not a checkpoint" * 10,
        "empty.safetensors": b"",
    }
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(InputError, match=name):
            load_checkpoint(tmp_path / name)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(InputError, match="no dfmvr checkpoint metadata"):
        load_checkpoint(tmp_path / "foreign.safetensors")
    torch.save(model.state_dict(), tmp_path / "pickle.pth")
    with pytest.raises(InputError, match="dfmvr convert official"):
        load_checkpoint(tmp_path / "pickle.pth")
    with pytest.raises(InputError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_a_checkpoint_with_nan_weights_is_refused_by_name(tmp_path, trained_tiny):
    """A diverged run's weights: the export failed its parity gate (exit 1) and dfmvr-run wrote no mesh,
    neither naming the checkpoint."""
    model, _ = trained_tiny
    state = {k: v.clone() for k, v in model.state_dict().items()}
    key = "rednet_fc.conv2_id.bias"
    state[key][0] = float("nan")
    import copy

    broken = copy.deepcopy(model)
    broken.load_state_dict(state)
    path = save_checkpoint(tmp_path / "diverged.safetensors", broken, model.card)
    with pytest.raises(InputError, match=f"1 weight tensor\\(s\\) hold NaN or infinite values \\(first: {key}\\)") as err:
        load_checkpoint(path)
    assert "diverged.safetensors" in str(err.value) and err.value.exit_code == 2


def test_weights_that_do_not_fit_the_card_are_refused(tmp_path, trained_tiny):
    from safetensors.torch import save_file

    model, _ = trained_tiny
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    tensors.pop("rednet_fc.conv2_id.bias")
    meta = {"format": ckpt.CHECKPOINT_FORMAT, "version": "1", "model_card": model.card.to_json(),
            "checkpoint_id": "0"}
    save_file(tensors, str(tmp_path / "partial.safetensors"), metadata=meta)
    with pytest.raises(InputError, match="missing 1 \\[rednet_fc.conv2_id.bias\\]"):
        load_checkpoint(tmp_path / "partial.safetensors")


class _NotATensor:
    pass


def test_sidecar_with_pickled_objects_or_other_id_is_refused(tmp_path, trained_tiny):
    model, _ = trained_tiny
    path = save_checkpoint(tmp_path / "m.safetensors", model, model.card, {"epoch": 1})
    torch.save({"checkpoint_id": "x", "train_state": _NotATensor()}, sidecar_path(path))
    with pytest.raises(InputError, match="non-tensor objects"):
        load_checkpoint(path)
    torch.save({"checkpoint_id": "other", "train_state": {"epoch": 1}}, sidecar_path(path))
    with pytest.raises(InputError, match="other weights"):
        load_checkpoint(path)
    with pytest.raises(InputError, match="other weights"):     # a state without its own weights (before 2026-12-08)
        ckpt.load_for_resume(path)
    assert load_checkpoint(path, load_train_state=False)[2] is None


def test_failed_save_leaves_no_file_behind(tmp_path, trained_tiny):
    model, _ = trained_tiny
    with pytest.raises(Exception):
        save_checkpoint(tmp_path / "m.safetensors", model, model.card, {"fn": lambda: 0})  # unpicklable
    assert list(tmp_path.iterdir()) == []


def test_default_name_resolves_to_bundled_model():
    if ckpt.DEFAULT_CHECKPOINT.is_file():
        assert ckpt.resolve_checkpoint("default") == ckpt.DEFAULT_CHECKPOINT
        assert read_card("default").format == "dfmvr-model-card"
    else:
        with pytest.raises(InputError, match="bundled default model is not installed"):
            load_checkpoint("default")
    assert ckpt.DEFAULT_CHECKPOINT.parts[-3:] == ("assets", "default", "model.safetensors")


def test_loaded_model_keeps_frozen_parse_net_and_class_merge(tmp_path):
    from dfmvr.models.parse_net import celebamask_class_map
    from dfmvr.models.variants import make_card

    card = make_card("tiny")
    card.architecture["parse"].update(num_classes=19, class_map=celebamask_class_map())
    torch.manual_seed(3)
    model = build_model(card).eval()
    path = save_checkpoint(tmp_path / "m19.safetensors", model, model.card)
    loaded, _, _ = load_checkpoint(path)
    assert not any(t.is_meta for t in (*loaded.parameters(), *loaded.buffers()))
    assert torch.equal(loaded.parse_net.class_merge, model.parse_net.class_merge)
    assert [n for n, p in loaded.named_parameters() if p.requires_grad] == \
           [n for n, p in model.named_parameters() if p.requires_grad]
    assert not any(p.requires_grad for p in loaded.parse_net.parameters())
    x = torch.rand(1, 3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        got, want = loaded(x), model(x)
    torch.testing.assert_close(got[0], want[0], **SAME_COMPUTATION_FP32)
    torch.testing.assert_close(got[1], want[1], **SAME_COMPUTATION_FP32)


def test_wrong_tensor_shape_is_refused(tmp_path, trained_tiny):
    from safetensors.torch import save_file

    model, _ = trained_tiny
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    tensors["rednet_fc.conv2_id.bias"] = torch.zeros(3)
    meta = {"format": ckpt.CHECKPOINT_FORMAT, "version": "1", "model_card": model.card.to_json(),
            "checkpoint_id": "0"}
    save_file(tensors, str(tmp_path / "shape.safetensors"), metadata=meta)
    with pytest.raises(InputError, match="conv2_id.bias"):
        load_checkpoint(tmp_path / "shape.safetensors")


def test_convert_half_cli_writes_a_half_size_checkpoint_and_records_the_rounding(tmp_path, trained_tiny):
    from click.testing import CliRunner

    from dfmvr.cli.convert import command

    model, _ = trained_tiny
    full = save_checkpoint(tmp_path / "full.safetensors", model, model.card)
    out = tmp_path / "half.safetensors"
    r = CliRunner().invoke(command, ["half", str(full), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert out.stat().st_size < 0.55 * full.stat().st_size
    _, card, _ = load_checkpoint(out)
    assert card.provenance["weights_rounded_to"] == "float16"
    r = CliRunner().invoke(command, ["half", str(full), "--out", str(tmp_path / "half.pt")])
    assert r.exit_code == 2 and ".safetensors" in r.output


@pytest.mark.skipif(__import__("sys").platform == "win32", reason="POSIX signals")
def test_a_stop_between_the_two_renames_waits_until_both_are_done(tmp_path, trained_tiny, monkeypatch):
    """SIGTERM (a scheduler's stop) arriving after the training state was renamed into place but before the
    weights left a run whose state and weights disagree (checkpoint ids differ): it could not be resumed. The
    signal is held back over the two renames and delivered after them."""
    import os
    import signal

    import dfmvr.atomic as atomic

    model, _ = trained_tiny
    path = save_checkpoint(tmp_path / "run.safetensors", model, model.card, {"epoch": 1})
    real = os.replace
    calls = []

    def replace_then_stop(src, dst):
        real(src, dst)
        calls.append(dst)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)      # the stop lands right after the first rename

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    monkeypatch.setattr(atomic.os, "replace", replace_then_stop)
    try:
        with pytest.raises(KeyboardInterrupt):
            save_checkpoint(path, model, model.card, {"epoch": 2})
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert len(calls) == 2                               # both renames happened before the stop was delivered
    _, _, state = load_checkpoint(path)                  # ids agree: the run resumes
    assert state == {"epoch": 2}


def test_resume_falls_back_to_the_states_weights_only_for_their_successor(tmp_path, trained_tiny):
    """After a kill between the renames the weights file is the state's successor and the state's own copy
    resumes the run; another model copied over the weights (a user restoring a file) is refused, not silently
    replaced by the state's weights and overwritten at the next save."""
    import shutil

    model, _ = trained_tiny
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, model.card, {"epoch": 1})
    state_1 = sidecar_path(path).read_bytes()
    save_checkpoint(path, model, model.card, {"epoch": 2})
    sidecar_path(path).write_bytes(state_1)                     # killed between epoch 2's renames
    _, _, state, note = ckpt.load_for_resume(path)
    assert state == {"epoch": 1} and "newer than its training state" in note
    shutil.copy(save_checkpoint(tmp_path / "other.safetensors", model, model.card), path)    # another model
    with pytest.raises(InputError, match="other weights"):
        ckpt.load_for_resume(path)
