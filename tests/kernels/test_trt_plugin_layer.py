"""dfmvr's Involution plugin definitions driven by TensorRT's REAL Python plugin layer (10.x and 11.x).

Real: NVIDIA's ``tensorrt.plugin`` package files from the ``tensorrt-cu12-bindings`` wheels (registration,
signature validation, the creator's attribute conversion, AOT/JIT selection, the AOT plugin's launch
parameters), dfmvr's ``trt_plugin_defs.define`` and ``trt_plugin``, NumPy (the installed version).
Stand-ins (``tests/kernels/trt_standin.py``): the compiled TensorRT core (enums, fields, registry, a
dimension-expression builder over ints) and the ONNX parser's attribute handling (mirrored from its
documented behaviour: INT attributes become one-element int32 fields; ``aot`` selects the creation
request). No PTX is compiled (a recording callable stands in for it) and nothing runs on a GPU.

No ``from __future__ import annotations`` here: tensorrt.plugin reads annotations as objects.

Skipped when no bindings wheel is found (see trt_standin.find_plugin_layers for where to put them).
"""

import numpy as np
import pytest
from trt_standin import (Dim, ExprBuilder, find_plugin_layers, load_plugin_layer, onnx_parser_creation_request,
                         onnx_parser_fields, unload)

from dfmvr.kernels.op import INVOLUTION, involution_output_size
from dfmvr.kernels.trt_plugin import PLUGIN_BLOCK, onnx_node_attributes

LAYERS = find_plugin_layers()
pytestmark = pytest.mark.skipif(not LAYERS, reason="no tensorrt-cu12-bindings wheel found: pip download --no-deps "
                                "--only-binary=:all: 'tensorrt-cu12-bindings==10.16.*' 'tensorrt-cu12-bindings==11.4.*' "
                                "-d ~/.cache/dfmvr/trt-bindings")


class RecordingPtx:
    """Stands in for the NVRTC-compiled PTX: counts how often the plugin asks for it."""

    def __init__(self):
        self.calls = 0

    def __call__(self) -> bytes:
        self.calls += 1
        return b"// stand-in PTX\n"


@pytest.fixture(params=sorted(LAYERS) or ["none"])
def layer(request):
    """(tensorrt.plugin, stand-in core, the recording PTX) with dfmvr's definitions registered."""
    from dfmvr.kernels import trt_plugin_defs

    trtp, core = load_plugin_layer(LAYERS[request.param], request.param)
    ptx = RecordingPtx()
    try:
        trt_plugin_defs.define(trtp, ptx)
        yield trtp, core, ptx
    finally:
        unload()


def _node(k, s, g, aot):
    """An Involution node as graph_for_tensorrt writes it (attributes in onnx_node_attributes' order)."""
    from onnx import helper

    attrs = onnx_node_attributes(k, s, g, aot=aot) if aot is not None else {
        n: v for n, v in onnx_node_attributes(k, s, g).items() if n != "aot"}
    node = helper.make_node(INVOLUTION.name, ["X", "W"], ["Y"], domain=INVOLUTION.domain)
    node.attribute.extend(helper.make_attribute(n, v) for n, v in attrs.items())
    return node


def _create(core, node):
    """What the parser does with a node: find the creator, build the fields, create the plugin."""
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    creator = core.get_plugin_registry().get_creator(node.op_type, attrs["plugin_version"].decode(),
                                                     attrs["plugin_namespace"].decode())
    assert creator is not None, "dfmvr::Involution is not in the (stand-in) plugin registry"
    fields = core.PluginFieldCollection(onnx_parser_fields(core, creator, node))
    return creator.create_plugin(node.op_type, INVOLUTION.domain, fields, core.TensorRTPhase.BUILD,
                                 onnx_parser_creation_request(core, node))


def test_registering_compiles_no_ptx(layer):
    trtp, core, ptx = layer
    assert core.get_plugin_registry().get_creator("Involution", "1", "dfmvr") is not None
    assert ptx.calls == 0


@pytest.mark.parametrize("aot", [True, False])
def test_parser_int32_fields_create_the_plugin(layer, aot):
    """Defect 1: one-element int32 fields (what the parser hands over) must create the plugin on 10.x
    and 11.x with this NumPy; the shape function then sees the attribute values."""
    trtp, core, _ = layer
    plugin = _create(core, _node(7, 2, 4, aot))
    assert plugin.get_output_data_types([core.DataType.FLOAT, core.DataType.FLOAT], [4, 4]) == [core.DataType.FLOAT]
    b = Dim(None, "B")
    ho = involution_output_size(20, 7, 2)
    x = [b, Dim(64), Dim(20), Dim(22)]
    w = [b, Dim(4 * 49), Dim(ho), Dim(involution_output_size(22, 7, 2))]
    (y,) = plugin.get_output_shapes([x, w], [], ExprBuilder())
    assert not y[0].is_constant() and "B" in y[0].name          # the dynamic batch stays symbolic
    assert [d.get_constant_value() for d in y[1:]] == [64, ho, involution_output_size(22, 7, 2)]


