"""Training throughput of ``dfmvr-train`` per speed mode (``--speed``, dfmvr/train/speed.py): steps/s and
whether the mode keeps the loss curve, interleaved in one run.

    python -m benchmarks.bench_train --data DATA --parse-net PARSE --variants tiny,lite --batch 4,8 \
        --steps 12 --warmup 3 --threads 2 --out benchmarks/results/train_throughput.json

For every (variant, batch) one trainer per mode is built from the same seed (identical weights) and fed
the same prefetched batches (so data loading, timed once on its own, is not in the step time and every
mode sees the same augmentation). Then, round by round, each trainer takes one full step (forward, loss,
backward, clipping, Adam), warm-up rounds untimed: ``compile`` pays its compilation there, timed apart.
"Keeps the loss curve": on the first step (same weights, same batch) each mode's loss and gradient
against eager's (relative difference, cosine). Later steps diverge in every mode, eager against itself
on another seed too, because the parse net's argmax turns rounding into label flips and the early
gradients are large; the per-step losses over the run are kept for reading, as the largest relative
difference from eager's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import RESULTS

RECIPE_WEIGHTS = {"supervised": 1e4, "supervised_shape": 1e4, "supervised_pose": 300.0, "mask": 0.0}


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _cpu() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")),
                platform.processor())


def _trainer(args, variant: str, batch: int, mode: str, out: Path):
    from dfmvr.train.losses.total import LossWeights
    from dfmvr.train.trainer import TrainConfig, Trainer

    weights = {**LossWeights().to_dict(), **RECIPE_WEIGHTS}
    cfg = TrainConfig(data=str(args.data), out=str(out), variant=variant, epochs=1, batch=batch, lr=1e-3,
                      parse_net=str(args.parse_net), progress=False, weights=weights, bn_recalibration=0,
                      speed=mode, seed=0)
    return Trainer(cfg)


def measure(args, variant: str, batch: int, modes: list[str], workdir: Path) -> dict:
    import torch

    trainers = {m: _trainer(args, variant, batch, m, workdir / f"{variant}-{batch}-{m}") for m in modes}
    first = next(iter(trainers.values()))
    loader = iter(first._loader(0))
    t0 = time.perf_counter()
    items = [next(loader) for _ in range(args.warmup + args.steps)]
    load_s = (time.perf_counter() - t0) / len(items)
    times = {m: [] for m in modes}
    losses = {m: [] for m in modes}
    warm_s = {m: 0.0 for m in modes}
    first_grads = {}
    for index, item in enumerate(items):
        for m, t in trainers.items():
            torch.manual_seed(index)          # the same (unused) RNG state for every mode
            start = time.perf_counter()
            rec = t.train_step(item, 0, index)
            took = time.perf_counter() - start
            losses[m].append(rec["loss"])
            if index == 0:                    # the same weights and batch in every mode: the same step?
                first_grads[m] = torch.cat([p.grad.reshape(-1) for p in t.model.parameters() if p.grad is not None])
            if index < args.warmup:
                warm_s[m] += took
            else:
                times[m].append(took)
    eager = losses.get("eager")
    rows = {}
    for m in modes:
        median = statistics.median(times[m])
        row = {"median_step_s": round(median, 4), "steps_per_s": round(1.0 / median, 3),
               "triplets_per_s": round(batch / median, 2), "step_s": [round(x, 4) for x in times[m]],
               "warmup_s": round(warm_s[m], 2), "final_loss": losses[m][-1]}
        if eager is not None:
            g, ref = first_grads[m].double(), first_grads["eager"].double()
            row["first_step_loss_rel_diff_vs_eager"] = abs(losses[m][0] - eager[0]) / abs(eager[0])
            row["first_step_gradient_cosine_vs_eager"] = float(g @ ref / (g.norm() * ref.norm()))
            row["loss_max_rel_diff_vs_eager"] = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(losses[m], eager))
            row["speedup_vs_eager"] = round(statistics.median(times["eager"]) / median, 3)
        rows[m] = row
    return {"variant": variant, "batch": batch, "data_load_s_per_step": round(load_s, 4), "modes": rows}


def main(argv=None) -> None:
    import torch

    from dfmvr.train.speed import SPEED_MODES, unsupported_reason

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--parse-net", required=True, type=Path)
    ap.add_argument("--variants", default="tiny,lite")
    ap.add_argument("--batch", default="4,8")
    ap.add_argument("--modes", default=",".join(SPEED_MODES))
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out", type=Path, default=RESULTS / "train_throughput.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    modes, skipped = [], {}
    for m in args.modes.split(","):
        reason = unsupported_reason(m, cpu)
        (skipped.__setitem__(m, reason) if reason else modes.append(m))
    report = {"benchmark": "bench_train", "command": "python -m benchmarks.bench_train " + " ".join(argv or sys.argv[1:]),
              "machine": {"cpu": _cpu(), "cores": os.cpu_count(), "threads": args.threads,
                          "torch": torch.__version__, "python": platform.python_version()},
              "load_before": _load(), "skipped_modes": skipped, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.variants.split(","):
            for batch in (int(b) for b in args.batch.split(",")):
                run = measure(args, variant, batch, modes, Path(tmp))
                report["runs"].append(run)
                print(json.dumps({k: v for k, v in run.items()}, indent=None)[:600], flush=True)
    report["load_after"] = _load()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
