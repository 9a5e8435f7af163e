"""scripts/slot_break_probe.py: slot-broken triplets move the photos and their pose truth together."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import load_script

torch = pytest.importorskip("torch")


def test_slot_broken_triplet_moves_photos_and_pose_truth_together(synth4):
    from dfmvr.face.layout import COEFFS
    from dfmvr.train.data import TripletDataset

    script = load_script("slot_break_probe")
    base = TripletDataset(synth4)
    broken = script.SlotBroken(base, [(2, 1, 1)])[0]
    item = base[0]
    assert torch.equal(broken["images"][0], item["images"][2]) and torch.equal(broken["images"][2], item["images"][1])
    poses_before = COEFFS.split(item["coefficients"].numpy()[None])
    poses_after = COEFFS.split(broken["coefficients"].numpy()[None])
    np.testing.assert_array_equal(poses_after.rotation[0, 0], poses_before.rotation[0, 2])
    np.testing.assert_array_equal(poses_after.translation[0, 2], poses_before.translation[0, 1])
    np.testing.assert_array_equal(poses_after.identity, poses_before.identity)
    assert all(s != (0, 1, 2) for s in script.random_breaks(200, 0))


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
