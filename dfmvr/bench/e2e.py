"""End-to-end, per-stage benchmark of the reconstruction pipeline on every backend (``dfmvr bench``).

One run times, for each available backend and each batch size, the runtime's own stages
(``dfmvr.runtime.pipeline.Pipeline``: decode + align, normalise, network, mesh assembly, write) on
the same synthetic triplets, warm-up excluded, and puts next to them: each backend's speed-up over
PyTorch eager, the graph's FLOPs per triplet, the network's achieved GFLOP/s and this machine's GEMM
rate measured in the same run. Nothing here imports torch unless the torch backend runs.

Model sources (``resolve_sources``):
- ``checkpoint``: a dfmvr checkpoint, ``default`` (the bundled one) or a variant name (``tiny``,
  ``paper``: random weights, seed 0). Gives the torch backend its weights; when no ``onnx`` is given it
  is exported on the fly (``dfmvr.export.export_onnx``) for ONNX Runtime. Needs torch.
- ``onnx``: an exported graph for ONNX Runtime (no torch needed). Given with ``checkpoint``, the two
  must carry the same variant (an exported variant name re-creates the same seed-0 weights).
- ``engine``: a TensorRT engine with its ``.card.json``.
- none: the bundled default model (``dfmvr/assets/default``): its ONNX graph, and its checkpoint for
  the torch backend when torch is installed.
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
from .backends import BACKENDS, availability, make_runner
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
    description: dict = field(default_factory=dict)


def _torch_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def resolve_sources(checkpoint=None, onnx=None, engine=None, backends=BACKENDS, workdir=None,
                    echo: Callable[[str], None] = lambda s: None) -> Sources:
    """Load/export what ``backends`` need (see the module docstring). Raises InputError on bad input."""
    from ..runtime.artifacts import (DEFAULT_ONNX, Artifact, load_engine_artifact, load_onnx_artifact)

    desc: dict = {}
    if checkpoint is None and onnx is None and engine is None:
        from ..runtime.artifacts import DEFAULT_DIR

        default_ckpt = DEFAULT_DIR / "model.safetensors"
        if not DEFAULT_ONNX.is_file() and not default_ckpt.is_file():
            raise InputError(DEFAULT_DIR, "the bundled default model is not installed",
                             "pass --checkpoint tiny (or paper) to benchmark a variant with random weights, "
                             "or --onnx / --checkpoint for your own model")
        if DEFAULT_ONNX.is_file():
            onnx = DEFAULT_ONNX
        if default_ckpt.is_file() and "torch" in backends and _torch_installed():
            checkpoint = "default"
    torch_model = card = None
    if checkpoint is not None:
        if not _torch_installed():
            raise InputError(checkpoint, "--checkpoint needs torch (to load the weights and export them)",
                             "install dfmvr[train], or pass an exported graph with --onnx")
        from ..export.pipeline import load_for_export

        echo(f"loading {checkpoint} ...")
        torch_model, card, what = load_for_export(str(checkpoint))
        desc["checkpoint"] = what
        if onnx is None and "onnxruntime" in backends:
            from ..export.onnx_export import export_onnx

            workdir = Path(workdir or tempfile.mkdtemp(prefix="dfmvr-bench-"))
            onnx = workdir / f"{card.variant}.onnx"
            echo(f"exporting {what} to {onnx} ...")
            start = time.perf_counter()
            export_onnx(torch_model, onnx, card)
            desc["onnx_exported_s"] = round(time.perf_counter() - start, 1)
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
    desc["variant"] = artifact.card.variant
    return Sources(card=artifact.card, artifact=artifact, torch_model=torch_model,
                   onnx_path=Path(onnx) if onnx is not None else None,
                   engine_path=Path(engine) if engine is not None else None, description=desc)


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
    report = {"format": REPORT_FORMAT, "version": 1, "model": sources.description,
              "face_model": {"name": model.identity().get("name"), "num_vertices": int(model.num_vertices),
                             "num_triangles": int(model.num_triangles)},
              "settings": {"backends": list(backends), "batches": list(batches), "iters": iters, "warmup": warmup,
                           "threads": threads, "formats": list(formats),
                           "inputs": "synthetic aligned 224x224 PNG triplets (decode + crop check, no detection)"},
              "environment": environment_stamp(threads), "backends": {}, "unavailable": {}}
    work = Path(tempfile.mkdtemp(prefix="dfmvr-bench-run-"))
    try:
        triplets = write_triplets(work / "inputs", model, sources.card.camera_obj(), max(batches))
        pipes = {}
        try:
            for name in backends:
                reason = availability(name, torch_model=sources.torch_model is not None,
                                      onnx=sources.onnx_path is not None, engine=sources.engine_path is not None,
                                      gpu=gpu)
                if reason:
                    report["unavailable"][name] = reason
                    echo(f"{name}: unavailable ({reason})")
                    continue
                runner = make_runner(name, torch_model=sources.torch_model, onnx_path=sources.onnx_path,
                                     engine_path=sources.engine_path, threads=threads)
                pipe = Pipeline(sources.artifact, model, runner, aligned=True, device="cpu",
                                keep_photos="png" in formats)
                try:
                    pipe.activate()
                    _one_iteration(pipe, triplets[:1], work / "out", formats)     # smoke run
                except Exception as exc:      # a backend that cannot run is reported, not fatal
                    pipe.deactivate()
                    report["unavailable"][name] = f"failed: {type(exc).__name__}: {exc}"[:500]
                    echo(f"{name}: failed ({exc})")
                    continue
                pipes[name] = pipe
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
                for name in pipes:
                    rows[name].append({"batch": b, "end_to_end": summarize(walls[name], b),
                                       "stages": {s: summarize(v, b) for s, v in stages[name].items()}})
                    echo(f"{name}: batch {b}: median {rows[name][-1]['end_to_end']['median_ms']:.1f} ms "
                         f"(network {rows[name][-1]['stages']['network']['median_ms']:.1f} ms)")
        finally:
            for pipe in pipes.values():
                pipe.deactivate()
        for name, pipe in pipes.items():
            report["backends"][name] = {"runner": type(pipe.runner).__name__, "batches": rows[name]}
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
