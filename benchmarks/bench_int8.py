"""The int8 graph against PyTorch eager and the fp32 graph: one interleaved run, with its accuracy.

    dfmvr-export paper --out /tmp/paper_export --int8
    python -m benchmarks.bench_int8 --export /tmp/paper_export --checkpoint paper --batch 1 --iters 8
    python -m benchmarks.bench_int8 --export /tmp/tiny_export --checkpoint tiny --batch 1,4 --iters 10

Candidates, all built first and then timed round-robin (iteration i of each before iteration i+1 of
any, as in ``bench_network.py``, whose session builder this reuses):

- ``torch``             PyTorch eager fp32, the model as shipped (``--checkpoint``: a variant name
                        re-creates the seed-0 weights ``dfmvr-export <variant>`` exported);
- ``ort_fp32``          ``model.onnx`` in ``dfmvr.runtime.runners.OnnxrtRunner`` as the runtime builds it;
- ``ort_int8``          ``model.int8.onnx``, the same runner (what ``dfmvr-run --onnx model.int8.onnx`` does);
- ``ort_int8_cleanup``  int8 + ``session.enable_quant_qdq_cleanup`` (drops Q -> DQ pairs around float ops);
- ``ort_int8_nospin``   int8 + no spinning worker threads.

Inputs: rendered synthetic triplets (``parity_inputs``, seed 0, every second one without its right
view), normalised as the runtime does. Accuracy, on ``--accuracy-batch`` such triplets: the int8 graph
against torch fp32 and against the fp32 graph (coefficient max / mean abs error, posed-mesh difference
in mm through ``dfmvr.face``, label agreement). Yardsticks measured in the same run: the fp32 GEMM rate
(``dfmvr.bench.gemm``) and the u8 x s8 int8 GEMM rate of ONNX Runtime (MatMulInteger, n^3).

Writes benchmarks/results/bench_network_<variant>_int8.json (medians, ratios to torch eager, paired
ratios, accuracy, int8 op shares from ORT's profiler, load average before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from benchmarks._common import REPO, interleaved_times, op_shares, ort_session
from dfmvr.atomic import atomic_write_text
from dfmvr.bench.environment import environment_stamp
from dfmvr.bench.flops import count_flops
from dfmvr.bench.gemm import gemm_rate_gflops
from dfmvr.bench.stats import summarize, time_calls
from dfmvr.card import GRAPH_INPUT

# candidate -> (graph, bench_network session config)
ORT_CANDIDATES = {"ort_fp32": ("fp32", "shipped"), "ort_int8": ("int8", "shipped"),
                  "ort_int8_cleanup": ("int8", "qdq_cleanup"), "ort_int8_nospin": ("int8", "nospin")}


def int8_gemm_rate(n: int = 2048, iters: int = 10, warmup: int = 2) -> dict:
    """u8 x s8 -> s32 GEMM rate (GOP/s, 2 n^3 ops) of ONNX Runtime's MatMulInteger, constant B (prepacked)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (n, n), dtype=np.uint8)
    b = rng.integers(-128, 128, (n, n), dtype=np.int8)
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["A", "B"], ["C"])], "gemm_int8",
                              [helper.make_tensor_value_info("A", TensorProto.UINT8, [n, n])],
                              [helper.make_tensor_value_info("C", TensorProto.INT32, [n, n])],
                              [numpy_helper.from_array(b, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    t = time_calls(lambda: sess.run(None, {"A": a}), iters, warmup)
    ops = 2.0 * n ** 3
    return {"n": n, "median_gops": ops / (float(np.median(t)) * 1e-3) / 1e9,
            "best_gops": ops / (float(np.min(t)) * 1e-3) / 1e9}


def accuracy(model, card, fp32_path, int8_path, batch: int) -> dict:
    """int8 vs torch fp32 and vs the fp32 graph on ``batch`` rendered triplets (parity.compare)."""
    from dfmvr.export import parity
    from dfmvr.face.synthetic import default_face_model
    from dfmvr.models.runner import TorchRunner

    images = parity.parity_inputs(card, batch=batch, seed=0)
    face = default_face_model()
    torch_out = parity.RunnerCall(TorchRunner(model))(images)
    fp32_out = parity.OnnxrtRunner(fp32_path)(images)
    int8_out = parity.OnnxrtRunner(int8_path)(images)
    out = {}
    for name, ref, cand, precision in (("ort_fp32_vs_torch", torch_out, fp32_out, "fp32"),
                                       ("ort_int8_vs_torch", torch_out, int8_out, "int8"),
                                       ("ort_int8_vs_ort_fp32", fp32_out, int8_out, "int8")):
        out[name] = parity.compare(ref, cand, card, face, name, precision,
                                   reference_name=name.split("_vs_")[1]).to_dict()
    # how much the outputs vary across triplets: random weights give nearly input-independent outputs
    full = torch_out[0][0::2]                                 # the triplets with all three views
    spread = full.std(0) if len(full) > 1 else np.zeros(full.shape[1])
    out["torch_coefficients_max_abs"] = float(np.abs(torch_out[0]).max())
    out["torch_coefficients_std_across_triplets_mean"] = float(spread.mean())
    out["triplets"] = batch
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", required=True, help="folder with model.onnx and model.int8.onnx (dfmvr-export --int8)")
    ap.add_argument("--checkpoint", required=True, help="torch weights: checkpoint, 'default' or a variant name")
    ap.add_argument("--batch", default="1")
    ap.add_argument("--iters", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--candidates", default="torch," + ",".join(ORT_CANDIDATES))
    ap.add_argument("--accuracy-batch", type=int, default=4)
    ap.add_argument("--gemm-size", type=int, default=2048)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    import torch

    from dfmvr.bench.backends import TorchEagerRunner
    from dfmvr.export import parity
    from dfmvr.export.onnx_export import read_card
    from dfmvr.export.pipeline import load_for_export

    load_before = os.getloadavg()
    paths = {"fp32": Path(args.export) / "model.onnx", "int8": Path(args.export) / "model.int8.onnx"}
    batches = [int(b) for b in args.batch.split(",")]
    wanted = [c for c in args.candidates.split(",") if c]
    flops = count_flops(str(paths["fp32"]), batch=1)
    model, card, _ = load_for_export(args.checkpoint)
    import onnx

    int8_card = read_card(onnx.load(str(paths["int8"]), load_external_data=False))
    inputs = {b: parity.parity_inputs(card, batch=b, seed=0) for b in batches}
    runs = {}
    if "torch" in wanted:
        runner = TorchEagerRunner(model).activate()
        runs["torch"] = lambda x: runner.infer({GRAPH_INPUT: x})
    for name in wanted:
        if name in ORT_CANDIDATES:
            graph, config = ORT_CANDIDATES[name]
            runs[name], _ = ort_session(paths[graph], config)
    times = interleaved_times(runs, inputs, batches, args.iters, args.warmup)
    load_after_timing = os.getloadavg()
    runs.clear()
    # after the timed rounds: yardsticks, the int8 profile, accuracy (none of it competes with timing)
    gemm = gemm_rate_gflops(n=args.gemm_size, threads=os.cpu_count())
    gemm8 = int8_gemm_rate(n=args.gemm_size)
    with tempfile.TemporaryDirectory() as tmp:
        _, prof_sess = ort_session(paths["int8"], "profile", tmp)
        for _ in range(3):
            prof_sess.run(None, {GRAPH_INPUT: inputs[batches[0]]})
        int8_profile = op_shares(prof_sess.end_profiling())
    acc = accuracy(model, card, paths["fp32"], paths["int8"], args.accuracy_batch)
    rows = []
    for (name, b), t in times.items():
        row = {"candidate": name, "batch": b, **summarize(t, b), "times_ms": t,
               "gflops_fp32_equivalent": flops["total"] * b / (float(np.median(t)) * 1e-3) / 1e9}
        if ("torch", b) in times:
            ref = np.array(times[("torch", b)])
            row["speedup_vs_torch"] = float(np.median(ref)) / float(np.median(t))
            row["speedup_vs_torch_paired"] = float(np.median(ref / np.array(t)))   # ratio within each round
        if ("ort_fp32", b) in times:
            row["speedup_vs_ort_fp32"] = float(np.median(times[("ort_fp32", b)])) / float(np.median(t))
        rows.append(row)
    result = {"benchmark": "network stage: torch eager fp32 vs ONNX Runtime fp32 vs ONNX Runtime int8 (one run)",
              "variant": card.variant, "export": str(args.export), "checkpoint": args.checkpoint,
              "weights": card.provenance, "iters": args.iters, "warmup": args.warmup,
              "inputs": "rendered synthetic triplets (parity_inputs seed 0), every second one without its right view",
              "flops_per_triplet": flops["total"], "gemm_fp32": gemm, "gemm_int8": gemm8,
              "torch_threads": torch.get_num_threads(), "quantization": int8_card.provenance.get("quantization"),
              "rows": rows, "accuracy": acc, "ort_int8_profile": int8_profile,
              "environment": environment_stamp(os.cpu_count()),
              "load_average": {"before": load_before, "after_timing": load_after_timing, "after": os.getloadavg()}}
    out = Path(args.out or REPO / "benchmarks" / "results" / f"bench_network_{card.variant}_int8.json")
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    for r in rows:
        print(f"{r['candidate']:18s} b{r['batch']:<2d} median {r['median_ms']:8.1f} ms  min {r['min_ms']:8.1f} ms  "
              f"x torch {r.get('speedup_vs_torch', float('nan')):5.2f} (paired {r.get('speedup_vs_torch_paired', float('nan')):5.2f})  "
              f"x ort fp32 {r.get('speedup_vs_ort_fp32', float('nan')):5.2f}")
    for name in ("ort_fp32_vs_torch", "ort_int8_vs_torch", "ort_int8_vs_ort_fp32"):
        a = acc[name]
        print(f"{name:22s} coef max {a['coefficients_max_abs']:.3g} mean {a['coefficients_mean_abs']:.3g}  mesh max "
              f"{a['mesh_max_mm']:.3g} mm mean {a['mesh_mean_mm']:.3g} mm  labels {a['labels_agreement']:.4f}")
    print(f"GEMM fp32 best {gemm['best_gflops']:.0f} GFLOP/s, int8 best {gemm8['best_gops']:.0f} GOP/s; "
          f"load {load_before} -> {os.getloadavg()} -> {out}")
    return result


if __name__ == "__main__":
    main()
