"""fp32 dfmvr ONNX graph -> int8 graph (QDQ), by ONNX Runtime's static quantization, custom nodes kept.

``quantize_int8(model, card)`` runs ``onnxruntime.quantization.quantize_static`` (no hand-written
quantization): weights int8 per output channel (symmetric, 7-bit range), activations uint8 per tensor
(asymmetric), QDQ format. ONNX Runtime fuses each DequantizeLinear -> Conv -> QuantizeLinear group into a
``QLinearConv`` whose u8 x s8 GEMM runs on MLAS's VNNI / AMX kernels where the CPU has them. The
graph keeps ``images`` float32 in and ``coefficients`` float32 / ``labels`` uint8 out.

Weights use 7 of their 8 bits (``reduce_range``), on purpose: on x86 CPUs without VNNI (AVX2 only,
e.g. AMD Zen 2/3, older Xeons) MLAS's u8 x s8 kernel adds pairs of products in saturating int16
(VPMADDUBSW), and full-range weights overflow it. Measured on `tiny` (random weights, 2 parity
triplets, an AVX2-only AMD EPYC, ONNX Runtime 1.32.0): full range gave 0.835 label agreement fused
against 0.983 for the same graph with fusion disabled (``session.disable_quant_qdq``, i.e. the exact
float simulation of the quantized graph); 7-bit weights gave 0.9806 fused and 0.9807 simulated. The
int8 graph is a portable file, so it is quantized for the weakest CPU it may meet; ONNX Runtime's
quantization guide gives the same advice. ``reduce_range=False`` remains available to the API.

What is quantized, and why:
- ``Conv``, ``MatMul``, ``Gemm``: the arithmetic (Conv is ~97 % of the paper graph's FLOPs).
- ``Relu``, ``Clip``, ``MaxPool``, ``Add``, ``Concat``: so that activations stay int8 from one Conv to
  the next (the Relu folds into its Conv's output range). Without them every Conv output is
  dequantized and requantized in float (measured on paper: DequantizeLinear + QuantizeLinear took
  ~13 % of the int8 run time, about half of it with them).
- ``ConvTranspose``: ONNX Runtime's CPU provider has no int8 ConvTranspose kernel, and when such a node
  is fed by a DequantizeLinear its optimiser quantizes the float weights, which are then dequantized on
  every run (~50 ms per paper forward). So every 2x2 stride-2 ConvTranspose (all of the MulEn-Unet's
  up-sampling) is first rewritten into its exact equivalent, a 1x1 Conv with 4x the output channels
  followed by ``DepthToSpace`` (bit-identical in fp32 ONNX Runtime), and that Conv is quantized.
- Left in float: ``dfmvr::Involution`` (a custom node: its function body's Gather/MatMul run fp32 on
  the dequantized input), Sigmoid, Batch/InstanceNormalization, Resize, reductions, and the output
  layers (``output_layers``: the coefficient heads and the parse logits, so that the outputs are never
  rounded to 8 bits).

Calibration (MinMax ranges) runs on ``count`` rendered synthetic triplets (``dfmvr.train.synth``,
default face model), normalised with the card exactly as the runtime does, every second one with its
right view missing (``parity.parity_inputs``). The default seed (2) differs from the parity inputs'
(0) and from the README's held-out validation set (1), so the parity numbers are on unseen triplets.
The int8 graph's card records all of this under ``provenance["quantization"]``.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..card import GRAPH_INPUT, ModelCard
from ..kernels.op import INVOLUTION
from .involution_onnx import attach_involution_function, involution_nodes, register_involution_schema

__all__ = ["QUANTIZED_OPS", "CALIBRATION_SEED", "rewrite_conv_transpose_2x2", "output_layers",
           "calibration_inputs", "quantize_int8", "quantization_info"]

QUANTIZED_OPS = ("Conv", "MatMul", "Gemm", "Relu", "Clip", "MaxPool", "Add", "Concat")
_ARITHMETIC = ("Conv", "ConvTranspose", "Gemm", "MatMul")
CALIBRATION_SEED = 2            # not the parity inputs' seed (0) nor the README validation set's (1)


def rewrite_conv_transpose_2x2(model: onnx.ModelProto) -> int:
    """Rewrite, in place, every ConvTranspose with a constant weight, kernel 2x2, stride 2, no padding,
    no groups, into Conv 1x1 [4*Cout, Cin] + DepthToSpace(blocksize 2, CRD). Returns how many.

    ConvTranspose: y[o, 2h+i, 2w+j] = b[o] + sum_c x[c, h, w] * W[c, o, i, j] (no overlap at stride 2),
    i.e. a 1x1 conv whose output channel o*4 + i*2 + j has weights W[:, o, i, j], then DepthToSpace.
    """
    inits = {t.name: t for t in model.graph.initializer}
    nodes, rewritten = [], 0
    for node in model.graph.node:
        attr = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if not (node.op_type == "ConvTranspose" and node.input[1] in inits
                and list(attr.get("kernel_shape", ())) == [2, 2] and list(attr.get("strides", ())) == [2, 2]
                and not any(attr.get("pads", ())) and not any(attr.get("output_padding", ()))
                and list(attr.get("dilations", (1, 1))) == [1, 1] and attr.get("group", 1) == 1
                and attr.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")):
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])                      # [Cin, Cout, 2, 2]
        cin, cout = weight.shape[:2]
        conv_w = np.ascontiguousarray(weight.transpose(1, 2, 3, 0).reshape(cout * 4, cin, 1, 1))
        inputs = [node.input[0], f"{node.input[1]}__conv1x1"]
        model.graph.initializer.append(numpy_helper.from_array(conv_w, inputs[1]))
        if len(node.input) > 2 and node.input[2]:
            bias = np.repeat(numpy_helper.to_array(inits[node.input[2]]), 4)      # o*4 + i*2 + j
            inputs.append(f"{node.input[2]}__conv1x1")
            model.graph.initializer.append(numpy_helper.from_array(bias, inputs[2]))
        depth = f"{node.output[0]}__depth"
        nodes.append(helper.make_node("Conv", inputs, [depth], name=f"{node.name}__conv1x1", kernel_shape=[1, 1]))
        nodes.append(helper.make_node("DepthToSpace", [depth], list(node.output), name=f"{node.name}__d2s",
                                      blocksize=2, mode="CRD"))
        rewritten += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {name for node in model.graph.node for name in node.input}
    keep = [t for t in model.graph.initializer if t.name in used]      # drop the replaced weights
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    return rewritten


def output_layers(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes that stay float at the graph's outputs: every node on a path back from an
    output up to and including the first arithmetic node (Conv / ConvTranspose / Gemm / MatMul).

    These are the coefficient heads (1x1 convs on the pooled feature), the parse logits before ArgMax,
    and the Reshapes / Concat between them and the outputs: quantizing them would round the
    coefficients themselves to 8 bits, for no speed (they are a negligible share of the FLOPs).
    """
    producer = {out: node for node in model.graph.node for out in node.output}
    names, seen, stack = set(), set(), [o.name for o in model.graph.output]
    while stack:
        tensor = stack.pop()
        node = producer.get(tensor)
        if node is None or tensor in seen:
            continue
        seen.update(node.output)
        names.add(node.name)
        if node.op_type not in _ARITHMETIC:
            stack.extend(i for i in node.input if i)
    return sorted(names)


