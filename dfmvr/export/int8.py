"""fp32 dfmvr ONNX graph -> int8 graph (QDQ), by ONNX Runtime's static quantization, custom nodes kept.

``quantize_int8(model, card, weights=...)`` runs ``onnxruntime.quantization.quantize_static`` (no
hand-written quantization): weights per output channel (symmetric), activations uint8 per tensor
(asymmetric), QDQ format. ONNX Runtime fuses each DequantizeLinear -> Conv -> QuantizeLinear group into a
``QLinearConv`` whose integer GEMM runs on MLAS's kernels. The graph keeps ``images`` float32 in and
``coefficients`` float32 / ``labels`` uint8 out.

Two weight formats (``WEIGHT_FORMATS``), because no one format is both fast and exact on every CPU:

- ``s8``: int8 weights in 7 of their 8 bits (``reduce_range``). MLAS multiplies u8 activations by s8
  weights with VNNI's VPDPBUSD where the CPU has it (the fastest path), and on x86 CPUs without VNNI
  (AVX2 only, e.g. AMD Zen 2/3, older Xeons) with VPMADDUBSW, which adds pairs of products in saturating
  int16: full-range s8 weights overflow it. Measured on `tiny` (random weights, 2 parity triplets, an
  AVX2-only AMD EPYC, ONNX Runtime 1.32.0): full range gave 0.835 label agreement fused against 0.983
  for the same graph with fusion disabled (``session.disable_quant_qdq``, the exact float simulation of
  the quantized graph); 7-bit weights gave 0.9806 fused and 0.9807 simulated. The int8 graph is a
  portable file, so it is quantized for the weakest CPU it may meet.
- ``u8``: uint8 weights over all 8 bits (zero point 128): twice s8's weight resolution, and MLAS's
  u8 x u8 kernels widen to int16 before they multiply, so nothing saturates on any CPU (ONNX Runtime's
  quantization guide names U8U8 as the format without the saturation issue). The price: no VNNI path.

Measured (``benchmarks/bench_int8_weights.py``; ``benchmarks/results/int8_weight_formats_default.json``,
``int8_weight_formats_demo_2026-12-05.json``, ``int8_weight_formats_paper.json``; an AVX512-VNNI AMD EPYC,
ONNX Runtime 1.32.0, one thread, batch 1; mesh = per-triplet max distance of the posed mesh to the fp32 graph's):

| | s8 (7 bits) | u8 (8 bits) |
|---|---|---|
| demo of 2026-12-05, the gate's 2 triplets: mesh max | 1.03 mm (fails) | 0.72 mm |
| demo of 2026-12-05, 64 more (seed 5): mean / max, triplets >= 1 mm | 0.71 / 1.23 mm, 3 | 0.66 / 0.95 mm, 0 |
| demo of 2026-12-05, speed over the fp32 graph (28.4 ms) | 1.26x (22.6 ms) | 1.08x (26.2 ms) |
| demo since 2026-12-07, the gate's 2 triplets: mesh max | 0.61 mm (passes) | 0.38 mm |
| demo since 2026-12-07, 64 more (seed 5): mean / max, triplets >= 1 mm | 0.60 / 1.02 mm, 1 | 0.47 / 0.74 mm, 0 |
| demo since 2026-12-07, speed over the fp32 graph (38.2 ms) | 1.14x (33.4 ms) | 1.08x (35.4 ms) |
| `paper` (random weights), speed over fp32 (1610 ms) | 3.15x (511 ms) | 1.32x (1223 ms) |

So u8 is the accurate format (the int8 error is the weights' rounding: halving its step takes both demos
under 1 mm on every triplet tried) and s8 the fast one on VNNI CPUs; on AVX2-only CPUs
the two kernels' speeds were not measured here. The fused kernels agree with the float simulation of
the same graph in both formats on that CPU (mesh 0 and 0.08 mm; 0 and 0 for the 2026-12-07 demo).

``dfmvr-export --int8`` (``--int8-weights auto``, the default) writes the s8 graph when it passes the
int8 gate and the u8 graph when s8 does not; ``--int8-weights s8|u8`` forces one.

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
  the dequantized input), Sigmoid, Batch/InstanceNormalization, Resize, reductions, and the nodes of
  ``float_layers``, by reason:
  - ``output_layers``: the coefficient heads and the parse logits, so that the outputs are never
    rounded to 8 bits (all variants).
  - ``categorical_layers``: nodes whose values the graph compares with exact categories, and the
    parse net when its ArgMax labels come back into the graph through such a comparison. ``lite``
    concatenates the images with the label index and one-hot encodes it with ``Equal``; quantized,
    that Concat put the index on a uint8 grid (step 10/255, zero point 26), ``Equal`` missed and the
    encoders' class inputs were almost all zero. Then, with that Concat float, the int8 parse net alone
    still moved the mesh by 1.31 mm: it flipped 0.13 % of the label pixels (near-tie logits), and each
    flip is a whole-category change of an encoder input (the parse net's last two convs quantized alone:
    0.02 % of the pixels, 0.76 mm). ``tiny`` and ``paper`` feed the label index to a Conv as a number
    (no comparison): nothing is added.
  - ``readout_layers``: the regressor behind a position-specific readout. ``lite``'s heads read an
    [8, 14, 14] map flattened to 1568 inputs, each with its own weights, so they sum the quantization
    noise of every position instead of an average; the regressor that computes the map (from the fused
    views' Concat: reduce, the involution block, spatial_reduce) quantized alone moved the mesh 4.6 mm
    (the view encoders alone: 0.52 mm, the attention gates alone: 0.23 mm, so those stay int8).
    ``tiny`` and ``paper`` heads read a pooled [C, 1, 1] feature: nothing is added.
  - ``one_hot``: the nodes that carry a comparison's result on as data (Cast, Concat, AveragePool, ...;
    not a Mul that applies it as a mask) up to and including the first node that computes with it, and
    that node's Relu: the mirror of ``output`` at a categorical input. ``lite``'s view encoders' first
    Convs read the images concatenated with the one-hot labels; quantized, that input is one uint8
    tensor on the images' grid (step 2/255, zero point 128), where the one-hot 1 is 127.5 steps, so a
    whole category channel is biased (1.0039 or 0.9961), not merely noisy. 3 Convs, 6 % of the conv MACs.
  - ``concat``: a Concat whose every consumer the rules above keep float (``lite``: the fusion of the
    three views, read by the float regressor). It feeds no int8 arithmetic, and quantized it requantized
    the two attention-gated views from their own step (0.0165) onto the widest input's (0.0273).
    ``tiny`` and ``paper`` have neither (0 nodes added).
  Why the last two: the bundled demo as retrained to 24 epochs (2026-12-04) failed the gate with the first three
  rules, mesh max 1.10 mm (mean 0.47; 32 calibration triplets: 1.16 mm). Sensitivity (each group in
  turn quantized alone, the rest float; 2 parity triplets, mesh max / mean mm): encoder of view 0 0.57 /
  0.27, view 1 0.49 / 0.20, view 2 0.37 / 0.09, attention gates 0.21 / 0.11, the fusion Concat 0.59 /
  0.27, the one-hot Concats 0.16 / 0.09: the error is spread over every int8 group (their means add in
  quadrature to the 0.47), no single small group dominates, and keeping any one encoder or the
  attention gates float is neither principled nor robust (on 24 held-out triplets, seed 5, against the
  fp32 graph, mean of the per-triplet mesh max: none 0.62 mm, attention float 0.62, encoder 0 float
  0.55). The two rules remove the two roundings that buy no int8 arithmetic or bias a category: gate
  0.436 / 0.223 mm (held-out mean of max 0.49 mm, max 0.83; 32 calibration triplets 0.479 mm), each
  alone not enough on the gate (fusion Concat 1.22 mm, first Convs 0.48 mm but held-out 0.60). On the
  previous bundled checkpoint (16 epochs): gate 0.773 -> 0.863 mm max (the 2-triplet max is noisy) but mean 0.426 -> 0.267
  and held-out mean of max 0.63 -> 0.48 mm (max 1.03 -> 0.75). Percentile calibration (ORT, 99.999)
  instead: gate 0.58 mm but held-out 0.70 mean of max, 1.23 max (worse than MinMax); Entropy gave the
  same activation scales as MinMax here. Speed (that model, 1 thread, batch 1, 100 interleaved runs each,
  medians): fp32 33.3 ms, int8 with the first three rules 31.3 ms, with all five 29.8 ms (fewer
  requantizations); 61 % of the conv MACs stay int8 (15 encoder and 6 attention Convs).
  The first three rules, measured on an earlier trained ``lite`` checkpoint (float16-stored, 2 parity
  triplets, 8 calibration triplets, AVX2-only CPU, ONNX Runtime 1.32.0; the fused kernels agreed with
  the float simulation, so this is the quantization, not the kernels): heads-only float gave
  coefficients max diff 1.68 and mesh 188 mm
  (label agreement 0.9987); all three rules give 0.0138 and 0.587 mm (labels 1.0). Kept float: 41 output,
  95 categorical, 14 readout nodes; the int8 arithmetic left is the view encoders and attention gates,
  ~67 % of the graph's conv MACs (the parse net is ~31 %, the regressor ~2 %; 61 % with all five rules).
  ONNX Runtime CPU, 1 thread, batch 1, 5 x 20 runs, on a 2-core machine busy with training (noisy):
  medians of the five medians fp32 58.2 ms, int8 with heads-only float 57.4 ms, int8 with these
  rules 54.6 ms (best medians 54.3, 49.7, 50.7 ms): on an AVX2-only CPU int8 barely beats fp32 either
  way, so keeping the parse net and regressor float costs no measurable speed here.

Calibration (MinMax ranges) runs on ``count`` rendered synthetic triplets (``dfmvr.synth.dataset``,
default face model), normalised with the card exactly as the runtime does, every second one with its
right view missing (``parity.parity_inputs``). The default seed (2) differs from the parity inputs'
(0) and from the README's held-out validation set (1), so the parity numbers are on unseen triplets.
The int8 graph's card records all of this under ``provenance["quantization"]``.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..card import GRAPH_INPUT, ModelCard
from ..kernels.op import INVOLUTION
from .involution_onnx import attach_involution_function, involution_nodes, register_involution_schema

__all__ = ["QUANTIZED_OPS", "CALIBRATION_SEED", "WeightFormat", "WEIGHT_FORMATS", "WEIGHT_CHOICES",
           "rewrite_conv_transpose_2x2", "output_layers",
           "categorical_layers", "readout_layers", "one_hot_layers", "float_fed_concats", "float_layers",
           "calibration_inputs", "quantize_int8", "quantization_info"]

QUANTIZED_OPS = ("Conv", "MatMul", "Gemm", "Relu", "Clip", "MaxPool", "Add", "Concat")
_ARITHMETIC = ("Conv", "ConvTranspose", "Gemm", "MatMul")
CALIBRATION_SEED = 2            # not the parity inputs' seed (0) nor the README validation set's (1)


@dataclass(frozen=True)
class WeightFormat:
    """How the int8 graph stores its weights (module docstring: why two)."""

    name: str                  # "s8" | "u8": the --int8-weights value and the card's record
    quant_type: str            # onnxruntime.quantization.QuantType member
    reduce_range: bool         # 7 of the 8 bits
    description: str


WEIGHT_FORMATS = {
    "s8": WeightFormat("s8", "QInt8", True, "int8, per output channel, symmetric, 7-bit range (reduce_range: "
                       "no int16 saturation without VNNI; VNNI's u8 x s8 kernels where the CPU has them)"),
    "u8": WeightFormat("u8", "QUInt8", False, "uint8, per output channel, symmetric (zero point 128), full "
                       "8-bit range (u8 x u8 kernels: no saturation on any CPU, no VNNI path)"),
}
# the export's choice: "auto" = s8 when it passes the int8 gate, else u8 (dfmvr.export.pipeline)
WEIGHT_CHOICES = ("auto", *WEIGHT_FORMATS)


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


_COMPARISONS = ("Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual")
# ops that move or mask values without computing new ones: a category index passes through them intact
_VALUE_PRESERVING = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Gather", "Slice", "Concat", "Transpose",
                     "Identity", "Cast", "Mul", "Split", "Expand", "Tile")
_FLATTEN = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")


def _ancestors(producer: dict, tensors, stop=lambda node: False) -> list:
    """Nodes on any path back from ``tensors``; a node for which ``stop`` holds is not entered."""
    found, seen, stack = [], set(), list(tensors)
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in seen or stop(node):
            continue
        seen.add(node.name)
        found.append(node)
        stack.extend(i for i in node.input if i)
    return found


def categorical_layers(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes that stay float because the graph compares their values with exact categories.

    - Quantizable nodes on a value-preserving path (Concat, Gather, Slice, Reshape, Cast, ...) into a
      comparison (Equal, Greater, ...): e.g. ``lite``'s Concat of the images with the parse-label index,
      whose label channel is then one-hot encoded by ``Equal`` with 0..9. Quantized, that Concat rounds
      the index to its uint8 grid (steps of 10/255: the range is [-1, 9]), ``Equal`` misses and
      the one-hot input of every view encoder becomes (almost) all zeros.
    - When an ``ArgMax`` reaches such a comparison (the parse labels fed back into the graph as a
      categorical input), every node that computes that ArgMax's input (the parse net): int8 flips
      pixels whose logits nearly tie, and each flip is a whole-category change of the regressor's input.
    """
    producer = {out: node for node in model.graph.node for out in node.output}
    names: set[str] = set()
    for node in model.graph.node:
        if node.op_type not in _COMPARISONS:
            continue
        path = _ancestors(producer, node.input, stop=lambda n: n.op_type not in _VALUE_PRESERVING + ("ArgMax",))
        for n in path:
            if n.op_type == "ArgMax":
                names.update(a.name for a in _ancestors(producer, n.input))
            else:
                names.add(n.name)
    return sorted(names)


