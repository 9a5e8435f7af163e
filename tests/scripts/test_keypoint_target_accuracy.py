"""scripts/keypoint_target_accuracy.py: the held-out score of a lite network's landmark target."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import load_script


def _script():
    return load_script("keypoint_target_accuracy")


def test_report_scores_squared_pixel_distance_against_the_slot_prior():
    """Two triplets, one view, one point: truth (0, 0) and (2, 0); slot mean (1, 0) is 1 px off each
    (prior 1 px^2); predictions (0, 3) and (2, 0) score (9 + 0) / 2."""
    script = _script()
    truth = np.array([[[[0.0, 0.0]]], [[[2.0, 0.0]]]])
    predicted = np.array([[[[0.0, 3.0]]], [[[2.0, 0.0]]]])
    got = script.keypoint_report(predicted, truth)
    assert got["triplets"] == 2 and got["per_view_px2"] == [4.5]
    assert got["keypoint_px2"] == pytest.approx(4.5) and got["slot_prior_px2"] == pytest.approx(1.0)


def test_a_keypoint_checkpoint_is_scored_on_real_triplets(synth4, tmp_path):
    """End to end on real files: a lite checkpoint with (untrained) keypoint heads, saved and scored on the four
    shared triplets; an untrained head points near the image centre, far from the landmarks."""
    pytest.importorskip("torch")
    from dfmvr.models.checkpoint import save_checkpoint
    from dfmvr.models.variants import build_model, make_card

    card = make_card("lite")
    card.architecture["unet"]["keypoints"] = 68
    model = build_model(card).eval()
    path = save_checkpoint(tmp_path / "kp.safetensors", model, model.card)
    predicted, truth = _script().predicted_and_true_landmarks(str(path), synth4)
    assert predicted.shape == truth.shape == (4, 3, 68, 2)
    report = _script().keypoint_report(predicted, truth)
    assert report["keypoint_px2"] > report["slot_prior_px2"] > 0


def test_a_network_without_keypoint_heads_is_refused():
    pytest.importorskip("torch")
    import torch

    from dfmvr.models.variants import build_model

    fusion = build_model("lite").uuunet
    with pytest.raises(ValueError, match="no keypoint heads"):
        fusion.keypoints_of([torch.zeros(1, 128, 14, 14)] * 3)
