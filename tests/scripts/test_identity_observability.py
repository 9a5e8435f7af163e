"""scripts/identity_observability.py: its ridge read-out recovers a linear signal and finds none in noise."""

from __future__ import annotations

import numpy as np
import pytest

from dfmvr.face.layout import COEFFS
from dfmvr.face.synthetic import default_face_model
from tests.conftest import REPO, load_script


def _script():
    return load_script("identity_observability")


def _truth(rng, sizes=(300, 40, 60)) -> dict:
    return {k: rng.normal(size=(n, COEFFS.size)).astype(np.float32) for k, n in zip(("train", "select", "val"), sizes)}


def test_ridge_recovers_identity_and_expression_that_are_linear_in_the_features():
    script, rng = _script(), np.random.default_rng(0)
    truth = _truth(rng)
    mixing = rng.normal(size=(COEFFS.size, 3 * COEFFS.size))
    # features: an invertible linear image of the coefficients (more features than coefficients), plus a little noise
    features = {k: v.astype(np.float64) @ mixing + 0.01 * rng.normal(size=(len(v), mixing.shape[1])) for k, v in truth.items()}
    got = script.ridge_scores(default_face_model(), features, truth)
    assert got["identity"] > 0.9 and got["expression"] > 0.9, got
    assert got["ridge_strength"] in script.RIDGE_STRENGTHS


def test_ridge_finds_nothing_in_features_unrelated_to_the_face():
    script, rng = _script(), np.random.default_rng(1)
    truth = _truth(rng)
    features = {k: rng.normal(size=(len(v), 50)) for k, v in truth.items()}
    got = script.ridge_scores(default_face_model(), features, truth)
    assert got["identity"] < 0.05 and got["expression"] < 0.05, got
    assert got["identity"] == pytest.approx(0.0, abs=0.2)        # near the mean face, not far worse


def test_label_features_sample_the_label_maps_one_hot(tmp_path):
    """One row per triplet folder (sorted), the three views' label maps at the grid's cell centres, one
    class set per position; a folder without gt.npz is not a triplet."""
    from dfmvr.face.layout import NUM_PARSE_CLASSES

    script, rng = _script(), np.random.default_rng(2)
    maps = {}
    for name in ("000001", "000000"):
        maps[name] = rng.integers(0, NUM_PARSE_CLASSES, size=(3, 224, 224), dtype=np.uint8)
        (tmp_path / name).mkdir()
        np.savez(tmp_path / name / "gt.npz", labels=maps[name])
    (tmp_path / "not-a-triplet").mkdir()
    got = script.label_features(tmp_path, grid=32)
    assert got.shape == (2, 3 * 32 * 32 * NUM_PARSE_CLASSES)
    per_position = got.reshape(2, 3, 32, 32, NUM_PARSE_CLASSES)
    assert np.all(per_position.sum(-1) == 1)
    want = maps["000000"][2, 3 + 7 * 5, 3 + 7 * 11]          # the right view's cell (5, 11), row 0 = folder 000000
    assert per_position[0, 2, 5, 11].argmax() == want
    first = script.label_features(tmp_path, grid=32, limit=1)           # --train-limit: the first folder only
    assert first.shape == (1, got.shape[1]) and np.array_equal(first[0], got[0])


def test_graph_labels_are_the_shipped_graphs_parse_of_the_photos():
    """--labels-from: the bundled graph's `labels` output on the example triplet, a real ONNX Runtime
    session; a parser that works agrees with the renderer's labels on most pixels."""
    from dfmvr.runtime.artifacts import DEFAULT_ONNX

    if not DEFAULT_ONNX.is_file():
        pytest.skip("no bundled model")
    folder = REPO / "examples" / "triplet"
    got = _script().graph_labels(DEFAULT_ONNX)(folder)
    want = _script().true_labels(folder)
    assert got.shape == want.shape == (3, 224, 224) and got.dtype == np.uint8
    assert (got == want).mean() > 0.9          # all background would score 0.59 here


@pytest.mark.slow      # a research script's network pass end to end (~3 s)
def test_network_features_read_what_the_identity_head_reads(synth4, lite_checkpoint):
    """--checkpoint on a lite network (no RedNet trunk): one feature set, the identity head's input, one
    row per triplet read, and exactly what conv2_id receives (checked against a second hook)."""
    torch = pytest.importorskip("torch")
    from dfmvr.models.checkpoint import load_checkpoint
    from dfmvr.train.data import TripletDataset

    got = _script().network_features(lite_checkpoint, {"train": synth4, "val": synth4}, {"train": 3})
    assert set(got) == {"identity_head_input"}
    train, val = got["identity_head_input"]["train"], got["identity_head_input"]["val"]
    assert train.shape[0] == 3 and val.shape[0] == 4 and train.shape[1] == val.shape[1] > 0
    model, _, _ = load_checkpoint(lite_checkpoint, load_train_state=False)
    seen = []
    model.eval().rednet_fc.conv2_id.register_forward_pre_hook(lambda m, args: seen.append(args[0].flatten(1)))
    with torch.no_grad():
        model(TripletDataset(synth4)[3]["images"][None])
    np.testing.assert_allclose(val[3], seen[0][0].double().numpy(), rtol=1e-4, atol=1e-5)
