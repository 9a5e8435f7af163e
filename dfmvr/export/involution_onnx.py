"""``dfmvr::Involution`` in ONNX: its schema, its standard-op function body, its exporter translation.

The node is defined once in :mod:`dfmvr.kernels.op` (``INVOLUTION``); this module gives it to ONNX:

- ``register_involution_schema()`` registers an ``onnx.defs.OpSchema`` (domain "dfmvr", version 1,
  inputs X, W, output Y, int attributes kernel_size, stride, groups) once per process, so that the
  checker, shape inference and the torch exporter accept the node.
- ``involution_function(opset)`` is a ``FunctionProto`` written with standard ONNX ops only. A model
  that carries it runs in plain ONNX Runtime and in ``onnx.reference``; a runtime with a native kernel
  (a TensorRT plugin, an ORT custom op) uses its kernel instead.
- ``involution_translation`` is the onnxscript function handed to torch's dynamo exporter through
  ``custom_translation_table``: it emits the bare custom node (the exporter would inline a body).

Function body ("gather-matmul"), chosen because it is one fixed set of ops whatever K and stride are
(a function's body cannot be unrolled per attribute value) and does its work in three large ops:

    Xt = Transpose(Reshape(Pad(X, p), [B, G, C/G, Hp*Wp]))      [B, G, Hp*Wp, C/G]
    idx[i*Wo + j, di*K + dj] = (s*i + di) * Wp + (s*j + dj)     [P = Ho*Wo, K*K]  (Range; ORT folds it)
    U  = Gather(Xt, idx, axis=2)                                [B, G, P, K*K, C/G]
    Y  = MatMul(W as [B, G, P, 1, K*K], U)                      [B, G, P, 1, C/G] -> [B, C, Ho, Wo]

``benchmarks/bench_export_body.py`` measures it against the alternatives (Gather + Mul + ReduceSum over a
[B, C, K*K, Ho, Wo] tensor: ~3x slower; an unrolled Pad + K*K Slice/Mul/Add body, which would need one
function per (K, stride): ~1.6x slower); numbers in docs/export.md.
"""

from __future__ import annotations

import threading

import onnx
from onnx import TensorProto, defs, helper

from ..kernels.op import INVOLUTION

__all__ = [
    "OPSET", "INVOLUTION_ATTRIBUTES", "register_involution_schema", "involution_function",
    "involution_translation", "attach_involution_function", "strip_involution_function",
    "involution_nodes", "single_involution_model",
]

OPSET = 20                      # default-domain opset of exported graphs and of the function body
INVOLUTION_ATTRIBUTES = ("kernel_size", "stride", "groups")
_SCHEMA_LOCK = threading.Lock()


def register_involution_schema() -> None:
    """Register the ``dfmvr::Involution`` OpSchema with onnx.defs (once per process; idempotent)."""
    with _SCHEMA_LOCK:
        if defs.has(INVOLUTION.name, INVOLUTION.domain):
            return
        param = defs.OpSchema.FormalParameter
        attr = defs.OpSchema.Attribute
        schema = defs.OpSchema(
            INVOLUTION.name, INVOLUTION.domain, INVOLUTION.version,
            doc="Involution (RedNet): Y[b,c,i,j] = sum_{di,dj} W[b, c//(C/G), di*K+dj, i, j] * "
                "Xpad[b, c, s*i+di, s*j+dj], padding (K-1)/2. See dfmvr.kernels.op.",
            inputs=[param("X", "T", "input [B, C, H, W]"),
                    param("W", "T", "per-pixel kernels [B, G*K*K, Ho, Wo], ordered (G, K*K)")],
            outputs=[param("Y", "T", "output [B, C, Ho, Wo]")],
            type_constraints=[("T", ["tensor(float)", "tensor(float16)"], "float32 or float16")],
            attributes=[attr(name, defs.OpSchema.AttrType.INT, doc) for name, doc in (
                ("kernel_size", "K, odd"), ("stride", "s >= 1"), ("groups", "G; C % G == 0"))],
        )
        defs.register_schema(schema)


def _i64(name: str, values) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=helper.make_tensor(
        name, TensorProto.INT64, [len(values)], [int(v) for v in values]))


