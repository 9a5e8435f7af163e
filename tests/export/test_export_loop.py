"""export_all's parity loop (issue 21, item 2): each artefact is checked by its runner at its tolerance.

Real: dfmvr.export.pipeline (``Artefact``, ``_check``, ``_load_engine``'s skip path), dfmvr.export.parity
(compare, skipped reports, tolerances), the synthetic face model. Stand-ins: the runners (callables that
return fixed outputs or raise) and the torch reference (fixed outputs instead of a network run); the real
loaders are run end to end by tests/export/test_export_tiny.py and test_int8.py.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

from dfmvr.card import ModelCard
from dfmvr.export import parity
from dfmvr.export import pipeline as pl
from dfmvr.face.synthetic import default_face_model


class StandInRunner:
    def __init__(self, outputs=None, error=None):
        self.outputs, self.error, self.closed = outputs, error, False

    def __call__(self, images):
        if self.error is not None:
            raise self.error
        return self.outputs

    def close(self):
        self.closed = True


def _outputs(shift: float = 0.0):
    return np.full((2, 269), 0.01 + shift, np.float32), np.zeros((2, 3, 224, 224), np.uint8)


@pytest.fixture
def run():
    """The loop's shared state with a fixed reference (no torch model is run)."""
    card = ModelCard(variant="tiny", architecture={})
    state = types.SimpleNamespace(card=card, face_model=default_face_model())
    state.reference = lambda: (np.zeros((2, 3, 3, 224, 224), np.float32), _outputs())
    state.reference_rounding = lambda images: 0.0      # a fixed reference has no float64 twin to differ from
    return state


def test_each_artefact_is_compared_at_its_own_tolerance(run):
    made = []

    def runner():
        made.append(StandInRunner(_outputs(shift=2e-4)))
        return made[-1]

    fp32 = pl._check(run, pl.Artefact("onnxruntime-cpu", "fp32", parity.FP32_TOLERANCE, runner=runner))
    fp16 = pl._check(run, pl.Artefact("onnxruntime-cpu", "fp16", parity.FP16_TOLERANCE, runner=runner))
    assert fp32.passed is False and any("coefficients max abs error" in f for f in fp32.failures)
    assert fp16.passed is True and fp16.tolerance["coefficients_max_abs"] is None     # fp16: reported only
    assert (fp32.backend, fp32.precision, fp16.precision) == ("onnxruntime-cpu", "fp32", "fp16")
    assert all(r.closed for r in made)                                              # every runner closed


def test_an_unrunnable_artefact_is_a_skipped_report_other_errors_propagate(run):
    broken = StandInRunner(error=RuntimeError("no fp16 Conv kernel"))
    report = pl._check(run, pl.Artefact("onnxruntime-cpu", "fp16", parity.FP16_TOLERANCE, runner=lambda: broken,
                                        unrunnable="ONNX Runtime CPU cannot run the fp16 graph here"))
    assert report.passed is None and broken.closed
    assert report.skipped == ("ONNX Runtime CPU cannot run the fp16 graph here: RuntimeError: no fp16 Conv kernel")
    with pytest.raises(RuntimeError, match="no fp16 Conv kernel"):
        pl._check(run, pl.Artefact("onnxruntime-cpu", "fp32", parity.FP32_TOLERANCE,
                                   runner=lambda: StandInRunner(error=RuntimeError("no fp16 Conv kernel"))))


def test_no_tensorrt_is_a_skipped_engine_artefact(run, tmp_path, monkeypatch):
    from dfmvr.export import tensorrt_build

    monkeypatch.setattr(tensorrt_build, "tensorrt_unavailable", lambda: "no TensorRT here")
    run.fp16, run.summary = True, pl.ExportSummary(tmp_path / "model.onnx", tmp_path / "model.parity.json")
    artefact = pl._load_engine(run)
    assert (artefact.backend, artefact.precision, artefact.skipped) == ("tensorrt", "fp16", "no TensorRT here")
    assert artefact.tolerance is parity.FP16_TOLERANCE and run.summary.engine_skipped == "no TensorRT here"
    report = pl._check(run, artefact)
    assert report.skipped == "no TensorRT here" and report.passed is None
