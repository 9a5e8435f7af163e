"""The whole export as one call (what ``dfmvr-export`` runs): load -> ONNX -> parity -> fp16/int8 -> engine.

``load_for_export(spec)`` accepts, in this order:
- a file: ``.pth`` / ``.pt`` = official DF-MVR weights (converted on the fly with
  ``dfmvr.train.convert.convert_official``); anything else = a dfmvr checkpoint (``load_checkpoint``);
- ``default``: the bundled checkpoint;
- a variant name (``tiny``, ``paper``): randomly initialised weights (seed 0), for benchmarks and tests.

Files written into ``out_dir`` (each atomically): ``model.onnx``, ``model.parity.json``, with
``fp16=True`` ``model.fp16.onnx``, with ``int8=True`` ``model.int8.onnx`` (``dfmvr.export.int8``), and
where TensorRT works ``model.plan`` + ``model.plan.card.json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from ..atomic import atomic_path
from ..card import ModelCard
from ..errors import InputError, UnavailableError
from ..face.layout import COEFFS, VIEWS
from ..face.model import MorphableModel
from . import parity
from .onnx_export import export_onnx

__all__ = ["ExportSummary", "load_for_export", "check_card_exportable", "export_all", "GRAPH_IMAGE_SIZE"]

GRAPH_IMAGE_SIZE = 224     # the graph I/O contract in dfmvr.card
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

    from ..train.models.variants import VARIANTS, build_model

    path = Path(spec)
    if path.is_file() and path.suffix.lower() in OFFICIAL_SUFFIXES:
        from ..train.convert import convert_official

        model, card, _ = convert_official(path)
        what = f"official DF-MVR weights {path.name} (converted)"
    elif path.is_file() or spec == "default":
        from ..train.checkpoint import load_checkpoint

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
    from ..face.synthetic import default_face_model

    if path is None:
        return default_face_model()
    model = MorphableModel.load(path)
    card.check_face_model(model, path)
    return model


def _reject_failed(summary: ExportSummary, reports: list, echo) -> None:
    """Rename each artefact whose parity failed to ``*.rejected*`` so that nothing ships it by mistake."""
    artefacts = {("onnxruntime-cpu", "fp32"): summary.onnx_path, ("onnxruntime-cpu", "fp16"): summary.fp16_path,
                 ("onnxruntime-cpu", "int8"): summary.int8_path,
                 ("tensorrt", "fp32"): summary.engine_path, ("tensorrt", "fp16"): summary.engine_path}
    for report in reports:
        path = artefacts.get((report.backend, report.precision))
        if report.passed is False and path is not None and path.is_file():
            rejected = path.with_name(f"{path.stem}.rejected{path.suffix}")
            path.replace(rejected)
            echo(f"parity failed: moved {path.name} to {rejected.name}")


def export_all(spec: str, out_dir, fp16: bool = False, engine=None, batch: str = "1:1:4",
               workspace_gb: float = 4.0, timing_cache=None, face_model=None, parity_batch: int = 2,
               compact: bool = False, int8: bool = False, calibration: int = 8, calibration_seed: int | None = None,
               echo: Callable[[str], None] = print) -> ExportSummary:
    """Run the whole export; raises ExportError on a parity failure (the failing artefact is renamed
    ``*.rejected.*``, the report stays), UnavailableError when ``engine`` was demanded and cannot be
    built (after the ONNX files and report are written)."""
    from .tensorrt_build import parse_batch, tensorrt_unavailable

    profile = parse_batch(batch)           # validate before spending minutes on the export
    out_dir = Path(out_dir)
    clock = time.perf_counter()
    model, card, what = load_for_export(spec)
    mesh_model = _face_model(face_model, card)
    echo(f"loaded {what}: variant '{card.variant}'")
    summary = ExportSummary(onnx_path=out_dir / "model.onnx", parity_path=out_dir / "model.parity.json")
    result = export_onnx(model, summary.onnx_path, card)
    summary.seconds["onnx_export"] = round(time.perf_counter() - clock, 1)
    echo(f"wrote {result.path} ({result.nodes} nodes, {result.involution_nodes} {'dfmvr::Involution'} "
         f"nodes with a standard-op function body, opset {result.opset})")

    # int8 quantizes the float32 weights: keep them before --compact stores them as float16 + Cast
    fp32_model = onnx.load(str(summary.onnx_path)) if int8 else None
    if compact:
        # float16-stored weights, float32 compute, bit-identical numbers: only weights that are exact
        # float16 numbers are converted (all of a 'dfmvr convert half' checkpoint's, except those the
        # exporter folded); rounding the rest measurably broke the fp32 parity gates (2e-4, 0.027 mm).
        from .compact import store_weights_as_fp16

        small, packed = store_weights_as_fp16(onnx.load(str(summary.onnx_path)), lossless=True)
        with atomic_path(summary.onnx_path) as tmp:
            onnx.save_model(small, str(tmp))
        echo(f"compacted {summary.onnx_path.name}: {packed.converted} weights stored as float16, {packed.kept} kept "
             f"float32 (not float16 numbers); weights {packed.bytes_before / 1e6:.1f} -> {packed.bytes_after / 1e6:.1f} MB")
    images = parity.parity_inputs(card, batch=parity_batch)
    reference = parity.TorchRunner(model)(images)
    onnx_model = onnx.load(str(summary.onnx_path))
    reports = [parity.compare(reference, parity.OnnxrtRunner(summary.onnx_path)(images), card, mesh_model,
                              "onnxruntime-cpu")]
    if fp16:
        from .fp16 import convert_to_fp16

        summary.fp16_path = out_dir / "model.fp16.onnx"
        half = convert_to_fp16(onnx_model)
        with atomic_path(summary.fp16_path) as tmp:
            onnx.save_model(half, str(tmp))
        echo(f"wrote {summary.fp16_path} (fp16 weights and activations, fp32 inputs/outputs)")
        try:
            candidate = parity.OnnxrtRunner(summary.fp16_path)(images)
        except Exception as exc:     # ORT CPU lacks some fp16 kernels on some builds: say so, keep going
            reports.append(parity.skipped_report("onnxruntime-cpu", "fp16", f"ONNX Runtime CPU cannot run "
                                                 f"the fp16 graph here: {type(exc).__name__}: {exc}"[:400]))
        else:
            reports.append(parity.compare(reference, candidate, card, mesh_model, "onnxruntime-cpu", "fp16"))
    quantization = None
    if int8:
        from .int8 import CALIBRATION_SEED, quantize_int8

        summary.int8_path = out_dir / "model.int8.onnx"
        clock_int8 = time.perf_counter()
        seed = CALIBRATION_SEED if calibration_seed is None else calibration_seed
        quantized, quantization = quantize_int8(fp32_model, card, count=calibration, seed=seed)
        del fp32_model
        with atomic_path(summary.int8_path) as tmp:
            onnx.save_model(quantized, str(tmp))
        summary.seconds["int8"] = round(time.perf_counter() - clock_int8, 1)
        echo(f"wrote {summary.int8_path} (int8 QDQ, calibrated on {calibration} synthetic triplets, seed {seed})")
        reports.append(parity.compare(reference, parity.OnnxrtRunner(summary.int8_path)(images), card, mesh_model,
                                      "onnxruntime-cpu", "int8"))

    reason = tensorrt_unavailable()
    if reason is None:
        from .tensorrt_build import TensorrtRunner, build_engine

        target = Path(engine) if engine else Path("model.plan")
        target = target if target.is_absolute() else out_dir / target
        try:
            built = build_engine(onnx_model, target, card, fp16=fp16, profile=profile,
                                 workspace_gb=workspace_gb, timing_cache=timing_cache)
        except UnavailableError as exc:      # e.g. the plugin or the parser failed: report, then decide
            reason = str(exc)
        else:
            summary.engine_path = built.engine_path
            echo(f"wrote {built.engine_path} and {built.card_path}")
            reports.append(parity.compare(reference, TensorrtRunner(built.engine_path)(images), card,
                                          mesh_model, "tensorrt", "fp16" if fp16 else "fp32"))
    if reason is not None:
        summary.engine_skipped = reason
        reports.append(parity.skipped_report("tensorrt", "fp16" if fp16 else "fp32", reason))
    summary.reports = reports
    summary.seconds["total"] = round(time.perf_counter() - clock, 1)
    parity.write_reports(summary.parity_path, reports, extra={
        "model": summary.onnx_path.name, "source": what, "variant": card.variant,
        "inputs": f"{parity_batch} rendered synthetic triplets (every second one with its right view missing)",
        "face_model": mesh_model.identity(), "involution_nodes": result.involution_nodes,
        "engine_skipped": summary.engine_skipped, "int8": quantization, "seconds": summary.seconds})
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
