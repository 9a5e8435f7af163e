"""End-to-end, per-stage benchmark of the reconstruction pipeline on every backend (``dfmvr bench``).

One run times, for each available backend and each batch size, the runtime's own stages
(``dfmvr.runtime.pipeline.Pipeline``: decode + align, normalise, network, mesh assembly, write) on
the same synthetic triplets, warm-up excluded, and puts next to them: each backend's speed-up over
PyTorch eager, the graph's FLOPs per triplet, the network's achieved GFLOP/s, this machine's GEMM
rate measured in the same run, and each backend's parity in mesh millimetres against one reference
on the same inputs (``dfmvr.bench.parity``). Nothing here imports torch unless a torch backend runs
or the torch weights are there to serve as the parity reference.

Model sources (``resolve_sources``):
- ``checkpoint``: a dfmvr checkpoint, ``default`` (the bundled one) or a variant name (``tiny``,
  ``paper``: random weights, seed 0). Gives the torch backend its weights; when no ``onnx`` is given it
  is exported on the fly (``dfmvr.export.export_onnx``) for ONNX Runtime. Needs torch.
- ``onnx``: an exported graph for ONNX Runtime (no torch needed). Given with ``checkpoint``, the two
  must carry the same variant (an exported variant name re-creates the same seed-0 weights).
- ``int8_onnx``: the int8 QDQ graph for ``onnxruntime-int8`` (``dfmvr-export --int8``'s
  ``model.int8.onnx``). Without it: the ``.int8.onnx`` folder-mate of ``onnx`` (``model.onnx`` ->
  ``model.int8.onnx``) when there is one; else, when the graph is exported on the fly and
  ``onnxruntime-int8`` is asked for, it is quantized on the fly (``dfmvr.export.int8.quantize_int8``,
  the export's own calibration, s8 weights: the fast format, not gated here; ``dfmvr-export --int8``
  writes u8 weights instead when s8 fails its gate); else that backend is reported unavailable.
- ``engine``: a TensorRT engine with its ``.card.json``.
- none: the bundled default model (``dfmvr/assets/default``): its ONNX graph, and its checkpoint for
  the torch backends and the parity reference when torch is installed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import InputError
from .backends import BACKENDS, DESCRIPTIONS, availability, describe, make_runner
from .environment import environment_stamp
from .stats import summarize

__all__ = ["STAGES", "Sources", "resolve_sources", "run_bench", "REPORT_FORMAT"]

STAGES = ("decode_align", "normalise", "network", "assembly", "write")
REPORT_FORMAT = "dfmvr-bench"


@dataclass
class Sources:
    """What the backends run: torch weights, an ONNX graph, an engine, and the card they share."""

    card: object
    artifact: object                      # dfmvr.runtime.artifacts.Artifact handed to the Pipeline
    torch_model: object | None = None
    onnx_path: Path | None = None
    engine_path: Path | None = None
    int8_path: Path | None = None
    description: dict = field(default_factory=dict)


def _torch_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


ONNX_BACKENDS = ("onnxruntime", "onnxruntime-int8", "openvino")     # the backends that run an ONNX graph


def int8_sibling(onnx) -> Path | None:
    """``model.int8.onnx`` next to ``model.onnx`` (``dfmvr-export --int8``'s name), if it exists."""
    path = Path(onnx)
    stem = path.name[:-len(".onnx")] if path.name.endswith(".onnx") else path.stem
    sibling = path.with_name(f"{stem}.int8.onnx")
    return sibling if sibling.is_file() and sibling != path else None


def resolve_sources(checkpoint=None, onnx=None, engine=None, backends=BACKENDS, workdir=None,
                    echo: Callable[[str], None] = lambda s: None, int8_onnx=None) -> Sources:
    """Load/export what ``backends`` need (see the module docstring). Raises InputError on bad input."""
    from ..runtime.artifacts import (BUNDLED, DEFAULT_CHECKPOINT, DEFAULT_DIR, DEFAULT_ONNX, Artifact,
                                     load_engine_artifact, load_onnx_artifact, resolve_onnx)

    desc: dict = {}
    no_model_fix = ("pass --checkpoint tiny (or paper) to benchmark a variant with random weights, "
                    "or --onnx / --checkpoint for your own model")
    if onnx is not None:
        onnx = resolve_onnx(onnx, fix=no_model_fix)     # 'default', as dfmvr-run and eval accept it
    if checkpoint is None and onnx is None and engine is None:
        if not DEFAULT_ONNX.is_file() and not DEFAULT_CHECKPOINT.is_file():
            raise InputError(DEFAULT_DIR, "the bundled default model is not installed", no_model_fix)
        if DEFAULT_ONNX.is_file():
            onnx = DEFAULT_ONNX
        # its torch weights serve the torch backends and the parity reference (PyTorch eager)
        if DEFAULT_CHECKPOINT.is_file() and _torch_installed():
            checkpoint = BUNDLED
    torch_model = card = None
    if checkpoint is not None:
        if not _torch_installed():
            raise InputError(checkpoint, "--checkpoint needs torch (to load the weights and export them)",
                             "install dfmvr[train], or pass an exported graph with --onnx")
        from ..export.pipeline import load_for_export

        echo(f"loading {checkpoint} ...")
        torch_model, card, what = load_for_export(str(checkpoint))
        desc["checkpoint"] = what
        if onnx is None and any(b in backends for b in ONNX_BACKENDS):
            from ..export.onnx_export import export_onnx

            workdir = Path(workdir or tempfile.mkdtemp(prefix="dfmvr-bench-"))
            onnx = workdir / f"{card.variant}.onnx"
            echo(f"exporting {what} to {onnx} ...")
            start = time.perf_counter()
            export_onnx(torch_model, onnx, card)
            desc["onnx_exported_s"] = round(time.perf_counter() - start, 1)
            if int8_onnx is None and "onnxruntime-int8" in backends:
                int8_onnx = _quantize_on_the_fly(onnx, card, desc, echo)
    if int8_onnx is None and onnx is not None and "onnxruntime-int8" in backends:
        int8_onnx = int8_sibling(onnx)
    artifact = None
    if onnx is not None:
        artifact = load_onnx_artifact(onnx)
        desc["onnx"] = str(onnx)
    engine_artifact = None
    if engine is not None:
        engine_artifact = load_engine_artifact(engine)
        desc["engine"] = str(engine)
        artifact = artifact or engine_artifact
    if artifact is None:            # torch only: the checkpoint's own card
        artifact = Artifact("checkpoint", Path(str(checkpoint)), card)
    for other in (card, engine_artifact.card if engine_artifact else None):
        if other is not None and other.variant != artifact.card.variant:
            raise InputError(onnx or engine, f"model variant '{artifact.card.variant}' differs from "
                             f"'{other.variant}' of the other model given", "benchmark one model at a time")
    if int8_onnx is not None:
        int8_artifact = load_onnx_artifact(int8_onnx)
        if int8_artifact.card.variant != artifact.card.variant:
            raise InputError(int8_onnx, f"int8 graph of variant '{int8_artifact.card.variant}' differs from "
                             f"'{artifact.card.variant}' of the other model given", "benchmark one model at a time")
        if "quantization" not in int8_artifact.card.provenance:     # an fp32 graph was timed as "int8 QDQ"
            raise InputError(int8_onnx, "is not an int8 graph (its card records no quantization)",
                             "pass the model.int8.onnx that 'dfmvr-export --int8' writes")
        desc["int8_onnx"] = str(int8_onnx)
    desc["variant"] = artifact.card.variant
    return Sources(card=artifact.card, artifact=artifact, torch_model=torch_model,
                   onnx_path=Path(onnx) if onnx is not None else None,
                   engine_path=Path(engine) if engine is not None else None,
                   int8_path=Path(int8_onnx) if int8_onnx is not None else None, description=desc)


def _quantize_on_the_fly(onnx_path: Path, card, desc: dict, echo) -> Path | None:
    """``<variant>.int8.onnx`` next to the graph exported on the fly, s8 weights (``dfmvr-export --int8
    --int8-weights s8``);
    None (and the reason in ``desc``) when quantization fails: the backend is then reported unavailable."""
    try:
        import onnx as onnx_lib

        from ..export.int8 import quantize_int8

        out = onnx_path.with_name(f"{card.variant}.int8.onnx")
        echo(f"quantizing {onnx_path.name} to int8 (calibration on synthetic triplets) ...")
        start = time.perf_counter()
        quantized, info = quantize_int8(onnx_lib.load(str(onnx_path)), card)
        onnx_lib.save_model(quantized, str(out))
        desc["int8_quantized_s"] = round(time.perf_counter() - start, 1)
        desc["int8_calibration"] = info.get("calibration")
        desc["int8_weight_format"] = info.get("weight_format")
        return out
    except Exception as exc:       # noqa: BLE001 - reported as the backend's reason, not fatal
        desc["int8_failed"] = f"{type(exc).__name__}: {exc}"[:300]
        echo(f"int8 quantization failed ({exc})")
        return None


def _one_iteration(pipe, group, out: Path, formats) -> tuple[float, dict]:
    """One pass of the whole pipeline over ``group`` (a batch of triplets), as ``dfmvr run`` does it.

    Returns the end-to-end wall time (ms) and every stage's time for the whole batch (ms).
    """
    start = time.perf_counter()
    prepared = [pipe.prepare(t) for t in group]
    recs = pipe.reconstruct(prepared)
    for rec in recs:
        pipe.write(rec, out, formats)
    wall = (time.perf_counter() - start) * 1e3
    shutil.rmtree(out, ignore_errors=True)
    # normalise/network/assembly: the pipeline charged batch time / n to each triplet
    return wall, {s: sum(getattr(r.times, s) for r in recs) * 1e3 for s in STAGES}


def _flops(onnx_path) -> dict:
    try:
        from .flops import count_flops

        return count_flops(onnx_path, batch=1)
    except ImportError as exc:
        return {"error": f"counting FLOPs needs the onnx package ({exc})"}


def run_bench(sources: Sources, backends=BACKENDS, batches=(1, 4, 16), iters: int = 10, warmup: int = 2,
              threads: int | None = None, formats=("obj", "ply", "npz", "json", "png"), face_model=None,
              gemm: bool = True, gemm_size: int = 2048, echo: Callable[[str], None] = lambda s: None) -> dict:
    """Run the benchmark; returns the report (JSON-serialisable dict, see ``report.py`` for the table)."""
    from ..runtime.artifacts import load_face_model
    from ..runtime.outputs import needs_photos
    from ..runtime.pipeline import Pipeline
    from .environment import _gpu
    from .inputs import write_triplets

    if iters < 1 or warmup < 0 or not batches or min(batches) < 1:
        raise InputError(None, f"bad benchmark sizes (iters {iters}, warmup {warmup}, batches {list(batches)})",
                         "iters >= 1, warmup >= 0, batch sizes >= 1")
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise InputError(None, f"unknown backend(s) {unknown}", f"choose from {','.join(BACKENDS)}")
    load_before = os.getloadavg()[0]
    model = load_face_model(face_model, sources.card)
    gpu = _gpu()
    report = {"format": REPORT_FORMAT, "version": 2, "model": sources.description,
              "face_model": {"name": model.identity().get("name"), "num_vertices": int(model.num_vertices),
                             "num_triangles": int(model.num_triangles)},
              "settings": {"backends": list(backends), "batches": list(batches), "iters": iters, "warmup": warmup,
                           "threads": threads, "formats": list(formats),
                           "inputs": "synthetic aligned 224x224 PNG triplets (decode + crop check, no detection)"},
              "environment": environment_stamp(threads), "backends": {}, "unavailable": {}, "parity_reference": None}
    work = Path(tempfile.mkdtemp(prefix="dfmvr-bench-run-"))
    try:
        triplets = write_triplets(work / "inputs", model, sources.card.camera_obj(), max(batches))
        pipes, info = {}, {}
        reference = None
        try:
            for name in backends:
                reason = availability(name, torch_model=sources.torch_model is not None,
                                      onnx=sources.onnx_path is not None, engine=sources.engine_path is not None,
                                      gpu=gpu, int8=sources.int8_path is not None)
                if reason and name == "onnxruntime-int8" and sources.description.get("int8_failed"):
                    reason = f"quantizing the graph on the fly failed: {sources.description['int8_failed']}"
                if reason:
                    report["unavailable"][name] = reason
                    echo(f"{name}: unavailable ({reason})")
                    continue
                runner = make_runner(name, torch_model=sources.torch_model, onnx_path=sources.onnx_path,
                                     engine_path=sources.engine_path, int8_path=sources.int8_path, threads=threads,
                                     batches=batches, image_size=int(sources.card.image_size))
                pipe = Pipeline(sources.artifact, model, runner, aligned=True, device="cpu",
                                keep_photos=needs_photos(formats))
                if name == "torch-compile":
                    echo(f"{name}: compiling for batch size(s) {', '.join(map(str, batches))} ...")
                try:
                    start = time.perf_counter()
                    pipe.activate()               # torch-compile compiles here, for every batch size
                    activate_s = time.perf_counter() - start
                    _one_iteration(pipe, triplets[:1], work / "out", formats)     # smoke run
                except Exception as exc:      # a backend that cannot run is reported, not fatal
                    pipe.deactivate()
                    what = "torch.compile failed" if name == "torch-compile" else "failed"
                    report["unavailable"][name] = f"{what}: {type(exc).__name__}: {exc}"[:500]
                    echo(f"{name}: {what} ({exc})")
                    continue
                pipes[name] = pipe
                info[name] = {**describe(name, runner), "activate_s": round(activate_s, 2)}
                if "compile_total_s" in info[name]:
                    echo(f"{name}: compiled in {info[name]['compile_total_s']:.1f} s (not timed)")
            reference = _parity_reference(pipes, sources, threads, report, echo, triplets[:1])
            # Timed iterations are interleaved round-robin over the backends (iteration i of every
            # backend before iteration i+1 of any), so a shared machine's changing load falls on all alike.
            rows = {name: [] for name in pipes}
            for b in batches:
                group = triplets[:b]
                echo(f"batch {b}: {warmup} warm-up + {iters} timed iteration(s) of {', '.join(pipes)} ...")
                for name, pipe in pipes.items():
                    for _ in range(warmup):
                        _one_iteration(pipe, group, work / "out", formats)
                walls = {name: [] for name in pipes}
                stages = {name: {s: [] for s in STAGES} for name in pipes}
                for _ in range(iters):
                    for name, pipe in pipes.items():
                        wall, per_stage = _one_iteration(pipe, group, work / "out", formats)
                        walls[name].append(wall)
                        for s_name, v in per_stage.items():
                            stages[name][s_name].append(v)
                parity = _parity(pipes, reference, group, model, sources.card)
                for name in pipes:
                    rows[name].append({"batch": b, "end_to_end": summarize(walls[name], b),
                                       "stages": {s: summarize(v, b) for s, v in stages[name].items()},
                                       "parity": parity.get(name)})
                    pr = parity.get(name) or {}
                    mesh = (f"; mesh vs {reference[0]} max {pr['mesh_max_mm']:.4f} mm"
                            if pr.get("mesh_max_mm") is not None else "")
                    echo(f"{name}: batch {b}: median {rows[name][-1]['end_to_end']['median_ms']:.1f} ms "
                         f"(network {rows[name][-1]['stages']['network']['median_ms']:.1f} ms){mesh}")
        finally:
            for pipe in pipes.values():
                pipe.deactivate()
            if reference is not None and reference[2]:
                reference[1].deactivate()
        for name, pipe in pipes.items():
            report["backends"][name] = {**info[name], "batches": rows[name]}
        if sources.onnx_path is not None:
            echo("counting FLOPs in the graph ...")
            report["flops"] = _flops(sources.onnx_path)
        if gemm:
            from .gemm import gemm_rate_gflops

            echo("measuring this machine's GEMM rate ...")
            report["gemm"] = gemm_rate_gflops(n=gemm_size, threads=threads)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["load_average_1min"] = {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}
    derive(report)
    return report


def _parity_reference(pipes: dict, sources: Sources, threads, report: dict, echo, probe):
    """(name, active runner, owned?) of the parity reference: PyTorch eager when torch and the weights
    are there (the bench's own torch runner when it runs), else ONNX Runtime on the fp32 graph; None
    when neither can run (each candidate must answer ``probe``, a list of triplets, first).
    Recorded in ``report["parity_reference"]``."""
    from ..runtime.runners import OnnxrtRunner
    from .backends import TorchEagerRunner, _has
    from .parity import infer_images

    if not pipes:
        report["parity_reference"] = {"backend": None, "reason": "no backend ran"}
        return None
    images = _images(pipes, probe)
    candidates = []
    if sources.torch_model is not None and _has("torch"):
        candidates.append(("torch", lambda: pipes["torch"].runner if "torch" in pipes else
                           TorchEagerRunner(sources.torch_model, threads=threads)))
    if sources.onnx_path is not None and _has("onnxruntime"):
        candidates.append(("onnxruntime", lambda: pipes["onnxruntime"].runner if "onnxruntime" in pipes else
                           OnnxrtRunner(sources.onnx_path, threads=threads)))
    problems = []
    for name, make in candidates:
        runner, owned = None, name not in pipes
        try:
            runner = make()
            if owned:
                runner.activate()
            if owned:
                infer_images(runner, images)
        except Exception as exc:     # noqa: BLE001 - try the next reference
            problems.append(f"{name}: {type(exc).__name__}: {exc}"[:300])
            if owned and runner is not None:
                runner.deactivate()
            continue
        report["parity_reference"] = {"backend": name, "description": DESCRIPTIONS[name],
                                      "measured_in_this_run": not owned}
        echo(f"parity reference: {name}")
        return name, runner, owned
    report["parity_reference"] = {"backend": None, "reason": "; ".join(problems) or
                                  "neither torch weights nor an fp32 ONNX graph to compare with"}
    return None


def _images(pipes: dict, group) -> "np.ndarray":
    """The graph input of ``group`` (triplets) as the pipelines make it: decoded, normalised."""
    import numpy as np

    first = next(iter(pipes.values()))
    return first.normalise(np.stack([first.prepare(t).crops for t in group]))


def _parity(pipes: dict, reference, group, face_model, card) -> dict:
    """backend -> parity_row against the reference on the normalised images of ``group`` (untimed)."""
    from .parity import infer_images, parity_row

    if reference is None or not pipes:
        return {}
    images = _images(pipes, group)
    try:
        want = infer_images(reference[1], images)
    except Exception as exc:          # noqa: BLE001 - reported in every row
        return {name: {"error": f"reference failed: {type(exc).__name__}: {exc}"[:300]} for name in pipes}
    out = {}
    for name, pipe in pipes.items():
        try:
            out[name] = parity_row(want, infer_images(pipe.runner, images), face_model, card)
        except Exception as exc:      # noqa: BLE001 - one backend's failure is its row's
            out[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    return out


def derive(report: dict) -> dict:
    """Add ratios to torch eager, achieved GFLOP/s and the fraction of the GEMM rate (in place)."""
    flops = (report.get("flops") or {}).get("total")
    gemm = (report.get("gemm") or {}).get("best_gflops")
    torch_rows = {r["batch"]: r for r in report["backends"].get("torch", {}).get("batches", [])}
    for name, entry in report["backends"].items():
        for row in entry["batches"]:
            ref = torch_rows.get(row["batch"])
            if ref is not None:
                row["speedup_vs_torch"] = {
                    "end_to_end": ref["end_to_end"]["median_ms"] / row["end_to_end"]["median_ms"],
                    "network": ref["stages"]["network"]["median_ms"] / row["stages"]["network"]["median_ms"]}
            if flops:
                gflops = flops * row["batch"] / (row["stages"]["network"]["median_ms"] * 1e-3) / 1e9
                row["network_gflops"] = gflops
                if gemm:
                    row["fraction_of_gemm"] = gflops / gemm
    return report
