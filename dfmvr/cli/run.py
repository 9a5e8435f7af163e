"""``dfmvr-run`` / ``dfmvr run``: reconstruct faces from triplets of photos, without torch.

Exit codes: 0 every triplet reconstructed; 2 bad usage or bad input -- for a batch, 2 when at least
one triplet failed (the others are still written, and the failures are listed and saved in
``summary.json``); 3 a requested capability is missing (TensorRT, a GPU); 1 anything else.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .options import (OutputPath, batch_size_option, engine_option, exit_codes, face_model_option, onnx_option,
                      quiet_option, threads_option, refine_device_option, detector_option,
                      refine_landmark_weight_option, refine_landmark_anneal_option, refine_landmarks_option,
                      refine_config)
from .settings import HELP_SETTINGS

__all__ = ["command"]


DEFAULT_FORMATS = "obj,ply,npz,json,png"


@click.command(name="run", context_settings=HELP_SETTINGS, epilog=exit_codes(
    c2="bad usage or bad input; for a batch, at least one triplet failed (the others are written, "
       "the failures listed and saved in summary.json)",
    c3="--device cuda or --engine on a machine without a GPU or TensorRT"))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@onnx_option
@engine_option
@face_model_option
@click.option("--out", "out", type=OutputPath("folder"), default=Path("dfmvr-out"), show_default=True,
              help="Output folder. Every triplet, a single one too, is written to OUT/<triplet name>/ "
                   "(the triplet folder's name); a batch also writes OUT/summary.json.")
@click.option("--aligned", is_flag=True, help="Inputs are already 224x224 aligned crops: skip detection.")
@detector_option
@click.option("--format", "formats", default=DEFAULT_FORMATS, show_default=True,
              help="Comma-separated outputs: obj, ply, npz, json, png, jpg (the overlay as JPEG: ~4x faster "
                   "to encode than png; docs/runtime.md).")
@batch_size_option(1)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="cuda: CUDA provider / TensorRT and the CUDA mesh kernel.")
@click.option("--backend", type=click.Choice(["onnxruntime", "openvino"]), default="onnxruntime", show_default=True,
              help="What runs the ONNX graph: ONNX Runtime, or OpenVINO's CPU plugin (the 'openvino' extra: "
                   "pip install 'dfmvr[openvino]'; the graph's dfmvr::Involution functions are inlined for it). "
                   "Not with --engine or --device cuda.")
@threads_option
@click.option("--resume", is_flag=True,
              help="Skip triplets whose output folder exists (folders are only ever complete).")
@click.option("--refine", "refine_steps", type=click.IntRange(min=0), default=0, show_default=True,
              help="After the network, refine each triplet by N steps of analysis-by-synthesis with the weak "
                   "losses (photo, 2D landmarks: the network's own or the detector's, regularisers; labels from "
                   "the parse net). "
                   "Needs torch (the 'train' extra); docs/refine.md. Each --batch is one optimisation.")
@refine_device_option
@refine_landmark_weight_option
@refine_landmark_anneal_option
@refine_landmarks_option
@click.option("--no-overlap", "no_overlap", is_flag=True, envvar="DFMVR_NO_OVERLAP",
              help="Run the stages one after another. By default decode + align of the next batch and writing "
                   "of the previous one run in threads while the network runs (same outputs, same summary "
                   "order); this is for debugging and timing single stages. Env: DFMVR_NO_OVERLAP=1.")
@quiet_option
def command(inputs, onnx, engine, face_model, out, aligned, detector, formats, batch, device, backend, threads, resume,
            refine_steps, refine_device, refine_landmark_weight, refine_landmark_anneal, refine_landmarks, no_overlap,
            quiet):
    """Reconstruct 3D faces from INPUTS: a triplet folder (left.*, front.*, right.*, or <name>0/1/2),
    a folder of triplet folders (searched recursively), or three image paths (left front right).
    With neither --onnx nor --engine, the bundled demo model runs.

    Writes mesh.obj, mesh.ply (front-view pose, vertex colours), coeffs.npz, result.json (per-view
    yaw/pitch/roll and translation, how the face was found, timings) and overlay.png per triplet, into
    OUT/<triplet name>/.

    dlib detection falls back, per view, from HOG to HOG upsampled to dlib's CNN detector, and then to
    a box placed from the triplet's other views; a fallback is reported and recorded in result.json.

    Symbolic links: a link to an image is read as that image; a link to a folder is followed, but
    every real folder is searched once (under its own name when it is inside the input folder), so a
    link to '.' or to a folder already searched adds nothing.
    """
    from ..runtime.inputs import discover_triplets
    from ..runtime.outputs import needs_photos, parse_formats
    from ..runtime.pipeline import Pipeline

    _quiet_opencv()
    fmts = parse_formats(formats)
    if backend == "openvino":
        from ..errors import InputError, require

        if engine is not None or device == "cuda":
            raise InputError(None, "--backend openvino runs an ONNX graph on the CPU",
                             "drop --engine / --device cuda, or use --backend onnxruntime")
        for module in ("openvino", "onnx"):            # a clear exit 2 before any model loads
            require(module, "openvino", "--backend openvino")
    if refine_landmark_weight is not None and refine_steps == 0:
        raise click.UsageError("--refine-landmark-weight sets up --refine; add --refine N")
    if refine_landmarks is not None and refine_steps == 0:
        raise click.UsageError("--refine-landmarks sets up --refine; add --refine N")
    if refine_landmark_anneal is not None and refine_steps == 0:
        raise click.UsageError("--refine-landmark-anneal sets up --refine; add --refine N")
    triplets, problems = discover_triplets(inputs)
    single = len(triplets) + len(problems) == 1
    if not single:
        triplets, problems = _refuse_the_summary_name(triplets, problems)
    if resume:
        from ..runtime.outputs import already_written

        skipped = [t for t in triplets if already_written(out, t)]
        triplets = [t for t in triplets if t not in skipped]
        if skipped and not quiet:
            click.echo(f"--resume: {len(skipped)} triplet(s) already done, skipped", err=True)
        if not triplets and not problems:
            return
    if single and problems:
        raise problems[0].error
    pipeline_cls = Pipeline
    if refine_steps > 0:
        from ..errors import require
        from ..runtime.refine import RefiningPipeline

        require("torch", "train", "--refine")      # before any model loads: a clear exit 2 without torch
        pipeline_cls = RefiningPipeline            # the plain pipeline plus a refinement stage
    pipe = pipeline_cls.from_options(onnx=onnx, engine=engine, face_model=face_model, aligned=aligned,
                                     detector=detector, device=device, threads=threads,
                                     keep_photos=needs_photos(fmts), backend=backend)
    if refine_steps > 0:
        from ..train.refine import Refiner

        pipe.refiner = Refiner(pipe.face_model, pipe.camera,
                               refine_config(refine_steps, refine_device, refine_landmark_weight, not quiet,
                                             refine_landmark_anneal))
        pipe.landmark_source = refine_landmarks or "auto"
    bar = TripletBar(len(triplets), "reconstructing", show=not quiet and not single)
    with pipe:
        if refine_steps > 0:
            pipe.check_landmark_source()     # exit 2 before the first triplet when it has none to fit
        summary = pipe.run(triplets, out, fmts, batch=batch, problems=problems, progress=bar,
                           overlap=not no_overlap)
    bar.close()
    if not quiet:
        _print_fallbacks(summary.fallbacks)
        _print_slot_doubts(summary.slot_doubts)
    if single:
        if summary.failed:
            raise summary.failed[0].error
        name, folder, times = summary.done[0]
        if not quiet:
            click.echo(f"{name}: wrote {folder} ({_stage_line(times.to_ms())})")
        return
    if not quiet:
        _print_table(summary)
    else:       # --quiet: no table, but the failures the last line points at are still listed
        for problem in summary.failed:
            click.echo(f"{problem.name}: {problem.error}", err=True)
    _write_summary(out, pipe, summary)      # after the listing: a summary that cannot be written loses none of it
    if summary.failed:
        click.echo(f"error: {len(summary.failed)} of {len(summary.failed) + len(summary.done)} triplets failed "
                   f"(listed above and in {Path(out) / SUMMARY_NAME})", err=True)
        sys.exit(2)


class TripletBar:
    """A progress bar over triplets on stderr (none when ``show`` is false); called as the pipelines'
    ``progress(name, ok)``."""

    def __init__(self, total: int, desc: str, show: bool):
        self._bar = None
        if show:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="triplet", desc=desc, file=sys.stderr, dynamic_ncols=True)

    def __call__(self, name: str, ok: bool) -> None:
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix_str(f"{'ok' if ok else 'FAILED'} {name}"[:40])

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _quiet_opencv() -> None:
    """Corrupt images are reported by our own InputError; OpenCV's C++ log lines would only add noise."""
    import cv2

    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    except AttributeError:  # pragma: no cover - older OpenCV builds without the logging module
        pass


