"""dfmvr::Involution in ONNX: schema, standard-op function body vs the numpy reference, TRT copy."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto
from onnx.reference import ReferenceEvaluator

from dfmvr.export.involution_onnx import (OPSET, attach_involution_function, involution_function,
                                          involution_nodes, register_involution_schema,
                                          single_involution_model, strip_involution_function)
from dfmvr.export.tensorrt_build import graph_for_tensorrt
from dfmvr.kernels.op import INVOLUTION, involution_output_size, involution_reference

# (channels, kernel, stride, groups, H, W): RedNet's k=3 stem and k=7 blocks, strides 1 and 2,
# odd and non-square sizes, one and several groups.
CASES = [(32, 3, 1, 2, 9, 11), (64, 7, 2, 4, 14, 13), (16, 7, 1, 1, 8, 8), (48, 5, 2, 3, 7, 10)]


def _inputs(c, k, s, g, h, w, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    ho, wo = involution_output_size(h, k, s), involution_output_size(w, k, s)
    x = rng.standard_normal((2, c, h, w)).astype(dtype)
    wt = rng.standard_normal((2, g * k * k, ho, wo)).astype(dtype)
    return x, wt


def test_schema_registered_once_from_the_shared_constant():
    register_involution_schema()
    register_involution_schema()          # idempotent: a second registration would raise in onnx
    schema = onnx.defs.get_schema(INVOLUTION.name, INVOLUTION.version, INVOLUTION.domain)
    assert schema.domain == INVOLUTION.domain and schema.since_version == INVOLUTION.version
    assert set(schema.attributes) == {"kernel_size", "stride", "groups"}
    assert [i.name for i in schema.inputs] == ["X", "W"] and [o.name for o in schema.outputs] == ["Y"]


@pytest.mark.parametrize("case", CASES)
def test_reference_evaluator_runs_the_function_like_the_numpy_reference(case):
    c, k, s, g, h, w = case
    model = single_involution_model(c, k, s, g)
    onnx.checker.check_model(model, full_check=True)
    x, wt = _inputs(*case)
    got = ReferenceEvaluator(model).run(None, {"X": x, "W": wt})[0]
    want = involution_reference(x, wt, k, s, g)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)


@pytest.mark.parametrize("case", CASES)
def test_onnxruntime_runs_the_function_like_the_numpy_reference(case):
    c, k, s, g, h, w = case
    sess = ort.InferenceSession(single_involution_model(c, k, s, g).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    x, wt = _inputs(*case, seed=1)
    np.testing.assert_allclose(sess.run(None, {"X": x, "W": wt})[0], involution_reference(x, wt, k, s, g),
                               rtol=0, atol=2e-5)
    # dynamic H/W: the same session on another size
    x2, wt2 = _inputs(c, k, s, g, h + 3, w + 1, seed=2)
    np.testing.assert_allclose(sess.run(None, {"X": x2, "W": wt2})[0], involution_reference(x2, wt2, k, s, g),
                               rtol=0, atol=2e-5)


def test_function_body_runs_in_float16():
    case = (32, 7, 2, 2, 12, 12)
    c, k, s, g, _, _ = case
    model = single_involution_model(c, k, s, g, elem_type=TensorProto.FLOAT16)
    x, wt = _inputs(*case, seed=3, dtype=np.float16)
    got = ReferenceEvaluator(model).run(None, {"X": x, "W": wt})[0]
    assert got.dtype == np.float16
    want = involution_reference(x.astype(np.float32), wt.astype(np.float32), k, s, g)
    np.testing.assert_allclose(got.astype(np.float32), want, rtol=0, atol=0.05)


def test_without_the_function_plain_onnxruntime_cannot_run_the_node():
    model = strip_involution_function(single_involution_model(16, 3, 1, 1))
    assert not model.functions
    with pytest.raises(Exception, match="(?i)involution|dfmvr"):
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_function_opset_follows_the_model_and_attach_is_idempotent():
    model = single_involution_model(16, 3, 1, 1, opset=19)
    attach_involution_function(model)
    assert len(model.functions) == 1
    assert [(i.domain, i.version) for i in model.functions[0].opset_import] == [("", 19)]
    with pytest.raises(ValueError):
        involution_function(17)
    assert involution_function().opset_import[0].version == OPSET


def test_tensorrt_copy_has_no_function_and_names_the_plugin():
    model = single_involution_model(32, 7, 2, 2)
    trt_model = graph_for_tensorrt(model)
    assert model.functions and not trt_model.functions          # the original is untouched
    (node,) = involution_nodes(trt_model)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["plugin_namespace"] == INVOLUTION.plugin_namespace.encode()
    assert attrs["plugin_version"] == str(INVOLUTION.version).encode()
    assert (attrs["kernel_size"], attrs["stride"], attrs["groups"]) == (7, 2, 2)
    assert attrs["aot"] == 1          # the plugin's ahead-of-time implementation (PTX in the engine)


def test_onnxslim_keeps_the_custom_node_and_its_function():
    import onnxslim

    model = single_involution_model(32, 7, 2, 2)
    slim = onnxslim.slim(model)
    assert len(involution_nodes(slim)) == 1
    assert [(f.domain, f.name) for f in slim.functions] == [(INVOLUTION.domain, INVOLUTION.name)]
    x, wt = _inputs(32, 7, 2, 2, 10, 10, seed=4)
    got = ReferenceEvaluator(slim).run(None, {"X": x, "W": wt})[0]
    np.testing.assert_allclose(got, involution_reference(x, wt, 7, 2, 2), rtol=0, atol=2e-5)
