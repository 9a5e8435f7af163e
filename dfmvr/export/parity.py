"""Parity reports: the exported graph (ONNX Runtime, TensorRT) against the torch model, on real inputs.

A runner is a callable ``images [B, 3, 3, 224, 224] float32 -> (coefficients [B, 269] float32, labels
[B, 3, 224, 224] uint8, keypoints [B, 3, 68, 2] float32 px or None)`` (the graph's optional third output). The exported graphs and engines are run by the RUNTIME's runners
(``dfmvr.runtime.runners``, wrapped by ``RunnerCall``), so the parity gate certifies the same code path
that ``dfmvr-run`` uses. The reference is the torch model run by the training side's runner of the same
family (``RunnerCall(dfmvr.models.runner.TorchRunner(model))``). ``compare`` measures a
candidate against the reference:

- max / mean absolute error of the coefficients;
- label agreement (fraction of equal pixels);
- the keypoints' largest distance in crop pixels, when the reference has them (the candidate must too);
- the resulting mesh difference in millimetres: both coefficient sets go through
  ``dfmvr.face.geometry.assemble_mesh`` with the card's camera and a face model (the synthetic model by
  default), and the per-vertex distance of the posed vertices (decimetres x 100) is reported.

Tolerances are explicit per precision (``FP32_TOLERANCE``, ``FP16_TOLERANCE``, ``INT8_TOLERANCE``); ``check_reports``
raises ``ExportError`` when any report fails, so an export never ships a graph that disagrees.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_text
from ..card import GRAPH_INPUT, GRAPH_KEYPOINTS, GRAPH_OUTPUTS, ModelCard
from ..face.geometry import assemble_mesh
from ..face.layout import NUM_VIEWS
from ..face.meshio import MM_PER_MODEL_UNIT
from ..face.model import MorphableModel
from .onnx_export import ExportError

__all__ = ["Tolerance", "FP32_TOLERANCE", "FP16_TOLERANCE", "INT8_TOLERANCE", "ParityReport", "RunnerCall",
           "OnnxrtRunner",
           "parity_inputs", "mesh_difference_mm", "compare", "skipped_report", "check_reports", "write_reports",
           "format_table"]



@dataclass(frozen=True)
class Tolerance:
    coefficients_max_abs: float | None     # None: reported, not gated
    mesh_max_mm: float
    labels_min_agreement: float
    # the graph's keypoints (the refinement's landmarks), px on the 224-px crop; None: reported only
    keypoints_max_px: float | None = None


FP32_TOLERANCE = Tolerance(coefficients_max_abs=1e-4, mesh_max_mm=0.01, labels_min_agreement=0.999,
                           keypoints_max_px=0.01)
# fp16 weights and activations: ~1e-3 relative per layer through ~100 layers; gate on what matters
# (the mesh) and report the raw coefficient error.
# Keypoints: half a pixel, a fifth of the demo's own landmark error (2.5 px RMS), which the refinement
# fits at a weight that shrugs off 8 px of detector noise (docs/refine.md).
FP16_TOLERANCE = Tolerance(coefficients_max_abs=None, mesh_max_mm=1.0, labels_min_agreement=0.98,
                           keypoints_max_px=0.5)
# int8 (dfmvr.export.int8): 8-bit activations cannot meet the fp32 gates (one uint8 step is ~0.4 % of a
# tensor's calibrated range, and the error compounds through ~100 layers). Gate on the mesh at the same
# 1 mm as fp16: DF-MVR's published lead over its baselines is 0.1-0.3 mm of mean NoW error (1.40 vs
# 1.48-1.66 mm), so a graph that moves any vertex by 1 mm or more is no longer the model that was
# trained. Labels: a random-weight parse net's logits are near ties and int8 flips 2.5-3.5 % of its pixels
# (measured on tiny and paper); a trained parse net changed 0.1 %. The coefficient error is reported only.
INT8_TOLERANCE = Tolerance(coefficients_max_abs=None, mesh_max_mm=1.0, labels_min_agreement=0.95)
_TOLERANCES = {"fp32": FP32_TOLERANCE, "fp16": FP16_TOLERANCE, "int8": INT8_TOLERANCE}


@dataclass
class ParityReport:
    backend: str                   # "onnxruntime-cpu", "onnxruntime-cpu-fp16", "tensorrt", ...
    reference: str                 # "torch"
    precision: str                 # "fp32" | "fp16" | "int8"
    batch: int
    coefficients_max_abs: float | None = None
    coefficients_mean_abs: float | None = None
    labels_agreement: float | None = None
    keypoints_max_px: float | None = None      # None: the graph has no keypoints output
    mesh_max_mm: float | None = None
    mesh_mean_mm: float | None = None
    face_model: str = ""
    tolerance: dict = field(default_factory=dict)
    passed: bool | None = None     # None: not run (see skipped)
    failures: list[str] = field(default_factory=list)
    skipped: str | None = None     # why this backend could not run here
    # fp32 with labels that differ at a few pixels (near-tie argmaxes): the end-to-end numbers against the
    # torch graph ({coefficients_max_abs, keypoints_max_px, mesh_max_mm}); the fields above are then against
    # torch's layers run on the candidate's labels, and the gates read those (see ``compare``).
    end_to_end: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class RunnerCall:
    """A runtime runner (``dfmvr.runtime.runners.Runner``) as a parity runner: images -> (coefficients,
    labels, keypoints or None). Activated on construction; ``close()`` deactivates it."""

    def __init__(self, runner):
        self.runner = runner.activate()

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        out = self.runner.infer({GRAPH_INPUT: np.ascontiguousarray(images, np.float32)})
        return out[GRAPH_OUTPUTS[0]], out[GRAPH_OUTPUTS[1]], out.get(GRAPH_KEYPOINTS)

    def close(self) -> None:
        self.runner.deactivate()


class OnnxrtRunner(RunnerCall):
    """The runtime's ``OnnxrtRunner`` (CPU provider) on an exported graph file; plain ORT runs
    dfmvr::Involution's function body."""

    def __init__(self, model, threads: int | None = None):
        from ..runtime.runners import OnnxrtRunner as RuntimeOnnxrt

        super().__init__(RuntimeOnnxrt(Path(model), threads=threads))


