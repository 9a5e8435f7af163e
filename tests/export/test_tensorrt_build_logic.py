"""build_engine's decisions, run here against a STAND-IN ``tensorrt`` module (issue 20, defects 2, 4, 7).

Real: dfmvr.export.tensorrt_build (build_engine's whole flow: version check, network flags, which graph
is parsed, builder flags, profile, timing cache, the files and the card it writes), onnx, the ONNX graphs.
Stand-in: ``tensorrt`` itself (``FakeTrt`` below records calls; its API surface is NVIDIA's documented
Python API, in a 10.x flavour that still has ``BuilderFlag.FP16`` and an 11.x one without it), the GPU
check (``tensorrt_unavailable`` patched to "available") and the plugin registration (patched out).
Nothing is parsed, built or run by TensorRT.
"""

from __future__ import annotations

import enum
import json
import sys
import types

import pytest
from onnx import TensorProto

from dfmvr.card import ModelCard, engine_card_path
from dfmvr.errors import InputError, UnavailableError
from dfmvr.export import tensorrt_build as tb
from dfmvr.export.involution_onnx import single_involution_model


class FakeTrt(types.ModuleType):
    """A recording stand-in for the ``tensorrt`` module (only what build_engine touches)."""

    def __init__(self, version: str, fp16_flag: bool, strongly_typed: bool = True, cache_ok: bool = True):
        super().__init__("tensorrt")
        self.__version__ = version
        self.calls: list = []
        self.NetworkDefinitionCreationFlag = enum.IntEnum(
            "NetworkDefinitionCreationFlag", {"EXPLICIT_BATCH": 0, **({"STRONGLY_TYPED": 5} if strongly_typed else {})})
        self.BuilderFlag = enum.IntEnum("BuilderFlag", {"TF32": 7, **({"FP16": 0} if fp16_flag else {})})
        self.MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0})
        fake = self

        class Logger:
            WARNING = 2

            def __init__(self, *a):
                pass

        class Config:
            def set_memory_pool_limit(self, pool, size):
                fake.calls.append(("workspace", size))

            def set_flag(self, flag):
                fake.calls.append(("set_flag", flag.name))

            def create_timing_cache(self, data):
                fake.calls.append(("timing_cache_in", bytes(data)))
                return object()

            def set_timing_cache(self, cache, ignore_mismatch):
                return cache_ok

            def get_timing_cache(self):
                return types.SimpleNamespace(serialize=lambda: b"cache-out")

            def add_optimization_profile(self, profile):
                fake.calls.append(("profile", profile.shapes))

        class Profile:
            def set_shape(self, name, lo, opt, hi):
                self.shapes = (name, lo, opt, hi)

        class Builder:
            def __init__(self, logger):
                fake.calls.append(("builder",))

            def create_network(self, flags):
                fake.calls.append(("network_flags", flags))
                return object()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                return b"plan-bytes"

        class OnnxParser:
            num_errors = 0

            def __init__(self, network, logger):
                pass

            def parse(self, data):
                import onnx

                fake.calls.append(("parsed", onnx.load_from_string(data)))
                return True

        self.Logger, self.Builder, self.OnnxParser = Logger, Builder, OnnxParser
        self.init_libnvinfer_plugins = lambda logger, ns: True

    def call(self, kind):
        return [c for c in self.calls if c[0] == kind]


def _graph(elem_type):
    return single_involution_model(32, 7, 2, 2, with_function=True, elem_type=elem_type)


@pytest.fixture
def use_trt(monkeypatch):
    def install(trt):
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setattr(tb, "tensorrt_unavailable", lambda: None)
        monkeypatch.setattr(tb, "_register_plugin", lambda: None)
        return trt
    return install


