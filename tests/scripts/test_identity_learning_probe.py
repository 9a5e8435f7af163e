"""scripts/identity_learning_probe.py: readouts see where features are (or not); a short run writes its
scores; the decoded-data cache is written once and reused."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from tests.conftest import load_script


def _script():
    return load_script("identity_learning_probe")


@pytest.mark.parametrize("kind,sees_where", [("flatten", True), ("points", True), ("gap", False)])
def test_which_readouts_can_tell_where_a_feature_is(kind, sees_where):
    """The ablation's premise: the same feature at two places reads the same through a global average."""
    torch.manual_seed(0)
    readout = _script().Readout(kind, channels=4, points=3, h=14).eval()
    here, there = torch.zeros(1, 4, 14, 14), torch.zeros(1, 4, 14, 14)
    here[:, :, 2, 3], there[:, :, 11, 9] = 1.0, 1.0
    with torch.no_grad():
        differs = bool((readout(here) - readout(there)).abs().max() > 1e-6)
    assert differs == sees_where


def test_a_short_run_scores_held_out_triplets_and_reuses_its_cache(tmp_path, synth4, monkeypatch):
    script = _script()
    cache = tmp_path / "cache"
    for run in ("first", "second"):
        out = tmp_path / f"{run}.json"
        monkeypatch.setattr(sys, "argv", ["probe", "--train", str(synth4), "--val", str(synth4), "--cache", str(cache),
                                          "--out", str(out), "--steps", "4", "--batch", "2", "--eval-every", "2",
                                          "--readout", "flatten", "--labels", "onehot"])
        script.main()
        report = json.loads(out.read_text())
        assert [row["step"] for row in report["history"]] == [2, 4]
        last = report["history"][-1]
        for key in ("identity_r2", "expression_r2", "rotation_median_deg", "slot_prior_rotation_median_deg"):
            assert isinstance(last[key], float), key
        if run == "first":
            stamp = (cache / f"{synth4.name}.npz").stat().st_mtime_ns
    assert (cache / f"{synth4.name}.npz").stat().st_mtime_ns == stamp