# Coefficients are in basis sigmas, radians and decimetres: a trained model's stay near 1-3. Beyond this, a
# failed gate is explained as the model's instability (an eval-mode blow-up), not the export's error.
HEALTHY_COEFFICIENT_LIMIT = 100.0


def parity_inputs(card: ModelCard, batch: int = 2, seed: int = 0, face_model: MorphableModel | None = None) -> np.ndarray:
    """Realistic normalised inputs [batch, 3, 3, S, S] float32: rendered synthetic triplets.

    Every other batch item has its right view missing (all zeros), the graph's missing-view input.
    """
    from ..face.synthetic import default_face_model
    from ..synth.dataset import TripletGenerator

    size = int(card.image_size)
    gen = TripletGenerator(face_model or default_face_model(), seed=seed)
    out = np.zeros((batch, NUM_VIEWS, 3, size, size), np.float32)
    for b in range(batch):
        rgb = gen.sample(b).images                                           # [V, H, W, 3] uint8
        if rgb.shape[1] != size:
            raise ExportError(f"synthetic triplets are {rgb.shape[1]} px, the card expects {size}")
        out[b] = card.normalise(rgb[None])[0]          # the one home of the input normalisation
        if b % 2 == 1:
            out[b, -1] = 0.0
    return out


def mesh_difference_mm(face_model: MorphableModel, card: ModelCard, coefficients_a: np.ndarray,
                       coefficients_b: np.ndarray) -> tuple[float, float]:
    """Max and mean per-vertex distance (mm) of the posed meshes of two [B, 269] coefficient sets."""
    layout, camera = card.layout_obj(), card.camera_obj()
    va = assemble_mesh(face_model, layout.split(np.asarray(coefficients_a, np.float32)), camera).vertices
    vb = assemble_mesh(face_model, layout.split(np.asarray(coefficients_b, np.float32)), camera).vertices
    dist = np.linalg.norm(va.astype(np.float64) - vb, axis=-1) * MM_PER_MODEL_UNIT       # [B, V, N]
    return float(dist.max()), float(dist.mean())


