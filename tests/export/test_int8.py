"""int8 export (dfmvr.export.int8) of `tiny`: QDQ graph, custom nodes kept, ORT runs QLinear kernels,
parity within INT8_TOLERANCE, calibration data really used, dfmvr-run takes the graph unchanged."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from dfmvr.card import GRAPH_INPUT, GRAPH_OUTPUTS, ModelCard
from dfmvr.export import int8
from dfmvr.export.involution_onnx import involution_nodes
from dfmvr.export.onnx_export import read_card
from dfmvr.export.parity import INT8_TOLERANCE, compare
from dfmvr.face.layout import COEFFS
from dfmvr.face.synthetic import default_face_model
from dfmvr.kernels.op import INVOLUTION


# The tests on the exported int8 graph share one tiny export + quantization (~35 s on 2 cores): slow,
# to keep the README test command under six minutes; CI runs them with -m slow. The gate, the rewrite
# and the CLI stay fast, and tests/export/test_int8_lite.py checks the shipped model's int8 rules.
SLOW = pytest.mark.slow


@pytest.fixture(scope="module")
def int8_model(tiny_int8_export):
    return onnx.load(str(tiny_int8_export["summary"].int8_path))


def _scales(model: onnx.ModelProto) -> dict[str, float]:
    """Activation scales: QuantizeLinear nodes' scale initializers, by quantized tensor."""
    inits = {t.name: t for t in model.graph.initializer}
    return {n.input[0]: float(numpy_helper.to_array(inits[n.input[1]])) for n in model.graph.node
            if n.op_type == "QuantizeLinear" and n.input[1] in inits}


@SLOW
def test_graph_is_qdq_with_the_custom_nodes_function_and_card(tiny_int8_export, int8_model):
    fp32 = onnx.load(str(tiny_int8_export["summary"].onnx_path))
    ops = {n.op_type for n in int8_model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "DepthToSpace"} <= ops and "ConvTranspose" not in ops
    assert any(t.data_type == onnx.TensorProto.INT8 for t in int8_model.graph.initializer)   # weights
    assert len(involution_nodes(int8_model)) == len(involution_nodes(fp32)) > 0
    assert any(f.domain == INVOLUTION.domain and f.name == INVOLUTION.name for f in int8_model.functions)
    assert [i.type.tensor_type.elem_type for i in int8_model.graph.input] == [onnx.TensorProto.FLOAT]
    card = read_card(int8_model)
    assert card.variant == "tiny" and card.provenance["quantization"]["precision"] == "int8"
    assert card.provenance["quantization"]["calibration"]["triplets"] == tiny_int8_export["int8_calibration"]
    # --int8-weights auto: random-weight tiny passes the gate with the fast s8 weights, so they are kept
    assert card.provenance["quantization"]["weight_format"] == "s8"
    assert card.provenance["quantization"]["reduce_range"] is True
    (trial,) = tiny_int8_export["parity"]["int8"]["weights_tried"]
    assert trial["weight_format"] == "s8" and trial["passed"] is True
    # tiny: only the output layers stay float (no categorical comparison path, no spatial readout, no
    # one-hot input, no Concat that feeds only float nodes)
    kept = card.provenance["quantization"]["nodes_kept_float"]
    assert kept == {"output": len(int8.output_layers(fp32)), "categorical": 0, "readout": 0, "one_hot": 0,
                    "concat": 0} and kept["output"] > 0


@SLOW
def test_fused_int8_kernels_agree_with_the_float_simulation_of_the_same_graph(tiny_int8_export):
    """On this CPU, ORT's fused int8 kernels compute what the QDQ graph says (its float simulation,
    fusion disabled). With full-range s8 weights, MLAS's u8s8 kernel saturates on CPUs without VNNI and
    the two disagree (0.835 label agreement measured on an AVX2-only AMD EPYC); with 7-bit s8 weights (the
    graph here) or u8 weights they agree on any CPU."""
    from dfmvr.export.parity import parity_inputs

    card = read_card(onnx.load(str(tiny_int8_export["summary"].int8_path)))
    images = parity_inputs(card, batch=2)
    outputs = {}
    for disable in ("0", "1"):
        opts = ort.SessionOptions()
        opts.add_session_config_entry("session.disable_quant_qdq", disable)
        sess = ort.InferenceSession(str(tiny_int8_export["summary"].int8_path), opts,
                                    providers=["CPUExecutionProvider"])
        outputs[disable] = sess.run(list(GRAPH_OUTPUTS), {GRAPH_INPUT: images})
    (fused_c, fused_l), (sim_c, sim_l) = outputs["0"], outputs["1"]
    assert np.mean(fused_l == sim_l) > 0.99
    assert np.abs(fused_c - sim_c).max() < 1e-3


