"""scripts/parse_accuracy.py: the confusion counts and the scores derived from them."""

from __future__ import annotations

import numpy as np
import pytest

from dfmvr.face.layout import NUM_PARSE_CLASSES
from tests.conftest import load_script


def _script():
    return load_script("parse_accuracy")


def test_confusion_counts_true_rows_against_predicted_columns():
    script = _script()
    truth = np.array([[0, 0, 1, 2]])
    predicted = np.array([[0, 1, 1, 1]])
    got = script.confusion_matrix(truth, predicted)
    assert got.shape == (NUM_PARSE_CLASSES, NUM_PARSE_CLASSES) and got.sum() == 4
    assert got[0, 0] == 1 and got[0, 1] == 1 and got[1, 1] == 1 and got[2, 1] == 1


def test_scores_pixel_accuracy_and_iou_of_present_classes_only():
    script = _script()
    confusion = script.confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]))
    got = script.scores(confusion)
    assert got["pixel_accuracy"] == pytest.approx(0.5)
    # background: 1 hit / (2 true + 1 predicted - 1); skin: 1 / (1 + 3 - 1); class 2: 0 / (1 + 0)
    assert got["iou"]["background"] == pytest.approx(0.5)
    assert got["iou"]["skin"] == pytest.approx(1 / 3, abs=1e-4)
    assert got["iou"]["left_brow"] == 0.0
    assert sum(v is None for v in got["iou"].values()) == NUM_PARSE_CLASSES - 3
    assert got["mean_iou"] == pytest.approx((0.5 + 1 / 3 + 0.0) / 3, abs=1e-4)
    # predicted / true pixels: background 1 / 2, skin 3 / 1, class 2 0 / 1, absent classes None
    assert got["area_ratio"]["background"] == 0.5 and got["area_ratio"]["skin"] == 3.0
    assert got["area_ratio"]["left_brow"] == 0.0 and got["area_ratio"]["nose"] is None


def _square(size: int, half: int, label: int = 2) -> np.ndarray:
    m = np.zeros((size, size), np.int64)
    c = size // 2
    m[c - half:c + half, c - half:c + half] = label
    return m


def test_boundary_distance_is_zero_for_a_match_and_the_offset_for_a_grown_part():
    script = _script()
    truth = _square(64, 10)
    same = script.boundary_scores(script.boundary_sums(truth, truth))
    assert same["boundary_px"]["left_brow"] == 0.0 and same["boundary_px"]["background"] == 0.0
    # the part grown by 2 px on every side: every outline pixel is 2 px from the other outline (corners
    # up to 2.83), in both directions; background's outline moves with it
    grown = script.boundary_scores(script.boundary_sums(truth, _square(64, 12)))
    assert 2.0 <= grown["boundary_px"]["left_brow"] < 2.2
    assert 2.0 <= grown["boundary_px"]["background"] < 2.2
    assert grown["boundary_px"]["skin"] is None     # absent from both maps: not scored
    assert grown["mean_boundary_px"] == pytest.approx(np.mean([grown["boundary_px"]["left_brow"],
                                                               grown["boundary_px"]["background"]]), abs=1e-3)


def test_boundary_distance_skips_a_part_missing_from_one_map():
    script = _script()
    truth = _square(32, 5)
    sums = script.boundary_sums(truth, np.zeros((32, 32), np.int64))
    got = script.boundary_scores(sums)
    assert got["boundary_px"]["left_brow"] is None and got["boundary_px"]["background"] is not None
    assert got["missed_fraction"]["left_brow"] == 1.0 and got["missed_fraction"]["background"] == 0.0
    # summed over a second view that finds it: missed in one of the two views showing it
    got = script.boundary_scores(sums + script.boundary_sums(truth, truth))
    assert got["missed_fraction"]["left_brow"] == 0.5 and got["missed_fraction"]["skin"] is None


def test_the_bundled_parse_net_scores_high_on_synthetic_views(synth4, tmp_path):
    """End to end on real files: the bundled demo's parse net saved as parse-stage weights, scored on
    the four shared triplets; a working parser is far above all-background (0.59 of these pixels)."""
    pytest.importorskip("torch")
    from dfmvr.models.checkpoint import load_checkpoint
    from dfmvr.train.parse_stage import save_parse_weights

    model, card, _ = load_checkpoint("default", load_train_state=False)
    weights = save_parse_weights(tmp_path / "parse_net.safetensors", model.mask_model, card.architecture["parse"])
    confusion, boundary = _script().parse_confusion(weights, synth4)
    assert confusion.sum() == 4 * 3 * 224 * 224
    got = _script().scores(confusion)
    outlines = _script().boundary_scores(boundary)
    assert 0 < outlines["boundary_px"]["skin"] < 3 and outlines["mean_boundary_px"] < 5
    assert got["pixel_accuracy"] > 0.9 and got["pixel_accuracy"] > confusion[0].sum() / confusion.sum() + 0.2
    assert got["iou"]["skin"] > 0.8
