"""scripts/landmark_fit_probe.py (its fit: tests/train/test_landmark_fit.py; the CLI path: test_head_refit.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import load_script

torch = pytest.importorskip("torch")


def test_scores_forgive_the_size_only_at_the_mean_size(synth4):
    """The probe's extra column: a prediction whose only error is a size error scores ~1 at the mean size
    only when the truth has the mean size; the exact truth scores 1 plainly."""
    from dfmvr.face.model import MorphableModel

    probe = load_script("landmark_fit_probe")
    fm = MorphableModel.load(synth4 / "face_model.npz")
    truth = np.random.default_rng(0).normal(size=(12, 269)).astype(np.float32)
    exact = probe.scores(fm, truth, truth)
    assert exact["identity"] == pytest.approx(1.0, abs=1e-9) and exact["rotation_median_deg"] == pytest.approx(0, abs=1e-3)
    assert exact["identity_at_mean_size"] < exact["identity"]          # the truth's own sizes are lost


@pytest.mark.slow      # two fits and a ridge on 4 triplets (~10 s)
def test_the_probe_runs_end_to_end(synth4, lite_checkpoint, tmp_path, monkeypatch):
    import json
    import sys

    out = tmp_path / "probe.json"
    monkeypatch.setattr(sys, "argv", ["landmark_fit_probe", "--select", str(synth4), "--val", str(synth4),
                                      "--train", str(synth4), "--checkpoint", str(lite_checkpoint), "--steps", "20",
                                      "--coefficient-reg", "1e-3", "--json", str(out)])
    load_script("landmark_fit_probe").main()
    report = json.loads(out.read_text())
    assert report["chosen_coefficient_reg"] == 1e-3 and set(report["fits"]["0.001"]) == {"select", "val"}
    assert report["heads"]["train_triplets"] == 4
    assert set(report["heads"]["chosen"]) == {"fits", "truth"}
