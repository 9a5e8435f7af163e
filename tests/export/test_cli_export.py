"""dfmvr-export's error paths: bad checkpoints, incompatible cards, bad options -> clear message, exit 2."""

from __future__ import annotations

import pytest

from dfmvr.cli.export import command
from tests.conftest import run_cli


def _run(args, capsys) -> tuple[int, str]:
    return run_cli(command, args, capsys, prog_name="dfmvr-export")


def test_help_lists_the_options(capsys):
    code, text = _run(["--help"], capsys)
    assert code == 0
    for option in ("--out", "--fp16", "--engine", "--batch", "--workspace", "--timing-cache"):
        assert option in text


def test_corrupt_checkpoint_is_exit_2_naming_the_file(tmp_path, capsys):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"this is not a safetensors file")
    code, text = _run([bad, "--out", tmp_path / "out"], capsys)
    assert code == 2
    assert "broken.safetensors" in text
    assert not (tmp_path / "out" / "model.onnx").exists()


def test_corrupt_official_weights_is_exit_2(tmp_path, capsys):
    bad = tmp_path / "000000279.pth"
    bad.write_bytes(b"\x80\x04not a pickle")
    code, text = _run([bad, "--out", tmp_path / "out"], capsys)
    assert code == 2 and "000000279.pth" in text


def test_unknown_name_is_exit_2_listing_the_choices(tmp_path, capsys):
    code, text = _run(["no-such-model", "--out", tmp_path / "out"], capsys)
    assert code == 2
    assert "tiny" in text and "default" in text


def test_incompatible_card_is_exit_2(tmp_path, capsys):
    from dfmvr.models.checkpoint import save_checkpoint
    from dfmvr.models.variants import build_model

    model = build_model("tiny")
    card = model.card
    card.image_size = 256            # the graph contract is 224 x 224
    path = save_checkpoint(tmp_path / "odd.safetensors", model, card)
    code, text = _run([path, "--out", tmp_path / "out"], capsys)
    assert code == 2
    assert "odd.safetensors" in text and "image size 256" in text


@pytest.mark.parametrize("batch", ["4:2:8", "0:1:1", "a:b:c", "1:2"])
def test_bad_batch_profile_is_exit_2_before_any_work(tmp_path, capsys, batch):
    code, text = _run(["tiny", "--out", tmp_path / "out", "--batch", batch], capsys)
    assert code == 2 and "--batch" in text
    assert not (tmp_path / "out").exists()


def test_parse_batch_accepts_one_number_and_triples():
    from dfmvr.export.tensorrt_build import BatchProfile, parse_batch

    assert parse_batch("1:2:8") == BatchProfile(1, 2, 8)
    assert parse_batch("4") == BatchProfile(4, 4, 4)
    from dfmvr.errors import InputError

    with pytest.raises(InputError, match="--engine-batch '4:2:8' is not MIN:OPT:MAX") as caught:
        parse_batch("4:2:8")
    assert caught.value.fix == "e.g. --engine-batch 1:1:4"
    assert BatchProfile(1, 2, 8).shapes(224)[2] == (8, 3, 3, 224, 224)