def readout_layers(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes that stay float because the coefficient heads read a flattened spatial map.

    A head that reads every position of a map (``lite``: an [B, 8, 14, 14] map flattened to 1568 inputs,
    each with its own weights) sums the quantization noise of all of them instead of a pooled average.
    For such a readout (a Reshape / Flatten of a map with more than one position, between an arithmetic
    node and an output layer), every node that computes the map back to, not including, the nearest
    Concat (the fusion of the views) stays float: the regressor. A head reading a pooled [B, C, 1, 1]
    feature (``tiny``, ``paper``) has no such readout, and nothing is added.
    """
    from onnx import shape_inference

    register_involution_schema()                    # shape inference through dfmvr::Involution
    heads = set(output_layers(model))
    nodes = {node.name: node for node in model.graph.node}
    producer = {out: node for node in model.graph.node for out in node.output}
    try:
        inferred = shape_inference.infer_shapes(model)
    except Exception:                               # no shapes: no readout is recognised
        return []
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
              for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    maps = set()
    for name in heads:
        node = nodes.get(name)
        if node is None or node.op_type not in _ARITHMETIC or not node.input:
            continue
        tensor = node.input[0]
        while tensor in producer and producer[tensor].op_type in _FLATTEN:
            tensor = producer[tensor].input[0]
            shape = shapes.get(tensor)
            if shape and len(shape) == 4 and None not in shape[2:] and shape[2] * shape[3] > 1:
                maps.add(tensor)
                break
    names = {n.name for n in _ancestors(producer, maps, stop=lambda n: n.op_type == "Concat")}
    return sorted(names - heads)


# ops that resample values without mixing channels: a one-hot input stays a (local average of) one-hot
_RESAMPLING = ("AveragePool", "MaxPool", "Resize", "DepthToSpace", "SpaceToDepth")
_ACTIVATIONS = ("Relu", "Clip")
# what carries a comparison's result forward as data (its first input, or any input of Concat / Cast)
_CARRIERS = ("Cast", "Concat", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Transpose", "Slice",
             "Split", "Gather", "Expand", "Tile") + _RESAMPLING


def one_hot_layers(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes that stay float because they read a comparison's result (a one-hot input).

    Forward from every comparison (Equal, Greater, ...): the nodes that carry its result on as data
    (Cast, Concat, Reshape, Slice, AveragePool, ...; not a Mul that applies it as a mask), up to and
    including the first node that computes with it, and, when that is an arithmetic node, its activation
    (Relu / Clip) if it is its only consumer: the mirror of ``output_layers`` at a categorical input.
    ``lite`` one-hot encodes the parse labels and concatenates them with the images before each view
    encoder's first Conv; quantized, that Conv's input is one
    uint8 tensor on the images' grid (step 2/255 for [-1, 1], zero point 128), where the one-hot 1 is
    127.5 steps: every class input is rounded to 1.0039 or 0.9961, a bias of the whole category
    channel, not noise. ``tiny`` and ``paper`` have no one-hot input (their one comparison, the
    missing-view mask, is already under ``output``): nothing is added.
    """
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    names: set[str] = set()
    stack = [out for node in model.graph.node if node.op_type in _COMPARISONS for out in node.output]
    seen: set[str] = set()
    while stack:
        tensor = stack.pop()
        for node in consumers.get(tensor, []):
            if node.name in seen:
                continue
            seen.add(node.name)
            names.add(node.name)
            if node.op_type in _ARITHMETIC:
                after = consumers.get(node.output[0], [])
                if len(after) == 1 and after[0].op_type in _ACTIVATIONS:
                    names.add(after[0].name)
            elif node.op_type in _CARRIERS and (node.op_type in ("Concat", "Cast") or node.input[0] == tensor):
                stack.extend(node.output)       # the compared values themselves move on (not a mask's Mul)
    return sorted(names)


def float_fed_concats(model: onnx.ModelProto, kept: set[str]) -> list[str]:
    """Names of the Concats that stay float because every consumer of theirs is kept float.

    ``kept``: the nodes the other rules keep float. A Concat whose every consumer is one of them (or
    that is a graph output) feeds no int8 arithmetic, and its int8 output would be dequantized at once;
    quantized, it still requantizes every input onto its own (the widest input's) uint8 grid, a second
    rounding: ``lite``'s fusion of the three views (into the float regressor) rounded the two
    attention-gated views from their own step (0.0165) onto the third view's (0.0273). Repeated until
    no Concat is added (a Concat feeding a float Concat).
    """
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in model.graph.output}
    # shape arithmetic (int64 sizes for Resize, Reshape): never quantized, not a feature Concat
    shape_like = {out for node in model.graph.node if node.op_type in ("Shape", "Size") for out in node.output}
    shape_like |= {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT64}
    float_names, names = set(kept), set()
    changed = True
    while changed:
        changed = False
        for node in model.graph.node:
            if node.op_type != "Concat" or node.name in float_names or any(i in shape_like for i in node.input):
                continue
            after = [c for out in node.output for c in consumers.get(out, [])]
            if (all(c.name in float_names for c in after) if after
                    else any(o in outputs for o in node.output)):
                float_names.add(node.name)
                names.add(node.name)
                changed = True
    return sorted(names)


