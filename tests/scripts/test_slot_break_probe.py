"""scripts/slot_break_probe.py end to end (its slot-broken triplets: tests/train/test_head_refit.py)."""

from __future__ import annotations

import pytest

from tests.conftest import load_script

torch = pytest.importorskip("torch")


@pytest.mark.slow      # two refits (~6 s); its shared pieces are tested in tests/train/test_head_refit.py
def test_the_probe_runs_end_to_end(synth4, lite_checkpoint, tmp_path, monkeypatch):
    import json
    import sys

    out = tmp_path / "probe.json"
    monkeypatch.setattr(sys, "argv", ["slot_break_probe", "--checkpoint", str(lite_checkpoint), "--train", str(synth4),
                                      "--select", str(synth4), "--val", str(synth4), "--triplets", "2",
                                      "--json", str(out)])
    load_script("slot_break_probe").main()
    report = json.loads(out.read_text())
    assert report["training_triplets"] == 2 and report["slot_broken_rows"] == 1
    for name in ("trained_heads", "refit_mix", "refit_mix_and_slot_breaks"):
        assert set(report[name]) >= {"as_is", "front_photo_in_every_slot", "left_right_swapped", "random_breaks"}
