"""What the differentiable render costs a training step: the demo recipe's `lite` step with the photometric
term (the official weight, 24) against the same step with the term rendered at half size
(``--photo-render-factor 2``) and with ``--photo-weight 0`` (no render; the mask term is already off in the
recipe), interleaved in one run.

    python -m benchmarks.bench_train_render --data DATA --parse-net PARSE --steps 12 --warmup 2 --threads 2

Both trainers start from the same seed (identical weights) and take the same prefetched batches, round by
round (data loading outside the step time), as ``bench_train.py`` does for the speed modes. The recipe's
weights: ``scripts/train_default_model.sh`` (supervised 1e4, shape 1e4, pose 300, mask 0, the 68-keypoint
target at 1000). Writes benchmarks/results/train_render_cost.json (median seconds per step per arm, the
ratio, the load average before and after). Whether the demo trains as well without the term is a training
question, not this benchmark's: docs/training.md, "What the render costs".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks._common import RESULTS
from benchmarks.bench_train import _cpu, _load

RECIPE = {"supervised": 1e4, "supervised_shape": 1e4, "supervised_pose": 300.0, "mask": 0.0, "keypoint_2d": 1000.0}
ARMS = {"recipe (photo 24)": {}, "photo 24 at half size": {"photo_render_factor": 2},
        "photo 0 (no render)": {"photo": 0.0}}


def _trainer(args, out: Path, extra: dict):
    from dfmvr.train.losses.total import LossWeights
    from dfmvr.train.trainer import TrainConfig, Trainer

    weights = {**LossWeights().to_dict(), **RECIPE, **extra}
    cfg = TrainConfig(data=str(args.data), out=str(out), variant="lite", epochs=1, batch=args.batch, lr=1e-3,
                      parse_net=str(args.parse_net), progress=False, weights=weights, bn_recalibration=0,
                      speed="eager", seed=0, keypoints=68)
    return Trainer(cfg)


def main(argv=None) -> dict:
    import time

    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--parse-net", required=True, type=Path)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out", type=Path, default=RESULTS / "train_render_cost.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    report = {"benchmark": "bench_train_render",
              "command": "python -m benchmarks.bench_train_render " + " ".join(argv or sys.argv[1:]),
              "machine": {"cpu": _cpu(), "cores": os.cpu_count(), "threads": args.threads,
                          "torch": torch.__version__, "python": platform.python_version()},
              "recipe_weights": RECIPE, "arms": ARMS, "batch": args.batch, "load_before": _load()}
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {name: _trainer(args, Path(tmp) / str(i), extra) for i, (name, extra) in enumerate(ARMS.items())}
        loader = iter(next(iter(trainers.values()))._loader(0))
        items = [next(loader) for _ in range(args.warmup + args.steps)]
        times = {name: [] for name in ARMS}
        for index, item in enumerate(items):
            for name, trainer in trainers.items():
                torch.manual_seed(index)
                start = time.perf_counter()
                trainer.train_step(item, 0, index)
                took = time.perf_counter() - start
                if index >= args.warmup:
                    times[name].append(took)
            print(index, {n: round(v[-1], 3) for n, v in times.items() if v}, flush=True)
    medians = {name: statistics.median(v) for name, v in times.items()}
    full, half, bare = (medians[name] for name in ARMS)
    report.update({"median_step_s": {k: round(v, 4) for k, v in medians.items()},
                   "step_s": {k: [round(x, 4) for x in v] for k, v in times.items()},
                   "render_share_of_recipe_step": round(1 - bare / full, 3),
                   "speedup_without_render": round(full / bare, 3),
                   "speedup_half_size_render": round(full / half, 3),
                   "half_size_render_share_of_its_step": round(1 - bare / half, 3),
                   "load_after": _load()})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report["median_step_s"]), f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
