"""FLOP counting against hand-computed counts on small real ONNX graphs."""

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from dfmvr.bench.flops import count_flops
from dfmvr.bench.stats import summarize


def _conv_gemm_model():
    w = numpy_helper.from_array(np.zeros((8, 3, 3, 3), np.float32), "w")
    wt = numpy_helper.from_array(np.zeros((8, 4, 2, 2), np.float32), "wt")
    m = numpy_helper.from_array(np.zeros((4 * 16 * 16, 10), np.float32), "m")
    shape = numpy_helper.from_array(np.array([-1, 4 * 16 * 16], np.int64), "shape")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2]),   # 8x8x8
        helper.make_node("ConvTranspose", ["y", "wt"], ["z"], strides=[2, 2]),             # 4x16x16
        helper.make_node("Reshape", ["z", "shape"], ["zf"]),
        helper.make_node("MatMul", ["zf", "m"], ["out"]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 3, 16, 16])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["B", 10])],
                              initializer=[w, wt, m, shape])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_conv_convtranspose_matmul_counts():
    r = count_flops(_conv_gemm_model(), batch=2)
    conv = 2 * 2 * 8 * 8 * 8 * (3 * 3 * 3)
    convt = 2 * 2 * 8 * 8 * 8 * (4 * 2 * 2)
    matmul = 2 * 2 * 10 * (4 * 16 * 16)
    assert r["by_op"] == {"Conv": conv, "ConvTranspose": convt, "MatMul": matmul}
    assert r["total"] == conv + convt + matmul
    assert r["uncounted"] == []


def test_summarize_percentiles_and_throughput():
    s = summarize([4.0, 1.0, 3.0, 2.0, 100.0], batch=4)
    assert s["min_ms"] == 1.0 and s["median_ms"] == 3.0
    assert s["p99_ms"] > s["p90_ms"] > s["median_ms"]
    assert abs(s["throughput_per_s"] - 4 * 1000 / 3.0) < 1e-9