def compare(reference: tuple, candidate: tuple, card: ModelCard, face_model: MorphableModel, backend: str,
            precision: str = "fp32", tolerance: Tolerance | None = None,
            reference_name: str = "torch", given_labels: tuple | None = None) -> ParityReport:
    """Compare a candidate's outputs with the reference's (both (coefficients, labels[, keypoints]) numpy;
    keypoints None or absent: the graph has none).

    given_labels: the reference's outputs with its labels replaced by the candidate's (``DFMVRNet.
    forward_given_labels``), for a candidate whose labels differ at some pixels. The label gate still reads
    the two argmaxes; the coefficient, keypoint and mesh gates then read the layers after the parser on equal
    labels, since one flipped pixel of 301,056 moved a trained demo's coefficients by 2.7e-3 (the fp32 gate:
    1e-4; docs/export.md, "Parity"). The end-to-end numbers are kept in ``end_to_end``."""
    tol = tolerance or _TOLERANCES.get(precision, FP32_TOLERANCE)
    if given_labels is not None:
        end_to_end = compare(reference, candidate, card, face_model, backend, precision, tol, reference_name)
        report = compare((given_labels[0], reference[1]) + tuple(given_labels[2:]), candidate, card, face_model,
                         backend, precision, tol, reference_name)
        report.end_to_end = {"coefficients_max_abs": end_to_end.coefficients_max_abs,
                             "keypoints_max_px": end_to_end.keypoints_max_px, "mesh_max_mm": end_to_end.mesh_max_mm}
        return report
    (ref_c, ref_l), ref_k = reference[:2], (reference[2] if len(reference) > 2 else None)
    (cand_c, cand_l), cand_k = candidate[:2], (candidate[2] if len(candidate) > 2 else None)
    report = ParityReport(backend=backend, reference=reference_name, precision=precision,
                          batch=int(ref_c.shape[0]), face_model=face_model.name, tolerance=asdict(tol))
    if cand_c.shape != ref_c.shape or cand_l.shape != ref_l.shape:
        report.passed = False
        report.failures.append(f"output shapes {cand_c.shape}, {cand_l.shape} differ from the reference's "
                               f"{ref_c.shape}, {ref_l.shape}")
        return report
    err = np.abs(cand_c.astype(np.float64) - ref_c)
    report.coefficients_max_abs, report.coefficients_mean_abs = float(err.max()), float(err.mean())
    report.labels_agreement = float(np.mean(cand_l == ref_l))
    report.mesh_max_mm, report.mesh_mean_mm = mesh_difference_mm(face_model, card, ref_c, cand_c)
    if ref_k is not None:
        if cand_k is None or np.shape(cand_k) != np.shape(ref_k):
            report.failures.append(f"keypoints {None if cand_k is None else np.shape(cand_k)} where the reference "
                                   f"has {np.shape(ref_k)}")
        else:
            dist = np.linalg.norm(np.asarray(cand_k, np.float64) - ref_k, axis=-1)
            report.keypoints_max_px = float(dist.max())
            if tol.keypoints_max_px is not None and not report.keypoints_max_px <= tol.keypoints_max_px:
                report.failures.append(f"keypoints {report.keypoints_max_px:.3g} px > {tol.keypoints_max_px:g} px")
    if not np.isfinite(cand_c).all():
        report.failures.append("non-finite coefficients")
    if tol.coefficients_max_abs is not None and not report.coefficients_max_abs <= tol.coefficients_max_abs:
        report.failures.append(f"coefficients max abs error {report.coefficients_max_abs:.3g} > {tol.coefficients_max_abs:g}")
    if not report.mesh_max_mm < tol.mesh_max_mm:
        report.failures.append(f"mesh difference {report.mesh_max_mm:.3g} mm >= {tol.mesh_max_mm:g} mm")
    if report.labels_agreement < tol.labels_min_agreement:
        report.failures.append(f"label agreement {report.labels_agreement:.5f} < {tol.labels_min_agreement:g}")
    largest = float(np.abs(ref_c).max()) if ref_c.size else 0.0
    if report.failures and not largest <= HEALTHY_COEFFICIENT_LIMIT:
        # a difference relative to a reference of 1e8 is rounding, not a wrong graph: say where the fault is
        report.failures.append(f"the {reference_name} reference itself reaches |coefficient| {largest:.3g} on the "
                               f"parity inputs (a trained model stays near 1-3; these inputs include triplets with "
                               f"a missing view): the model is unstable there, not the export -- train it longer, "
                               f"or see docs/training.md on val_max_abs_coefficient")
    report.passed = not report.failures
    return report