def calibration_inputs(card: ModelCard, count: int, seed: int = CALIBRATION_SEED) -> np.ndarray:
    """``count`` freshly rendered, normalised synthetic triplets [count, 3, 3, S, S] float32."""
    from .parity import parity_inputs

    return parity_inputs(card, batch=count, seed=seed)


def quantization_info(count: int, seed: int, rewritten: int, float_nodes: int, reduce_range: bool = True) -> dict:
    """What the int8 graph is and how it was calibrated (stored in its card and the parity JSON)."""
    import onnxruntime

    return {"precision": "int8", "format": "QDQ", "tool": f"onnxruntime.quantization.quantize_static "
            f"(onnxruntime {onnxruntime.__version__})", "weights": "int8, per output channel, symmetric"
            + (", 7-bit range (reduce_range: no int16 saturation without VNNI)" if reduce_range else ", full range"),
            "reduce_range": bool(reduce_range),
            "activations": "uint8, per tensor, asymmetric", "quantized_ops": list(QUANTIZED_OPS),
            "conv_transpose_2x2_rewritten": rewritten, "output_layer_nodes_kept_float": float_nodes,
            "calibration": {"method": "MinMax", "triplets": int(count), "seed": int(seed),
                            "source": "dfmvr.train.synth.TripletGenerator, default synthetic face model, "
                                      "normalised with the card, every second triplet without its right view"}}


def quantize_int8(model: onnx.ModelProto, card: ModelCard, count: int = 8,
                  seed: int = CALIBRATION_SEED, reduce_range: bool = True) -> tuple[onnx.ModelProto, dict]:
    """-> (int8 copy of an exported fp32 graph, quantization info). ``model`` is not modified.

    ``model`` must hold its weights as float32 initializers (not a ``--compact`` graph).
    """
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    from .onnx_export import _set_card, check_exported_model

    if count < 1:
        raise ValueError(f"calibration needs at least one triplet, got {count}")
    register_involution_schema()
    expected = len(involution_nodes(model))
    src = onnx.ModelProto()
    src.CopyFrom(model)
    rewritten = rewrite_conv_transpose_2x2(src)
    images = calibration_inputs(card, count, seed)
    float_nodes = output_layers(src)

    class _Triplets(CalibrationDataReader):          # one triplet per calibration run
        def __init__(self):
            self._feeds = iter({GRAPH_INPUT: images[i:i + 1]} for i in range(len(images)))

        def get_next(self):
            return next(self._feeds, None)

    root, level = logging.getLogger(), logging.getLogger().level
    root.setLevel(max(level, logging.ERROR))      # the quantizer warns "consider pre-processing" on root
    try:
        with tempfile.TemporaryDirectory(prefix="dfmvr-int8-") as tmp:
            fp32_path, int8_path = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            onnx.save_model(src, str(fp32_path))
            quantize_static(str(fp32_path), str(int8_path), _Triplets(), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                            reduce_range=reduce_range, calibrate_method=CalibrationMethod.MinMax,
                            op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_exclude=float_nodes,
                            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
            quantized = onnx.load(str(int8_path))
    finally:
        root.setLevel(level)
    # the quantizer copies model-local functions; re-attach ours if a version ever drops it
    if not any(f.domain == INVOLUTION.domain and f.name == INVOLUTION.name for f in quantized.functions):
        attach_involution_function(quantized)
    info = quantization_info(count, seed, rewritten, len(float_nodes), reduce_range)
    int8_card = ModelCard.from_dict(card.to_dict())
    int8_card.provenance = {**int8_card.provenance, "quantization": info}
    _set_card(quantized, int8_card)
    quantized.producer_name, quantized.doc_string = model.producer_name, f"{model.doc_string} (int8, QDQ)"
    check_exported_model(quantized, expected, "int8 quantization")
    return quantized, info
