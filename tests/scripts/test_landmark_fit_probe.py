"""scripts/landmark_fit_probe.py (its fit: tests/train/test_landmark_fit.py; the CLI path: test_head_refit.py)."""

from __future__ import annotations

import numpy as np
import pytest

from dfmvr.face.layout import COEFFS
from tests.conftest import load_script

torch = pytest.importorskip("torch")


def test_scores_are_dfmvr_evals_r2_and_the_rotation_error(synth4):
    """The exact truth scores 1 plainly and size-free, 0° of rotation, and below 1 at the mean size
    (its own sizes are lost); a rotated view costs the rotation column."""
    from dfmvr.face.model import MorphableModel

    probe = load_script("landmark_fit_probe")
    fm = MorphableModel.load(synth4 / "face_model.npz")
    truth = np.random.default_rng(0).normal(size=(12, 269)).astype(np.float32)
    exact = probe.scores(fm, truth, truth)
    assert exact["identity"] == pytest.approx(1.0, abs=1e-9) and exact["rotation_median_deg"] == pytest.approx(0, abs=1e-3)
    assert exact["identity_size_free"] == pytest.approx(1.0, abs=1e-9)
    assert exact["identity_at_mean_size"] < exact["identity"]          # the truth's own sizes are lost
    rotation = COEFFS.split(truth).rotation.copy()
    rotation[..., 1] += np.radians(5.0)                                # every view 5° more yaw
    moved = COEFFS.split(truth)
    moved = type(moved)(moved.identity, moved.expression, moved.texture, moved.lighting, rotation, moved.translation)
    assert probe.scores(fm, COEFFS.join(moved), truth)["rotation_median_deg"] == pytest.approx(5.0, abs=0.05)


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
