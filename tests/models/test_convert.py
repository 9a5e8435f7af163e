"""``dfmvr convert official``: a state dict built from the official key list, and refused files."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from dfmvr.errors import InputError
from dfmvr.face.camera import OFFICIAL_CAMERA
from dfmvr.models.convert import convert_official, read_state_dict
from tests.conftest import run_python


def _random_official_state(keys, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, (shape, dtype) in keys.items():
        if dtype == "int64":
            state[key] = torch.randint(0, 1000, shape, generator=gen, dtype=torch.int64)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            state[key] = torch.randn(shape, generator=gen) * 0.02
    return state


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_cli_converts_a_full_official_checkpoint(tmp_path, official_keys):
    """~110 M random numbers with the official keys, DDP prefix and a wrapper dict -> our checkpoint."""
    from dfmvr.cli.convert import command
    from dfmvr.models.checkpoint import load_checkpoint

    keys = official_keys
    state = _random_official_state(keys)
    src = tmp_path / "000000279.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, src)
    out = tmp_path / "model.safetensors"
    result = CliRunner().invoke(command, ["official", str(src), "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "loaded 1200 tensors (110,462,159 parameters)" in result.output
    assert "kept 184,704 dead parameters under 'uuunet.conv9.*'" in result.output
    assert "kept 2,786,112 dead parameters under 'rednet_fc.rednet.pts_net.*'" in result.output
    model, card, _ = load_checkpoint(out)
    assert card.variant == "paper" and card.camera_obj() == OFFICIAL_CAMERA
    assert card.provenance["file"] == "000000279.pth" and len(card.provenance["sha256"]) == 64
    loaded = model.state_dict()
    for key in ("uuunet.up6.weight", "rednet_fc.conv2_offset_z_rt.bias", "mask_model.conv_out.conv_out.weight",
                "rednet_fc.rednet.layer3.5.conv2.conv2.conv.weight", "uuunet.conv9.conv.4.running_var"):
        assert torch.equal(loaded[key], state[key]), key


def test_plain_state_dict_partial_and_wrong_files_are_refused(tmp_path, official_keys):
    keys = official_keys
    # A partial file: the official keys minus the rednet heads, plus one foreign key.
    small = {k: torch.zeros(1) for k in list(keys)[:5]}
    small["extra.weight"] = torch.zeros(1)
    partial = tmp_path / "partial.pth"
    torch.save(small, partial)
    with pytest.raises(InputError) as info:
        convert_official(partial)
    msg = str(info.value)
    assert "partial.pth" in msg and "missing keys 1195:" in msg and "unexpected keys 1: extra.weight" in msg
    # Right keys, wrong shape.
    state = {k: torch.zeros(()) for k in keys}
    torch.save({"model": state}, tmp_path / "shapes.pth")
    with pytest.raises(InputError, match="shapes differ"):
        convert_official(tmp_path / "shapes.pth")


def test_non_state_dict_files_are_refused(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"this is not a torch file")
    with pytest.raises(InputError, match="weights_only"):
        read_state_dict(tmp_path / "junk.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(InputError, match="does not hold a state dict"):
        read_state_dict(tmp_path / "list.pth")
    torch.save({"net": {"module.a": torch.ones(2)}}, tmp_path / "wrapped.pth")
    assert list(read_state_dict(tmp_path / "wrapped.pth")) == ["a"]


def test_cli_exit_code_2_and_message_for_a_bad_file(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"foo": torch.zeros(1)}, bad)
    out = tmp_path / "model.safetensors"
    proc = run_python(f"from dfmvr.cli import main; main(['convert', 'official', {str(bad)!r}, "
                      f"'--out', {str(out)!r}])")
    assert proc.returncode == 2, proc.stderr
    assert "bad.pth" in proc.stderr and "missing keys 1200" in proc.stderr and "unexpected keys 1: foo" in proc.stderr
    assert not out.exists()
