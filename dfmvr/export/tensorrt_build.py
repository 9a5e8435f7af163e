"""TensorRT engine from the exported ONNX graph, on NVIDIA's documented Python API (TensorRT 10).

``tensorrt`` is imported lazily: this module imports anywhere, and ``tensorrt_unavailable()`` says why
an engine cannot be built here (no package, no GPU). NOT VERIFIED on a GPU in this project's CI
(no TensorRT wheel can be installed there): ``tests/export`` runs these paths only where TensorRT works.

Build (``build_engine``):
1. a copy of the graph WITHOUT the ``dfmvr::Involution`` function body, each Involution node with the
   attributes ``dfmvr.kernels.trt_plugin.onnx_node_attributes`` defines (``plugin_namespace``,
   ``plugin_version``, ``aot``), so that the ONNX parser cannot inline a fallback and must import the
   node as the plugin that ``register_involution_plugin`` registered;
2. ``trt.Builder`` -> network -> ``trt.OnnxParser.parse`` (errors listed);
3. builder config: workspace limit (``MemoryPoolType.WORKSPACE``), ``BuilderFlag.FP16`` when asked, one
   optimisation profile on ``images`` from ``--batch MIN:OPT:MAX``, a timing cache read from / written
   back to a file;
4. ``build_serialized_network`` -> ``model.plan`` + ``model.plan.card.json``, each written atomically.

``TensorrtRunner`` runs an engine for the parity report (device buffers are torch CUDA tensors:
export already depends on torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from ..atomic import atomic_write_bytes, atomic_write_text
from ..card import GRAPH_INPUT, GRAPH_OUTPUTS, ModelCard
from ..errors import InputError, UnavailableError
from ..face.layout import NUM_VIEWS
from .involution_onnx import involution_nodes, strip_involution_function

__all__ = ["BatchProfile", "parse_batch", "tensorrt_unavailable", "graph_for_tensorrt", "build_engine",
           "EngineBuildResult", "TensorrtRunner", "card_path_for"]


@dataclass(frozen=True)
class BatchProfile:
    min: int = 1
    opt: int = 1
    max: int = 4

    def shapes(self, image_size: int) -> tuple[tuple[int, ...], ...]:
        return tuple((b, NUM_VIEWS, 3, image_size, image_size) for b in (self.min, self.opt, self.max))


def parse_batch(text: str) -> BatchProfile:
    """"MIN:OPT:MAX" (or one number N = N:N:N) -> BatchProfile; bad text -> InputError."""
    try:
        parts = [int(p) for p in str(text).split(":")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3 or not (1 <= parts[0] <= parts[1] <= parts[2]):
        raise InputError(None, f"--batch '{text}' is not MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX",
                         "e.g. --batch 1:1:4")
    return BatchProfile(*parts)


def card_path_for(engine_path) -> Path:
    """``model.plan`` -> ``model.plan.card.json``."""
    p = Path(engine_path)
    return p.with_name(p.name + ".card.json")


def tensorrt_unavailable() -> str | None:
    """None when TensorRT imports and a CUDA GPU is visible; else the reason, in words."""
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:   # ImportError, or OSError from a bindings wheel without libnvinfer
        return f"TensorRT is not importable ({type(exc).__name__}: {exc})"
    try:
        import torch
        if not torch.cuda.is_available():
            return "no CUDA GPU is visible (torch.cuda.is_available() is False)"
    except ImportError:
        return "torch is not installed"
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


def _register_plugin():
    try:
        from ..kernels.trt_plugin import register_involution_plugin
    except ImportError as exc:
        raise UnavailableError(f"the TensorRT involution plugin is not available ({exc}); "
                               "build dfmvr's kernels (dfmvr.kernels.trt_plugin) on this GPU machine") from exc
    register_involution_plugin()


def build_engine(onnx_model: onnx.ModelProto, engine_path, card: ModelCard, fp16: bool = False,
                 profile: BatchProfile = BatchProfile(), workspace_gb: float = 4.0,
                 timing_cache=None) -> EngineBuildResult:
    """Build and save a TensorRT engine (+ its card) from an exported dfmvr graph. Needs TensorRT + GPU."""
    reason = tensorrt_unavailable()
    if reason:
        raise UnavailableError(f"cannot build a TensorRT engine: {reason}")
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")
    _register_plugin()
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(graph_for_tensorrt(onnx_model).SerializeToString()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise UnavailableError("TensorRT's ONNX parser rejected the graph (is the involution plugin "
                               "registered?): " + " | ".join(errors))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(GRAPH_INPUT, *profile.shapes(int(card.image_size)))
    config.add_optimization_profile(opt_profile)
    cache_path = Path(timing_cache) if timing_cache else None
    cache_bytes = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise UnavailableError("TensorRT failed to build the engine (see the TensorRT log above)")
    engine_path = Path(engine_path)
    atomic_write_bytes(engine_path, bytes(plan))
    card_path = atomic_write_text(card_path_for(engine_path), card.to_json() + "\n")
    if cache_path:
        atomic_write_bytes(cache_path, bytes(config.get_timing_cache().serialize()))
    return EngineBuildResult(engine_path, card_path, fp16, profile, cache_path, engine_path.stat().st_size)


class TensorrtRunner:
    """Run a serialized engine on numpy inputs: images [B, 3, 3, S, S] -> (coefficients, labels uint8)."""

    def __init__(self, engine_path):
        import tensorrt as trt
        import torch

        _register_plugin()
        self._torch = torch
        logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise InputError(engine_path, "TensorRT could not deserialize the engine",
                             "rebuild it on this GPU with this TensorRT version")
        self.context = self.engine.create_execution_context()

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(images, np.float32)).cuda()
        self.context.set_input_shape(GRAPH_INPUT, tuple(x.shape))
        self.context.set_tensor_address(GRAPH_INPUT, x.data_ptr())
        dtypes = {GRAPH_OUTPUTS[0]: torch.float32, GRAPH_OUTPUTS[1]: torch.uint8}
        outs = {}
        for name in GRAPH_OUTPUTS:
            shape = tuple(self.context.get_tensor_shape(name))
            outs[name] = torch.empty(shape, dtype=dtypes[name], device="cuda")
            self.context.set_tensor_address(name, outs[name].data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return outs[GRAPH_OUTPUTS[0]].cpu().numpy(), outs[GRAPH_OUTPUTS[1]].cpu().numpy()
