"""fp32 ONNX graph -> fp16 graph with fp32 inputs and outputs, custom nodes and function kept.

Uses ONNX Runtime's own converter (``onnxruntime.transformers.float16``, shipped with onnxruntime; no
extra dependency). Weights and activations become float16; the graph keeps ``images`` float32 in and
``coefficients`` float32 / ``labels`` uint8 out (Casts at the edges). ``dfmvr::Involution`` is typed
``T in {float, float16}`` by its schema and its function body is type-generic, so the node runs in fp16
with the same body. Ops whose fp16 form loses too much are kept fp32 (the converter's default block
list plus the ones below).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

import onnx

from ..kernels.op import INVOLUTION
from .involution_onnx import attach_involution_function, involution_nodes, register_involution_schema

__all__ = ["FP32_OPS", "convert_to_fp16"]

# Kept in float32: reductions over many pixels (global pooling) and softmax-like ops, whose fp16
# accumulation drifts; the converter adds Casts around them.
FP32_OPS = ["GlobalAveragePool", "ReduceMean", "Softmax", "Resize"]


def convert_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return an fp16 copy of an exported fp32 graph (fp32 I/O); the input model is not modified."""
    from onnxruntime.transformers import float16

    from .onnx_export import check_exported_model

    register_involution_schema()
    before = len(involution_nodes(model))
    src = onnx.ModelProto()
    src.CopyFrom(model)
    block = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(FP32_OPS))
    quiet = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(quiet):
        warnings.simplefilter("ignore")
        logging.getLogger("onnxruntime.transformers.float16").setLevel(logging.ERROR)
        half = float16.convert_float_to_float16(src, keep_io_types=True, op_block_list=block,
                                                disable_shape_infer=False)
    _topological_sort(half.graph)        # the converter appends its input Casts at the end
    # the converter rebuilds graph lists; make sure our function body (type-generic) is still there
    if not any(f.domain == INVOLUTION.domain and f.name == INVOLUTION.name for f in half.functions):
        attach_involution_function(half)
    check_exported_model(half, before, "fp16 conversion")
    return half


def _topological_sort(graph: onnx.GraphProto) -> None:
    """Reorder ``graph.node`` in place so that every node follows the producers of its inputs."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            missing = sorted({i for n in pending for i in n.input if i not in available})[:5]
            raise ValueError(f"graph has a cycle or dangling inputs: {missing}")
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
        for n in ready:
            ordered.append(n)
            available.update(n.output)
    copies = [onnx.NodeProto() for _ in ordered]
    for dst, src in zip(copies, ordered):
        dst.CopyFrom(src)
    del graph.node[:]
    graph.node.extend(copies)
