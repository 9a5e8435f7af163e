"""Involution micro-benchmark on RedNet-50's shapes (numbers, not tests).

    python -m benchmarks.bench_involution [--batch 1] [--repeats 5] [--threads 2]

Per shape (channels, kernel, stride, input size), batch ``--batch``, median ms of:
- ``torch_unfold``  PyTorch ``F.unfold`` reference (``involution_unfold``: materialises [B, C*K*K, Ho*Wo]);
- ``torch_op``      our eager custom op ``torch.ops.dfmvr.Involution`` (K*K strided multiply-adds);
- ``ort_function``  the exported ``dfmvr::Involution`` node with its standard-op function body in ONNX
                    Runtime (CPU provider, ORT_ENABLE_ALL);
- ``cuda_op``       the custom op on a CUDA tensor, only where torch sees a GPU (never on this machine).
Every output is checked against the numpy reference (max abs diff recorded). Writes
benchmarks/results/bench_involution.json.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

from benchmarks._common import REDNET_SHAPES, REPO
from dfmvr.atomic import atomic_write_text
from dfmvr.bench.environment import environment_stamp
from dfmvr.bench.stats import summarize, time_calls
from dfmvr.export.involution_onnx import single_involution_model
from dfmvr.kernels.op import involution_output_size, involution_reference
from dfmvr.models.involution import involution, involution_unfold


def main(argv=None) -> dict:
    import onnxruntime as ort

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "bench_involution.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = args.threads, 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    gpu = torch.cuda.is_available()
    rng = np.random.default_rng(0)
    rows, load_before = [], os.getloadavg()[0]
    for c, k, s, size in REDNET_SHAPES:
        g = c // 16
        ho = involution_output_size(size, k, s)
        x = rng.standard_normal((args.batch, c, size, size), dtype=np.float32)
        w = rng.standard_normal((args.batch, g * k * k, ho, ho), dtype=np.float32)
        ref = involution_reference(x, w, k, s, g)
        tx, tw = torch.from_numpy(x), torch.from_numpy(w)
        sess = ort.InferenceSession(single_involution_model(c, k, s, g).SerializeToString(), opts,
                                    providers=["CPUExecutionProvider"])
        impls = {
            "torch_unfold": lambda: involution_unfold(tx, tw, k, s, g).numpy(),
            "torch_op": lambda: involution(tx, tw, k, s, g).numpy(),
            "ort_function": lambda: sess.run(None, {"X": x, "W": w})[0],
        }
        if gpu:   # pragma: no cover - no GPU here
            cx, cw = tx.cuda(), tw.cuda()

            def cuda_op():
                y = involution(cx, cw, k, s, g)
                torch.cuda.synchronize()
                return y.cpu().numpy()
            impls["cuda_op"] = cuda_op
        row = {"channels": c, "kernel": k, "stride": s, "size": size, "batch": args.batch,
               "flops": 2.0 * args.batch * c * ho * ho * k * k}
        with torch.inference_mode():
            for name, fn in impls.items():
                row[f"{name}_max_abs_diff"] = float(np.abs(fn() - ref).max())
                row[f"{name}_ms"] = summarize(time_calls(fn, args.repeats, 1))["median_ms"]
        rows.append(row)
        print({k2: (round(v, 3) if isinstance(v, float) else v) for k2, v in row.items() if not k2.endswith("diff")},
              flush=True)
    names = [n for n in ("torch_unfold", "torch_op", "ort_function", "cuda_op") if f"{n}_ms" in rows[0]]
    totals = {n: round(sum(r[f"{n}_ms"] for r in rows), 2) for n in names}
    result = {"benchmark": "involution: torch unfold vs eager custom op vs ORT function body",
              "batch": args.batch, "repeats": args.repeats, "threads": args.threads, "rows": rows,
              "totals_ms": totals, "speedup_vs_unfold": {n: round(totals["torch_unfold"] / totals[n], 2) for n in names},
              "cuda": "measured" if gpu else "not measured: no CUDA GPU on this machine",
              "environment": environment_stamp(args.threads),
              "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]}}
    atomic_write_text(Path(args.out), json.dumps(result, indent=2) + "\n")
    print("totals (ms):", totals, "->", args.out)
    return result


if __name__ == "__main__":
    main()