def involution_function(opset: int = OPSET) -> onnx.FunctionProto:
    """The standard-op body of ``dfmvr::Involution`` (gather-matmul, see module docstring).

    ``opset`` must equal the default-domain opset of the model that carries the function (ORT and the
    checker require it); opset >= 18 (ReduceSum/Pad take axes/pads as inputs).
    """
    if opset < 18:
        raise ValueError(f"the involution function body needs opset >= 18, got {opset}")
    n = helper.make_node
    nodes = [
        # the node's int attributes (value_int refs, filled in below) as 1-D int64 tensors
        n("Constant", [], ["k0"]), n("Constant", [], ["s0"]), n("Constant", [], ["g0"]),
        _i64("zero", [0]), _i64("one", [1]), _i64("two", [2]), _i64("minus1", [-1]),
        _i64("ax0", [0]), _i64("ax1", [1]), _i64("ax3", [3]),
        n("Unsqueeze", ["k0", "ax0"], ["k"]), n("Unsqueeze", ["s0", "ax0"], ["s"]),
        n("Unsqueeze", ["g0", "ax0"], ["g"]),
        # sizes
        n("Shape", ["X"], ["xshape"]),
        n("Slice", ["xshape", "zero", "one"], ["b"]),
        n("Slice", ["xshape", "zero", "two"], ["bc"]),
        n("Shape", ["X"], ["h"], start=2, end=3), n("Shape", ["X"], ["w"], start=3, end=4),
        n("Sub", ["k", "one"], ["km1"]), n("Div", ["km1", "two"], ["p"]),
        n("Add", ["km1", "h"], ["hp"]), n("Add", ["km1", "w"], ["wp"]),          # H + 2p, 2p = K - 1
        n("Sub", ["hp", "k"], ["hr"]), n("Div", ["hr", "s"], ["hq"]), n("Add", ["hq", "one"], ["ho"]),
        n("Sub", ["wp", "k"], ["wr"]), n("Div", ["wr", "s"], ["wq"]), n("Add", ["wq", "one"], ["wo"]),
        n("Mul", ["k", "k"], ["kk"]),
        # zero padding of H and W
        n("Concat", ["zero", "zero", "p", "p", "zero", "zero", "p", "p"], ["pads"], axis=0),
        n("Pad", ["X", "pads"], ["xp"]),
        # gather indices [Ho*Wo, K*K]: idx[i, j, di, dj] = (s*i + di) * Wp + (s*j + dj)
        n("Squeeze", ["k", "ax0"], ["k_s"]), n("Squeeze", ["ho", "ax0"], ["ho_s"]),
        n("Squeeze", ["wo", "ax0"], ["wo_s"]), n("Squeeze", ["zero", "ax0"], ["zero_s"]),
        n("Squeeze", ["one", "ax0"], ["one_s"]),
        n("Range", ["zero_s", "k_s", "one_s"], ["taps"]),                          # [K]
        n("Range", ["zero_s", "ho_s", "one_s"], ["rows0"]), n("Mul", ["rows0", "s"], ["rows"]),
        n("Range", ["zero_s", "wo_s", "one_s"], ["cols0"]), n("Mul", ["cols0", "s"], ["cols"]),
        n("Unsqueeze", ["rows", "ax1"], ["rows_col"]),                             # [Ho, 1]
        n("Unsqueeze", ["cols", "ax1"], ["cols_col"]),                             # [Wo, 1]
        n("Add", ["rows_col", "taps"], ["row_at"]), n("Mul", ["row_at", "wp"], ["row_off"]),   # [Ho, K]
        n("Add", ["cols_col", "taps"], ["col_at"]),                                # [Wo, K]
        n("Concat", ["ho", "one", "k", "one"], ["row_shape"], axis=0),
        n("Concat", ["one", "wo", "one", "k"], ["col_shape"], axis=0),
        n("Reshape", ["row_off", "row_shape"], ["row_off4"]),
        n("Reshape", ["col_at", "col_shape"], ["col_at4"]),
        n("Add", ["row_off4", "col_at4"], ["idx4"]),                               # [Ho, Wo, K, K]
        n("Mul", ["ho", "wo"], ["npix"]),
        n("Concat", ["npix", "kk"], ["idx_shape"], axis=0),
        n("Reshape", ["idx4", "idx_shape"], ["idx"]),                              # [P, KK]
        # channels last within each group, so every pixel's taps x channels block is contiguous
        n("Mul", ["hp", "wp"], ["hpwp"]),
        n("Concat", ["b", "g", "minus1", "hpwp"], ["xg_shape"], axis=0),
        n("Reshape", ["xp", "xg_shape"], ["xg"]),                                  # [B, G, C/G, Hp*Wp]
        n("Transpose", ["xg"], ["xt"], perm=[0, 1, 3, 2]),                         # [B, G, Hp*Wp, C/G]
        n("Gather", ["xt", "idx"], ["unfolded"], axis=2),                          # [B, G, P, KK, C/G]
        n("Concat", ["b", "g", "kk", "npix"], ["w_shape"], axis=0),
        n("Reshape", ["W", "w_shape"], ["wg"]),                                    # [B, G, KK, P]
        n("Transpose", ["wg"], ["wt"], perm=[0, 1, 3, 2]),                         # [B, G, P, KK]
        n("Unsqueeze", ["wt", "ax3"], ["w5"]),                                     # [B, G, P, 1, KK]
        # one batched [1, KK] x [KK, C/G] product per (b, g, pixel)
        n("MatMul", ["w5", "unfolded"], ["y5"]),                                   # [B, G, P, 1, C/G]
        n("Squeeze", ["y5", "ax3"], ["y4"]),                                       # [B, G, P, C/G]
        n("Transpose", ["y4"], ["yt"], perm=[0, 1, 3, 2]),                         # [B, G, C/G, P]
        n("Concat", ["bc", "ho", "wo"], ["y_shape"], axis=0),
        n("Reshape", ["yt", "y_shape"], ["Y"]),
    ]
    for const, attribute in ((nodes[0], "kernel_size"), (nodes[1], "stride"), (nodes[2], "groups")):
        const.attribute.append(onnx.AttributeProto(name="value_int", ref_attr_name=attribute,
                                                   type=onnx.AttributeProto.INT))
    return helper.make_function(
        INVOLUTION.domain, INVOLUTION.name, ["X", "W"], ["Y"], nodes,
        opset_imports=[helper.make_opsetid("", opset)], attributes=list(INVOLUTION_ATTRIBUTES),
        doc_string="dfmvr::Involution in standard ONNX ops (gather-matmul); see dfmvr.export.involution_onnx",
    )


