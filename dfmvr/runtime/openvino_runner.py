"""``OpenvinoRunner``: the exported ONNX graph run by OpenVINO's CPU plugin (the ``openvino`` extra).

OpenVINO reads the graph with its ONNX front end. That front end has no conversion rule for dfmvr's
custom ``dfmvr::Involution`` node and does not expand ONNX local functions (measured with OpenVINO
2026.4.1: "No conversion rule found for operations: dfmvr.Involution"), so the runner first inlines the
graph's local functions with ``onnx.inliner.inline_local_functions`` -- every Involution node becomes
its standard-ONNX function body, the same body ONNX Runtime runs -- and hands OpenVINO the inlined
model in memory (no file is written). A graph without local functions is read as it is.

Settings: CPU device, ``INFERENCE_PRECISION_HINT`` f32 (OpenVINO would otherwise pick bf16 on CPUs with
AMX / AVX512-BF16, and the graph would no longer be the fp32 model), ``PERFORMANCE_HINT`` LATENCY, and
``INFERENCE_NUM_THREADS`` from ``threads`` (None: OpenVINO's default). The batch dimension stays
dynamic (the graph's ``images`` is [?, 3, 3, S, S]), so one compiled model serves every batch.
Outputs come back as numpy under the graph's output names, with the graph's dtypes (``coefficients``
float32, ``labels`` uint8), as from ``OnnxrtRunner``.

Neither openvino nor onnx is imported before ``activate()``; without them activation raises
MissingExtraError (exit 2) naming ``pip install 'dfmvr[openvino]'``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError, require
from .runners import Runner

__all__ = ["OpenvinoRunner", "OPENVINO_EXTRA", "inlined_onnx_bytes"]

OPENVINO_EXTRA = "openvino"
_PROTOBUF_LIMIT = 2 ** 31 - 1         # one serialized ModelProto cannot be larger


def inlined_onnx_bytes(path) -> tuple[bytes, bytes, bool]:
    """(model bytes, weights bytes, inlined?) of the ONNX file at ``path`` for ``Core.read_model``:
    local functions (dfmvr::Involution) inlined when the graph has any.

    A model too large for one protobuf keeps its initializers as raw external data in the weights
    bytes; otherwise the weights bytes are empty.
    """
    onnx = require("onnx", OPENVINO_EXTRA, "running an ONNX graph with OpenVINO")
    from onnx import inliner

    model = onnx.load(str(path))                   # external data next to the file is loaded too
    inlined = bool(model.functions)
    if inlined:
        model = inliner.inline_local_functions(model)
    if model.ByteSize() < _PROTOBUF_LIMIT:
        return model.SerializeToString(), b"", inlined
    import tempfile

    with tempfile.TemporaryDirectory(prefix="dfmvr-openvino-") as tmp:   # > 2 GB: external data, one file
        onnx.save_model(model, f"{tmp}/model.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                        location="weights.bin")
        return Path(tmp, "model.onnx").read_bytes(), Path(tmp, "weights.bin").read_bytes(), inlined


class OpenvinoRunner(Runner):
    """OpenVINO (CPU plugin) on an ONNX file; see the module docstring.

    threads: ``INFERENCE_NUM_THREADS`` (None: OpenVINO's default).
    hint:    ``PERFORMANCE_HINT``, "LATENCY" (default) or "THROUGHPUT".
    After activation: ``inlined`` (whether local functions were inlined), ``version`` (OpenVINO's),
    ``output_names``.
    """

    name = "openvino"

    def __init__(self, path, threads: int | None = None, hint: str = "LATENCY", device: str = "CPU"):
        super().__init__()
        self.path = Path(path)
        self.threads, self.hint, self.device = threads, hint, device
        self.compiled = self.request = None
        self.inlined: bool | None = None
        self.version: str | None = None

    def _activate(self):
        ov = require("openvino", OPENVINO_EXTRA, "the OpenVINO backend")
        if not self.path.is_file():
            raise InputError(self.path, "ONNX model not found")
        model_bytes, weights, self.inlined = inlined_onnx_bytes(self.path)
        core = ov.Core()
        try:
            model = core.read_model(model_bytes, weights)
        except Exception as exc:   # OpenVINO raises RuntimeError with its front end's report
            raise InputError(self.path, f"OpenVINO cannot read this model ({str(exc).strip()[-400:]})",
                             "re-export it with 'dfmvr-export', or use the onnxruntime backend") from exc
        config = {"PERFORMANCE_HINT": self.hint, "INFERENCE_PRECISION_HINT": "f32"}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        self.compiled = core.compile_model(model, self.device, config)
        self.request = self.compiled.create_infer_request()
        self.output_names = [out.get_any_name() for out in self.compiled.outputs]
        self._outputs = list(self.compiled.outputs)
        self.input_names = [inp.get_any_name() for inp in self.compiled.inputs]
        self.version = ov.get_version()

    def _infer(self, feed):
        missing = [n for n in self.input_names if n not in feed]
        if missing:
            raise InputError(self.path, f"graph input(s) {missing} were not fed")
        result = self.request.infer({n: np.ascontiguousarray(feed[n]) for n in self.input_names})
        # copies: the request owns the result tensors and overwrites them on the next infer
        return {name: np.array(result[out], copy=True) for name, out in zip(self.output_names, self._outputs)}

    def _deactivate(self):
        self.request = self.compiled = None
