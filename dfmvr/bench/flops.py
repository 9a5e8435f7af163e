"""Count the multiply-add FLOPs of an ONNX graph (2 FLOPs per MAC), per op type.

Shapes come from ONNX shape inference on a copy whose local functions (the Involution body) are
inlined and whose batch is fixed; the counts are taken on the original nodes, so a ``dfmvr::Involution``
node counts as involution (2·C·Ho·Wo·K²) rather than as its standard-op body. Element-wise ops,
normalisation and pooling are ignored: they are memory-bound and small next to the convolutions.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

__all__ = ["count_flops"]


def _shapes(model, batch: int) -> dict[str, tuple[int, ...]]:
    import onnx
    from onnx import inliner, shape_inference

    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in list(m.graph.input):
        dims = vi.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = batch
    if len(m.functions):
        m = inliner.inline_local_functions(m)
    m = shape_inference.infer_shapes(m, data_prop=True)
    out = {}
    for vi in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            out[vi.name] = tuple(d.dim_value for d in dims)
    for init in m.graph.initializer:
        out[init.name] = tuple(init.dims)
    return out


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            from onnx import helper
            return helper.get_attribute_value(a)
    return default


def count_flops(model, batch: int = 1) -> dict:
    """``model``: onnx.ModelProto or path. Returns {"total": FLOPs per batch, "by_op": {...}, "uncounted": [...]}."""
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    shapes = _shapes(model, batch)
    by_op: dict[str, float] = defaultdict(float)
    uncounted = []
    for node in model.graph.node:
        op = node.op_type
        try:
            if op == "Conv":
                out = shapes[node.output[0]]
                w = shapes[node.input[1]]
                flops = 2.0 * np.prod(out) * np.prod(w[1:])
            elif op == "ConvTranspose":
                x = shapes[node.input[0]]
                w = shapes[node.input[1]]          # [Cin, Cout/g, kh, kw]
                flops = 2.0 * np.prod(x) * np.prod(w[1:])
            elif op in ("MatMul", "Gemm"):
                a = shapes[node.input[0]]
                out = shapes[node.output[0]]
                k = a[-1] if not (op == "Gemm" and _attr(node, "transA", 0)) else a[0]
                flops = 2.0 * np.prod(out) * k
            elif op == "Involution":
                out = shapes[node.output[0]]
                k = _attr(node, "kernel_size")
                flops = 2.0 * np.prod(out) * k * k
            else:
                continue
        except KeyError:
            uncounted.append(node.name or op)
            continue
        by_op[op] += float(flops)
    return {"batch": batch, "total": float(sum(by_op.values())), "by_op": dict(by_op), "uncounted": uncounted}
