"""int8 export (dfmvr.export.int8) of `lite` (random weights, seed 0): which nodes stay float and why.

`lite` one-hot encodes the parse labels with ``Equal`` after concatenating the label index with the
images; quantizing that Concat rounded the index to its uint8 grid, ``Equal`` missed, and a trained
`lite` checkpoint's int8 mesh moved by 188 mm. Random weights give coefficients too small for the 1 mm
mesh gate to notice (0.05 mm even with the old rule), so the tests check the mechanism itself: the
layer classification and the exactness of the one-hot inputs in the int8 graph.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from dfmvr.card import GRAPH_INPUT, GRAPH_OUTPUTS
from dfmvr.export import int8
from dfmvr.export.parity import INT8_TOLERANCE, mesh_difference_mm, parity_inputs


@pytest.fixture(scope="module")
def lite_graph(lite_fp32_graph):
    """(fp32 graph, card, int8 graph calibrated on 2 triplets, parity inputs) of random-weight `lite`."""
    fp32, card = lite_fp32_graph
    quantized, info = int8.quantize_int8(fp32, card, count=2)
    return {"fp32": fp32, "card": card, "int8": quantized, "info": info, "images": parity_inputs(card, batch=2)}


def _run(model: onnx.ModelProto, images: np.ndarray, extra: list[str] = ()) -> list[np.ndarray]:
    """The graph's outputs and the ``extra`` intermediate tensors, one thread."""
    run = onnx.ModelProto()
    run.CopyFrom(model)
    run.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in extra)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(run.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run([*GRAPH_OUTPUTS, *extra], {GRAPH_INPUT: images})


def _one_hot_comparisons(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == "Equal"]


@pytest.mark.slow   # the int8 export of its fixture: 22 s on a slow host
def test_lite_layer_classification(lite_graph):
    fp32 = lite_graph["fp32"]
    kept = int8.float_layers(fp32)
    nodes = {n.name: n for n in fp32.graph.node}
    producer = {out: n for n in fp32.graph.node for out in n.output}
    # the Concat of the images with the label index, upstream of the one-hot Equal nodes
    label_concats = [n.name for n in fp32.graph.node if n.op_type == "Concat" and GRAPH_INPUT in n.input]
    assert label_concats and set(label_concats) <= set(kept["categorical"])
    # the parse net (every Conv upstream of the ArgMax) stays float: its labels feed the encoders
    (argmax,) = [n for n in fp32.graph.node if n.op_type == "ArgMax"]
    parse_convs = {n.name for n in int8._ancestors(producer, argmax.input) if n.op_type == "Conv"}
    assert len(parse_convs) > 10 and parse_convs <= set(kept["categorical"]) | set(kept["output"])
    # the regressor behind the spatial readout (spatial_reduce, the involution block, reduce)
    readout_weights = {nodes[name].input[1] for name in kept["readout"] if nodes[name].op_type == "Conv"}
    assert {"net.rednet_fc.spatial_reduce.weight", "net.rednet_fc.reduce.0.weight"} <= readout_weights
    assert any(nodes[name].op_type == "Involution" for name in kept["readout"])
    # each view encoder's first Conv reads the one-hot labels (with the images): it stays float, with the
    # Concats that carry the one-hot to it
    first = {n.name for n in fp32.graph.node if n.op_type == "Conv" and ".enc_" in n.input[1] and n.input[1].endswith(".0.weight")}
    assert len(first) == 3 and first <= set(kept["one_hot"])
    assert not set(label_concats) & set(kept["one_hot"])                   # that Concat is categorical
    one_hot_concats = [name for name in kept["one_hot"] if nodes[name].op_type == "Concat"]
    assert len(one_hot_concats) == 3
    # the fusion of the views feeds only the float regressor: float, and nothing else is added there
    (fusion,) = kept["concat"]
    consumers = [n for n in fp32.graph.node if nodes[fusion].output[0] in n.input]
    assert nodes[fusion].op_type == "Concat" and consumers and {n.name for n in consumers} <= set(kept["readout"])
    # ... and not the rest of the view encoders nor the attention gates: they are the int8 arithmetic
    float_names = {name for names in kept.values() for name in names}
    encoders = [n.name for n in fp32.graph.node if n.op_type == "Conv" and "uuunet" in n.input[1]]
    assert len(encoders) == 24 and float_names & set(encoders) == first
    assert lite_graph["info"]["nodes_kept_float"] == {k: len(v) for k, v in kept.items()}


@pytest.mark.slow   # the int8 export of its fixture: 22 s on a slow host
def test_lite_int8_keeps_the_label_one_hot_exact(lite_graph):
    """The one-hot class inputs (Equal outputs) and the labels of the int8 graph agree with the fp32
    graph's (with only the output layers float, the labels agreed on 0.980 of the pixels here and the
    one-hot inputs were mostly zero). Agreement, not equality: both come from float logits computed by
    two sessions, and a near-tie may flip one pixel on another CPU's kernels."""
    names = [n.output[0] for n in _one_hot_comparisons(lite_graph["fp32"])]
    assert len(names) == 3                                    # one per view
    images = lite_graph["images"]
    ref = _run(lite_graph["fp32"], images, names)
    got = _run(lite_graph["int8"], images, names)
    for a, b in zip(got[2:], ref[2:]):
        assert b.any() and (a == b).mean() >= 0.999 and a.sum() >= 0.99 * b.sum()
    assert (got[1] == ref[1]).mean() >= 0.999                 # labels: the parse net is float
    # the int8 graph still quantizes most of its arithmetic
    assert sum(n.op_type == "QuantizeLinear" for n in lite_graph["int8"].graph.node) > 20


@pytest.mark.slow   # the int8 export of its fixture: 22 s on a slow host
def test_lite_int8_meets_the_mesh_gate(lite_graph):
    from dfmvr.face.synthetic import default_face_model

    images, card = lite_graph["images"], lite_graph["card"]
    ref_c, _ = _run(lite_graph["fp32"], images)
    got_c, _ = _run(lite_graph["int8"], images)
    mesh_max, _ = mesh_difference_mm(default_face_model(), card, ref_c, got_c)
    assert mesh_max < INT8_TOLERANCE.mesh_max_mm


@pytest.mark.slow   # the int8 export of its fixture: 22 s on a slow host
def test_lite_int8_reads_the_one_hot_and_the_fused_views_in_float(lite_graph):
    """In the int8 graph the encoders' first Convs read the float (not dequantized) images + one-hot, the
    fused views' Concat is not requantized and the attention-gated views reach it in float, while the
    other encoder and attention Convs still read dequantized int8 tensors."""
    fp32, quantized = lite_graph["fp32"], lite_graph["int8"]
    kept = int8.float_layers(fp32)
    producer = {out: n for n in quantized.graph.node for out in n.output}
    nodes = {n.name: n for n in quantized.graph.node}

    def dequantized(tensor):
        return tensor in producer and producer[tensor].op_type == "DequantizeLinear"

    first = [name for name in kept["one_hot"] if nodes[name].op_type == "Conv"]
    assert len(first) == 3 and not any(dequantized(nodes[name].input[0]) for name in first)
    (fusion,) = kept["concat"]
    assert not any(n.op_type == "QuantizeLinear" and n.input[0] in nodes[fusion].output for n in quantized.graph.node)
    fp32_producer = {out: n for n in fp32.graph.node for out in n.output}
    gated = [t for t in nodes[fusion].input if fp32_producer.get(t) is not None and fp32_producer[t].op_type == "Mul"]
    assert len(gated) == 2                                    # views 0 and 2, attention-gated, float
    int8_convs = [n for n in quantized.graph.node if n.op_type == "Conv" and dequantized(n.input[0])]
    assert len(int8_convs) >= 21                              # 15 encoder + 6 attention Convs


def _graph(nodes, inputs, outputs, inits=()):
    from onnx import TensorProto, helper

    return helper.make_model(helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs], list(inits)))


