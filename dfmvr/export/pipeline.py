"""The whole export as one call (what ``dfmvr-export`` runs): load -> ONNX -> parity -> fp16/int8 -> engine.

``load_for_export(spec)`` accepts, in this order:
- a file: ``.pth`` / ``.pt`` = official DF-MVR weights (converted on the fly with
  ``dfmvr.models.convert.convert_official``); anything else = a dfmvr checkpoint (``load_checkpoint``);
- ``default``: the bundled checkpoint;
- a variant name (``tiny``, ``paper``): randomly initialised weights (seed 0), for benchmarks and tests.

Files written into ``out_dir`` (each atomically): ``model.onnx``, ``model.parity.json``, with
``fp16=True`` ``model.fp16.onnx``, with ``int8=True`` ``model.int8.onnx`` (``dfmvr.export.int8``), and
where TensorRT works ``model.plan`` + ``model.plan.card.json``.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from ..atomic import atomic_path
from ..card import IMAGE_SIZE, ModelCard
from ..errors import InputError, UnavailableError
from ..face.layout import COEFFS, VIEWS
from ..face.model import MorphableModel
from ..face.selection import select_face_model
from ..models.runner import TorchRunner
from ..runtime.artifacts import names_bundled
from . import parity
from .onnx_export import export_onnx

__all__ = ["ExportSummary", "Artefact", "load_for_export", "check_card_exportable", "export_all", "GRAPH_IMAGE_SIZE"]

GRAPH_IMAGE_SIZE = IMAGE_SIZE     # the graph I/O contract in dfmvr.card
OFFICIAL_SUFFIXES = (".pth", ".pt")


@dataclass
class ExportSummary:
    onnx_path: Path
    parity_path: Path
    reports: list = field(default_factory=list)
    fp16_path: Path | None = None
    int8_path: Path | None = None
    engine_path: Path | None = None
    engine_skipped: str | None = None
    seconds: dict = field(default_factory=dict)


def check_card_exportable(card: ModelCard, source=None) -> None:
    """Refuse a card whose graph would break the runtime's I/O contract (InputError, exit 2)."""
    problems = []
    if card.layout_obj() != COEFFS:
        problems.append(f"coefficient layout {card.layout} differs from this dfmvr's {COEFFS.to_dict()}")
    if int(card.image_size) != GRAPH_IMAGE_SIZE:
        problems.append(f"image size {card.image_size} (the exported graph takes {GRAPH_IMAGE_SIZE})")
    if list(card.views) != list(VIEWS):
        problems.append(f"views {card.views} (expected {list(VIEWS)})")
    if problems:
        raise InputError(source, "model card is incompatible with the export contract: " + "; ".join(problems),
                         "re-train or re-convert the checkpoint with this dfmvr")


def load_for_export(spec: str):
    """-> (model in eval mode, card, description) for a checkpoint path, ``default`` or a variant name."""
    import torch

    from ..models.variants import VARIANTS, build_model

    path = Path(spec)
    if path.is_file() and path.suffix.lower() in OFFICIAL_SUFFIXES:
        from ..models.convert import convert_official

        model, card, _ = convert_official(path)
        what = f"official DF-MVR weights {path.name} (converted)"
    elif path.is_file() or names_bundled(spec):
        from ..models.checkpoint import load_checkpoint

        model, card, _ = load_checkpoint(spec, load_train_state=False)
        what = f"checkpoint {spec}"
    elif spec in VARIANTS:
        torch.manual_seed(0)
        model = build_model(spec)
        card = model.card
        card.provenance = {"source": "random initialisation (dfmvr-export variant name)", "seed": 0}
        what = f"variant '{spec}' with random weights (seed 0)"
    else:
        raise InputError(spec, "is neither a checkpoint file, 'default', nor a model variant",
                         f"pass a .safetensors checkpoint, official .pth weights, 'default' or one of {sorted(VARIANTS)}")
    check_card_exportable(card, spec)
    return model.eval(), card, what


def _face_model(path, card: ModelCard) -> MorphableModel:
    """The face model of the mm parity: ``dfmvr.face.selection``'s rule, checked against the card."""
    return select_face_model(path, card=card)[0]


