"""scripts/slot_break_sweep.py end to end: each fraction is the refit --stage heads --slot-breaks makes."""

from __future__ import annotations

import pytest

from tests.conftest import load_script

torch = pytest.importorskip("torch")


@pytest.mark.slow      # two refits and a sweep (~8 s); --stage heads --slot-breaks itself is tested in tests/train
def test_the_sweep_refits_as_the_tool_does(synth4, lite_checkpoint, tmp_path, monkeypatch):
    import json
    import sys

    from dfmvr.train.head_refit import run_head_refit

    out = tmp_path / "sweep.json"
    monkeypatch.setattr(sys, "argv", ["slot_break_sweep", "--checkpoint", str(lite_checkpoint), "--train", str(synth4),
                                      "--select", str(synth4), "--val", str(synth4), "--fractions", "0,0.5",
                                      "--json", str(out)])
    load_script("slot_break_sweep").main()
    report = json.loads(out.read_text())
    assert report["training_triplets"] == 4 and set(report["by_fraction"]) == {"0", "0.5"}
    assert [report["by_fraction"][f]["slot_broken_rows"] for f in ("0", "0.5")] == [0, 2]
    for entry in report["by_fraction"].values():
        assert set(entry[synth4.name]) == {"as_is", "front_photo_in_every_slot", "left_right_swapped", "random_breaks"}
    # the same rows and the same choice as dfmvr-train --stage heads --slot-breaks 0.5
    _, tool = run_head_refit(str(lite_checkpoint), synth4, synth4, tmp_path / "heads", slot_breaks=0.5,
                             progress=lambda *_: None)
    for group, want in tool["groups"].items():
        got = report["by_fraction"]["0.5"]["refit"][group]
        assert got["strength"] == want["strength"] and got["refit"] == want["refit"]
        assert got["select_by_strength"] == pytest.approx(want["select_by_strength"], abs=2e-4)
    assert report["by_fraction"]["0"]["refit"] != report["by_fraction"]["0.5"]["refit"]
