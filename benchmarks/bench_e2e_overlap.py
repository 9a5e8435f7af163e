"""End to end vs the network alone, with and without the batch-mode overlap (issue 19 item 3).

On the bundled default model and ``examples/triplet`` copied ``--copies`` times (aligned crops, so
"decode + align" is PNG decoding plus the crop check), one ORT thread by default, this times in one run,
round-robin (round i of every candidate before round i+1 of any):

- ``network``:    ``Pipeline.infer`` alone over the same batches (crops decoded and normalised beforehand):
                  what the network stage allows, triplets/s;
- ``sequential``: ``Pipeline.run(..., overlap=False)``: the stages one after another (the code path
                  before the overlap; the writers themselves are unchanged);
- ``overlap``:    ``Pipeline.run(..., overlap=True)``: decode + align of batch i+1 and writing of batch
                  i-1 in threads while the network of batch i runs.

Process CPU time per triplet is recorded too (less sensitive to the other jobs on a shared machine
than wall time), with the bound it gives for an idle machine (``cpu_estimate_idle``). And, first,
where one triplet's write time goes (``--writer-repeats``, medians): mesh.obj, mesh.ply, coeffs.npz,
result.json, overlay.png = painting (``overlay_image``) + PNG encoding, plus PNG encoder settings
for comparison. All outputs (``--format``, default all five) are written to a temporary folder.

    OMP_NUM_THREADS=1 python -m benchmarks.bench_e2e_overlap --copies 8 --batch 1,4 --rounds 5 \\
        --json benchmarks/results/e2e_overlap.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._common import REPO, RESULTS, painter_coverage


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"loadavg {os.getloadavg()}"


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        return next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "?")
    except (OSError, subprocess.SubprocessError):
        return "?"


def _median(xs) -> float:
    return float(statistics.median(xs))


def _with_png_params(overlay, params, fn):
    saved = overlay.PNG_PARAMS
    overlay.PNG_PARAMS = params
    try:
        return fn()
    finally:
        overlay.PNG_PARAMS = saved


def _with_overlay_triangles(pipe, triangles, fn):
    saved = pipe._overlay_tris
    pipe._overlay_tris = np.asarray(triangles, np.int32)
    try:
        return fn()
    finally:
        pipe._overlay_tris = saved


def _with_opencv_fill(fn):
    """``fn()`` with the painter's old per-triangle OpenCV fill, for comparison in the same run."""
    with painter_coverage("opencv_fill"):
        return fn()


