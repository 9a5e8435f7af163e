"""The int8 graph's two weight formats (``dfmvr-export --int8-weights s8|u8``) against each other and the
fp32 graph: accuracy on many rendered triplets and speed, in one run (numbers, not tests).

    python -m benchmarks.bench_int8_weights                                  # the bundled demo
    python -m benchmarks.bench_int8_weights --checkpoint paper --accuracy-triplets 0 --iters 6 --warmup 1

Exports the fp32 graph into a temporary folder (``export_all``, no --compact), quantizes it with each
format (``dfmvr.export.int8.quantize_int8``, the export's own calibration: 8 triplets, seed 2), then:

- accuracy: the posed-mesh distance (mm, through ``dfmvr.face``) of each int8 graph to the fp32 graph,
  per triplet, on the gate's own inputs (``parity_inputs``, 2 triplets, seed 0) and on
  ``--accuracy-triplets`` more (seed ``--accuracy-seed``; every second one without its right view, as
  the gate's): the max per triplet, its mean and max over the set, and how many exceed the 1 mm gate.
  The fp32 graph stands in for PyTorch here (the export's fp32 parity puts them 6e-5 mm apart);
- the fused kernels against the float simulation of the same graph (``session.disable_quant_qdq``): on a
  CPU whose kernels saturate, the two disagree (``dfmvr/export/int8.py``);
- speed: the three graphs in ``OnnxrtRunner`` at ``--threads``, batch ``--batches``, timed round-robin.

Writes benchmarks/results/int8_weight_formats_<checkpoint>.json (medians, ratios, accuracy, the CPU's
flags in the environment stamp, the load average before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from benchmarks._common import RESULTS, onnx_graph_medians
from dfmvr.atomic import atomic_write_text
from dfmvr.bench.environment import environment_stamp
from dfmvr.card import GRAPH_INPUT

FORMATS = ("s8", "u8")


def _coefficients(path, images: np.ndarray, threads: int, simulate: bool = False) -> np.ndarray:
    """The graph's coefficients, one triplet per call; ``simulate``: fusion of the QDQ groups disabled."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = threads, 1, 3
    if simulate:
        opts.add_session_config_entry("session.disable_quant_qdq", "1")
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(["coefficients"], {GRAPH_INPUT: images[i:i + 1]})[0]
                           for i in range(len(images))])


def _per_triplet_mm(face_model, card, reference: np.ndarray, candidate: np.ndarray) -> list[float]:
    from dfmvr.export.parity import mesh_difference_mm

    return [mesh_difference_mm(face_model, card, reference[i:i + 1], candidate[i:i + 1])[0]
            for i in range(len(reference))]


def _summary(per_triplet: list[float]) -> dict:
    arr = np.asarray(per_triplet)
    return {"triplets": len(arr), "mean_of_max_mm": round(float(arr.mean()), 4),
            "max_mm": round(float(arr.max()), 4), "above_1mm": int((arr >= 1.0).sum()),
            "per_triplet_max_mm": [round(float(v), 4) for v in arr]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--accuracy-triplets", type=int, default=64)
    parser.add_argument("--accuracy-seed", type=int, default=5)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batches", default="1")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    import onnx

    from dfmvr.export.int8 import WEIGHT_FORMATS, quantize_int8
    from dfmvr.export.onnx_export import read_card
    from dfmvr.export.parity import parity_inputs
    from dfmvr.export.pipeline import export_all
    from dfmvr.face.synthetic import default_face_model

    batches = [int(b) for b in args.batches.split(",")]
    report = {"what": __doc__.splitlines()[0], "checkpoint": args.checkpoint, "threads": args.threads,
              "load_before": os.getloadavg(), "environment": environment_stamp(),
              "formats": {name: WEIGHT_FORMATS[name].description for name in FORMATS}}
    with tempfile.TemporaryDirectory() as tmp:
        summary = export_all(args.checkpoint, Path(tmp), echo=lambda line: None)
        fp32 = onnx.load(str(summary.onnx_path))
        card = read_card(fp32)
        report["variant"] = card.variant
        graphs = {"fp32": summary.onnx_path}
        for name in FORMATS:
            quantized, _ = quantize_int8(fp32, card, weights=name)
            graphs[name] = Path(tmp) / f"model.{name}.onnx"
            onnx.save_model(quantized, str(graphs[name]))
        sets = {"gate (2 triplets, seed 0)": parity_inputs(card, batch=2)}
        if args.accuracy_triplets:
            sets[f"{args.accuracy_triplets} triplets, seed {args.accuracy_seed}"] = parity_inputs(
                card, batch=args.accuracy_triplets, seed=args.accuracy_seed)
        face_model = default_face_model()
        accuracy = {name: {} for name in FORMATS}
        for label, images in sets.items():
            reference = _coefficients(graphs["fp32"], images, args.threads)
            for name in FORMATS:
                fused = _coefficients(graphs[name], images, args.threads)
                accuracy[name][label] = _summary(_per_triplet_mm(face_model, card, reference, fused))
        gate_images = sets["gate (2 triplets, seed 0)"]
        for name in FORMATS:
            fused = _coefficients(graphs[name], gate_images, args.threads)
            simulated = _coefficients(graphs[name], gate_images, args.threads, simulate=True)
            accuracy[name]["fused_vs_simulated_mesh_max_mm"] = round(
                max(_per_triplet_mm(face_model, card, simulated, fused)), 5)
        report["accuracy_against_fp32"] = accuracy

        inputs = {b: parity_inputs(card, batch=b, seed=3) for b in batches}
        medians, _ = onnx_graph_medians(graphs, inputs, batches, args.iters, args.warmup, args.threads)
    report["speed"] = {f"batch_{b}": {"median_ms": {k: round(v, 2) for k, v in med.items()},
                                      "speedup_over_fp32": {k: round(med["fp32"] / med[k], 3) for k in FORMATS},
                                      "u8_over_s8_time": round(med["u8"] / med["s8"], 3)}
                       for b, med in medians.items()}
    report["load_after"] = os.getloadavg()
    out = args.json or RESULTS / f"int8_weight_formats_{Path(args.checkpoint).stem}.json"
    atomic_write_text(out, json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("speed",)}, indent=1))
    print(json.dumps({n: {k: (v if not isinstance(v, dict) else {kk: vv for kk, vv in v.items()
                                                                   if kk != "per_triplet_max_mm"})
                          for k, v in a.items()} for n, a in accuracy.items()}, indent=1))
    return report


if __name__ == "__main__":
    main()
