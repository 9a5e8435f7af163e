"""Code shared by the benchmark scripts (imported as ``benchmarks._common``; run the scripts with
``python -m benchmarks.<name>`` from the repository root).

- ``REDNET_SHAPES``      the involution shapes of RedNet-50 (bench_involution, bench_export_body);
- ``ort_session``        ONNX Runtime sessions under named configurations (bench_network, bench_int8);
- ``op_shares``          per-op-type time shares from an ORT profile;
- ``interleaved_times``  round-robin timing of several candidates (bench_network, bench_int8);
- ``onnx_graph_medians`` the same for ONNX graphs in the runtime's runner, as medians
                         (bench_keypoints_output, bench_int8_weights);
- ``painter_coverage``   run the overlay painter with another coverage method (bench_painter,
                         bench_e2e_overlap).
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

from dfmvr.card import GRAPH_INPUT

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

# (channels, kernel, stride, H=W) of the involutions in RedNet-50 at a 224 input (stem + first of
# each stage's blocks with its stride + a stride-1 block per stage).
REDNET_SHAPES = [(32, 3, 1, 112), (64, 7, 1, 56), (128, 7, 2, 56), (128, 7, 1, 28),
                 (256, 7, 2, 28), (256, 7, 1, 14), (512, 7, 2, 14), (512, 7, 1, 7)]

CONFIGS = ("shipped", "threads", "nospin", "basic", "extended", "profile")


def ort_session(path, config: str, profile_dir=None):
    import onnxruntime as ort

    from dfmvr.runtime.runners import OnnxrtRunner

    if config == "shipped":
        runner = OnnxrtRunner(path).activate()
        return lambda x: runner.infer({GRAPH_INPUT: x}), runner.session
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = os.cpu_count()
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if config == "nospin":
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    elif config == "extended":
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    elif config == "basic":
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    elif config == "profile":
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(profile_dir) / "ort")
    elif config == "qdq_cleanup":
        opts.add_session_config_entry("session.enable_quant_qdq_cleanup", "1")
    elif config != "threads":
        raise ValueError(f"unknown config {config!r}; known: {CONFIGS}")
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {GRAPH_INPUT: x}), sess


def op_shares(profile_json: str) -> dict:
    """ORT profile -> {op type: share of kernel time} (sorted, top 12) and the kernel time per run."""
    events = json.loads(Path(profile_json).read_text())
    per_op, runs = defaultdict(float), 0
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            per_op[e["args"].get("op_name", "?")] += e["dur"]
        if e.get("cat") == "Session" and e.get("name") == "model_run":
            runs += 1
    total = sum(per_op.values()) or 1.0
    top = dict(sorted(((k, round(v / total, 4)) for k, v in per_op.items()), key=lambda kv: -kv[1])[:12])
    return {"share": top, "kernel_ms_per_run": round(total / 1e3 / max(runs, 1), 2)}


def interleaved_times(runs: dict, inputs: dict, batches, iters: int, warmup: int) -> dict:
    """{(name, batch): [ms, ...]}: per batch, ``warmup`` untimed calls of every run, then ``iters`` rounds
    in which every run is timed once (round i of all before round i+1 of any)."""
    times = {(name, b): [] for name in runs for b in batches}
    for b in batches:
        for run in runs.values():
            for _ in range(warmup):
                run(inputs[b])
        for it in range(iters):
            for name, run in runs.items():
                t0 = time.perf_counter()
                run(inputs[b])
                times[(name, b)].append((time.perf_counter() - t0) * 1e3)
            print(f"batch {b} round {it}:", {n: round(times[(n, b)][-1], 1) for n in runs}, flush=True)
    return times


def onnx_graph_medians(graphs: dict, inputs: dict, batches, iters: int, warmup: int,
                       threads: int | None) -> tuple[dict, dict]:
    """Time ONNX graphs ({name: path}) round-robin in ``OnnxrtRunner`` (as ``dfmvr-run`` runs them) at
    ``threads``: -> ({batch: {name: median ms}}, {name: the graph's output names})."""
    import numpy as np

    from dfmvr.runtime.runners import OnnxrtRunner

    runners = {name: OnnxrtRunner(path, threads=threads).activate() for name, path in graphs.items()}
    try:
        outputs = {name: r.output_names for name, r in runners.items()}
        runs = {name: (lambda x, r=r: r.infer({GRAPH_INPUT: x})) for name, r in runners.items()}
        times = interleaved_times(runs, inputs, batches, iters, warmup)
    finally:
        for r in runners.values():
            r.deactivate()
    return {b: {name: float(np.median(times[(name, b)])) for name in graphs} for b in batches}, outputs


@contextmanager
def painter_coverage(method: str):
    """Within the block, ``paint_mesh`` finds covered pixels with ``method``: ``vectorised`` (what ships,
    ``dfmvr.face.raster.nearest_triangle_image``) or ``opencv_fill`` (one ``cv2.fillConvexPoly`` per
    triangle, the method before); everything else in the painter stays the same."""
    from dfmvr.face import paint, raster

    chosen = {"vectorised": raster.nearest_triangle_image,
              "opencv_fill": raster.nearest_triangle_image_opencv}[method]
    saved = paint.nearest_triangle_image
    paint.nearest_triangle_image = chosen
    try:
        yield
    finally:
        paint.nearest_triangle_image = saved
