"""The ``tensorrt.plugin`` definitions of dfmvr::Involution, made by ``define(trtp, ptx)``, which
``trt_plugin.register_involution_plugin`` calls with the imported ``tensorrt.plugin`` module (this
module itself imports without TensorRT).

No ``from __future__ import annotations`` here, on purpose: tensorrt.plugin reads the decorated
functions' annotations as objects (``issubclass(annotation, TensorDesc)``, the aot_impl return
type), which postponed (string) annotations would break.
"""

from typing import List, Tuple, Union

from .launch import involution_kernel_name, involution_launch
from .trt_plugin import (INVOLUTION_PARAMS, PLUGIN_BLOCK, PLUGIN_ID, TENSOR_FORMAT, TYPE_COMBINATION, aot_grid_items,
                         aot_scalar_args, check_shapes, dtype_from_trt, output_size, validate_attributes)

__all__ = ["define"]

_JIT_MODULES: dict = {}


def _jit_module(ptx: bytes):
    """The PTX loaded into the calling thread's current CUDA context (one module per context)."""
    from .cuda_driver import CudaModule, check, driver

    key = int(check(driver().cuCtxGetCurrent(), "cuCtxGetCurrent"))
    if key not in _JIT_MODULES:
        _JIT_MODULES[key] = CudaModule(ptx)
    return _JIT_MODULES[key]


def define(trtp, ptx: bytes) -> None:
    """Register the plugin's shape function, type/format combinations, AOT and JIT implementations."""

    @trtp.register(PLUGIN_ID)
    def involution_desc(x: trtp.TensorDesc, w: trtp.TensorDesc, kernel_size: int, stride: int,
                        groups: int) -> trtp.TensorDesc:
        validate_attributes(kernel_size, stride, groups)
        y = x.like()
        y.shape_expr[2] = output_size(x.shape_expr[2], kernel_size, stride)
        y.shape_expr[3] = output_size(x.shape_expr[3], kernel_size, stride)
        return y

    @trtp.autotune(PLUGIN_ID)
    def involution_autotune(x: trtp.TensorDesc, w: trtp.TensorDesc,
                            outputs: Tuple[trtp.TensorDesc]) -> List[trtp.AutoTuneCombination]:
        return [trtp.AutoTuneCombination(TYPE_COMBINATION, TENSOR_FORMAT)]

    if not hasattr(trtp, "aot_impl"):  # TensorRT < 10.8: JIT implementation only (needs Python at run time)
        _define_jit(trtp, ptx)
        return

    @trtp.aot_impl(PLUGIN_ID)
    def involution_aot(x: trtp.TensorDesc, w: trtp.TensorDesc, kernel_size: int, stride: int, groups: int,
                       outputs: Tuple[trtp.TensorDesc], tactic: int
                       ) -> Tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymExprs]:
        xs, ys = x.shape_expr, outputs[0].shape_expr
        params = trtp.KernelLaunchParams()
        params.grid_x = trtp.cdiv(aot_grid_items(xs, ys, groups), PLUGIN_BLOCK)
        params.block_x = PLUGIN_BLOCK
        params.shared_mem = 0
        extra = trtp.SymIntExprs.from_tuple([trtp.SymInt32(e) for e in aot_scalar_args(xs, groups, stride)])
        return involution_kernel_name(kernel_size, dtype_from_trt(x.dtype)).encode(), ptx, params, extra

    _define_jit(trtp, ptx)


def _define_jit(trtp, ptx: bytes) -> None:
    """The JIT implementation: the same PTX launched through cuda-python on TensorRT's stream."""

    @trtp.impl(PLUGIN_ID)
    def involution_jit(x: trtp.Tensor, w: trtp.Tensor, kernel_size: int, stride: int, groups: int,
                       outputs: Tuple[trtp.Tensor], stream: int) -> None:
        from .cuda_driver import KernelArg

        shape = tuple(int(d) for d in x.shape)
        check_shapes(shape, tuple(int(d) for d in w.shape), kernel_size, stride, groups)
        cfg = involution_launch(*shape, kernel_size, stride, groups, block=PLUGIN_BLOCK)
        _jit_module(ptx).launch(
            involution_kernel_name(kernel_size, dtype_from_trt(x.dtype)), cfg,
            [int(x.data_ptr), int(w.data_ptr), *aot_scalar_args(shape, groups, stride), int(outputs[0].data_ptr)],
            KernelArg.kinds(INVOLUTION_PARAMS), stream)
