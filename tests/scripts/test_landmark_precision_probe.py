"""scripts/landmark_precision_probe.py: keypoint error over visible points only, the noise ladder, a full run."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from tests.conftest import REPO, load_script

torch = pytest.importorskip("torch")


@pytest.fixture
def probe(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "scripts"))      # it imports readout_depth_probe, a sibling file
    return load_script("landmark_precision_probe")


def test_keypoint_error_counts_visible_points_only(probe):
    truth = np.zeros((2, 3 * 68 * 2))
    predicted = truth.copy().reshape(2, 3, 68, 2)
    predicted[..., 0], predicted[..., 1] = 3.0, 4.0                 # 5 px from the truth everywhere
    predicted[:, 2, 0] = 500.0                                       # a hidden point far off in view 2
    visible = np.ones((2, 3 * 68), bool).reshape(2, 3, 68)
    visible[:, 2, 0] = False
    rms = probe.keypoint_rms_px(predicted.reshape(2, -1), truth, visible.reshape(2, -1))
    assert rms == [5.0, 5.0, 5.0]
    # the same in [N, views, K, 2] shapes; without a visibility mask the hidden point counts
    assert probe.keypoint_rms_px(predicted, truth.reshape(2, 3, 68, 2), visible) == [5.0, 5.0, 5.0]
    assert probe.keypoint_rms_px(predicted, truth.reshape(2, 3, 68, 2))[:2] == [5.0, 5.0]
    assert probe.keypoint_rms_px(predicted, truth.reshape(2, 3, 68, 2))[2] > 50.0


def test_noise_is_per_pixel_gaussian_and_repeatable(probe):
    landmarks = np.zeros((400, 408))
    assert probe.noisy(landmarks, 0.0, 1) is landmarks
    once, again = probe.noisy(landmarks, 2.0, 1), probe.noisy(landmarks, 2.0, 1)
    np.testing.assert_array_equal(once, again)                       # the same draw for the same seed
    assert once.std() == pytest.approx(2.0, rel=0.02)
    assert not np.allclose(once, probe.noisy(landmarks, 2.0, 2))


def test_the_probe_runs_end_to_end(probe, synth4, tmp_path, monkeypatch, one_torch_thread):
    from dfmvr.face.model import MorphableModel
    from dfmvr.models.checkpoint import save_checkpoint
    from dfmvr.models.variants import build_model, make_card

    torch.manual_seed(0)
    card = make_card("lite", face_model=MorphableModel.load(synth4 / "face_model.npz").identity())
    card.architecture["unet"]["keypoints"] = 68
    model = build_model(card)
    checkpoint = tmp_path / "lite_kp.safetensors"
    save_checkpoint(checkpoint, model.eval(), model.card)
    out = tmp_path / "probe.json"
    monkeypatch.setattr(sys, "argv", ["landmark_precision_probe", "--checkpoint", str(checkpoint), "--train", str(synth4),
                                      "--triplets", "4", "--unseen", str(synth4), "--unseen-from", "3",
                                      "--val", str(synth4), "--noise", "0,2", "--json", str(out)])
    probe.main()
    report = json.loads(out.read_text())
    assert report["rows"] == {"fit": 3, "choose_strength": 1, "unseen": 1, "val": 4}
    assert set(report["ridge"]) == {"readout", "keypoints", "readout + keypoints",
                                    "landmarks + noise 0 px", "landmarks + noise 2 px"}
    assert report["ridge"]["readout + keypoints"]["features"] == 8 * 14 * 14 + 3 * 68 * 2
    rms = report["keypoint_rms_px"]["val"]
    assert len(rms) == 3 and all(0 < r < 224 for r in rms)          # an untrained head: off, but on the image


def test_a_checkpoint_without_keypoint_heads_is_refused(probe, synth4, lite_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["landmark_precision_probe", "--checkpoint", str(lite_checkpoint), "--train", str(synth4),
                                      "--unseen", str(synth4), "--val", str(synth4), "--json", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit, match="no keypoint heads"):
        probe.main()