@pytest.mark.parametrize("version,fp16_flag", [("10.16.1.11", True), ("11.4.0.106", False)])
def test_fp16_engine_is_a_strongly_typed_network_from_the_fp16_graph(tmp_path, use_trt, version, fp16_flag):
    """Defect 2: no BuilderFlag.FP16 (the 11.x stand-in has none: the old code died with AttributeError);
    the network is strongly typed and the parsed graph is the fp16 one, without its function body."""
    trt = use_trt(FakeTrt(version, fp16_flag))
    built = tb.build_engine(_graph(TensorProto.FLOAT), tmp_path / "m.plan", ModelCard("tiny", {}), fp16=True,
                            fp16_model=_graph(TensorProto.FLOAT16), profile=tb.BatchProfile(1, 2, 4))
    assert trt.call("network_flags") == [("network_flags", 1 << 5)]
    assert trt.call("set_flag") == []
    (_, parsed), = trt.call("parsed")
    assert parsed.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert len(parsed.functions) == 0
    node = parsed.graph.node[0]
    assert {a.name: a.i for a in node.attribute if a.name == "aot"} == {"aot": 1}
    assert built.engine_path.read_bytes() == b"plan-bytes"


def test_fp32_engine_parses_the_fp32_graph(tmp_path, use_trt):
    trt = use_trt(FakeTrt("11.4.0.106", False))
    tb.build_engine(_graph(TensorProto.FLOAT), tmp_path / "m.plan", ModelCard("tiny", {}),
                    fp16_model=_graph(TensorProto.FLOAT16))
    (_, parsed), = trt.call("parsed")
    assert parsed.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT


def test_precision_plan_falls_back_to_the_flag_only_where_it_exists():
    old = FakeTrt("10.8.0", fp16_flag=True, strongly_typed=False)
    assert tb.network_flags(old) == (0, False)
    assert tb.precision_plan(old, True, False) == ("fp32", True)
    with pytest.raises(UnavailableError, match="neither strongly typed"):
        tb.precision_plan(FakeTrt("11.0", fp16_flag=False, strongly_typed=False), True, False)
    assert tb.precision_plan(old, False, False) == ("fp32", False)


def test_card_records_the_profile(tmp_path, use_trt):
    """Defect 4: the engine's card says which batches the engine takes."""
    use_trt(FakeTrt("10.16.1.11", True))
    built = tb.build_engine(_graph(TensorProto.FLOAT), tmp_path / "m.plan", ModelCard("tiny", {}),
                            profile=tb.BatchProfile(1, 2, 4))
    record = json.loads(built.card_path.read_text())["provenance"][tb.ENGINE_RECORD_KEY]
    assert record["profile"]["batch"] == "1:2:4"
    assert record["profile"]["max"] == [4, 3, 3, 224, 224]
    assert record["precision"] == "fp32" and record["plugin"] == {"id": "dfmvr::Involution", "aot": True}
    assert record["tensorrt"] == "10.16.1.11"


def test_parity_batch_outside_the_profile_is_refused_before_building(tmp_path, use_trt):
    """Defect 4: ``--engine-batch 1`` with the default parity batch 2 is an exit-2 input error naming the
    profile, raised before TensorRT is touched (the old code crashed after writing the engine)."""
    trt = use_trt(FakeTrt("10.16.1.11", True))
    with pytest.raises(InputError, match=r"parity batch.* 2 is outside .*--engine-batch 1:1:1") as info:
        tb.build_engine(_graph(TensorProto.FLOAT), tmp_path / "m.plan", ModelCard("tiny", {}),
                        profile=tb.parse_batch("1"), check_batches=(2,))
    assert info.value.exit_code == 2
    assert trt.calls == [] and not (tmp_path / "m.plan").exists()
    tb.BatchProfile(1, 2, 4).check(4)
    with pytest.raises(InputError, match="batch 5 is outside"):
        tb.BatchProfile(1, 2, 4).check(5)


def test_a_refused_timing_cache_is_an_input_error(tmp_path, use_trt):
    """Defect 7: set_timing_cache's result is checked (the stand-in refuses the cache)."""
    use_trt(FakeTrt("10.16.1.11", True, cache_ok=False))
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"from another GPU")
    with pytest.raises(InputError, match="refused this timing cache") as info:
        tb.build_engine(_graph(TensorProto.FLOAT), tmp_path / "m.plan", ModelCard("tiny", {}), timing_cache=cache)
    assert str(cache) in str(info.value)


