"""The TensorRT plugin's shape/dtype/format logic (plain functions), and its registration contract."""

from __future__ import annotations

import importlib.util

import pytest

from dfmvr.errors import UnavailableError
from dfmvr.kernels import trt_plugin as tp
from dfmvr.kernels.op import INVOLUTION, involution_output_size

HAS_TRT_PLUGIN = importlib.util.find_spec("tensorrt") is not None


def test_plugin_identity_comes_from_the_op_spec():
    assert tp.PLUGIN_ID == f"{INVOLUTION.domain}::{INVOLUTION.name}"
    assert tp.PLUGIN_VERSION == str(INVOLUTION.version)


def test_onnx_node_attributes_select_the_plugin():
    attrs = tp.onnx_node_attributes(7, 2, 8)
    assert attrs == {"kernel_size": 7, "stride": 2, "groups": 8, "plugin_namespace": INVOLUTION.plugin_namespace,
                     "plugin_version": tp.PLUGIN_VERSION, "aot": 1}
    # JIT is asked for explicitly: without "aot" the parser requests neither implementation, and a
    # plugin with both is refused (issue 20, defect 3; the real plugin layer: test_trt_plugin_layer.py)
    assert tp.onnx_node_attributes(3, 1, 2, aot=False)["aot"] == 0
    with pytest.raises(ValueError):
        tp.onnx_node_attributes(5, 1, 2)


def test_attr_int_accepts_scalars_and_one_element_arrays():
    """Issue 20, defect 1 (real NumPy, no TensorRT): the parser hands INT attributes over as one-element
    int32 arrays, which NumPy >= 2.4 refuses to int(); attr_int takes them explicitly."""
    import numpy as np

    for v in (7, np.int32(7), np.int64(7), np.array(7), np.array([7], np.int32), np.array([[7]], np.int64)):
        assert tp.attr_int(v, "kernel_size") == 7 and type(tp.attr_int(v)) is int
    for bad, err in ((np.array([3, 7], np.int32), ValueError), (np.array([], np.int32), ValueError),
                     (np.array([7.0]), TypeError), (7.0, TypeError), (True, TypeError), ("7", TypeError)):
        with pytest.raises(err):
            tp.attr_int(bad, "kernel_size")
    tp.validate_attributes(np.array([7], np.int32), np.array([2], np.int32), np.array([4], np.int32), 64)
    assert tp.onnx_node_attributes(np.array([3], np.int32), 1, np.array([2]))["kernel_size"] == 3


def test_check_weight_exprs_uses_what_is_known():
    """Issue 20, defect 7 (plain Python; TensorRT's expressions are stood in for by ints and a class
    with TensorRT's is_fake / is_constant / constant_value interface)."""

    class Sym:                        # a dimension TensorRT only knows at run time (the dynamic batch)
        is_fake, is_constant = False, False

        def __mul__(self, other):
            return self

        __rmul__ = __mul__

    b = Sym()
    tp.check_weight_exprs((b, 64, 56, 56), (b, 4 * 49, 28, 28), 7, 2, 4)
    with pytest.raises(ValueError, match="dimension 1 is 49, expected 196"):
        tp.check_weight_exprs((b, 64, 56, 56), (b, 49, 28, 28), 7, 2, 4)
    with pytest.raises(ValueError, match="dimension 0 is 3, expected 2"):
        tp.check_weight_exprs((2, 64, 56, 56), (3, 196, 28, 28), 7, 2, 4)
    with pytest.raises(ValueError, match="4-D"):
        tp.check_weight_exprs((b, 64, 56, 56), (b, 4, 49, 28, 28), 7, 2, 4)


def test_lazy_ptx_compiles_once_and_only_when_asked():
    """Issue 20, defect 6: registering must not compile; the stand-in compiler counts calls."""
    calls = []
    lazy = tp.LazyPtx(lambda: calls.append(1) or b"ptx")
    assert calls == []
    assert lazy() == b"ptx" and lazy() == b"ptx" and calls == [1]


@pytest.mark.parametrize("k", [3, 7])
@pytest.mark.parametrize("s", [1, 2])
def test_output_shape_matches_the_op(k, s):
    for h in range(1, 40):
        assert tp.output_size(h, k, s) == involution_output_size(h, k, s)
    x = (2, 64, 56, 41)
    y = tp.output_shape(x, k, s)
    assert y == (2, 64, involution_output_size(56, k, s), involution_output_size(41, k, s))
    assert tp.weight_shape(x, k, s, 4) == (2, 4 * k * k, y[2], y[3])
    assert tp.check_shapes(x, tp.weight_shape(x, k, s, 4), k, s, 4) == y


def test_output_size_works_on_symbolic_expressions():
    """TensorRT hands shape expressions, not ints: the formula must only use +, // and int operands
    on the right, which a minimal expression type records."""

    class Expr:
        def __init__(self, text):
            self.text = text

        def __add__(self, other):
            return Expr(f"({self.text} + {other})")

        def __floordiv__(self, other):
            return Expr(f"({self.text} // {other})")

    assert tp.output_size(Expr("H"), 7, 2).text == "(((H + -1) // 2) + 1)"


def test_check_shapes_rejects_mismatches():
    with pytest.raises(ValueError, match="W has shape"):
        tp.check_shapes((1, 32, 8, 8), (1, 18, 4, 4), 3, 1, 2)
    with pytest.raises(ValueError, match="divisible"):
        tp.check_shapes((1, 30, 8, 8), (1, 18, 8, 8), 3, 1, 4)
    with pytest.raises(ValueError, match="4-D"):
        tp.check_shapes((32, 8, 8), (1, 18, 8, 8), 3, 1, 2)


def test_dtype_mapping():
    assert tp.dtype_from_trt("DataType.FLOAT") == "float32"
    assert tp.dtype_from_trt("HALF") == "float16"
    with pytest.raises(TypeError, match="FP32 and FP16"):
        tp.dtype_from_trt("DataType.INT8")


def test_type_combination_keeps_all_three_tensors_in_one_dtype():
    positions = [p.strip().split("|") for p in tp.TYPE_COMBINATION.split(",")]
    assert len(positions) == 3                                # X, W, Y
    assert all(p == ["FP32", "FP16"] for p in positions)
    assert tp.TENSOR_FORMAT == "LINEAR"


def test_aot_scalar_args_and_grid():
    x, y = (2, 64, 56, 56), (2, 64, 28, 28)
    assert tp.aot_scalar_args(x, 4, 2) == (2, 64, 56, 56, 4, 2)
    assert len(tp.aot_scalar_args(x, 4, 2)) == tp.INVOLUTION_PARAMS.count("i32")
    assert tp.aot_grid_items(x, y, 4) == 2 * 4 * 28 * 28
    assert tp.PLUGIN_BLOCK % 32 == 0 and tp.PLUGIN_BLOCK <= 256


def test_involution_ptx_has_every_entry_for_the_oldest_arch():
    pytest.importorskip("cuda.bindings.nvrtc")
    ptx = tp.involution_ptx().decode()
    assert f".target sm_{tp.PTX_ARCH}" in ptx
    for k in (3, 7):
        for t in ("f32", "f16"):
            assert f".entry dfmvr_involution_k{k}_{t}(" in ptx


@pytest.mark.skipif(HAS_TRT_PLUGIN, reason="TensorRT is installed here")
def test_register_without_tensorrt_raises_unavailable():
    with pytest.raises(UnavailableError, match="TensorRT"):
        tp.register_involution_plugin()