def test_one_hot_layers_follow_the_compared_values_not_a_mask():
    from onnx import helper

    mk = helper.make_node
    model = _graph([
        mk("Equal", ["labels", "k"], ["eq"], name="eq"),
        mk("Cast", ["eq"], ["onehot"], name="cast", to=1),
        mk("Concat", ["x", "onehot"], ["cat"], name="cat", axis=1),
        mk("AveragePool", ["cat"], ["pool"], name="pool", kernel_shape=[2, 2]),
        mk("Conv", ["pool", "w"], ["c1"], name="conv1"),
        mk("Relu", ["c1"], ["r1"], name="relu1"),
        mk("Conv", ["r1", "w2"], ["c2"], name="conv2"),                 # past the first arithmetic node
        mk("Greater", ["x", "zero"], ["gt"], name="gt"),                # a mask, applied by Mul
        mk("Cast", ["gt"], ["mask"], name="cast_mask", to=1),
        mk("Mul", ["x", "mask"], ["masked"], name="mul"),
        mk("Conv", ["masked", "w3"], ["c3"], name="conv3"),
    ], ["labels", "x", "k", "zero", "w", "w2", "w3"], ["c2", "c3"])
    assert int8.one_hot_layers(model) == sorted(["cast", "cat", "pool", "conv1", "relu1", "cast_mask", "mul"])


def test_float_fed_concats_only_where_every_consumer_stays_float():
    from onnx import helper

    mk = helper.make_node
    model = _graph([
        mk("Concat", ["a", "b"], ["cat1"], name="cat1", axis=1),
        mk("Concat", ["cat1", "b"], ["cat2"], name="cat2", axis=1),        # feeds a kept Conv
        mk("Conv", ["cat2", "w"], ["y"], name="kept_conv"),
        mk("Concat", ["a", "b"], ["cat3"], name="cat3", axis=1),
        mk("Conv", ["cat3", "w"], ["z1"], name="int8_conv"),               # one consumer int8: stays int8
        mk("Conv", ["cat3", "w"], ["z2"], name="kept_conv2"),
    ], ["a", "b", "w"], ["y", "z1", "z2"])
    assert int8.float_fed_concats(model, {"kept_conv", "kept_conv2"}) == ["cat1", "cat2"]
    assert int8.float_fed_concats(model, set()) == []
