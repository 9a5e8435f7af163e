"""torch DFMVRNet -> one ONNX graph with ``dfmvr::Involution`` nodes, their function body and the card.

Pipeline (``export_onnx``): torch 2.13's dynamo exporter with the involution translated to a bare
custom node -> append the standard-op FunctionProto -> model card into ``metadata_props`` -> full onnx
checker -> onnxslim -> check again that the custom nodes, the function and the card survived -> one
atomic write. The written graph honours ``dfmvr.card``'s I/O contract:

    input  "images"        float32 [B, 3 views, 3, 224, 224]  normalised RGB, dynamic B
    output "coefficients"  float32 [B, 269]                   COEFFS layout
    output "labels"        uint8   [B, 3, 224, 224]           parse classes
    output "keypoints"     float32 [B, 3, 68, 2]              crop px; only a network that predicts them
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx

from ..atomic import atomic_path
from ..card import GRAPH_INPUT, GRAPH_KEYPOINTS, GRAPH_OUTPUTS, ONNX_METADATA_KEY, ModelCard
from ..errors import DfmvrError, InputError
from ..face.layout import NUM_VIEWS
from ..kernels.op import INVOLUTION
from .involution_onnx import (OPSET, attach_involution_function, involution_nodes,
                              involution_translation, register_involution_schema)

__all__ = ["ExportError", "OnnxExportResult", "export_onnx", "graph_outputs", "graph_wrapper", "read_card",
           "check_exported_model"]

log = logging.getLogger(__name__)


class ExportError(DfmvrError):
    """The exported graph is not what the contract promises (lost custom nodes, parity failure...)."""


@dataclass
class OnnxExportResult:
    path: Path
    involution_nodes: int           # dfmvr::Involution nodes in the written graph
    nodes: int                      # all nodes in the written graph
    opset: int
    simplified: bool                # onnxslim ran (and its result passed the checks)


def graph_outputs(model) -> list[str]:
    """The output names of ``model``'s graph (``dfmvr.models.graph.graph_outputs``)."""
    from ..models.graph import graph_outputs as names

    return names(model)


def graph_wrapper(model):
    """``model`` as the graph computes it: its outputs match the contract (``dfmvr.models.graph``)."""
    from ..models.graph import GraphModule

    return GraphModule(model)


def _torch_export(model, image_size: int, opset: int) -> onnx.ModelProto:
    import torch

    register_involution_schema()
    torch_op = getattr(getattr(torch.ops, INVOLUTION.domain), INVOLUTION.name).default
    # batch 2 in the example: torch.export specialises a dimension of size 1 to a constant.
    example = torch.zeros(2, NUM_VIEWS, 3, image_size, image_size)
    batch = torch.export.Dim("batch", min=1, max=1024)
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            graph_wrapper(model), (example,), dynamo=True, opset_version=opset,
            custom_translation_table={torch_op: involution_translation},
            input_names=[GRAPH_INPUT], output_names=graph_outputs(model),
            dynamic_shapes=({0: batch},), optimize=True, verbose=False,
        )
    log.debug("torch.onnx.export log:\n%s", sink.getvalue())
    return program.model_proto


def _set_card(model: onnx.ModelProto, card: ModelCard) -> None:
    keep = [p for p in model.metadata_props if p.key != ONNX_METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    model.metadata_props.add(key=ONNX_METADATA_KEY, value=card.to_json())


def read_card(model: onnx.ModelProto, source=None) -> ModelCard:
    """The ModelCard stored in an ONNX model's ``metadata_props`` (InputError if absent or bad)."""
    for prop in model.metadata_props:
        if prop.key == ONNX_METADATA_KEY:
            return ModelCard.from_json(prop.value, source)
    raise InputError(source, f"ONNX model has no '{ONNX_METADATA_KEY}' metadata (not exported by dfmvr)",
                     "export it with 'dfmvr-export'")


def check_exported_model(model: onnx.ModelProto, expect_involutions: int | None = None,
                         stage: str = "export") -> None:
    """Full onnx checker + the dfmvr contract: I/O names and types, custom nodes, function, card."""
    register_involution_schema()
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"{stage}: the ONNX checker rejects the graph: {exc}") from exc
    inputs = [(i.name, i.type.tensor_type.elem_type) for i in model.graph.input]
    outputs = [(o.name, o.type.tensor_type.elem_type) for o in model.graph.output]
    want_in = [(GRAPH_INPUT, onnx.TensorProto.FLOAT)]
    want_out = [(GRAPH_OUTPUTS[0], onnx.TensorProto.FLOAT), (GRAPH_OUTPUTS[1], onnx.TensorProto.UINT8)]
    with_keypoints = want_out + [(GRAPH_KEYPOINTS, onnx.TensorProto.FLOAT)]      # the optional third
    if inputs != want_in or outputs not in (want_out, with_keypoints):
        raise ExportError(f"{stage}: graph I/O is {inputs} -> {outputs}, expected {want_in} -> {want_out} "
                          f"(and optionally {with_keypoints[-1]})")
    found = len(involution_nodes(model))
    if expect_involutions is not None and found != expect_involutions:
        raise ExportError(f"{stage}: {found} {INVOLUTION.qualname} nodes, expected {expect_involutions}")
    if found and not any(f.domain == INVOLUTION.domain and f.name == INVOLUTION.name for f in model.functions):
        raise ExportError(f"{stage}: the {INVOLUTION.qualname} function body is missing")
    read_card(model, stage)


def _count_torch_involutions(model) -> int:
    from ..models.involution import Involution

    return sum(isinstance(m, Involution) for m in model.modules())


def export_onnx(model, out_path, card: ModelCard | None = None, opset: int = OPSET,
                simplify: bool = True) -> OnnxExportResult:
    """Export ``model`` (a DFMVRNet, eval mode is forced) to ``out_path`` atomically.

    ``card`` defaults to ``model.card``. Raises ExportError when the graph loses its custom nodes, its
    function or its card on the way (before anything is written).
    """
    card = card or getattr(model, "card", None)
    if card is None:
        raise ExportError("export_onnx needs a ModelCard (model.card or card=...)")
    model.eval()
    expected = _count_torch_involutions(model)
    proto = _torch_export(model, int(card.image_size), opset)
    attach_involution_function(proto)
    _set_card(proto, card)
    proto.producer_name, proto.doc_string = "dfmvr", f"DF-MVR '{card.variant}' exported by dfmvr.export"
    check_exported_model(proto, expected, "torch export")
    simplified = False
    if simplify:
        import onnxslim

        slim = onnxslim.slim(proto)
        # onnxslim rebuilds the model: keep our function, opset imports and card whatever it does.
        if not any(f.domain == INVOLUTION.domain for f in slim.functions):
            attach_involution_function(slim)
        _set_card(slim, card)
        slim.producer_name, slim.doc_string = proto.producer_name, proto.doc_string
        check_exported_model(slim, expected, "onnxslim")
        proto, simplified = slim, True
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        onnx.save_model(proto, str(tmp))
    return OnnxExportResult(path=out_path, involution_nodes=len(involution_nodes(proto)),
                            nodes=len(proto.graph.node), opset=opset, simplified=simplified)