def float_layers(model: onnx.ModelProto) -> dict[str, list[str]]:
    """The nodes kept float, by reason: ``output`` (``output_layers``), ``categorical``
    (``categorical_layers``), ``readout`` (``readout_layers``), ``one_hot`` (``one_hot_layers``),
    ``concat`` (``float_fed_concats`` given all the others); a node is listed under its first reason."""
    out = output_layers(model)
    categorical = sorted(set(categorical_layers(model)) - set(out))
    readout = sorted(set(readout_layers(model)) - set(out) - set(categorical))
    one_hot = sorted(set(one_hot_layers(model)) - set(out) - set(categorical) - set(readout))
    concat = float_fed_concats(model, set(out) | set(categorical) | set(readout) | set(one_hot))
    return {"output": out, "categorical": categorical, "readout": readout, "one_hot": one_hot, "concat": concat}


def calibration_inputs(card: ModelCard, count: int, seed: int = CALIBRATION_SEED) -> np.ndarray:
    """``count`` freshly rendered, normalised synthetic triplets [count, 3, 3, S, S] float32."""
    from .parity import parity_inputs

    return parity_inputs(card, batch=count, seed=seed)


def quantization_info(count: int, seed: int, rewritten: int, float_nodes: int, weights: WeightFormat,
                      kept_float: dict | None = None) -> dict:
    """What the int8 graph is and how it was calibrated (stored in its card and the parity JSON)."""
    import onnxruntime

    return {"precision": "int8", "format": "QDQ", "tool": f"onnxruntime.quantization.quantize_static "
            f"(onnxruntime {onnxruntime.__version__})", "weight_format": weights.name,
            "weights": weights.description, "reduce_range": weights.reduce_range,
            "activations": "uint8, per tensor, asymmetric", "quantized_ops": list(QUANTIZED_OPS),
            "conv_transpose_2x2_rewritten": rewritten, "output_layer_nodes_kept_float": float_nodes,
            "nodes_kept_float": {k: len(v) for k, v in (kept_float or {}).items()},
            "calibration": {"method": "MinMax", "triplets": int(count), "seed": int(seed),
                            "source": "dfmvr.synth.dataset.TripletGenerator, default synthetic face model, "
                                      "normalised with the card, every second triplet without its right view"}}