def _reject_failed(summary: ExportSummary, reports: list, echo) -> None:
    """Rename each artefact whose parity failed to ``*.rejected*`` so that nothing ships it by mistake."""
    artefacts = {("onnxruntime-cpu", "fp32"): summary.onnx_path, ("onnxruntime-cpu", "fp16"): summary.fp16_path,
                 ("onnxruntime-cpu", "int8"): summary.int8_path,
                 ("tensorrt", "fp32"): summary.engine_path, ("tensorrt", "fp16"): summary.engine_path}
    for report in reports:
        path = artefacts.get((report.backend, report.precision))
        if path is None:
            continue
        rejected = path.with_name(f"{path.stem}.rejected{path.suffix}")
        if report.passed is False and path.is_file():
            path.replace(rejected)
            echo(f"parity failed: moved {path.name} to {rejected.name}")
        elif report.passed and rejected.is_file():     # an earlier export's reject beside a passing artefact
            rejected.unlink()
            echo(f"removed {rejected.name}, left by an earlier export that failed parity")


@dataclass
class Artefact:
    """One exported artefact as the parity loop sees it: which report it gets, the runner that runs it
    and the tolerance it must meet."""

    backend: str                               # the report's backend: "onnxruntime-cpu", "tensorrt"
    precision: str                             # "fp32" | "fp16" | "int8"
    tolerance: parity.Tolerance
    runner: Callable[[], object] | None = None     # -> a parity runner: images -> outputs, close()
    skipped: str | None = None                 # why it was not made here (then no runner)
    unrunnable: str | None = None              # set: an error while running it is a skipped report
                                               # with this reason, not a failed export


@dataclass
class _ExportRun:
    """What the loaders share: the model, the options, the summary and the graphs made so far."""

    model: object
    card: ModelCard
    face_model: MorphableModel
    out_dir: Path
    summary: ExportSummary
    echo: Callable[[str], None]
    clock: float
    fp16: bool
    int8: bool
    compact: bool
    calibration: int
    calibration_seed: int | None
    int8_weights: str                          # dfmvr.export.int8.WEIGHT_CHOICES
    engine: object
    profile: object                            # tensorrt_build.BatchProfile
    workspace_gb: float
    timing_cache: object
    parity_batch: int
    onnx_result: object = None                 # onnx_export.ExportResult
    fp32_model: onnx.ModelProto | None = None  # model.onnx before --compact, kept for int8
    half: onnx.ModelProto | None = None        # the fp16 graph, reused by an fp16 engine
    quantization: dict | None = None           # int8: how the graph was quantized
    _onnx_model: onnx.ModelProto | None = None
    _reference: tuple | None = None

    @property
    def onnx_model(self) -> onnx.ModelProto:
        """model.onnx as written (after --compact), read once."""
        if self._onnx_model is None:
            self._onnx_model = onnx.load(str(self.summary.onnx_path))
        return self._onnx_model

    def reference(self):
        """(parity inputs, the torch model's outputs on them), made once, when the first artefact is checked."""
        if self._reference is None:
            images = parity.parity_inputs(self.card, batch=self.parity_batch)
            self._reference = images, parity.RunnerCall(TorchRunner(self.model))(images)
        return self._reference

    def reference_rounding(self, images) -> float:
        """How far the torch model's own float32 coefficients on ``images`` lie from the same model's in float64:
        a model that amplifies rounding there (per-sample statistics of a blank missing view normalise rounding
        noise to unit size) cannot be matched closer by any float32 graph. Run only to explain a failed gate."""
        import copy

        import torch

        model64 = copy.deepcopy(self.model).double().eval()
        with torch.inference_mode():
            coefficients64 = model64(torch.from_numpy(np.asarray(images)).double())[0].numpy()
        return float(np.abs(coefficients64 - self.reference()[1][0]).max())

    def reference_given_labels(self, images, labels) -> tuple:
        """The torch model's outputs on ``images`` with the parser's labels replaced by ``labels`` (numpy)."""
        call = parity.RunnerCall(TorchRunner(self.model, labels=labels))
        try:
            return call(images)
        finally:
            call.close()


# --- loaders: each writes one artefact (atomically) and says how to check it ------------------------------