def skipped_report(backend: str, precision: str, reason: str) -> ParityReport:
    """A report for a backend that cannot run here, with the reason."""
    return ParityReport(backend=backend, reference="torch", precision=precision, batch=0, skipped=reason)


def check_reports(reports: list[ParityReport]) -> None:
    """Raise ExportError listing every failed report (skipped ones are not failures)."""
    bad = [r for r in reports if r.passed is False]
    if bad:
        hint = ""
        if any(r.precision == "int8" for r in bad):
            import onnxruntime

            hint = (f" (int8 results depend on the CPU's int8 kernels (VNNI or not) and on the ONNX Runtime "
                    f"version, here {onnxruntime.__version__}: the report's 'int8' entry says how the graph "
                    f"was quantized; the fp32 and fp16 graphs are unaffected)")
        raise ExportError("parity check failed: " + "; ".join(f"{r.backend} ({r.precision}): "
                                                              + ", ".join(r.failures) for r in bad) + hint)


def format_table(reports: list[ParityReport]) -> str:
    """A fixed-width table of the reports, one row per backend."""
    head = (f"{'backend':<24} {'prec':<5} {'coef max':>10} {'coef mean':>10} {'labels':>8} {'kp max px':>10} "
            f"{'mesh max mm':>12} {'mesh mean mm':>12}  result")
    rows = [head, "-" * len(head)]
    def fmt(value, spec: str) -> str:
        width = int(spec.split(".")[0])
        return "-".rjust(width) if value is None else format(value, spec)

    for r in reports:
        result = f"skipped: {r.skipped}" if r.skipped else ("ok" if r.passed else "FAIL: " + "; ".join(r.failures))
        rows.append(f"{r.backend:<24} {r.precision:<5} {fmt(r.coefficients_max_abs, '10.3g')} "
                    f"{fmt(r.coefficients_mean_abs, '10.3g')} {fmt(r.labels_agreement, '8.5f')} "
                    f"{fmt(r.keypoints_max_px, '10.3g')} "
                    f"{fmt(r.mesh_max_mm, '12.3g')} {fmt(r.mesh_mean_mm, '12.3g')}  {result}")
    return "\n".join(rows)


def write_reports(path, reports: list[ParityReport], extra: dict | None = None) -> Path:
    """Write ``{"reports": [...], **extra}`` as JSON, atomically."""
    doc = dict(extra or {})
    doc["reports"] = [r.to_dict() for r in reports]
    doc["passed"] = all(r.passed is not False for r in reports)
    return atomic_write_text(Path(path), json.dumps(doc, indent=2) + "\n")
