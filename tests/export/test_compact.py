"""fp16 weight storage in ONNX graphs: a real ORT session on a small real graph, before and after."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from dfmvr.export.compact import store_weights_as_fp16
from tests.tolerances import SAME_COMPUTATION_FP32


def _graph(exact: np.ndarray, inexact: np.ndarray) -> onnx.ModelProto:
    nodes = [helper.make_node("MatMul", ["x", "w_exact"], ["h"]),
             helper.make_node("MatMul", ["h", "w_inexact"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 16])],
        initializer=[numpy_helper.from_array(exact, "w_exact"), numpy_helper.from_array(inexact, "w_inexact")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    onnx.checker.check_model(model)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_lossless_converts_exact_float16_weights_only_and_keeps_the_weights_bit_identical():
    rng = np.random.default_rng(0)
    exact = rng.standard_normal((32, 64)).astype(np.float16).astype(np.float32)
    inexact = rng.standard_normal((64, 16)).astype(np.float32)
    model = _graph(exact, inexact)
    x = rng.standard_normal((4, 32)).astype(np.float32)
    small, report = store_weights_as_fp16(model, lossless=True)
    assert (report.converted, report.rounded, report.kept) == (1, 0, 1)
    assert report.bytes_after == report.bytes_before - exact.nbytes // 2
    types = {i.name: i.data_type for i in small.graph.initializer}
    assert types == {"w_exact__fp16": TensorProto.FLOAT16, "w_inexact": TensorProto.FLOAT}
    stored = {i.name: numpy_helper.to_array(i) for i in small.graph.initializer}
    assert np.array_equal(stored["w_exact__fp16"].astype(np.float32).view(np.uint32), exact.view(np.uint32))
    np.testing.assert_allclose(_run(small, x), _run(model, x), **SAME_COMPUTATION_FP32)
    assert len(model.graph.node) == 2                      # the input model is left alone


def test_lossy_converts_every_weight_and_stays_within_float16_rounding():
    rng = np.random.default_rng(1)
    model = _graph(rng.standard_normal((32, 64)).astype(np.float32), rng.standard_normal((64, 16)).astype(np.float32))
    x = rng.standard_normal((4, 32)).astype(np.float32)
    small, report = store_weights_as_fp16(model, lossless=False)
    assert (report.converted, report.rounded, report.kept) == (2, 2, 0)
    assert len(small.SerializeToString()) < 0.6 * len(model.SerializeToString())
    want, got = _run(model, x), _run(small, x)
    assert not np.array_equal(got, want)
    np.testing.assert_allclose(got, want, rtol=0, atol=5e-3 * np.abs(want).max())