def _load_onnx(run: _ExportRun) -> Artefact:
    """model.onnx (+ --compact: float16-stored weights), run by the runtime's OnnxrtRunner."""
    summary, echo = run.summary, run.echo
    result = run.onnx_result = export_onnx(run.model, summary.onnx_path, run.card)
    summary.seconds["onnx_export"] = round(time.perf_counter() - run.clock, 1)
    echo(f"wrote {result.path} ({result.nodes} nodes, {result.involution_nodes} {'dfmvr::Involution'} "
         f"nodes with a standard-op function body, opset {result.opset})")
    # int8 quantizes the float32 weights: keep them before --compact stores them as float16 + Cast
    if run.int8:
        run.fp32_model = onnx.load(str(summary.onnx_path))
    if run.compact:
        # float16-stored weights, float32 compute, bit-identical numbers: only weights that are exact
        # float16 numbers are converted (all of a 'dfmvr convert half' checkpoint's, except those the
        # exporter folded); rounding the rest measurably broke the fp32 parity gates (2e-4, 0.027 mm).
        from .compact import store_weights_as_fp16

        small, packed = store_weights_as_fp16(onnx.load(str(summary.onnx_path)), lossless=True)
        with atomic_path(summary.onnx_path) as tmp:
            onnx.save_model(small, str(tmp))
        echo(f"compacted {summary.onnx_path.name}: {packed.converted} weights stored as float16, {packed.kept} kept "
             f"float32 (not float16 numbers); weights {packed.bytes_before / 1e6:.1f} -> {packed.bytes_after / 1e6:.1f} MB")
    path = summary.onnx_path
    return Artefact("onnxruntime-cpu", "fp32", parity.FP32_TOLERANCE, runner=lambda: parity.OnnxrtRunner(path))


def _load_fp16(run: _ExportRun) -> Artefact:
    """model.fp16.onnx (fp16 weights and activations, fp32 I/O); ORT CPU lacks some fp16 kernels on some
    builds, so a graph it cannot run is reported as skipped."""
    from .fp16 import convert_to_fp16

    path = run.summary.fp16_path = run.out_dir / "model.fp16.onnx"
    run.half = convert_to_fp16(run.onnx_model)
    with atomic_path(path) as tmp:
        onnx.save_model(run.half, str(tmp))
    run.echo(f"wrote {path} (fp16 weights and activations, fp32 inputs/outputs)")
    return Artefact("onnxruntime-cpu", "fp16", parity.FP16_TOLERANCE, runner=lambda: parity.OnnxrtRunner(path),
                    unrunnable="ONNX Runtime CPU cannot run the fp16 graph here")


def _load_int8(run: _ExportRun) -> Artefact:
    """model.int8.onnx: int8 QDQ from the float32 weights, calibrated on synthetic triplets. With
    ``--int8-weights auto`` the fast s8 weights when that graph passes the int8 gate, else the finer u8
    weights (``dfmvr/export/int8.py`` says why two); the graph tried and not kept is recorded, not written."""
    from .int8 import CALIBRATION_SEED, quantize_int8

    path = run.summary.int8_path = run.out_dir / "model.int8.onnx"
    clock = time.perf_counter()
    seed = CALIBRATION_SEED if run.calibration_seed is None else run.calibration_seed
    tried = []
    if run.int8_weights == "auto":
        quantized, info = quantize_int8(run.fp32_model, run.card, count=run.calibration, seed=seed, weights="s8")
        report = _check_int8_graph(run, quantized)
        tried.append({"weight_format": "s8", "passed": report.passed, "mesh_max_mm": report.mesh_max_mm,
                      "mesh_mean_mm": report.mesh_mean_mm})
        if report.passed:
            run.echo(f"int8 with s8 weights passes the gate (mesh {report.mesh_max_mm:.3g} mm): keeping them")
        else:
            run.echo(f"int8 with s8 weights fails the gate ({'; '.join(report.failures)}): quantizing with the "
                     f"finer u8 weights instead (slower than s8 on CPUs with VNNI; --int8-weights s8 forces s8)")
            quantized, info = quantize_int8(run.fp32_model, run.card, count=run.calibration, seed=seed, weights="u8")
    else:
        quantized, info = quantize_int8(run.fp32_model, run.card, count=run.calibration, seed=seed,
                                        weights=run.int8_weights)
    run.quantization = {**info, "weights_requested": run.int8_weights, "weights_tried": tried}
    run.fp32_model = None
    with atomic_path(path) as tmp:
        onnx.save_model(quantized, str(tmp))
    run.summary.seconds["int8"] = round(time.perf_counter() - clock, 1)
    run.echo(f"wrote {path} (int8 QDQ, {info['weight_format']} weights, calibrated on {run.calibration} synthetic "
             f"triplets, seed {seed})")
    return Artefact("onnxruntime-cpu", "int8", parity.INT8_TOLERANCE, runner=lambda: parity.OnnxrtRunner(path))


