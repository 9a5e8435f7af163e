"""The backends ``dfmvr bench`` compares, each behind the runtime's Runner lifecycle.

- ``torch``        PyTorch eager (``TorchEagerRunner``): needs torch and torch weights (--checkpoint).
- ``onnxruntime``  the runtime's ``OnnxrtRunner`` on the ONNX graph (base install).
- ``tensorrt``     the runtime's ``TensorrtRunner`` on an engine (TensorRT + a CUDA GPU).

``availability`` says whether a backend can run here *without importing it* (torch is imported only
when the torch backend is activated), and why not: unavailable backends are listed in the report with
their reason, never silently dropped.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from ..card import GRAPH_OUTPUTS
from ..runtime.runners import OnnxrtRunner, Runner, TensorrtRunner

__all__ = ["BACKENDS", "TorchEagerRunner", "availability", "make_runner"]

BACKENDS = ("torch", "onnxruntime", "tensorrt")


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
        self.model.eval()

    def _infer(self, feed):
        torch = self._torch
        (images,) = feed.values()
        with torch.inference_mode():
            coefficients, labels = self.model(torch.from_numpy(np.ascontiguousarray(images, np.float32)))
        return {GRAPH_OUTPUTS[0]: coefficients.float().numpy(), GRAPH_OUTPUTS[1]: labels.to(torch.uint8).numpy()}

    def _deactivate(self):
        pass


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def availability(backend: str, *, torch_model: bool, onnx: bool, engine: bool, gpu: str | None) -> str | None:
    """None if ``backend`` can run with what was given, else the reason it cannot (one sentence)."""
    if backend == "torch":
        if not _has("torch"):
            return "torch is not installed (pip install 'dfmvr[train]')"
        if not torch_model:
            return "no torch weights: pass --checkpoint (a checkpoint, 'default', or a variant name)"
        return None
    if backend == "onnxruntime":
        if not _has("onnxruntime"):
            return "onnxruntime is not installed"
        if not onnx:
            return "no ONNX graph: pass --onnx or --checkpoint (exported on the fly)"
        return None
    if backend == "tensorrt":
        if not _has("tensorrt"):
            return "TensorRT is not installed (it cannot be installed on this machine; see PLATFORM.md)"
        if gpu is None:
            return "no CUDA GPU (no driver or no device)"
        if not engine:
            return "no engine: pass --engine (built by 'dfmvr-export --engine' on the GPU machine)"
        return None
    raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")


def make_runner(backend: str, *, torch_model=None, onnx_path=None, engine_path=None,
                threads: int | None = None) -> Runner:
    if backend == "torch":
        return TorchEagerRunner(torch_model, threads=threads)
    if backend == "onnxruntime":
        return OnnxrtRunner(onnx_path, threads=threads)
    if backend == "tensorrt":
        return TensorrtRunner(engine_path)
    raise ValueError(f"unknown backend {backend!r}")