def quantize_int8(model: onnx.ModelProto, card: ModelCard, count: int = 8,
                  seed: int = CALIBRATION_SEED, weights: str = "s8") -> tuple[onnx.ModelProto, dict]:
    """-> (int8 copy of an exported fp32 graph, quantization info). ``model`` is not modified.

    ``model`` must hold its weights as float32 initializers (not a ``--compact`` graph). ``weights``:
    a ``WEIGHT_FORMATS`` key (the module docstring says when each pays).
    """
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    from .onnx_export import _set_card, check_exported_model

    if count < 1:
        raise ValueError(f"calibration needs at least one triplet, got {count}")
    if weights not in WEIGHT_FORMATS:
        raise ValueError(f"int8 weights must be one of {sorted(WEIGHT_FORMATS)}, got {weights!r}")
    fmt = WEIGHT_FORMATS[weights]
    register_involution_schema()
    expected = len(involution_nodes(model))
    src = onnx.ModelProto()
    src.CopyFrom(model)
    rewritten = rewrite_conv_transpose_2x2(src)
    images = calibration_inputs(card, count, seed)
    kept_float = float_layers(src)
    float_nodes = sorted(name for names in kept_float.values() for name in names)

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
                            activation_type=QuantType.QUInt8, weight_type=getattr(QuantType, fmt.quant_type),
                            per_channel=True, reduce_range=fmt.reduce_range, calibrate_method=CalibrationMethod.MinMax,
                            op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_exclude=float_nodes,
                            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
            quantized = onnx.load(str(int8_path))
    finally:
        root.setLevel(level)
    # the quantizer copies model-local functions; re-attach ours if a version ever drops it
    if not any(f.domain == INVOLUTION.domain and f.name == INVOLUTION.name for f in quantized.functions):
        attach_involution_function(quantized)
    info = quantization_info(count, seed, rewritten, len(kept_float["output"]), fmt, kept_float)
    int8_card = ModelCard.from_dict(card.to_dict())
    int8_card.provenance = {**int8_card.provenance, "quantization": info}
    _set_card(quantized, int8_card)
    quantized.producer_name, quantized.doc_string = model.producer_name, f"{model.doc_string} (int8, QDQ)"
    check_exported_model(quantized, expected, "int8 quantization")
    return quantized, info
