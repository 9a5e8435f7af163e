"""scripts/ensemble_probe.py end to end, through the bundled graph (real ONNX Runtime, real renders)."""

from __future__ import annotations

import json
import sys

import pytest

from tests.conftest import load_script


def test_a_graph_averaged_with_itself_scores_as_itself(synth4, tmp_path, monkeypatch):
    out = tmp_path / "ensemble.json"
    monkeypatch.setattr(sys, "argv", ["ensemble_probe", "--onnx", "default", "--onnx", "default",
                                      "--data", str(synth4), "--threads", "1", "--json", str(out)])
    load_script("ensemble_probe").main()
    (result,) = json.loads(out.read_text())["sets"]
    assert result["num_triplets"] == 4 and len(result["members"]) == 2
    for member in result["members"]:
        assert member.keys() == result["average"].keys()
        for key, value in member.items():
            assert result["average"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    for gain in result["average_vs_member"]:
        assert abs(gain["mean_mm"]) < 1e-5


def test_one_graph_is_refused(synth4, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["ensemble_probe", "--onnx", "default", "--data", str(synth4)])
    with pytest.raises(SystemExit) as exit_info:
        load_script("ensemble_probe").main()
    assert exit_info.value.code == 2
