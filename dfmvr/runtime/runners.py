"""Runners: one lifecycle for every backend (activate / infer / deactivate, a context manager).

``OnnxrtRunner`` runs an ONNX graph with ONNX Runtime (CPU provider; CUDA provider when asked for and
present). ``TensorrtRunner`` runs a serialized TensorRT engine with device buffers from cuda-python and
asynchronous execution on its own stream; TensorRT and cuda-python are imported only on activation.

``infer(feed)`` takes ``{name: np.ndarray}`` and returns ``{name: np.ndarray}`` for every graph output;
``last_inference_time()`` is the wall time of the last ``infer`` in seconds (host to host, copies
included).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from ..errors import InputError, UnavailableError, require

__all__ = ["Runner", "OnnxrtRunner", "TensorrtRunner", "runner_for"]


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

    def _infer(self, feed):
        values = self.session.run(self.output_names, feed)
        return dict(zip(self.output_names, values))

    def _deactivate(self):
        self.session = None

    def input_shapes(self) -> dict[str, list]:
        return {i.name: list(i.shape) for i in self.session.get_inputs()}


class TensorrtRunner(Runner):
    """A TensorRT engine on the current CUDA device, fed through cuda-python device buffers.

    The Involution plugin is registered with ``dfmvr.kernels.trt_plugin.register_involution_plugin``
    (TensorRT >= 10.8). plugin_libraries: extra shared libraries with TensorRT plugins loaded before
    the engine is deserialized; also read from ``DFMVR_TRT_PLUGINS`` (os.pathsep separated).
    Not verified here: this machine has neither a GPU nor TensorRT.
    """

    name = "tensorrt"

    def __init__(self, path, plugin_libraries=()):
        super().__init__()
        self.path = Path(path)
        env = [p for p in os.environ.get("DFMVR_TRT_PLUGINS", "").split(os.pathsep) if p]
        self.plugin_libraries = [Path(p) for p in (*plugin_libraries, *env)]
        self._device: dict[str, tuple[int, int]] = {}    # name -> (pointer, bytes)

    def _check(self, result):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            _, text = self._cudart.cudaGetErrorString(err)
            raise UnavailableError(f"CUDA call failed: {text.decode() if isinstance(text, bytes) else text}")
        return rest[0] if len(rest) == 1 else rest

    def _activate(self):
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise UnavailableError("running a TensorRT engine needs TensorRT, which is not importable here "
                                   "-- install it from NVIDIA's package index on a GPU machine, or use --onnx") from exc
        self._cudart = require("cuda.bindings.runtime", "gpu", "the TensorRT runner")
        count = self._cudart.cudaGetDeviceCount()
        if int(count[0]) != 0 or not count[1]:
            raise UnavailableError("no usable CUDA device (driver missing or no GPU) -- use --device cpu")
        import ctypes

        for lib in self.plugin_libraries:
            ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
        from ..kernels.trt_plugin import register_involution_plugin

        try:
            register_involution_plugin()          # the dfmvr::Involution plugin (tensorrt.plugin API)
        except UnavailableError:
            if not self.plugin_libraries:         # a C++ plugin library may provide it instead
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
        self._stream = self._check(self._cudart.cudaStreamCreate())

    def _buffer(self, name: str, nbytes: int) -> int:
        """A device buffer of at least ``nbytes`` for tensor ``name`` (grown, never shrunk)."""
        ptr, size = self._device.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                self._check(self._cudart.cudaFree(ptr))
            ptr = int(self._check(self._cudart.cudaMalloc(max(nbytes, 1))))
            self._device[name] = (ptr, nbytes)
        return ptr

    def _infer(self, feed):
        rt, trt = self._cudart, self._trt
        h2d, d2h = rt.cudaMemcpyKind.cudaMemcpyHostToDevice, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        keep = []
        for name in self.input_names:
            if name not in feed:
                raise InputError(self.path, f"engine input '{name}' was not fed")
            dtype = trt.nptype(self.engine.get_tensor_dtype(name))
            host = np.ascontiguousarray(feed[name], dtype=dtype)
            keep.append(host)
            self.context.set_input_shape(name, tuple(host.shape))
            ptr = self._buffer(name, host.nbytes)
            self._check(rt.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes, h2d, self._stream))
            self.context.set_tensor_address(name, ptr)
        outputs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            host = np.empty(shape, dtype=trt.nptype(self.engine.get_tensor_dtype(name)))
            self.context.set_tensor_address(name, self._buffer(name, host.nbytes))
            outputs[name] = host
        if not self.context.execute_async_v3(int(self._stream)):
            raise UnavailableError(f"TensorRT failed to execute {self.path}")
        for name, host in outputs.items():
            self._check(rt.cudaMemcpyAsync(host.ctypes.data, self._device[name][0], host.nbytes, d2h, self._stream))
        self._check(rt.cudaStreamSynchronize(self._stream))
        return outputs

    def _deactivate(self):
        for ptr, _ in self._device.values():
            self._cudart.cudaFree(ptr)
        self._device.clear()
        self._cudart.cudaStreamDestroy(self._stream)
        self.context = self.engine = self._runtime = None


def runner_for(artifact, threads: int | None = None, device: str = "cpu") -> Runner:
    """The runner an artifact needs: ONNX -> OnnxrtRunner, engine -> TensorrtRunner."""
    if artifact.kind == "engine":
        return TensorrtRunner(artifact.path)
    return OnnxrtRunner(artifact.path, threads=threads, device=device)
