"""The backends ``dfmvr bench`` compares, each behind the runtime's Runner lifecycle.

- ``torch``            PyTorch eager (``TorchEagerRunner``): needs torch and torch weights (--checkpoint).
- ``torch-compile``    the same DFMVRNet through ``torch.compile`` (Inductor, CPU; ``TorchCompileRunner``):
                       compiled on activation for every batch size of the run (the compile time is
                       reported on its own, never inside a timed iteration); a compile failure is reported
                       as the backend's unavailability reason.
- ``onnxruntime``      the runtime's ``OnnxrtRunner`` on the ONNX graph (base install).
- ``onnxruntime-int8`` ``OnnxrtRunner`` on the int8 QDQ graph (``dfmvr-export --int8``'s
                       ``model.int8.onnx``: --int8-onnx, a sibling of --onnx, or quantized on the fly).
- ``openvino``         the runtime's ``OpenvinoRunner`` (OpenVINO CPU plugin, the ``openvino`` extra) on
                       the ONNX graph with its dfmvr::Involution functions inlined.
- ``tensorrt``         the runtime's ``TensorrtRunner`` on an engine (TensorRT + a CUDA GPU).

``availability`` says whether a backend can run here *without importing it* (torch is imported only
when a torch backend is activated, openvino only when the openvino one is), and why not: unavailable
backends are listed in the report with their reason, never silently dropped.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from ..runtime.runners import OnnxrtRunner, Runner, TensorrtRunner

__all__ = ["BACKENDS", "DESCRIPTIONS", "TorchEagerRunner", "TorchCompileRunner", "availability", "make_runner",
           "describe"]

BACKENDS = ("torch", "torch-compile", "onnxruntime", "onnxruntime-int8", "openvino", "tensorrt")

# What each backend runs, for the report (the runner may add details after activation: ``describe``).
DESCRIPTIONS = {
    "torch": "PyTorch eager, inference_mode, fp32",
    "torch-compile": "torch.compile (Inductor, CPU, default mode), fp32; compiled per batch size on activation",
    "onnxruntime": "ONNX Runtime CPU provider, fp32 graph, ORT_ENABLE_ALL",
    "onnxruntime-int8": "ONNX Runtime CPU provider, int8 QDQ graph (dfmvr.export.int8, as dfmvr-export --int8 "
                        "writes it)",
    "openvino": "OpenVINO CPU plugin, ONNX front end on the graph with dfmvr::Involution local functions inlined "
                "(onnx.inliner; OpenVINO has no conversion rule for them), f32 inference precision, LATENCY hint",
    "tensorrt": "TensorRT engine on CUDA device 0",
}


class TorchEagerRunner(Runner):
    """A DFMVRNet in eager mode (eval, ``torch.inference_mode``), fed and answering like the graph:
    {"images": [B, 3, 3, S, S] float32} -> {"coefficients": [B, 269] float32, "labels": uint8 [B, 3, S, S]}.

    threads: ``torch.set_num_threads`` on activation (None: torch's default).
    """

    name = "torch"

    def __init__(self, model, threads: int | None = None):
        super().__init__()
        self.model, self.threads = model, threads

    def _activate(self):
        import torch

        self._torch = torch
        if self.threads:
            torch.set_num_threads(int(self.threads))
        from ..models.graph import GraphModule, graph_outputs

        # what the exported graph computes, its outputs included (the keypoints of a network with keypoint
        # heads), so that torch is timed on the same work and its keypoints are the parity reference
        self.graph, self.output_names = GraphModule(self.model), graph_outputs(self.model)
        self.forward = self.graph        # what _infer calls; TorchCompileRunner puts the compiled graph here

    def _infer(self, feed):
        torch = self._torch
        (images,) = feed.values()
        with torch.inference_mode():
            outputs = self.forward(torch.from_numpy(np.ascontiguousarray(images, np.float32)))
        return {name: value.numpy() for name, value in zip(self.output_names, outputs)}

    def _deactivate(self):
        pass


class TorchCompileRunner(TorchEagerRunner):
    """``torch.compile(model, backend="inductor")`` on the CPU, fed and answering like ``TorchEagerRunner``.

    Activation compiles: one forward per batch size in ``batches`` (zeros, under ``inference_mode``),
    so that no compilation (nor Dynamo's recompilation for a new batch size) falls into a timed
    iteration. ``compile_s`` maps each batch size to the seconds its first call took (compilation + one
    run); ``compile_total_s`` is their sum. A failed compilation raises from ``activate``.
    image_size: S of the [B, 3, 3, S, S] input (the card's).
    """

    name = "torch-compile"

    def __init__(self, model, threads: int | None = None, batches=(1,), image_size: int = 224, mode=None):
        super().__init__(model, threads=threads)
        self.batches = tuple(dict.fromkeys(int(b) for b in batches))
        self.image_size, self.mode = int(image_size), mode
        self.compile_s: dict[int, float] = {}
        self.compile_total_s: float | None = None

    def _activate(self):
        import time

        super()._activate()
        torch = self._torch
        if self.threads:              # Inductor's parallel C++ compile workers: no more than the threads given
            import torch._inductor.config as inductor_config

            inductor_config.compile_threads = min(int(inductor_config.compile_threads), int(self.threads))
        compiled = torch.compile(self.graph, backend="inductor", mode=self.mode)
        size = self.image_size
        with torch.inference_mode():
            for b in self.batches:
                start = time.perf_counter()
                compiled(torch.zeros(b, 3, 3, size, size))
                self.compile_s[b] = round(time.perf_counter() - start, 2)
        self.compile_total_s = round(sum(self.compile_s.values()), 2)
        self.forward = compiled

    def _deactivate(self):
        self.forward = None


def describe(name: str, runner) -> dict:
    """What ``runner`` (active) ran as backend ``name``, for the report."""
    out = {"runner": type(runner).__name__, "description": DESCRIPTIONS.get(name, "")}
    if isinstance(runner, TorchCompileRunner):
        out["compile_s"] = {str(b): s for b, s in runner.compile_s.items()}
        out["compile_total_s"] = runner.compile_total_s
    if getattr(runner, "inlined", None) is not None:
        out["inlined_local_functions"] = runner.inlined
    if getattr(runner, "version", None):
        out["version"] = runner.version
    path = getattr(runner, "path", None)
    if path is not None:
        out["model"] = str(path)
    return out


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _torch_reason(torch_model: bool) -> str | None:
    if not _has("torch"):
        return "torch is not installed (pip install 'dfmvr[train]')"
    if not torch_model:
        return "no torch weights: pass --checkpoint (a checkpoint, 'default', or a variant name)"
    return None


def availability(backend: str, *, torch_model: bool, onnx: bool, engine: bool, gpu: str | None,
                 int8: bool = False) -> str | None:
    """None if ``backend`` can run with what was given, else the reason it cannot (one sentence).

    Nothing is imported (torch-compile's compiler is only tried on activation: ``run_bench`` reports
    a compile failure as the backend's reason)."""
    if backend == "torch":
        return _torch_reason(torch_model)
    if backend == "torch-compile":
        return _torch_reason(torch_model)
    if backend == "onnxruntime":
        if not _has("onnxruntime"):
            return "onnxruntime is not installed"
        if not onnx:
            return "no ONNX graph: pass --onnx or --checkpoint (exported on the fly)"
        return None
    if backend == "onnxruntime-int8":
        if not _has("onnxruntime"):
            return "onnxruntime is not installed"
        if not int8:
            return ("no int8 graph: pass --int8-onnx (written by 'dfmvr-export --int8' as model.int8.onnx), give "
                    "--onnx a folder-mate model.int8.onnx, or pass --checkpoint to quantize on the fly")
        return None
    if backend == "openvino":
        if not _has("openvino"):
            return "OpenVINO is not installed (pip install 'dfmvr[openvino]')"
        if not _has("onnx"):
            return ("the onnx package is not installed (needed to inline dfmvr::Involution; "
                    "pip install 'dfmvr[openvino]')")
        if not onnx:
            return "no ONNX graph: pass --onnx or --checkpoint (exported on the fly)"
        return None
    if backend == "tensorrt":
        if not _has("tensorrt"):
            return ("TensorRT is not installed (pip install 'dfmvr[tensorrt-cu12]' or 'dfmvr[tensorrt-cu13]' on a machine "
                    "with an NVIDIA GPU; docs/export.md)")
        if gpu is None:
            return "no CUDA GPU (no driver or no device)"
        if not engine:
            return "no engine: pass --engine (built by 'dfmvr-export --engine' on the GPU machine)"
        return None
    raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")


def make_runner(backend: str, *, torch_model=None, onnx_path=None, engine_path=None, int8_path=None,
                threads: int | None = None, batches=(1,), image_size: int = 224) -> Runner:
    if backend == "torch":
        return TorchEagerRunner(torch_model, threads=threads)
    if backend == "torch-compile":
        return TorchCompileRunner(torch_model, threads=threads, batches=batches, image_size=image_size)
    if backend == "onnxruntime":
        return OnnxrtRunner(onnx_path, threads=threads)
    if backend == "onnxruntime-int8":
        return OnnxrtRunner(int8_path, threads=threads)
    if backend == "openvino":
        from ..runtime.openvino_runner import OpenvinoRunner

        return OpenvinoRunner(onnx_path, threads=threads)
    if backend == "tensorrt":
        return TensorrtRunner(engine_path)
    raise ValueError(f"unknown backend {backend!r}")
