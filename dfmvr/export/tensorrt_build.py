"""TensorRT engine from the exported ONNX graph, on NVIDIA's documented Python API (TensorRT 10.8 to 11.x).

``tensorrt`` is imported lazily: this module imports anywhere, and ``tensorrt_unavailable()`` says why
an engine cannot be built here (no package, an unsupported version -- ``dfmvr.kernels.trt_version`` --,
no GPU). NOT VERIFIED on a GPU in this project's CI (no TensorRT wheel can be installed there):
``tests/export`` runs these paths only where TensorRT works; the decisions below are plain functions
tested against a stand-in ``trt`` namespace (``tests/export/test_tensorrt_build_logic.py``).

Build (``build_engine``):
1. a copy of the graph WITHOUT the ``dfmvr::Involution`` function body, each Involution node with the
   attributes ``dfmvr.kernels.trt_plugin.onnx_node_attributes`` defines (``plugin_namespace``,
   ``plugin_version``, ``aot``), so that the ONNX parser cannot inline a fallback and must import the
   node as the plugin that ``register_involution_plugin`` registered;
2. ``trt.Builder`` -> a STRONGLY TYPED network (``network_flags``) -> ``trt.OnnxParser.parse`` (errors
   listed). Precision comes from the graph's own types: fp16 engines parse the fp16 ONNX graph
   (``dfmvr.export.fp16``). ``BuilderFlag.FP16`` (deprecated in 10.12, gone in 11) is used only by a
   TensorRT without strongly typed networks that still has the flag (``precision_plan``);
3. builder config: workspace limit (``MemoryPoolType.WORKSPACE``), one optimisation profile on
   ``images`` from ``--engine-batch MIN:OPT:MAX``, a timing cache read from / written back to a file (a cache
   TensorRT rejects is an InputError naming the file);
4. ``build_serialized_network`` -> ``model.plan`` + ``model.plan.card.json``, each written atomically;
   the card's ``provenance["tensorrt_engine"]`` records the profile, precision, plugin mode and version
   (``engine_record``), which the runtime reads to refuse out-of-profile batches before TensorRT does.

``TensorrtRunner`` runs an engine for the parity report through the runtime's ``TensorrtRunner``
(cuda-python buffers on its own CUDA stream, the batch checked against the profile): one runner family.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from ..atomic import atomic_write_bytes, atomic_write_text
from ..card import GRAPH_INPUT, ModelCard, engine_card_path
from ..errors import InputError, UnavailableError
from ..face.layout import NUM_VIEWS
from .involution_onnx import involution_nodes, strip_involution_function

__all__ = ["BatchProfile", "parse_batch", "tensorrt_unavailable", "graph_for_tensorrt", "build_engine",
           "EngineBuildResult", "TensorrtRunner", "network_flags", "precision_plan",
           "engine_record", "ENGINE_RECORD_KEY"]

ENGINE_RECORD_KEY = "tensorrt_engine"     # card.provenance[ENGINE_RECORD_KEY]: see engine_record()


@dataclass(frozen=True)
class BatchProfile:
    min: int = 1
    opt: int = 1
    max: int = 4

    def shapes(self, image_size: int) -> tuple[tuple[int, ...], ...]:
        return tuple((b, NUM_VIEWS, 3, image_size, image_size) for b in (self.min, self.opt, self.max))

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"

    def check(self, batch: int, what: str = "batch") -> None:
        """InputError (exit 2) naming the profile when ``batch`` is outside [min, max]."""
        if not self.min <= int(batch) <= self.max:
            raise InputError(None, f"{what} {batch} is outside the engine's optimisation profile "
                             f"--engine-batch {self} (MIN:OPT:MAX)",
                             f"use a {what} from {self.min} to {self.max}, or an --engine-batch range that "
                             f"includes {batch}")


def parse_batch(text: str) -> BatchProfile:
    """"MIN:OPT:MAX" (or one number N = N:N:N) -> BatchProfile; bad text -> InputError."""
    try:
        parts = [int(p) for p in str(text).split(":")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3 or not (1 <= parts[0] <= parts[1] <= parts[2]):
        raise InputError(None, f"--engine-batch '{text}' is not MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX",
                         "e.g. --engine-batch 1:1:4")
    return BatchProfile(*parts)


def tensorrt_unavailable() -> str | None:
    """None when a supported TensorRT imports, a CUDA GPU is visible and cuda-python is installed;
    else the reason, in words."""
    from ..kernels.trt_version import import_tensorrt

    try:
        import_tensorrt("building a TensorRT engine")
    except UnavailableError as exc:
        return str(exc)
    try:
        import torch
        if not torch.cuda.is_available():
            return "no CUDA GPU is visible (torch.cuda.is_available() is False)"
    except ImportError:
        return "torch is not installed"
    import importlib.util

    if importlib.util.find_spec("cuda") is None or importlib.util.find_spec("cuda.bindings") is None:
        return ("cuda-python is not installed (the parity report runs the engine through the runtime's "
                "TensorrtRunner) -- pip install 'dfmvr[tensorrt-cu12]' or 'dfmvr[tensorrt-cu13]'")
    return None


def graph_for_tensorrt(model: onnx.ModelProto, aot: bool = True) -> onnx.ModelProto:
    """A copy without the involution function body, each Involution node carrying exactly the
    attributes ``dfmvr.kernels.trt_plugin.onnx_node_attributes`` asks for (plugin namespace/version,
    ``aot``: the kernel's PTX is embedded in the engine, so it runs without Python)."""
    from ..kernels.trt_plugin import onnx_node_attributes

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    strip_involution_function(copy)
    for node in involution_nodes(copy):
        current = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        attrs = onnx_node_attributes(current["kernel_size"], current["stride"], current["groups"], aot=aot)
        del node.attribute[:]
        node.attribute.extend(onnx.helper.make_attribute(k, v) for k, v in attrs.items())
    return copy


@dataclass
class EngineBuildResult:
    engine_path: Path
    card_path: Path
    fp16: bool
    profile: BatchProfile
    timing_cache: Path | None
    size_bytes: int


def network_flags(trt) -> tuple[int, bool]:
    """(create_network flags, strongly typed?): STRONGLY_TYPED where this TensorRT has it (10.x, 11.x),
    EXPLICIT_BATCH before 10 (the default since)."""
    flag_enum = trt.NetworkDefinitionCreationFlag
    flags = 0
    major = int(str(trt.__version__).split(".")[0])
    if major < 10 and hasattr(flag_enum, "EXPLICIT_BATCH"):
        flags |= 1 << int(flag_enum.EXPLICIT_BATCH)
    if hasattr(flag_enum, "STRONGLY_TYPED"):
        return flags | 1 << int(flag_enum.STRONGLY_TYPED), True
    return flags, False


def precision_plan(trt, fp16: bool, strongly_typed: bool) -> tuple[str, bool]:
    """(which graph to parse: "fp16" or "fp32", whether to set ``BuilderFlag.FP16``).

    Strongly typed: the graph's types are the precision, so fp16 parses the fp16 graph and sets no flag.
    Otherwise (an old TensorRT): the fp32 graph with ``BuilderFlag.FP16`` where the flag exists;
    UnavailableError where neither way exists."""
    if not fp16:
        return "fp32", False
    if strongly_typed:
        return "fp16", False
    if hasattr(trt.BuilderFlag, "FP16"):
        return "fp32", True
    raise UnavailableError(f"TensorRT {trt.__version__} offers neither strongly typed networks nor "
                           "BuilderFlag.FP16: cannot build an fp16 engine")


def engine_record(profile: BatchProfile, image_size: int, precision: str, trt_version: str,
                  aot: bool = True) -> dict:
    """What the engine's card records about the engine (``card.provenance["tensorrt_engine"]``)."""
    shapes = profile.shapes(int(image_size))
    return {"input": GRAPH_INPUT, "profile": {"batch": str(profile), "min": list(shapes[0]),
                                              "opt": list(shapes[1]), "max": list(shapes[2])},
            "precision": precision, "tensorrt": str(trt_version),
            "plugin": {"id": "dfmvr::Involution", "aot": bool(aot)}}


def engine_card(card: ModelCard, record: dict) -> ModelCard:
    """A copy of ``card`` whose provenance carries the engine record."""
    return dataclasses.replace(card, provenance={**card.provenance, ENGINE_RECORD_KEY: record})


def _register_plugin():
    try:
        from ..kernels.trt_plugin import register_involution_plugin
    except ImportError as exc:
        raise UnavailableError(f"the TensorRT involution plugin is not available ({exc}); "
                               "build dfmvr's kernels (dfmvr.kernels.trt_plugin) on this GPU machine") from exc
    register_involution_plugin()


def build_engine(onnx_model: onnx.ModelProto, engine_path, card: ModelCard, fp16: bool = False,
                 profile: BatchProfile = BatchProfile(), workspace_gb: float = 4.0,
                 timing_cache=None, fp16_model: onnx.ModelProto | None = None,
                 check_batches: tuple[int, ...] = ()) -> EngineBuildResult:
    """Build and save a TensorRT engine (+ its card) from an exported dfmvr graph. Needs TensorRT + GPU.

    fp16: the engine computes in fp16, from ``fp16_model`` (the fp16 ONNX graph; converted from
    ``onnx_model`` when not given). check_batches: batch sizes that will be run on the engine (the
    parity batch), checked against ``profile`` before anything is built (InputError, exit 2)."""
    for batch in check_batches:
        profile.check(batch, "the parity batch (--parity-batch)")
    reason = tensorrt_unavailable()
    if reason:
        raise UnavailableError(f"cannot build a TensorRT engine: {reason}")
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")
    _register_plugin()
    builder = trt.Builder(logger)
    flags, strongly_typed = network_flags(trt)
    graph, set_fp16_flag = precision_plan(trt, fp16, strongly_typed)
    if graph == "fp16" and fp16_model is None:
        from .fp16 import convert_to_fp16

        fp16_model = convert_to_fp16(onnx_model)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    source = fp16_model if graph == "fp16" else onnx_model
    if not parser.parse(graph_for_tensorrt(source).SerializeToString()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise UnavailableError("TensorRT's ONNX parser rejected the graph (is the involution plugin "
                               "registered?): " + " | ".join(errors))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if set_fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(GRAPH_INPUT, *profile.shapes(int(card.image_size)))
    config.add_optimization_profile(opt_profile)
    cache_path = Path(timing_cache) if timing_cache else None
    _use_timing_cache(config, cache_path)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise UnavailableError("TensorRT failed to build the engine (see the TensorRT log above)")
    engine_path = Path(engine_path)
    atomic_write_bytes(engine_path, bytes(plan))
    record = engine_record(profile, int(card.image_size), "fp16" if fp16 else "fp32", trt.__version__, aot=True)
    card_path = atomic_write_text(engine_card_path(engine_path), engine_card(card, record).to_json() + "\n")
    if cache_path:
        atomic_write_bytes(cache_path, bytes(config.get_timing_cache().serialize()))
    return EngineBuildResult(engine_path, card_path, fp16, profile, cache_path, engine_path.stat().st_size)


def _use_timing_cache(config, cache_path: Path | None) -> None:
    """Give the builder a timing cache (from ``cache_path`` when it exists, else empty); a cache TensorRT
    refuses (another TensorRT version or GPU) is an InputError naming the file, not a silent cold build."""
    cache_bytes = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        raise InputError(cache_path, "TensorRT refused this timing cache (written by another TensorRT version "
                         "or for another GPU?)", "delete it, or pass another --timing-cache")


class TensorrtRunner:
    """The runtime's ``TensorrtRunner`` (cuda-python buffers, its own CUDA stream, the batch checked
    against the profile in the engine's card) on a built engine, as a parity runner: the export's gate
    certifies the TensorRT path that ``dfmvr-run`` uses."""

    def __init__(self, engine_path):
        from ..runtime.runners import TensorrtRunner as RuntimeTensorrt
        from .parity import RunnerCall

        card_path = engine_card_path(engine_path)
        card = ModelCard.from_json(card_path.read_text("utf-8"), source=card_path)
        self._call = RunnerCall(RuntimeTensorrt(engine_path, card=card))

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._call(images)

    def close(self) -> None:
        self._call.close()
