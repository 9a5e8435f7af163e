"""Measure formulations of the involution function body in ONNX Runtime (CPU) on RedNet's shapes.

    python -m benchmarks.bench_export_body [--out benchmarks/results/export_involution_body.json]
    python -m benchmarks.bench_export_body --graph tiny|paper|CHECKPOINT [--batch 1] [--repeats 5]

(Formerly ``dfmvr/export/body_bench.py``: a benchmark, so it lives here, outside the shipped package.)

Compares, per RedNet-50 involution shape at batch 1:
- ``function``      the shipped FunctionProto (gather-matmul), generic in K and stride;
- ``gather_reduce`` a first version of the body: Gather of all taps to [B, C, K*K, Ho, Wo], Mul by the
                    broadcast kernels, ReduceSum over the taps (two passes over a K*K-times tensor);
- ``unrolled``      a graph specialised to one (K, s): Pad + K*K strided Slice/Mul/Add (what a function
                    body cannot be, since it would need one function per attribute value);
- ``torch``    the torch eager op (``dfmvr::Involution``), when torch is importable.
Numbers go to a JSON file; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from benchmarks._common import REDNET_SHAPES
from dfmvr.atomic import atomic_write_text
from dfmvr.export.involution_onnx import OPSET, single_involution_model
from dfmvr.kernels.op import involution_output_size, involution_reference


def _involution_model(name: str, nodes, inits, channels: int, weight_channels: int, size: int,
                      out_size: int) -> onnx.ModelProto:
    """A static-shape graph X [1, C, size, size], W [1, G*K*K, out, out] -> Y [1, C, out, out] of ``nodes``."""
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, channels, size, size]),
         helper.make_tensor_value_info("W", TensorProto.FLOAT, [1, weight_channels, out_size, out_size])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, channels, out_size, out_size])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 10
    return model


def unrolled_model(channels: int, kernel_size: int, stride: int, groups: int, size: int) -> onnx.ModelProto:
    """Static-shape graph: Pad + K*K Slice (strided) x Slice(W) Mul, Add chain."""
    k, s, g, c = kernel_size, stride, groups, channels
    p = (k - 1) // 2
    ho = involution_output_size(size, k, s)
    hp = size + 2 * p
    inits = [helper.make_tensor("pads", TensorProto.INT64, [8], [0, 0, p, p, 0, 0, p, p]),
             helper.make_tensor("xg_shape", TensorProto.INT64, [5], [-1, g, c // g, hp, hp]),
             helper.make_tensor("wg_shape", TensorProto.INT64, [5], [-1, g, k * k, ho, ho]),
             helper.make_tensor("y_shape", TensorProto.INT64, [4], [-1, c, ho, ho]),
             helper.make_tensor("axes_hw", TensorProto.INT64, [2], [3, 4]),
             helper.make_tensor("steps", TensorProto.INT64, [2], [s, s]),
             helper.make_tensor("axis2", TensorProto.INT64, [1], [2])]
    nodes = [helper.make_node("Pad", ["X", "pads"], ["xp"]),
             helper.make_node("Reshape", ["xp", "xg_shape"], ["xg"]),
             helper.make_node("Reshape", ["W", "wg_shape"], ["wg"])]
    acc = None
    for di in range(k):
        for dj in range(k):
            t = di * k + dj
            inits += [helper.make_tensor(f"st{t}", TensorProto.INT64, [2], [di, dj]),
                      helper.make_tensor(f"en{t}", TensorProto.INT64, [2], [di + s * (ho - 1) + 1, dj + s * (ho - 1) + 1]),
                      helper.make_tensor(f"ws{t}", TensorProto.INT64, [1], [t]),
                      helper.make_tensor(f"we{t}", TensorProto.INT64, [1], [t + 1])]
            nodes += [helper.make_node("Slice", ["xg", f"st{t}", f"en{t}", "axes_hw", "steps"], [f"x{t}"]),
                      helper.make_node("Slice", ["wg", f"ws{t}", f"we{t}", "axis2"], [f"w{t}"]),
                      helper.make_node("Mul", [f"x{t}", f"w{t}"], [f"m{t}"])]
            if acc is None:
                acc = f"m{t}"
            else:
                nodes.append(helper.make_node("Add", [acc, f"m{t}"], [f"a{t}"]))
                acc = f"a{t}"
    nodes.append(helper.make_node("Reshape", [acc, "y_shape"], ["Y"]))
    return _involution_model("involution_unrolled", nodes, inits, c, g * k * k, size, ho)


def gather_reduce_model(channels: int, kernel_size: int, stride: int, groups: int, size: int) -> onnx.ModelProto:
    """Static-shape graph: Gather all taps [1, C, K*K, Ho, Wo], Mul by W, ReduceSum over the taps."""
    k, s, g, c = kernel_size, stride, groups, channels
    p = (k - 1) // 2
    ho = involution_output_size(size, k, s)
    hp = size + 2 * p
    i, t = np.arange(ho), np.arange(k)
    idx = ((s * i[None, None, :, None] + t[:, None, None, None]) * hp
           + s * i[None, None, None, :] + t[None, :, None, None]).reshape(k * k, ho, ho)
    inits = [helper.make_tensor("pads", TensorProto.INT64, [8], [0, 0, p, p, 0, 0, p, p]),
             helper.make_tensor("flat", TensorProto.INT64, [3], [1, c, hp * hp]),
             helper.make_tensor("idx", TensorProto.INT64, list(idx.shape), idx.ravel().tolist()),
             helper.make_tensor("u_shape", TensorProto.INT64, [6], [1, g, c // g, k * k, ho, ho]),
             helper.make_tensor("w_shape", TensorProto.INT64, [6], [1, g, 1, k * k, ho, ho]),
             helper.make_tensor("y_shape", TensorProto.INT64, [4], [1, c, ho, ho]),
             helper.make_tensor("ax3", TensorProto.INT64, [1], [3])]
    n = helper.make_node
    nodes = [n("Pad", ["X", "pads"], ["xp"]), n("Reshape", ["xp", "flat"], ["xf"]),
             n("Gather", ["xf", "idx"], ["u"], axis=2), n("Reshape", ["u", "u_shape"], ["u6"]),
             n("Reshape", ["W", "w_shape"], ["w6"]), n("Mul", ["u6", "w6"], ["m"]),
             n("ReduceSum", ["m", "ax3"], ["acc"], keepdims=0), n("Reshape", ["acc", "y_shape"], ["Y"])]
    return _involution_model("involution_gather_reduce", nodes, inits, c, g * k * k, size, ho)


def _time(fn, repeats: int) -> float:
    fn()                                       # warm-up (session/arena allocation)
    best = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best.append(time.perf_counter() - t0)
    return float(np.median(best) * 1e3)


def run(repeats: int = 20, threads: int = 0) -> dict:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    rng = np.random.default_rng(0)
    rows = []
    for c, k, s, size in REDNET_SHAPES:
        g = c // 16
        ho = involution_output_size(size, k, s)
        x = rng.standard_normal((1, c, size, size), dtype=np.float32)
        w = rng.standard_normal((1, g * k * k, ho, ho), dtype=np.float32)
        row = {"channels": c, "kernel": k, "stride": s, "size": size}
        for name, model in (("function", single_involution_model(c, k, s, g)),
                            ("gather_reduce", gather_reduce_model(c, k, s, g, size)),
                            ("unrolled", unrolled_model(c, k, s, g, size))):
            sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
            row[f"{name}_ms"] = _time(lambda: sess.run(None, {"X": x, "W": w}), repeats)
            if name != "function":     # an alternative that computes something else would prove nothing
                ref = sess.run(None, {"X": x, "W": w})[0]
                row[f"{name}_max_abs_diff"] = float(np.abs(ref - involution_reference(x, w, k, s, g)).max())
        try:
            import torch

            from dfmvr.models.involution import involution
            tx, tw = torch.from_numpy(x), torch.from_numpy(w)
            with torch.inference_mode():
                row["torch_ms"] = _time(lambda: involution(tx, tw, k, s, g), repeats)
        except ImportError:
            pass
        rows.append(row)
    totals = {key: round(sum(r[key] for r in rows), 3) for key in rows[0] if key.endswith("_ms")}
    return {"benchmark": "involution function body, ORT CPU, batch 1", "machine": platform.processor()
            or platform.machine(), "threads": threads or "default", "repeats": repeats,
            "rows": rows, "totals_ms": totals}


def graph_speed(spec: str, batch: int = 1, repeats: int = 5, onnx_path=None) -> dict:
    """Whole exported graph in ORT CPU vs the torch model in eager mode (same weights, same inputs).

    ``onnx_path``: an existing export of the same ``spec`` (e.g. ``dfmvr-export paper --out D`` ->
    ``D/model.onnx``) instead of exporting again.
    """
    import tempfile

    import torch

    from dfmvr.export.onnx_export import export_onnx
    from dfmvr.export.parity import OnnxrtRunner, RunnerCall
    from dfmvr.export.pipeline import load_for_export
    from dfmvr.models.runner import TorchRunner

    model, card, what = load_for_export(spec)
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (batch, 3, 3, card.image_size, card.image_size)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = onnx_path or export_onnx(model, Path(tmp) / "model.onnx", card).path
        ort_runner = OnnxrtRunner(path)
        ort_ms = _time(lambda: ort_runner(images), repeats)
    torch_runner = RunnerCall(TorchRunner(model))
    torch_ms = _time(lambda: torch_runner(images), repeats)
    return {"benchmark": "exported graph, ORT CPU vs torch eager", "model": what, "batch": batch,
            "repeats": repeats, "torch_threads": torch.get_num_threads(), "onnxruntime_ms": round(ort_ms, 2),
            "torch_eager_ms": round(torch_ms, 2), "speedup": round(torch_ms / ort_ms, 3)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="JSON file (default benchmarks/results/export_<what>.json)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--graph", default=None, help="also time a whole exported variant/checkpoint (e.g. tiny)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--onnx", default=None, help="with --graph: reuse this export of the same model")
    args = ap.parse_args(argv)
    if args.graph:
        result = graph_speed(args.graph, args.batch, args.repeats, args.onnx)
        out = args.out or f"benchmarks/results/export_graph_{Path(args.graph).stem}_b{args.batch}.json"
        atomic_write_text(Path(out), json.dumps(result, indent=2) + "\n")
        print(result, "->", out)
        return
    args.out = args.out or "benchmarks/results/export_involution_body.json"
    result = run(args.repeats)
    atomic_write_text(Path(args.out), json.dumps(result, indent=2) + "\n")
    for r in result["rows"]:
        print(r)
    print("totals (ms):", result["totals_ms"], "->", args.out)


if __name__ == "__main__":
    main()
