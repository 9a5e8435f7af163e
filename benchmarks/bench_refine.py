"""Per-triplet refinement (``--refine N``) against issue 23's targets: error, identity R², rotation and
seconds per triplet, at several step counts and batch sizes, from the network and from the mean face.

    python -m benchmarks.bench_refine --onnx default --triplets 8 --steps 50,200 --batch 4 \
        --out benchmarks/results/refine.json

Held-out triplets are rendered fresh (``--seed``, never a training seed) into a temporary folder, the
same protocol as ``dfmvr eval --refine`` (it calls the same ``evaluate_dataset``). Seconds are the
whole refinement of a batch (loss evaluations included) divided by its size; the machine, the thread
count and the load before and after go into the file, since this machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import RESULTS

TARGETS = {"mean_mm": 0.3, "fraction_of_mean_face": 0.2, "identity_r2": 0.6, "rotation_deg": 1.0,
           "seconds_per_triplet": 10.0}


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _cpu() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")),
                platform.processor())


def summarise(report: dict, key: str) -> dict:
    """The numbers the issue's targets name, for ``key`` ('model', 'refined', 'refined_mean_face')."""
    r2 = report.get("coefficient_r2", {}).get(key, {})
    pose = report.get("pose", {}).get(key, {})
    mean_face = report["baselines"]["mean_face"]["mean_mm"]
    return {"mean_mm": report[key]["mean_mm"], "fraction_of_mean_face": report[key]["mean_mm"] / mean_face,
            "identity_r2": r2.get("identity"), "expression_r2": r2.get("expression"),
            "rotation_median_deg": pose.get("rotation_deg", {}).get("median"),
            "translation_median_mm": pose.get("translation_mm", {}).get("median")}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--onnx", default="default", help="exported graph, or 'default' (the bundled model)")
    p.add_argument("--triplets", type=int, default=8)
    p.add_argument("--seed", type=int, default=4242)
    p.add_argument("--steps", default="50,200", help="comma list of step counts")
    p.add_argument("--batch", type=int, default=4, help="triplets per optimisation")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--from-mean-face", action="store_true", help="also refine from the mean face")
    p.add_argument("--out", type=Path, default=RESULTS / "refine.json")
    a = p.parse_args(argv)

    import torch

    from dfmvr.eval import OnnxPredictor, evaluate_dataset
    from dfmvr.face.selection import select_face_model
    from dfmvr.runtime.artifacts import DEFAULT_ONNX
    from dfmvr.train.refine import RefineConfig, Refiner
    from dfmvr.synth.dataset import write_dataset

    torch.set_num_threads(a.threads)
    onnx = DEFAULT_ONNX if a.onnx == "default" else Path(a.onnx)
    predictor = OnnxPredictor(onnx)
    runs, load_before = [], _load()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "held_out"
        write_dataset(data, a.triplets, seed=a.seed, progress=False)
        face_model, _ = select_face_model(None, card=predictor.card, data=data)
        for steps in (int(s) for s in a.steps.split(",")):
            refiner = Refiner(face_model, predictor.card.camera_obj(),
                              RefineConfig(steps=steps, progress=False, threads=a.threads))
            start = time.perf_counter()
            report = evaluate_dataset(predictor, data, face_model, batch=a.batch, progress=False, refiner=refiner,
                                      refine_from_mean_face=a.from_mean_face)
            row = {"steps": steps, "batch": a.batch, "wall_seconds": time.perf_counter() - start,
                   "seconds_per_triplet": report["refine"]["seconds_per_triplet"],
                   "weak_loss_before": report["refine"]["loss_before_mean"],
                   "weak_loss_after": report["refine"]["loss_after_mean"],
                   "network": summarise(report, "model"), "refined": summarise(report, "refined")}
            if "refined_mean_face" in report:
                row["refined_from_mean_face"] = summarise(report, "refined_mean_face")
            runs.append(row)
            print(json.dumps({k: row[k] for k in ("steps", "seconds_per_triplet", "refined")}), flush=True)
    out = {"command": "python -m benchmarks.bench_refine " + " ".join(argv or sys.argv[1:]),
           "model": str(onnx), "triplets": a.triplets, "seed": a.seed, "threads": a.threads, "machine": _cpu(),
           "load_before": load_before, "load_after": _load(), "targets": TARGETS, "runs": runs}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