def involution_translation(x, w, kernel_size: int, stride: int, groups: int):
    """onnxscript translation of ``torch.ops.dfmvr.Involution`` for the dynamo exporter: one bare node."""
    import onnxscript

    register_involution_schema()
    custom = onnxscript.values.Opset(INVOLUTION.domain, INVOLUTION.version)
    return custom.Involution(x, w, kernel_size=kernel_size, stride=stride, groups=groups)


def involution_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Every ``dfmvr::Involution`` node of the main graph."""
    return [nd for nd in model.graph.node if nd.domain == INVOLUTION.domain and nd.op_type == INVOLUTION.name]


def _default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    raise ValueError("model imports no default-domain opset")


def attach_involution_function(model: onnx.ModelProto) -> onnx.ModelProto:
    """Add (or replace) the involution FunctionProto, at the model's own opset; also the domain import."""
    strip_involution_function(model)
    model.functions.append(involution_function(_default_opset(model)))
    if not any(imp.domain == INVOLUTION.domain for imp in model.opset_import):
        model.opset_import.append(helper.make_opsetid(INVOLUTION.domain, INVOLUTION.version))
    return model


def strip_involution_function(model: onnx.ModelProto) -> onnx.ModelProto:
    """Remove the involution function body in place, so a runtime must use its own kernel (TensorRT)."""
    keep = [f for f in model.functions if not (f.domain == INVOLUTION.domain and f.name == INVOLUTION.name)]
    del model.functions[:]
    model.functions.extend(keep)
    return model


def single_involution_model(channels: int, kernel_size: int, stride: int, groups: int,
                            with_function: bool = True, elem_type: int = TensorProto.FLOAT,
                            opset: int = OPSET) -> onnx.ModelProto:
    """A one-node model X [B, C, H, W], W [B, G*K*K, Ho, Wo] -> Y (dynamic B/H/W); for tests and benches."""
    register_involution_schema()
    gkk = groups * kernel_size * kernel_size
    graph = helper.make_graph(
        [helper.make_node(INVOLUTION.name, ["X", "W"], ["Y"], domain=INVOLUTION.domain,
                          kernel_size=kernel_size, stride=stride, groups=groups)],
        "involution",
        [helper.make_tensor_value_info("X", elem_type, ["B", channels, "H", "W"]),
         helper.make_tensor_value_info("W", elem_type, ["B", gkk, "Ho", "Wo"])],
        [helper.make_tensor_value_info("Y", elem_type, ["B", channels, "Ho", "Wo"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                    helper.make_opsetid(INVOLUTION.domain, INVOLUTION.version)])
    model.ir_version = 10
    if with_function:
        attach_involution_function(model)
    return model
