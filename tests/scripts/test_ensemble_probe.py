"""scripts/ensemble_probe.py end to end, through the bundled graph and a copy of it with one head moved
(real ONNX Runtime sessions, real renders)."""

from __future__ import annotations

import json
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from dfmvr.face.layout import COEFFS
from dfmvr.runtime.artifacts import DEFAULT_ONNX
from tests.conftest import load_script

IDENTITY_BIAS = "net.rednet_fc.conv2_id.bias__fp16"     # the identity head's bias, stored in float16
SHIFT = 0.5


@pytest.fixture
def shifted_graph(tmp_path):
    """The bundled graph with every identity coefficient moved by SHIFT (its card travels along)."""
    model = onnx.load(str(DEFAULT_ONNX))
    (bias,) = [t for t in model.graph.initializer if t.name == IDENTITY_BIAS]
    bias.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(bias) + np.float16(SHIFT)).astype(np.float16),
                                          IDENTITY_BIAS))
    path = tmp_path / "shifted.onnx"
    onnx.save(model, str(path))
    return path


def test_the_average_is_the_members_mean(synth4, shifted_graph):
    from dfmvr.eval import OnnxPredictor
    from dfmvr.eval.dataset import find_eval_folders, load_eval_sample
    from dfmvr.face.selection import select_face_model

    probe = load_script("ensemble_probe")
    a, b = OnnxPredictor(DEFAULT_ONNX, threads=1), OnnxPredictor(shifted_graph, threads=1)
    face_model, _ = select_face_model(None, card=a.card, data=synth4)
    sample = load_eval_sample(find_eval_folders(synth4)[0], face_model, int(a.card.image_size))
    x = a.card.normalise(sample.images[None])
    mean = probe.AveragedGraphs([a, b])(x)
    np.testing.assert_allclose(mean, (a(x) + b(x)) / 2, rtol=1e-6, atol=1e-6)
    moved = (mean - a(x))[0, COEFFS.shared_slices()["identity"]]
    np.testing.assert_allclose(moved, SHIFT / 2, atol=2e-3)                  # half the shift (fp16 storage)
    rest = np.delete(mean - a(x), np.r_[COEFFS.shared_slices()["identity"]], axis=1)
    assert np.abs(rest).max() < 1e-5                                        # nothing else moved


def test_the_probe_scores_members_and_average(synth4, shifted_graph, tmp_path, monkeypatch):
    out = tmp_path / "ensemble.json"
    monkeypatch.setattr(sys, "argv", ["ensemble_probe", "--onnx", "default", "--onnx", str(shifted_graph),
                                      "--data", str(synth4), "--threads", "1", "--json", str(out)])
    load_script("ensemble_probe").main()
    (result,) = json.loads(out.read_text())["sets"]
    assert result["num_triplets"] == 4 and len(result["members"]) == 2
    first, shifted = result["members"]
    assert first.keys() == shifted.keys() == result["average"].keys()
    # the shift moves the identity only: expression and pose are the same in all three
    for key in ("expression", "rotation_deg_median", "translation_mm_median"):
        assert result["average"][key] == pytest.approx(first[key], rel=1e-4, abs=1e-4), key
    # and the shape: the shifted member is worst, the average between the two
    assert first["mean_mm"] < result["average"]["mean_mm"] < shifted["mean_mm"]
    assert result["average_vs_member"][0]["mean_mm"] < 0 < result["average_vs_member"][1]["mean_mm"]


def test_one_graph_is_refused(synth4, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["ensemble_probe", "--onnx", "default", "--data", str(synth4)])
    with pytest.raises(SystemExit) as exit_info:
        load_script("ensemble_probe").main()
    assert exit_info.value.code == 2