def test_int_annotated_attributes_are_what_broke(layer):
    """The stand-in reproduces the defect: an ``int``-annotated attribute fed a one-element int32 field
    fails in TensorRT 10.x's own conversion with NumPy >= 2.4 (11.x reads element 0)."""
    trtp, core, _ = layer

    @trtp.register("dfmvrtest::IntAttr")
    def desc(x: trtp.TensorDesc, k: int) -> trtp.TensorDesc:
        return x.like()

    @trtp.impl("dfmvrtest::IntAttr")
    def impl(x: trtp.Tensor, k: int, outputs, stream: int) -> None:
        pass

    creator = core.get_plugin_registry().get_creator("IntAttr", "1", "dfmvrtest")
    field = core.PluginFieldCollection([core.PluginField("k", np.array([3], np.int32), core.PluginFieldType.INT32)])
    numpy_refuses = tuple(int(p) for p in np.__version__.split(".")[:2]) >= (2, 4)
    if core.__version__.startswith("10.") and numpy_refuses:
        with pytest.raises(TypeError):
            creator.create_plugin("IntAttr", "dfmvrtest", field, core.TensorRTPhase.BUILD)
    else:
        creator.create_plugin("IntAttr", "dfmvrtest", field, core.TensorRTPhase.BUILD)


def test_aot_attribute_selects_the_implementation(layer):
    """Defect 3: ``aot=1`` gives the AOT plugin, ``aot=0`` the JIT one; a node without ``aot`` is refused
    because dfmvr defines both (which is why onnx_node_attributes always emits it)."""
    trtp, core, _ = layer
    if not hasattr(trtp, "aot_impl"):
        pytest.skip("this TensorRT has no AOT plugins")
    assert type(_create(core, _node(3, 1, 2, True))).__name__ == "_TemplateAOTPlugin"
    assert type(_create(core, _node(3, 1, 2, False))).__name__ == "_TemplateJITPlugin"
    with pytest.raises(ValueError, match="both AOT and JIT"):
        _create(core, _node(3, 1, 2, None))


def _in_out(core, shapes, dtype):
    descs = []
    for shape in shapes:
        d = core.DynamicPluginTensorDesc()
        d.desc = core.PluginTensorDesc(dtype, core.TensorFormat.LINEAR, shape)
        d.min = d.max = d.opt = shape
        descs.append(d)
    return descs


@pytest.mark.parametrize("k,s", [(3, 1), (7, 2)])
def test_aot_launch_parameters(layer, k, s):
    """The AOT implementation through the real AOT plugin class: kernel name, launch grid, int32 scalar
    arguments; the PTX is asked for only here (once)."""
    trtp, core, ptx = layer
    if not hasattr(trtp, "aot_impl"):
        pytest.skip("this TensorRT has no AOT plugins")
    plugin = _create(core, _node(k, s, 2, True))
    b, c, h, wd, g = 3, 32, 20, 22, 2
    ho, wo = involution_output_size(h, k, s), involution_output_size(wd, k, s)
    plugin.get_output_data_types([core.DataType.HALF] * 2, [4, 4])
    x, w = [Dim(b), Dim(c), Dim(h), Dim(wd)], [Dim(b), Dim(g * k * k), Dim(ho), Dim(wo)]
    plugin.get_output_shapes([x, w], [], ExprBuilder())
    plugin.set_tactic(0)

    class Setter(list):
        nbSymExprs = 0

        def __setitem__(self, i, v):
            while len(self) <= i:
                self.append(None)
            super().__setitem__(i, v)

    params, setter = type("LaunchParams", (), {})(), Setter()
    in_out = _in_out(core, [(b, c, h, wd), (b, g * k * k, ho, wo), (b, c, ho, wo)], core.DataType.HALF)
    plugin.get_launch_params([x, w], in_out, 2, params, setter, ExprBuilder())
    assert params.grid_x.expr.get_constant_value() == -(-(b * g * ho * wo) // PLUGIN_BLOCK)
    assert params.block_x.expr.get_constant_value() == PLUGIN_BLOCK
    assert [e.expr.get_constant_value() for e in setter] == [b, c, h, wd, g, s]
    name, image = plugin.get_kernel([d.desc for d in in_out[:2]], [d.desc for d in in_out[2:]])
    assert name == f"dfmvr_involution_k{k}_f16".encode() and image == b"// stand-in PTX\n"
    assert ptx.calls == 1


def test_wrong_weight_shape_is_refused_at_build(layer):
    """Defect 7: a W whose known dimensions disagree with [B, G*K*K, Ho, Wo] is refused by the shape
    function instead of being read out of bounds by the AOT kernel."""
    trtp, core, _ = layer
    plugin = _create(core, _node(7, 1, 2, True))
    plugin.get_output_data_types([core.DataType.FLOAT] * 2, [4, 4])
    b = Dim(None, "B")
    x = [b, Dim(32), Dim(16), Dim(16)]
    with pytest.raises(ValueError, match="W dimension 1 is 9, expected 98"):
        plugin.get_output_shapes([x, [b, Dim(9), Dim(16), Dim(16)]], [], ExprBuilder())
    with pytest.raises(ValueError, match="W dimension 3 is 8, expected 16"):
        plugin.get_output_shapes([x, [b, Dim(98), Dim(16), Dim(8)]], [], ExprBuilder())