def _check_int8_graph(run: _ExportRun, quantized: onnx.ModelProto) -> parity.ParityReport:
    """The int8 gate's report for a graph not yet written (a temporary file, the same runner and check)."""
    with tempfile.TemporaryDirectory(prefix="dfmvr-int8-try-") as tmp:
        trial = Path(tmp) / "model.int8.onnx"
        onnx.save_model(quantized, str(trial))
        return _check(run, Artefact("onnxruntime-cpu", "int8", parity.INT8_TOLERANCE,
                                    runner=lambda: parity.OnnxrtRunner(trial)))


def _load_engine(run: _ExportRun) -> Artefact:
    """model.plan + its card where TensorRT works (fp16 from the fp16 graph), run by the runtime's
    TensorrtRunner; else a skipped report with the reason (summary.engine_skipped)."""
    from .tensorrt_build import TensorrtRunner, build_engine, tensorrt_unavailable

    precision = "fp16" if run.fp16 else "fp32"
    tolerance = parity.FP16_TOLERANCE if run.fp16 else parity.FP32_TOLERANCE
    reason = tensorrt_unavailable()
    if reason is None:
        target = Path(run.engine) if run.engine else Path("model.plan")
        target = target if target.is_absolute() else run.out_dir / target
        try:
            built = build_engine(run.onnx_model, target, run.card, fp16=run.fp16, profile=run.profile,
                                 workspace_gb=run.workspace_gb, timing_cache=run.timing_cache,
                                 fp16_model=run.half if run.fp16 else None, check_batches=(run.parity_batch,))
        except UnavailableError as exc:      # e.g. the plugin or the parser failed: report, then decide
            reason = str(exc)
        else:
            run.summary.engine_path = built.engine_path
            run.echo(f"wrote {built.engine_path} and {built.card_path}")
            return Artefact("tensorrt", precision, tolerance, runner=lambda: TensorrtRunner(built.engine_path))
    run.summary.engine_skipped = reason
    return Artefact("tensorrt", precision, tolerance, skipped=reason)


def _check(run: _ExportRun, artefact: Artefact) -> parity.ParityReport:
    """The artefact's parity report: its runner against the torch reference, at its tolerance."""
    if artefact.skipped is not None:
        return parity.skipped_report(artefact.backend, artefact.precision, artefact.skipped)
    images, reference = run.reference()
    try:
        runner = artefact.runner()
        try:
            candidate = runner(images)
        finally:
            runner.close()
    except Exception as exc:
        if artefact.unrunnable is None:
            raise
        return parity.skipped_report(artefact.backend, artefact.precision,
                                     f"{artefact.unrunnable}: {type(exc).__name__}: {exc}"[:400])
    given_labels = None
    ref_labels, cand_labels = reference[1], candidate[1]
    if artefact.precision == "fp32" and cand_labels.shape == ref_labels.shape and (cand_labels != ref_labels).any():
        # an argmax that fell the other way at a near tie: score the layers after the parser on equal labels
        given_labels = run.reference_given_labels(images, cand_labels)
    report = parity.compare(reference, candidate, run.card, run.face_model, artefact.backend, artefact.precision,
                            artefact.tolerance, given_labels=given_labels)
    limit = artefact.tolerance.coefficients_max_abs
    if report.passed is False and limit is not None:
        rounding = run.reference_rounding(images)
        if rounding > limit:
            report.failures.append(
                f"PyTorch's own float32 coefficients differ from its float64 ones by {rounding:.3g} on these inputs: "
                "the model amplifies rounding there (e.g. per-sample statistics of a missing view), so no graph can "
                "match it closer; the export is not at fault. --parity-batch 1 checks all-view triplets only")
    return report


