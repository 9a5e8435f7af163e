"""The int8 graph's two weight formats (dfmvr.export.int8.WEIGHT_FORMATS) and the export's choice
between them (``--int8-weights auto``: s8 when it passes the gate, else u8)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from dfmvr.export import int8
from dfmvr.export.onnx_export import read_card
from dfmvr.export.parity import ParityReport


@pytest.fixture(scope="module")
def lite_fp32(lite_fp32_graph):
    return lite_fp32_graph


def _conv_weights(model: onnx.ModelProto) -> list[tuple[np.ndarray, np.ndarray]]:
    """(quantized weight, its per-channel zero points) of every 4-D weight DequantizeLinear."""
    inits = {t.name: t for t in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits and len(inits[node.input[0]].dims) == 4:
            zero_point = numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 else None
            out.append((numpy_helper.to_array(inits[node.input[0]]), zero_point))
    return out


@pytest.mark.parametrize("weights, dtype, low, high, zero", [("s8", np.int8, -64, 64, 0),
                                                              ("u8", np.uint8, 0, 255, 128)])
def test_each_format_stores_its_weights_as_documented(lite_fp32, weights, dtype, low, high, zero):
    fp32, card = lite_fp32
    quantized, info = int8.quantize_int8(fp32, card, count=1, weights=weights)
    stored = _conv_weights(quantized)
    assert len(stored) > 10
    for values, zero_points in stored:
        assert values.dtype == dtype and values.min() >= low and values.max() <= high
        assert zero_points is not None and (zero_points == zero).all()          # symmetric per channel
    # the weights use their range: 7 bits for s8, all 8 for u8 (some channel reaches each end)
    assert max(int(v.max()) for v, _ in stored) == high and min(int(v.min()) for v, _ in stored) == low
    recorded = read_card(quantized).provenance["quantization"]
    assert recorded["weight_format"] == info["weight_format"] == weights
    assert recorded["weights"] == int8.WEIGHT_FORMATS[weights].description
    assert recorded["reduce_range"] is int8.WEIGHT_FORMATS[weights].reduce_range


def test_an_unknown_weight_format_is_refused(lite_fp32):
    fp32, card = lite_fp32
    with pytest.raises(ValueError, match="s8"):
        int8.quantize_int8(fp32, card, count=1, weights="s4")


def test_the_cli_offers_exactly_the_export_choices():
    from dfmvr.cli.export import command

    (option,) = [p for p in command.params if p.name == "int8_weights"]
    assert tuple(option.type.choices) == int8.WEIGHT_CHOICES and option.default == "auto"


def _gate_stub(report_for):
    """A stand-in for the gate's verdict on a trial graph (``report_for(weight format)``), recording which
    formats it was asked about."""
    asked = []

    def check(run, quantized):
        asked.append(read_card(quantized).provenance["quantization"]["weight_format"])
        return report_for(asked[-1])
    return check, asked


@pytest.mark.slow
def test_auto_falls_back_to_u8_when_s8_fails_the_gate(tmp_path, monkeypatch):
    """The branch itself, the s8 verdict forced (a tiny export: 20 s, slow): u8 is written (and checked
    by the real gate), the parity report records the s8 trial, no s8 graph is left behind."""
    from dfmvr.export import pipeline

    check, asked = _gate_stub(lambda fmt: ParityReport(backend="onnxruntime-cpu", reference="torch", precision="int8",
                                                     batch=2, face_model="x", tolerance={}, mesh_max_mm=1.5,
                                                     mesh_mean_mm=0.4, failures=["mesh difference 1.5 mm >= 1 mm"],
                                                     passed=False))
    monkeypatch.setattr(pipeline, "_check_int8_graph", check)
    lines = []
    summary = pipeline.export_all("tiny", tmp_path, int8=True, calibration=1, echo=lines.append)
    assert asked == ["s8"]
    assert read_card(onnx.load(str(summary.int8_path))).provenance["quantization"]["weight_format"] == "u8"
    doc = json.loads(summary.parity_path.read_text())
    assert doc["int8"]["weights_requested"] == "auto" and doc["int8"]["weight_format"] == "u8"
    assert doc["int8"]["weights_tried"] == [{"weight_format": "s8", "passed": False, "mesh_max_mm": 1.5,
                                             "mesh_mean_mm": 0.4}]
    assert any("fails the gate" in line and "u8" in line for line in lines)
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == ["model.int8.onnx", "model.onnx"]
    (report,) = [r for r in doc["reports"] if r["precision"] == "int8"]
    assert report["passed"] is True                  # the u8 graph went through the real gate


@pytest.mark.slow   # 34 s on a slow host
def test_the_bundled_demo_exports_an_int8_graph_that_passes_the_gate(tmp_path, capsys):
    """Issue 18, item 5: ``dfmvr-export default --int8`` writes a graph within 1 mm of PyTorch, and
    ``dfmvr-run`` reconstructs the example with it. The 2026-12-05 demo's s8 graph missed by 0.03 mm (1.03),
    the 2026-12-07 demo's passes (0.61) on the CPUs measured; whichever format the gate lets through here, its
    own parity report passes and names it."""
    from dfmvr.cli import invoke
    from dfmvr.cli.run import command
    from dfmvr.export.pipeline import export_all

    summary = export_all("default", tmp_path, int8=True, echo=lambda line: None)
    doc = json.loads(summary.parity_path.read_text())
    (report,) = [r for r in doc["reports"] if r["precision"] == "int8"]
    assert report["passed"] is True and report["mesh_max_mm"] < 1.0
    written = read_card(onnx.load(str(summary.int8_path))).provenance["quantization"]["weight_format"]
    (trial,) = doc["int8"]["weights_tried"]          # auto tried s8 first, with the real gate
    assert written == ("s8" if trial["passed"] else "u8") == doc["int8"]["weight_format"]
    with pytest.raises(SystemExit) as exc:
        invoke(command, ["examples/triplet", "--aligned", "--onnx", str(summary.int8_path), "--out",
                         str(tmp_path / "out")], prog_name="dfmvr-run")
    assert exc.value.code == 0, capsys.readouterr()
    assert (tmp_path / "out" / "triplet" / "mesh.obj").is_file()
