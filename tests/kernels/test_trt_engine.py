"""The Involution plugin inside a TensorRT engine, against ONNX Runtime on the same graph.

Needs TensorRT >= 10.8 (tensorrt.plugin), onnx, onnxruntime, cuda-python and a GPU; skipped otherwise.
The ONNX Runtime side runs the same node through a standard-op FunctionProto (the unfolded
formulation, written here with onnx.helper), so the comparison is engine vs an independent graph.
"""

from __future__ import annotations

import numpy as np
import pytest

from dfmvr.kernels.op import GROUP_CHANNELS, INVOLUTION, involution_output_size, involution_reference



def involution_onnx(shape, k, s, g, dtype, aot: bool, with_function: bool) -> bytes:
    """One dfmvr::Involution node graph; optionally with a reference FunctionProto for ORT."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from dfmvr.kernels.trt_plugin import onnx_node_attributes

    b, c, h, w = shape
    ho, wo = involution_output_size(h, k, s), involution_output_size(w, k, s)
    et = TensorProto.FLOAT if dtype == np.float32 else TensorProto.FLOAT16
    attrs = onnx_node_attributes(k, s, g, aot=aot)
    if with_function:       # ORT ignores the TensorRT-only attributes of a function call
        attrs = {n: attrs[n] for n in ("kernel_size", "stride", "groups")}
    node = helper.make_node(INVOLUTION.name, ["X", "W"], ["Y"], domain=INVOLUTION.domain, **attrs)
    graph = helper.make_graph([node], "involution",
                              [helper.make_tensor_value_info("X", et, [b, c, h, w]),
                               helper.make_tensor_value_info("W", et, [b, g * k * k, ho, wo])],
                              [helper.make_tensor_value_info("Y", et, [b, c, ho, wo])])
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid(INVOLUTION.domain, INVOLUTION.version)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=10)  # ORT 1.31 reads IR <= 13
    if with_function:
        model.functions.append(_unfold_function(k, s, g, c, ho, wo, b))
    return model.SerializeToString()


def _unfold_function(k, s, g, c, ho, wo, b):
    """Standard-op body: pad, gather the K*K shifted strided views with Slice, weight and sum."""
    from onnx import helper

    p = (k - 1) // 2
    nodes = [helper.make_node("Constant", [], ["pads"], value_ints=[0, 0, p, p, 0, 0, p, p]),
             helper.make_node("Pad", ["X", "pads"], ["xp"]),
             helper.make_node("Constant", [], ["wshape"], value_ints=[b, g, 1, k * k, ho, wo]),
             helper.make_node("Reshape", ["W", "wshape"], ["w6"]),
             helper.make_node("Constant", [], ["xshape"], value_ints=[b, g, c // g, 1, ho, wo])]
    taps = []
    for di in range(k):
        for dj in range(k):
            t = f"t{di}_{dj}"
            nodes += [helper.make_node("Constant", [], [f"{t}_st"], value_ints=[di, dj]),
                      helper.make_node("Constant", [], [f"{t}_en"], value_ints=[di + s * (ho - 1) + 1, dj + s * (wo - 1) + 1]),
                      helper.make_node("Constant", [], [f"{t}_ax"], value_ints=[2, 3]),
                      helper.make_node("Constant", [], [f"{t}_sp"], value_ints=[s, s]),
                      helper.make_node("Slice", ["xp", f"{t}_st", f"{t}_en", f"{t}_ax", f"{t}_sp"], [f"{t}_x"]),
                      helper.make_node("Reshape", [f"{t}_x", "xshape"], [t])]
            taps.append(t)
    nodes += [helper.make_node("Concat", taps, ["patches"], axis=3),
              helper.make_node("Mul", ["patches", "w6"], ["prod"]),
              helper.make_node("Constant", [], ["ax3"], value_ints=[3]),
              helper.make_node("ReduceSum", ["prod", "ax3"], ["ysum"], keepdims=0),
              helper.make_node("Constant", [], ["yshape"], value_ints=[b, c, ho, wo]),
              helper.make_node("Reshape", ["ysum", "yshape"], ["Y"])]
    return helper.make_function(INVOLUTION.domain, INVOLUTION.name, ["X", "W"], ["Y"], nodes,
                                [helper.make_opsetid("", 18)], ["kernel_size", "stride", "groups"])


@pytest.mark.parametrize("k,s", [(3, 1), (3, 2), (7, 1), (7, 2)])
def test_onnxruntime_side_of_the_comparison_is_the_op(k, s):
    """Runs here: the ORT graph the engine is compared with computes involution_reference."""
    ort = pytest.importorskip("onnxruntime")
    shape, g = (2, 32, 13, 12), 2
    ho, wo = involution_output_size(13, k, s), involution_output_size(12, k, s)
    rng = np.random.default_rng(k * s)
    x = rng.normal(size=shape).astype(np.float32)
    w = rng.normal(size=(2, g * k * k, ho, wo)).astype(np.float32)
    sess = ort.InferenceSession(involution_onnx(shape, k, s, g, np.float32, True, True))
    (y,) = sess.run(None, {"X": x, "W": w})
    ref = involution_reference(x.astype(np.float64), w.astype(np.float64), k, s, g)
    assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.parametrize("aot", [True, False])
@pytest.mark.parametrize("k,s", [(3, 1), (7, 2)])
def test_plugin_engine_matches_onnxruntime(cuda_context, aot, k, s):
    trt = pytest.importorskip("tensorrt")
    pytest.importorskip("tensorrt.plugin")
    ort = pytest.importorskip("onnxruntime")
    from dfmvr.kernels.cuda_driver import DeviceBuffer, check, driver
    from dfmvr.kernels.trt_plugin import register_involution_plugin

    register_involution_plugin()
    shape, g = (2, 32, 20, 22), 32 // GROUP_CHANNELS
    ho, wo = involution_output_size(20, k, s), involution_output_size(22, k, s)
    rng = np.random.default_rng(k + s)
    x = rng.normal(size=shape).astype(np.float32)
    w = rng.normal(size=(2, g * k * k, ho, wo)).astype(np.float32)

    sess = ort.InferenceSession(involution_onnx(shape, k, s, g, np.float32, aot, True))
    (y_ort,) = sess.run(None, {"X": x, "W": w})
    np.testing.assert_allclose(y_ort, involution_reference(x, w, k, s, g), rtol=1e-4, atol=1e-4)

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(involution_onnx(shape, k, s, g, np.float32, aot, False)), \
        [parser.get_error(i).desc() for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    engine_bytes = builder.build_serialized_network(network, config)
    assert engine_bytes is not None
    engine = trt.Runtime(logger).deserialize_cuda_engine(engine_bytes)
    ctx = engine.create_execution_context()
    stream = cuda_context.stream
    bx, bw, by = DeviceBuffer(), DeviceBuffer(), DeviceBuffer(y_ort.nbytes)
    ctx.set_tensor_address("X", bx.upload(x, stream))
    ctx.set_tensor_address("W", bw.upload(w, stream))
    ctx.set_tensor_address("Y", int(by.ptr))
    assert ctx.execute_async_v3(int(stream))
    y_trt = by.download(np.empty_like(y_ort), stream)
    check(driver().cuStreamSynchronize(stream))
    np.testing.assert_allclose(y_trt, y_ort, rtol=1e-4, atol=1e-4)