FALLBACK_WORDS = {"hog-upsampled": "by dlib's HOG detector only with upsampling",
                  "cnn": "only by dlib's CNN face detector (HOG found none)",
                  "other-views": "by no detector: its face box was placed from the other views' detections "
                                 "(same size and position), and the landmarks fitted in it -- check {check}"}


def _print_fallbacks(fallbacks: dict, check: str = "overlay.png") -> None:
    """One line per view whose face was found by a fallback path (also recorded in result.json);
    ``check``: the output that shows where the landmarks landed."""
    for name, views in fallbacks.items():
        for view, path in views.items():
            words = FALLBACK_WORDS.get(path, "by " + path).format(check=check)
            click.echo(f"{name}: the face in the {view} view was found {words}", err=True)


def _print_slot_doubts(doubts: dict) -> None:
    """One line per triplet whose photos look like they sit in the wrong slots (also in result.json)."""
    from ..face.layout import VIEW_YAW_DEG, VIEWS

    for name, views in doubts.items():
        found = ", ".join(f"the {view} photo is turned {yaw:+.0f}° (a {view} view: about "
                          f"{VIEW_YAW_DEG[VIEWS.index(view)]:+.0f}°)" for view, yaw in views.items())
        click.echo(f"{name}: {found}: are the photos in left / front / right order? The pose follows the "
                   "photo, but the shape and the placement are less accurate with photos in the wrong slots",
                   err=True)