def export_all(spec: str, out_dir, fp16: bool = False, engine=None, batch: str = "1:1:4",
               workspace_gb: float = 4.0, timing_cache=None, face_model=None, parity_batch: int = 2,
               compact: bool = False, int8: bool = False, calibration: int = 8, calibration_seed: int | None = None,
               int8_weights: str = "auto", keypoints: bool = True,
               echo: Callable[[str], None] = print) -> ExportSummary:
    """Run the whole export; raises ExportError on a parity failure (the failing artefact is renamed
    ``*.rejected.*``, the report stays), UnavailableError when ``engine`` was demanded and cannot be
    built (after the ONNX files and report are written). ``keypoints=False`` (``--no-keypoints``) drops
    the lite design's keypoint heads first: no ``keypoints`` output, a faster graph, no detector-free
    ``--refine``.

    The pipeline: each loader (``_load_onnx``, ``_load_fp16``, ``_load_int8``, ``_load_engine``) writes
    its artefact and returns it with its runner and tolerance; each is checked (``_check``) right after
    it is written, in that order; then the report is written, failures renamed and gated."""
    from .tensorrt_build import parse_batch, tensorrt_unavailable

    from .int8 import WEIGHT_CHOICES

    profile = parse_batch(batch)           # validate before spending minutes on the export
    if int8_weights not in WEIGHT_CHOICES:
        raise ValueError(f"int8_weights must be one of {WEIGHT_CHOICES}, got {int8_weights!r}")
    if engine is not None or tensorrt_unavailable() is None:   # the engine will run the parity batch
        profile.check(parity_batch, "the parity batch (--parity-batch)")
    out_dir = Path(out_dir)
    clock = time.perf_counter()
    model, card, what = load_for_export(spec)
    mesh_model = _face_model(face_model, card)
    echo(f"loaded {what}: variant '{card.variant}'")
    if not keypoints and model.predicts_keypoints:
        try:
            model.drop_keypoint_heads()
        except ValueError as exc:
            raise InputError(spec, str(exc), "export it with its keypoints (without --no-keypoints)") from exc
        echo("dropped the keypoint heads (--no-keypoints): the graph has no 'keypoints' output")
    summary = ExportSummary(onnx_path=out_dir / "model.onnx", parity_path=out_dir / "model.parity.json")
    run = _ExportRun(model, card, mesh_model, out_dir, summary, echo, clock, fp16=fp16, int8=int8, compact=compact,
                     calibration=calibration, calibration_seed=calibration_seed, int8_weights=int8_weights,
                     engine=engine, profile=profile,
                     workspace_gb=workspace_gb, timing_cache=timing_cache, parity_batch=parity_batch)
    loaders = [_load_onnx, *([_load_fp16] if fp16 else []), *([_load_int8] if int8 else []), _load_engine]
    reports = [_check(run, load(run)) for load in loaders]

    summary.reports = reports
    summary.seconds["total"] = round(time.perf_counter() - clock, 1)
    parity.write_reports(summary.parity_path, reports, extra={
        "model": summary.onnx_path.name, "source": what, "variant": card.variant,
        "inputs": f"{parity_batch} rendered synthetic triplets (every second one with its right view missing)",
        "face_model": mesh_model.identity(), "involution_nodes": run.onnx_result.involution_nodes,
        "engine_skipped": summary.engine_skipped, "int8": run.quantization, "seconds": summary.seconds})
    echo(parity.format_table(reports))
    echo(f"wrote {summary.parity_path}")
    _reject_failed(summary, reports, echo)
    parity.check_reports(reports)
    if summary.engine_skipped:
        if engine:
            raise UnavailableError(f"--engine {engine} was requested but no engine was built: "
                                   f"{summary.engine_skipped} (the ONNX graph and its parity report are written)")
        echo(f"TensorRT engine skipped: {summary.engine_skipped}")
    return summary