@SLOW
def test_onnxruntime_fuses_qlinear_kernels_and_runs_it(tiny_int8_export, tmp_path):
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    sess = ort.InferenceSession(str(tiny_int8_export["summary"].int8_path), opts, providers=["CPUExecutionProvider"])
    fused = {n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node}
    assert "QLinearConv" in fused                      # the int8 kernels, not float Convs on dequantized data
    images = np.zeros((2, 3, 3, 224, 224), np.float32)
    coefficients, labels = sess.run(list(GRAPH_OUTPUTS), {GRAPH_INPUT: images})
    assert coefficients.shape == (2, 269) and coefficients.dtype == np.float32 and np.isfinite(coefficients).all()
    assert labels.shape == (2, 3, 224, 224) and labels.dtype == np.uint8


@SLOW
def test_parity_report_within_the_int8_tolerance(tiny_int8_export):
    doc = tiny_int8_export["parity"]
    (report,) = [r for r in doc["reports"] if r["precision"] == "int8"]
    assert report["passed"] is True, report["failures"]
    assert report["mesh_max_mm"] < INT8_TOLERANCE.mesh_max_mm
    assert report["labels_agreement"] >= INT8_TOLERANCE.labels_min_agreement
    assert report["coefficients_max_abs"] > 0 and report["coefficients_mean_abs"] > 0   # int8 is not fp32
    assert doc["int8"]["calibration"] == {**doc["int8"]["calibration"], "method": "MinMax",
                                          "triplets": tiny_int8_export["int8_calibration"],
                                          "seed": int8.CALIBRATION_SEED}


@pytest.mark.parametrize("shift_mm, passes", [(0.5, True), (1.5, False)])
def test_int8_gate_is_the_documented_mesh_tolerance(shift_mm, passes):
    card = ModelCard(variant="tiny", architecture={})
    labels = np.zeros((1, 3, 224, 224), np.uint8)
    reference = COEFFS.zeros(1)
    moved = COEFFS.zeros(1)
    moved.translation[0, 1, 0] += shift_mm / 100          # decimetres: one view moved by shift_mm
    report = compare((COEFFS.join(reference), labels), (COEFFS.join(moved), labels), card,
                     default_face_model(), "onnxruntime-cpu", "int8")
    assert report.tolerance == asdict(INT8_TOLERANCE) and report.passed is passes
    assert report.mesh_max_mm == pytest.approx(shift_mm, rel=1e-4)


@SLOW
def test_calibration_data_sets_the_activation_scales(tiny_int8_export, int8_model, monkeypatch):
    fp32 = onnx.load(str(tiny_int8_export["summary"].onnx_path))
    card = read_card(fp32)
    count = tiny_int8_export["int8_calibration"]
    images = int8.calibration_inputs(card, count)
    # MinMax: the input's scale is its calibrated range (widened to hold 0) over 255 steps
    span = max(float(images.max()), 0.0) - min(float(images.min()), 0.0)
    scales = _scales(int8_model)
    assert scales[GRAPH_INPUT] == pytest.approx(span / 255, rel=1e-6)
    # the same triplets at half the contrast: the scales follow the data
    monkeypatch.setattr(int8, "calibration_inputs", lambda *_a, **_k: images * 0.5)
    halved, _ = int8.quantize_int8(fp32, card, count=count)
    other = _scales(halved)
    assert other[GRAPH_INPUT] == pytest.approx(scales[GRAPH_INPUT] / 2, rel=1e-6)
    changed = [t for t in scales if t in other and not np.isclose(scales[t], other[t], rtol=1e-3)]
    assert len(changed) > len(scales) // 2


def test_conv_transpose_rewrite_is_exact():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 5, 2, 2)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], name="up", kernel_shape=[2, 2], strides=[2, 2])],
        "up", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 6, 7, 9])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 5, 14, 18])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    x = rng.standard_normal((1, 6, 7, 9)).astype(np.float32)
    before = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    assert int8.rewrite_conv_transpose_2x2(model) == 1
    assert [n.op_type for n in model.graph.node] == ["Conv", "DepthToSpace"]
    after = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-5)


@SLOW
def test_dfmvr_run_takes_the_int8_graph_unchanged(tiny_int8_export, tmp_path, capsys):
    from dfmvr.cli import invoke
    from dfmvr.cli.run import command

    with pytest.raises(SystemExit) as exc:
        invoke(command, ["examples/triplet", "--aligned", "--onnx", str(tiny_int8_export["summary"].int8_path),
                         "--out", str(tmp_path / "out")], prog_name="dfmvr-run")
    assert exc.value.code == 0, capsys.readouterr()
    assert (tmp_path / "out" / "triplet" / "coeffs.npz").is_file()


def test_export_cli_lists_the_int8_options(capsys):
    from dfmvr.cli import invoke
    from dfmvr.cli.export import command

    with pytest.raises(SystemExit):
        invoke(command, ["--help"], prog_name="dfmvr-export")
    text = capsys.readouterr().out
    assert "--int8" in text and "--calibration" in text and "--int8-weights" in text