def _stage_line(ms: dict) -> str:
    return ", ".join(f"{k} {v:.1f} ms" for k, v in ms.items())


SUMMARY_NAME = "summary.json"


def _refuse_the_summary_name(triplets, problems):
    """A batch writes ``SUMMARY_NAME`` beside its triplet folders: a triplet of that name is listed as bad
    (its folder and the summary would overwrite each other) and the others go on."""
    from ..errors import InputError
    from ..runtime.inputs import TripletProblem

    clash = [t for t in triplets if t.name.casefold() == SUMMARY_NAME]     # macOS and Windows ignore case
    refused = [TripletProblem(t.name, InputError(t.ordered()[0].parent, f"a triplet named "
                                                 f"{SUMMARY_NAME} would overwrite the batch's {SUMMARY_NAME} "
                                                 "under --out", "rename the folder")) for t in clash]
    return [t for t in triplets if t not in clash], [*problems, *refused]


def _write_summary(out: Path, pipe, summary) -> None:
    from ..atomic import atomic_write_text
    from ..errors import InputError

    n = len(summary.done)
    doc = {"model": pipe.artifact.model_id, "device": pipe.device, "wall_s": round(summary.wall, 4),
           "triplets_per_s": round(n / summary.wall, 3) if summary.wall > 0 and n else 0.0,
           "mean_stage_ms": {k: round(v / max(n, 1), 3) for k, v in summary.times.to_ms().items()},
           "done": [{"triplet": name, "folder": str(folder), "timings_ms": t.to_ms(),
                     **({"detection_fallbacks": summary.fallbacks[name]} if name in summary.fallbacks else {}),
                     **({"slot_doubts": summary.slot_doubts[name]} if name in summary.slot_doubts else {})}
                    for name, folder, t in summary.done],
           "failed": [{"triplet": p.name, "file": p.error.path, "reason": str(p.error)} for p in summary.failed]}
    path = Path(out) / SUMMARY_NAME
    try:
        atomic_write_text(path, json.dumps(doc, indent=2))
    except OSError as exc:      # a folder in its place, or --out made read-only mid-run: a traceback after the batch
        raise InputError(path, f"cannot write the batch summary ({exc.strerror or exc}); the triplets above "
                         "are written", "make room for the file (or the folder writable), or choose another --out") from exc


def _print_table(summary) -> None:
    rows = [(name, "ok", f"{t.total * 1e3:.0f} ms", str(folder)) for name, folder, t in summary.done]
    rows += [(p.name, "FAILED", "", str(p.error)) for p in summary.failed]
    head = ("triplet", "status", "time", "output / reason")
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head[:3])]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3]  # noqa: E731
    click.echo(line(head), err=True)
    for r in rows:
        click.echo(line(r), err=True)
    n = len(summary.done)
    rate = n / summary.wall if summary.wall > 0 else 0.0
    click.echo(f"{n} reconstructed, {len(summary.failed)} failed in {summary.wall:.2f} s ({rate:.2f} triplets/s); "
               f"mean per triplet: {_stage_line({k: v / max(n, 1) for k, v in summary.times.to_ms().items()})}",
               err=True)

