"""The ``tensorrt.plugin`` definitions of dfmvr::Involution, made by ``define(trtp, ptx)``, which
``trt_plugin.register_involution_plugin`` calls with the imported ``tensorrt.plugin`` module (this
module itself imports without TensorRT).

No ``from __future__ import annotations`` here, on purpose: tensorrt.plugin reads the decorated
functions' annotations as objects (``issubclass(annotation, TensorDesc)``, the aot_impl return
type), which postponed (string) annotations would break.

Integer attributes are annotated ``NDArray[np.int32]`` (``IntAttr``), not ``int``: the ONNX parser fills
them as one-element int32 plugin fields, and TensorRT 10.x converts an ``int``-annotated field with
``int(field.data)``, which NumPy >= 2.4 refuses (every Involution node would fail at parse time).
Array-annotated fields are passed through as arrays by 10.x and 11.x alike; ``attr_int`` reads them
(and plain ints, for direct calls).
"""

from typing import Callable, List, Tuple, Union

import numpy as np
import numpy.typing as npt

from .launch import involution_kernel_name, involution_launch
from .trt_plugin import (INVOLUTION_PARAMS, PLUGIN_BLOCK, PLUGIN_ID, TENSOR_FORMAT, TYPE_COMBINATION, aot_grid_items,
                         aot_scalar_args, attr_int, check_shapes, check_weight_exprs, dtype_from_trt, output_size,
                         validate_attributes)

__all__ = ["define", "IntAttr"]

IntAttr = npt.NDArray[np.int32]   # how kernel_size / stride / groups are declared to tensorrt.plugin

_JIT_MODULES: dict = {}


def _jit_module(ptx: bytes):
    """The PTX loaded into the calling thread's current CUDA context (one module per context)."""
    from .cuda_driver import CudaModule, check, driver

    key = int(check(driver().cuCtxGetCurrent(), "cuCtxGetCurrent"))
    if key not in _JIT_MODULES:
        _JIT_MODULES[key] = CudaModule(ptx)
    return _JIT_MODULES[key]


def _ints(kernel_size, stride, groups) -> Tuple[int, int, int]:
    return attr_int(kernel_size, "kernel_size"), attr_int(stride, "stride"), attr_int(groups, "groups")


def define(trtp, ptx: Union[bytes, Callable[[], bytes]]) -> None:
    """Register the plugin's shape function, type/format combinations, AOT and JIT implementations.

    ``ptx``: the PTX bytes, or a callable returning them, called only when an implementation needs the
    kernel (building an AOT engine, or running the JIT implementation), never at registration."""
    get_ptx = ptx if callable(ptx) else (lambda: ptx)

    @trtp.register(PLUGIN_ID)
    def involution_desc(x: trtp.TensorDesc, w: trtp.TensorDesc, kernel_size: IntAttr, stride: IntAttr,
                        groups: IntAttr) -> trtp.TensorDesc:
        k, s, g = _ints(kernel_size, stride, groups)
        validate_attributes(k, s, g)
        check_weight_exprs(x.shape_expr, w.shape_expr, k, s, g)
        y = x.like()
        y.shape_expr[2] = output_size(x.shape_expr[2], k, s)
        y.shape_expr[3] = output_size(x.shape_expr[3], k, s)
        return y

    @trtp.autotune(PLUGIN_ID)
    def involution_autotune(x: trtp.TensorDesc, w: trtp.TensorDesc,
                            outputs: Tuple[trtp.TensorDesc]) -> List[trtp.AutoTuneCombination]:
        return [trtp.AutoTuneCombination(TYPE_COMBINATION, TENSOR_FORMAT)]

    if not hasattr(trtp, "aot_impl"):  # TensorRT < 10.8: JIT implementation only (needs Python at run time)
        _define_jit(trtp, get_ptx)
        return

    @trtp.aot_impl(PLUGIN_ID)
    def involution_aot(x: trtp.TensorDesc, w: trtp.TensorDesc, kernel_size: IntAttr, stride: IntAttr,
                       groups: IntAttr, outputs: Tuple[trtp.TensorDesc], tactic: int
                       ) -> Tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymExprs]:
        k, s, g = _ints(kernel_size, stride, groups)
        xs, ys = x.shape_expr, outputs[0].shape_expr
        check_weight_exprs(xs, w.shape_expr, k, s, g)    # the kernel reads W as [B, G*K*K, Ho, Wo]
        params = trtp.KernelLaunchParams()
        params.grid_x = trtp.cdiv(aot_grid_items(xs, ys, g), PLUGIN_BLOCK)
        params.block_x = PLUGIN_BLOCK
        params.shared_mem = 0
        extra = trtp.SymIntExprs.from_tuple([trtp.SymInt32(e) for e in aot_scalar_args(xs, g, s)])
        return involution_kernel_name(k, dtype_from_trt(x.dtype)).encode(), get_ptx(), params, extra

    _define_jit(trtp, get_ptx)


def _define_jit(trtp, get_ptx: Callable[[], bytes]) -> None:
    """The JIT implementation: the same PTX launched through cuda-python on TensorRT's stream."""

    @trtp.impl(PLUGIN_ID)
    def involution_jit(x: trtp.Tensor, w: trtp.Tensor, kernel_size: IntAttr, stride: IntAttr, groups: IntAttr,
                       outputs: Tuple[trtp.Tensor], stream: int) -> None:
        from .cuda_driver import KernelArg

        k, s, g = _ints(kernel_size, stride, groups)
        shape = tuple(int(d) for d in x.shape)
        check_shapes(shape, tuple(int(d) for d in w.shape), k, s, g)
        cfg = involution_launch(*shape, k, s, g, block=PLUGIN_BLOCK)
        _jit_module(get_ptx()).launch(
            involution_kernel_name(k, dtype_from_trt(x.dtype)), cfg,
            [int(x.data_ptr), int(w.data_ptr), *aot_scalar_args(shape, g, s), int(outputs[0].data_ptr)],
            KernelArg.kinds(INVOLUTION_PARAMS), stream)