def writer_breakdown(pipe, rec, repeats: int) -> dict:
    """Median ms of each writer on one reconstruction (write_reconstruction's parts, and PNG settings)."""
    import cv2

    from dfmvr.face import meshio
    from dfmvr.runtime import outputs, overlay

    tmp = Path(tempfile.mkdtemp(prefix="dfmvr-writers-"))
    verts, colors = outputs._front_mesh(rec)
    tris = pipe.face_model.triangles
    image = overlay.overlay_image(pipe, rec)
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    png = lambda *p: cv2.imencode(".png", bgr, list(p))  # noqa: E731
    defaults = ("obj", "ply", "npz", "json", "png")          # dfmvr-run's default --format
    with_jpg = ("obj", "ply", "npz", "json", "jpg")
    parts = {
        "obj": lambda: meshio.write_obj(tmp / "m.obj", verts, tris, colors=colors),
        "ply": lambda: meshio.write_ply(tmp / "m.ply", verts, tris, colors=colors),
        "npz": lambda: outputs._write_npz(tmp / "c.npz", pipe, rec),
        "json": lambda: outputs.atomic_write_text(tmp / "r.json", json.dumps(outputs._result_json(pipe, rec),
                                                                            indent=2)),
        "png_paint": lambda: overlay.overlay_image(pipe, rec),
        "png_paint_opencv_fill": lambda: _with_opencv_fill(lambda: overlay.overlay_image(pipe, rec)),
        # the same painter on every triangle of the face model (what painted before OVERLAY_TRIANGLES
        # went from 8,000 to 4,000 for the 5,995-triangle bundled model)
        "png_paint_all_triangles": lambda: _with_overlay_triangles(pipe, tris, lambda: overlay.overlay_image(pipe, rec)),
        "png_encode": lambda: png(*overlay.PNG_PARAMS),          # as write_overlay encodes
        "png_encode_opencv_default": lambda: png(),
        "png_total": lambda: overlay.write_overlay(tmp / "o.png", pipe, rec),
        "write_all": lambda: outputs.write_reconstruction(pipe, rec, tmp / "all", defaults),
        "write_all_opencv_fill": lambda: _with_opencv_fill(
            lambda: outputs.write_reconstruction(pipe, rec, tmp / "all", defaults)),
        "write_all_before(opencv_default_png)": lambda: _with_png_params(
            overlay, [], lambda: outputs.write_reconstruction(pipe, rec, tmp / "all", defaults)),
        # --format obj,ply,npz,json,jpg: the overlay as JPEG (overlay.JPEG_PARAMS)
        "jpg_encode": lambda: overlay.encode_overlay(image, "jpg"),
        "write_all_jpg_overlay": lambda: outputs.write_reconstruction(pipe, rec, tmp / "all", with_jpg),
        "write_all_jpg_overlay_opencv_fill": lambda: _with_opencv_fill(
            lambda: outputs.write_reconstruction(pipe, rec, tmp / "all", with_jpg)),
        # encoder alternatives (same pixels), for the record
        "png_encode_level0": lambda: png(cv2.IMWRITE_PNG_COMPRESSION, 0),
        "png_encode_level1": lambda: png(cv2.IMWRITE_PNG_COMPRESSION, 1),
    }
    times = {k: [] for k in parts}
    try:
        for f in parts.values():
            f()
        for _ in range(repeats):
            for k, f in parts.items():
                t0 = time.perf_counter()
                f()
                times[k].append((time.perf_counter() - t0) * 1e3)
        sizes = {"png_bytes": len(png(*overlay.PNG_PARAMS)[1]), "png_opencv_default_bytes": len(png()[1]),
                 "png_level0_bytes": len(png(cv2.IMWRITE_PNG_COMPRESSION, 0)[1]),
                 "png_level1_bytes": len(png(cv2.IMWRITE_PNG_COMPRESSION, 1)[1]),
                 "jpg_bytes": len(overlay.encode_overlay(image, "jpg"))}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: round(_median(v), 2) for k, v in times.items()}
    return {"median_ms": med, "repeats": repeats, **sizes, "overlay_image": list(image.shape),
            "painted_triangles_per_view": int(len(pipe.overlay_triangles)),
            "mesh": {"vertices": int(verts.shape[0]), "triangles": int(tris.shape[0])}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=8, help="how many copies of examples/triplet (default 8)")
    ap.add_argument("--batch", default="1,4", help="batch sizes, comma-separated (default 1,4)")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds per candidate (default 5)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds per candidate (default 1)")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default 1)")
    ap.add_argument("--format", default="obj,ply,npz,json,png", help="outputs written (default all five)")
    ap.add_argument("--writer-repeats", type=int, default=15, help="repeats of the per-writer timing (0: skip)")
    ap.add_argument("--onnx", default=None, help="a graph instead of the bundled default model")
    ap.add_argument("--json", default=None, help=f"write the report here (e.g. {RESULTS / 'e2e_overlap.json'})")
    args = ap.parse_args(argv)

    from dfmvr.bench.environment import environment_stamp
    from dfmvr.runtime.inputs import discover_triplets
    from dfmvr.runtime.outputs import needs_photos, parse_formats
    from dfmvr.runtime.pipeline import Pipeline

    batches = [int(b) for b in args.batch.split(",") if b.strip()]
    formats = parse_formats(args.format)
    report = {"benchmark": "end to end vs network alone, batch-mode overlap on/off (issue 19 item 3)",
              "command": " ".join(["python -m benchmarks.bench_e2e_overlap", *(argv if argv is not None
                                                                               else sys.argv[1:])]),
              "machine": {"lscpu_model_name": _cpu_model(), "logical_cpus": os.cpu_count(),
                          "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
              "uptime_before": _uptime(), "load_average_1min_before": round(os.getloadavg()[0], 2),
              "settings": {"copies": args.copies, "batches": batches, "rounds": args.rounds, "warmup": args.warmup,
                           "ort_threads": args.threads, "formats": list(formats),
                           "inputs": "examples/triplet (aligned 224 crops) copied N times; --aligned"},
              "environment": environment_stamp(args.threads)}
    work = Path(tempfile.mkdtemp(prefix="dfmvr-e2e-overlap-"))
    try:
        for i in range(args.copies):
            shutil.copytree(REPO / "examples" / "triplet", work / "in" / f"t{i:03d}")
        triplets, problems = discover_triplets([work / "in"])
        assert len(triplets) == args.copies and not problems, problems
        with Pipeline.from_options(onnx=args.onnx, aligned=True, threads=args.threads,
                                   keep_photos=needs_photos(formats)) as pipe:
            report["model"] = pipe.artifact.model_id
            prepared = [pipe.prepare(t) for t in triplets]
            if args.writer_repeats > 0:
                print("timing the writers ...", flush=True)
                rec = pipe.reconstruct(prepared[:1])[0]
                report["writers"] = writer_breakdown(pipe, rec, args.writer_repeats)
                print(json.dumps(report["writers"]["median_ms"]), flush=True)
            report["batches"] = []
            for b in batches:
                inputs = [pipe.normalise(np.stack([p.crops for p in prepared[lo:lo + b]]))
                          for lo in range(0, len(prepared), b)]
                runs = {"network": lambda: [pipe.infer(x) for x in inputs],
                        "sequential": lambda: pipe.run(triplets, work / "out", formats, batch=b, overlap=False),
                        "overlap": lambda: pipe.run(triplets, work / "out", formats, batch=b, overlap=True)}
                walls = {k: [] for k in runs}
                cpus = {k: [] for k in runs}          # process CPU seconds (all threads): load-robust
                stage_ms = {k: [] for k in ("sequential", "overlap")}
                for r in range(args.warmup + args.rounds):
                    for name, fn in runs.items():
                        shutil.rmtree(work / "out", ignore_errors=True)
                        t0, c0 = time.perf_counter(), time.process_time()
                        res = fn()
                        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                        if r < args.warmup:
                            continue
                        walls[name].append(wall)
                        cpus[name].append(cpu)
                        if name in stage_ms:
                            assert len(res.done) == len(triplets) and not res.failed
                            stage_ms[name].append({k: v / len(triplets) for k, v in res.times.to_ms().items()})
                    if r >= args.warmup:
                        print(f"batch {b} round {r - args.warmup}: "
                              + ", ".join(f"{k} {args.copies / walls[k][-1]:.2f}/s" for k in runs), flush=True)
                row = {"batch": b}
                for name in runs:
                    med = _median(walls[name])
                    row[name] = {"median_wall_s": round(med, 4), "triplets_per_s": round(args.copies / med, 3),
                                 "ms_per_triplet": round(med / args.copies * 1e3, 2),
                                 "walls_s": [round(w, 4) for w in walls[name]],
                                 "cpu_ms_per_triplet": round(_median(cpus[name]) / args.copies * 1e3, 2)}
                for name, rows in stage_ms.items():
                    row[name]["mean_stage_ms_per_triplet(median over rounds)"] = {
                        k: round(_median([s[k] for s in rows]), 2) for k in rows[0]}
                net = row["network"]["triplets_per_s"]
                for name in ("sequential", "overlap"):
                    tps = row[name]["triplets_per_s"]
                    row[name]["fraction_of_network_rate"] = round(tps / net, 3)
                    # everything but the network, as a share of the end-to-end time per triplet
                    row[name]["non_network_share"] = round(1.0 - row["network"]["ms_per_triplet"]
                                                           / row[name]["ms_per_triplet"], 3)
                # CPU time does not depend on the other jobs' load as much as wall time does: with the
                # network on one core and everything else on another (an idle 2-core machine, 1 ORT thread),
                # a perfect overlap runs at 1 / max(network CPU, everything else's CPU) per triplet
                net_cpu = row["network"]["cpu_ms_per_triplet"]
                rest_cpu = row["sequential"]["cpu_ms_per_triplet"] - net_cpu
                row["cpu_estimate_idle"] = {
                    "network_cpu_ms": net_cpu, "everything_else_cpu_ms": round(rest_cpu, 2),
                    "non_network_share_sequential": round(rest_cpu / (rest_cpu + net_cpu), 3),
                    "overlap_bound_fraction_of_network_rate": round(net_cpu / max(net_cpu, rest_cpu), 3)}
                row["overlap_speedup_vs_sequential"] = round(row["overlap"]["triplets_per_s"]
                                                             / row["sequential"]["triplets_per_s"], 3)
                report["batches"].append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["uptime_after"] = _uptime()
    report["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    text = json.dumps(report, indent=1)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    for row in report["batches"]:
        print(f"batch {row['batch']}: network {row['network']['triplets_per_s']}/s, "
              f"sequential {row['sequential']['triplets_per_s']}/s "
              f"({row['sequential']['fraction_of_network_rate']:.0%} of network), "
              f"overlap {row['overlap']['triplets_per_s']}/s ({row['overlap']['fraction_of_network_rate']:.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