def test_timing_cache_round_trip(tmp_path, use_trt):
    trt = use_trt(FakeTrt("11.4.0.106", False))
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"cache-in")
    tb.build_engine(_graph(TensorProto.FLOAT), tmp_path / "m.plan", ModelCard("tiny", {}), timing_cache=cache)
    assert trt.call("timing_cache_in") == [("timing_cache_in", b"cache-in")]
    assert cache.read_bytes() == b"cache-out"


def test_unsupported_tensorrt_version_is_named(monkeypatch):
    """Defect 2: the version check at import (a 12.x stand-in) gives exit 3 with the install hint."""
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTrt("12.0.0", False))
    reason = tb.tensorrt_unavailable()
    assert reason and "12.0.0 is not supported" in reason and "dfmvr[tensorrt-cu12]" in reason


def test_export_refuses_a_parity_batch_outside_the_profile_before_exporting(tmp_path):
    """Defect 4 at the command's level: with --engine, ``--engine-batch 1`` and parity batch 2 fail at once
    (exit 2), before the checkpoint is even read (the spec below does not exist)."""
    from dfmvr.export.pipeline import export_all

    with pytest.raises(InputError, match=r"parity batch.* 2 is outside .*--engine-batch 1:1:1"):
        export_all(str(tmp_path / "no-such-checkpoint.pt"), tmp_path, engine="m.plan", batch="1", parity_batch=2)


def test_export_parity_runs_engines_through_the_runtime_runner(tmp_path, monkeypatch):
    """One runner family: the export's TensorrtRunner is the runtime's (stand-in TensorRT and cuda-python
    driver API from tests/runtime/test_tensorrt_runner_logic.py), including its profile check."""
    import numpy as np

    from dfmvr.kernels import cuda_driver, trt_plugin, trt_version
    from dfmvr.runtime import runners
    from tests.runtime.test_tensorrt_runner_logic import AOT_RECORD, FakeDriver, FakeEngine, _card, fake_trt

    engine = tmp_path / "m.plan"
    engine.write_bytes(b"stand-in engine")
    engine_card_path(engine).write_text(_card(AOT_RECORD).to_json())
    monkeypatch.setattr(trt_version, "import_tensorrt", lambda purpose: fake_trt(FakeEngine()))
    monkeypatch.setattr(cuda_driver, "driver", lambda: FakeDriver())
    monkeypatch.setattr(trt_plugin, "register_involution_plugin", lambda: pytest.fail("AOT engine: no plugin"))
    runner = tb.TensorrtRunner(engine)
    assert isinstance(runner._call.runner, runners.TensorrtRunner)
    coefficients, labels, keypoints = runner(np.zeros((2, 3, 3, 8, 8), np.float32))
    assert coefficients.shape == (2, 269) and labels.shape == (2, 3, 8, 8) and keypoints is None
    with pytest.raises(InputError, match="outside the engine's optimisation profile"):
        runner(np.zeros((5, 3, 3, 8, 8), np.float32))
    runner.close()


def test_export_parity_runs_graphs_through_the_runtime_runner(tmp_path):
    """One runner family: parity.OnnxrtRunner is the runtime's OnnxrtRunner (real ONNX Runtime, a tiny
    stand-in graph with the dfmvr I/O names)."""
    import numpy as np
    import onnx
    from onnx import helper

    from dfmvr.export import parity
    from dfmvr.runtime import runners

    graph = helper.make_graph(
        [helper.make_node("Flatten", ["images"], ["coefficients"]),
         helper.make_node("Cast", ["images"], ["labels"], to=TensorProto.UINT8)], "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["B", 3, 3, 2, 2])],
        [helper.make_tensor_value_info("coefficients", TensorProto.FLOAT, ["B", 36]),
         helper.make_tensor_value_info("labels", TensorProto.UINT8, ["B", 3, 3, 2, 2])])
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), str(path))
    runner = parity.OnnxrtRunner(path)
    assert isinstance(runner.runner, runners.OnnxrtRunner)
    x = np.arange(2 * 36, dtype=np.float32).reshape(2, 3, 3, 2, 2)
    coefficients, labels, keypoints = runner(x)
    np.testing.assert_array_equal(coefficients, x.reshape(2, 36))
    assert keypoints is None                  # the graph has no keypoints output
    assert labels.dtype == np.uint8
