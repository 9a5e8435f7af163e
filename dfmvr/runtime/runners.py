"""Runners: one lifecycle for every backend (activate / infer / deactivate, a context manager).

``OnnxrtRunner`` runs an ONNX graph with ONNX Runtime (CPU provider; CUDA provider when asked for and
present). ``TensorrtRunner`` runs a serialized TensorRT engine with device buffers and a non-blocking
stream from ``dfmvr.kernels.cuda_driver`` (cuda-python's driver API: dfmvr's one CUDA layer); TensorRT
and cuda-python are imported only on activation.

An engine's optimisation profile bounds the batch: ``check_profile_shape`` turns an out-of-profile input
into an InputError (exit 2) naming the profile, before TensorRT would answer with -1 dimensions; the
profile comes from the engine itself, or before activation from its card (``card_engine_record``).

``infer(feed)`` takes ``{name: np.ndarray}`` and returns ``{name: np.ndarray}`` for every graph output;
``last_inference_time()`` is the wall time of the last ``infer`` in seconds (host to host, copies
included).

``OpenvinoRunner`` (``dfmvr.runtime.openvino_runner``, imported lazily: OpenVINO is an optional extra)
runs the same ONNX graph with OpenVINO's CPU plugin; ``runner_for(..., backend="openvino")`` picks it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from ..errors import InputError, UnavailableError

__all__ = ["Runner", "OnnxrtRunner", "TensorrtRunner", "runner_for", "ONNX_BACKENDS", "check_profile_shape",
           "engine_profile", "card_engine_record", "check_graph_io"]

ENGINE_RECORD_KEY = "tensorrt_engine"     # the same key as dfmvr.export.tensorrt_build.ENGINE_RECORD_KEY


def card_engine_record(card) -> dict:
    """What ``dfmvr-export`` recorded about an engine in its card (profile, precision, plugin mode);
    {} for cards written before it did."""
    record = (getattr(card, "provenance", None) or {}).get(ENGINE_RECORD_KEY)
    return record if isinstance(record, dict) else {}


def check_graph_io(runner) -> None:
    """InputError (exit 2) naming the model when an active runner's graph does not take dfmvr's input and
    give its outputs (``card.GRAPH_INPUT``, ``card.GRAPH_OUTPUTS``): another network with a dfmvr card
    copied into it would otherwise fail inside the backend with a traceback."""
    from ..card import GRAPH_INPUT, GRAPH_OUTPUTS

    if getattr(runner, "input_names", None) is None:
        return          # a runner without a graph (dfmvr-bench's torch runners call the model itself)
    inputs, outputs = list(runner.input_names), list(getattr(runner, "output_names", []))
    missing = [n for n in GRAPH_OUTPUTS if n not in outputs]
    if inputs != [GRAPH_INPUT] or missing:
        raise InputError(getattr(runner, "path", None), f"this graph takes {inputs} and gives {outputs}; a dfmvr graph takes "
                         f"['{GRAPH_INPUT}'] and gives {list(GRAPH_OUTPUTS)} (and optionally keypoints)",
                         "export the model with 'dfmvr-export', or pass the model it was exported as")


def engine_profile(engine, name: str, index: int = 0) -> tuple[tuple[int, ...], ...] | None:
    """(min, opt, max) shapes of input ``name`` in optimisation profile ``index``; None when the engine
    has no profile for it (static shapes)."""
    try:
        shapes = engine.get_tensor_profile_shape(name, index)
    except Exception:   # noqa: BLE001 - TensorRT raises its own error types for inputs without a profile
        return None
    if not shapes or len(shapes) != 3:
        return None
    return tuple(tuple(int(d) for d in s) for s in shapes)


def check_profile_shape(name: str, shape, profile, source=None) -> None:
    """InputError (exit 2) naming the profile when ``shape`` is outside it (None: no profile, pass)."""
    if profile is None:
        return
    lo, opt, hi = (tuple(int(d) for d in s) for s in profile)
    shape = tuple(int(d) for d in shape)
    if len(shape) != len(lo) or any(not a <= d <= b for d, a, b in zip(shape, lo, hi)):
        batch = f"batch {shape[0]} " if len(shape) == len(lo) and shape[1:] == lo[1:] == hi[1:] else ""
        raise InputError(source, f"input '{name}' {batch}of shape {shape} is outside the engine's optimisation "
                         f"profile (min {lo}, opt {opt}, max {hi})",
                         f"use --batch from {lo[0]} to {hi[0]}, or rebuild the engine with "
                         f"'dfmvr-export --engine --engine-batch MIN:OPT:MAX' covering {shape[0]}")


class Runner:
    """Base of the runners. Subclasses implement ``_activate``, ``_infer`` and ``_deactivate``."""

    name = "runner"

    def __init__(self):
        self.is_active = False
        self._last_time: float | None = None

    def activate(self) -> "Runner":
        if not self.is_active:
            self._activate()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            self._deactivate()
            self.is_active = False

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.is_active:
            raise RuntimeError(f"{self.name} is not active: call activate() or use it as a context manager")
        start = time.perf_counter()
        out = self._infer(feed)
        self._last_time = time.perf_counter() - start
        return out

    def last_inference_time(self) -> float | None:
        return self._last_time

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def _activate(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _infer(self, feed):  # pragma: no cover - abstract
        raise NotImplementedError

    def _deactivate(self):  # pragma: no cover - abstract
        raise NotImplementedError


class OnnxrtRunner(Runner):
    """ONNX Runtime session over an ONNX file.

    threads: intra-op threads (None: ORT's default, one per physical core).
    device:  "cpu", or "cuda" to put the CUDA provider first when present (onnxruntime-gpu); the
             providers in use are in ``session.get_providers()`` after activation.
    """

    name = "onnxruntime"

    def __init__(self, path, threads: int | None = None, device: str = "cpu"):
        super().__init__()
        self.path = Path(path)
        self.threads = threads
        self.device = device
        self.session = None

    def providers(self) -> list[str]:
        """CUDA provider first when ``device == "cuda"`` and this onnxruntime has it; CPU otherwise."""
        import onnxruntime as ort

        if self.device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]

    def _activate(self):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads:
            opts.intra_op_num_threads = int(self.threads)
            # one parallel region at a time: inter-op threads only help graphs with wide branches
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=self.providers())
        except Exception as exc:   # ORT raises its own Fail/InvalidGraph/... types
            raise InputError(self.path, f"ONNX Runtime cannot load this model ({str(exc).strip()[:300]})",
                             "re-export it with 'dfmvr-export'") from exc
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_names = [i.name for i in self.session.get_inputs()]

    def _infer(self, feed):
        values = self.session.run(self.output_names, feed)
        return dict(zip(self.output_names, values))

    def _deactivate(self):
        self.session = None

    def input_shapes(self) -> dict[str, list]:
        return {i.name: list(i.shape) for i in self.session.get_inputs()}


class TensorrtRunner(Runner):
    """A TensorRT engine on CUDA device 0, fed through ``dfmvr.kernels.cuda_driver`` device buffers on a
    non-blocking stream of its own.

    An engine whose card records an AOT Involution plugin (every engine ``dfmvr-export`` builds) runs
    without the Python plugin: its kernel is in the engine, so nothing is registered and no PTX compiled
    (no NVRTC or nvcc needed). Other engines (a JIT plugin, or a card without the record) get the plugin
    registered with ``register_involution_plugin``, which compiles PTX only if TensorRT asks for it.
    plugin_libraries: extra shared libraries with TensorRT plugins loaded before the engine is
    deserialized; also read from ``DFMVR_TRT_PLUGINS`` (os.pathsep separated).
    card: the engine's ModelCard; its profile record lets ``check_batch`` refuse a batch before activation.
    Not verified here: this machine has neither a GPU nor TensorRT.
    """

    name = "tensorrt"

    def __init__(self, path, plugin_libraries=(), card=None):
        super().__init__()
        self.path = Path(path)
        self.record = card_engine_record(card)
        env = [p for p in os.environ.get("DFMVR_TRT_PLUGINS", "").split(os.pathsep) if p]
        self.plugin_libraries = [Path(p) for p in (*plugin_libraries, *env)]
        self._buffers: dict = {}      # tensor name -> cuda_driver.DeviceBuffer (grown, never shrunk)
        self._cuda = None

    def card_profile(self) -> tuple[tuple[int, ...], ...] | None:
        """(min, opt, max) input shapes recorded in the engine's card, or None."""
        prof = self.record.get("profile") or {}
        if all(k in prof for k in ("min", "opt", "max")):
            return tuple(tuple(prof[k]) for k in ("min", "opt", "max"))
        return None

    def check_batch(self, batch: int) -> None:
        """InputError naming the profile when ``batch`` is outside the card's recorded profile."""
        prof = self.card_profile()
        if prof is not None:
            check_profile_shape(self.record.get("input", "images"), (int(batch), *prof[0][1:]), prof, self.path)

    def needs_python_plugin(self) -> bool:
        """False when the card says the engine's Involution plugin is AOT (its kernel is in the engine)."""
        return not (self.record.get("plugin") or {}).get("aot", False)

    def _activate(self):
        from ..kernels.trt_version import import_tensorrt

        trt = import_tensorrt("running a TensorRT engine (use --onnx otherwise)")
        from ..kernels.cuda_driver import CudaContext

        # the device's primary context (the one TensorRT uses) and a non-blocking stream: never the legacy
        # default stream, which serialises with every other. No cuda-python: MissingExtraError (exit 2);
        # no driver or GPU: UnavailableError (exit 3).
        self._cuda = CudaContext(0, non_blocking=True)
        try:
            self._load_engine(trt)
        except BaseException:
            self._cuda.close()
            self._cuda = None
            raise

    def _load_engine(self, trt) -> None:
        import ctypes

        for lib in self.plugin_libraries:
            ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
        if self.needs_python_plugin():
            from ..kernels.trt_plugin import register_involution_plugin

            try:
                register_involution_plugin()      # the dfmvr::Involution plugin (tensorrt.plugin API), PTX lazy
            except UnavailableError:
                if not self.plugin_libraries:     # a C++ plugin library may provide it instead
                    raise
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        trt.init_libnvinfer_plugins(self._logger, "")
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise InputError(self.path, "TensorRT cannot deserialize this engine (built by another TensorRT "
                             "version or GPU, or the Involution plugin is not loaded)",
                             "rebuild it with 'dfmvr-export --engine' on this machine")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == mode]
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) != mode]

    def _buffer(self, name: str):
        from ..kernels.cuda_driver import DeviceBuffer

        return self._buffers.setdefault(name, DeviceBuffer())

    def _infer(self, feed):
        trt, stream = self._trt, self._cuda.stream
        keep = []
        for name in self.input_names:
            if name not in feed:
                raise InputError(self.path, f"engine input '{name}' was not fed")
            dtype = trt.nptype(self.engine.get_tensor_dtype(name))
            host = np.ascontiguousarray(feed[name], dtype=dtype)
            keep.append(host)
            check_profile_shape(name, host.shape, engine_profile(self.engine, name), self.path)
            if not self.context.set_input_shape(name, tuple(host.shape)):
                raise InputError(self.path, f"TensorRT refused input shape {tuple(host.shape)} for '{name}'",
                                 "check the batch against the engine's optimisation profile")
            self.context.set_tensor_address(name, self._buffer(name).upload(host, stream))
        outputs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise InputError(self.path, f"TensorRT could not infer the shape of output '{name}' ({shape}) "
                                 "from the inputs given")
            host = np.empty(shape, dtype=trt.nptype(self.engine.get_tensor_dtype(name)))
            self.context.set_tensor_address(name, self._buffer(name).ensure(host.nbytes))
            outputs[name] = host
        if not self.context.execute_async_v3(int(stream)):
            raise UnavailableError(f"TensorRT failed to execute {self.path}")
        for name, host in outputs.items():
            self._buffers[name].download(host, stream)
        self._cuda.synchronize()
        return outputs

    def _deactivate(self):
        for buf in self._buffers.values():
            buf.free()
        self._buffers.clear()
        self.context = self.engine = self._runtime = None
        if self._cuda is not None:
            self._cuda.close()
            self._cuda = None


ONNX_BACKENDS = ("onnxruntime", "openvino")


def runner_for(artifact, threads: int | None = None, device: str = "cpu", backend: str = "onnxruntime") -> Runner:
    """The runner an artifact needs: engine -> TensorrtRunner; ONNX -> OnnxrtRunner, or with
    ``backend="openvino"`` ``OpenvinoRunner`` (dfmvr.runtime.openvino_runner, the ``openvino`` extra;
    CPU only)."""
    if backend not in ONNX_BACKENDS:
        raise InputError(None, f"unknown backend '{backend}'", f"choose one of {', '.join(ONNX_BACKENDS)}")
    if artifact.kind == "engine":
        if backend != "onnxruntime":
            raise InputError(artifact.path, f"--backend {backend} runs ONNX graphs, not TensorRT engines",
                             "pass the graph with --onnx")
        return TensorrtRunner(artifact.path, card=artifact.card)
    if backend == "openvino":
        if device != "cpu":
            raise InputError(None, "--backend openvino runs on the CPU only", "use --device cpu")
        from .openvino_runner import OpenvinoRunner

        return OpenvinoRunner(artifact.path, threads=threads)
    return OnnxrtRunner(artifact.path, threads=threads, device=device)
