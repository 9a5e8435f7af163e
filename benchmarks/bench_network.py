"""The network stage alone: PyTorch eager vs ONNX Runtime under several session configurations,
all in one run on the same inputs (numbers, not tests).

    python -m benchmarks.bench_network --onnx model.onnx --checkpoint tiny --batch 1,4 --iters 5
    python -m benchmarks.bench_network --onnx paper.onnx --checkpoint paper --batch 1 --iters 3 --warmup 1

``--checkpoint`` gives the torch weights, timed twice: ``torch`` (the model as shipped, involution =
our eager custom op) and ``torch_unfold`` (the same model with the involution computed by the
``F.unfold`` formulation, PyTorch's best eager involution here -- the stricter baseline) (a variant name re-creates the seed-0 weights that
``dfmvr-export <variant>`` exported, so the two backends run the same model). ORT configurations:

- ``shipped``   ``dfmvr.runtime.runners.OnnxrtRunner`` exactly as the runtime builds it (threads=None);
- ``threads``   the same with intra-op threads = os.cpu_count() (inter-op 1);
- ``nospin``    ``threads`` + ``session.intra_op.allow_spinning = 0`` (no busy-waiting worker threads);
- ``basic``     ``threads`` at ORT_ENABLE_BASIC: constant folding and redundancy removal only;
- ``extended``  ``threads`` at ORT_ENABLE_EXTENDED: + node fusions (Conv+BN+ReLU...), without the NCHWc
                layout transformation of ENABLE_ALL;
- ``profile``   ``threads`` with ORT's profiler: per-op-type time shares go into the JSON.
- ``qdq_cleanup`` ``threads`` + ``session.enable_quant_qdq_cleanup = 1`` (for int8 QDQ graphs: drops the
                Q -> DQ pairs left around float ops; used by ``bench_int8.py``, not a default here).

Writes benchmarks/results/bench_network_<variant>.json (medians in ms, ratios to torch, GFLOP/s,
GEMM rate measured in the same run, the load average before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from benchmarks._common import CONFIGS, REPO, interleaved_times, op_shares, ort_session
from dfmvr.atomic import atomic_write_text
from dfmvr.bench.environment import environment_stamp
from dfmvr.bench.flops import count_flops
from dfmvr.bench.gemm import gemm_rate_gflops
from dfmvr.bench.stats import summarize
from dfmvr.card import GRAPH_INPUT


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--checkpoint", default=None, help="torch weights (checkpoint, 'default' or a variant name)")
    ap.add_argument("--batch", default="1")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--gemm-size", type=int, default=2048)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    batches = [int(b) for b in args.batch.split(",")]
    configs = [c for c in args.configs.split(",") if c]
    load_before = os.getloadavg()[0]
    flops = count_flops(args.onnx, batch=1)
    rng = np.random.default_rng(0)
    inputs = {b: rng.uniform(-1, 1, (b, 3, 3, 224, 224)).astype(np.float32) for b in batches}
    # Every backend/configuration is built first, then the timed calls are interleaved round-robin
    # (iteration i of every configuration before iteration i+1 of any), so that a shared machine's
    # changing load falls on all of them alike.
    runs: dict = {}
    sessions = {}
    torch_threads = None
    tmp = tempfile.TemporaryDirectory()
    if args.checkpoint:
        import importlib

        import torch

        from dfmvr.bench.backends import TorchEagerRunner
        from dfmvr.export.pipeline import load_for_export

        inv_module = importlib.import_module("dfmvr.models.involution")
        shipped_op = inv_module.involution
        model, card, _ = load_for_export(args.checkpoint)
        runner = TorchEagerRunner(model).activate()
        torch_threads = torch.get_num_threads()

        def torch_call(op):
            def call(x):
                # torch_unfold: the same eager model with Involution.forward calling F.unfold's formulation
                inv_module.involution = op
                try:
                    return runner.infer({GRAPH_INPUT: x})
                finally:
                    inv_module.involution = shipped_op
            return call
        runs["torch"] = torch_call(shipped_op)
        runs["torch_unfold"] = torch_call(inv_module.involution_unfold)
    for config in configs:
        runs[config], sessions[config] = ort_session(args.onnx, config, tmp.name)
    times = interleaved_times(runs, inputs, batches, args.iters, args.warmup)
    rows = {name: {b: summarize(times[(name, b)], b) for b in batches} for name in runs}
    profiles = op_shares(sessions["profile"].end_profiling()) if "profile" in sessions else {}
    tmp.cleanup()
    gemm = gemm_rate_gflops(n=args.gemm_size, threads=os.cpu_count())
    best_gemm = gemm["best_gflops"]
    table = []
    for name, per_batch in rows.items():
        for b in batches:
            s = per_batch[b]
            gf = flops["total"] * b / (s["median_ms"] * 1e-3) / 1e9
            row = {"backend": name, "batch": b, **s, "times_ms": times[(name, b)], "gflops": gf,
                   "gflops_best_call": flops["total"] * b / (s["min_ms"] * 1e-3) / 1e9, "fraction_of_gemm": gf / best_gemm}
            for ref in ("torch", "torch_unfold"):
                if ref in rows:
                    row[f"speedup_vs_{ref}"] = rows[ref][b]["median_ms"] / s["median_ms"]
                    # paired: the ratio within each round-robin round (same load), then its median
                    row[f"speedup_vs_{ref}_paired"] = float(np.median(np.array(times[(ref, b)]) / np.array(times[(name, b)])))
            table.append(row)
    onnx_name = Path(args.onnx).stem
    result = {"benchmark": "network stage: torch eager vs ONNX Runtime session configurations",
              "onnx": args.onnx, "checkpoint": args.checkpoint, "iters": args.iters, "warmup": args.warmup,
              "flops_per_triplet": flops["total"], "flops_by_op": flops["by_op"], "gemm": gemm,
              "gemm_best_gflops": best_gemm, "torch_threads": torch_threads,
              "rows": table, "ort_profile": profiles,
              "environment": environment_stamp(os.cpu_count()),
              "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]}}
    out = Path(args.out or REPO / "benchmarks" / "results" / f"bench_network_{onnx_name}.json")
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    for r in table:
        print(f"{r['backend']:12s} b{r['batch']:<3d} median {r['median_ms']:9.1f} ms min {r['min_ms']:9.1f} ms "
              f"x torch {r.get('speedup_vs_torch', float('nan')):5.2f} (paired {r.get('speedup_vs_torch_paired', float('nan')):5.2f}) "
              f"x unfold {r.get('speedup_vs_torch_unfold', float('nan')):5.2f} "
              f"(paired {r.get('speedup_vs_torch_unfold_paired', float('nan')):5.2f}) {r['gflops']:7.1f} GFLOP/s "
              f"({100 * r['fraction_of_gemm']:.0f}% of GEMM {best_gemm:.0f})")
    print("ORT op shares:", profiles, "->", out)
    return result


if __name__ == "__main__":
    main()
