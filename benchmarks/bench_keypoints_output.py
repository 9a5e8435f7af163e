"""What the graph's optional ``keypoints`` output costs: the bundled demo's graph (with the keypoint heads)
against the same weights exported with ``dfmvr-export default --no-keypoints``, in one run, interleaved,
ONNX Runtime at one and at two threads, batch 1 and 4 (numbers, not tests).

    python -m benchmarks.bench_keypoints_output [--iters 40] [--warmup 3]

Exports the no-keypoints graph into a temporary folder first (about 25 s; needs torch), then writes
benchmarks/results/keypoints_output_cost.json (medians in ms, the ratio, the load average).
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
from dfmvr.runtime.artifacts import DEFAULT_ONNX


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--json", type=Path, default=RESULTS / "keypoints_output_cost.json")
    args = parser.parse_args(argv)
    from dfmvr.export.pipeline import export_all

    batches = [int(b) for b in args.batches.split(",")]
    rng = np.random.default_rng(0)
    inputs = {b: rng.uniform(-1, 1, (b, 3, 3, 224, 224)).astype(np.float32) for b in batches}
    report = {"what": __doc__.splitlines()[0], "load_before": os.getloadavg(), "environment": environment_stamp(),
              "threads": {}}
    with tempfile.TemporaryDirectory() as tmp:
        export_all("default", Path(tmp), compact=True, keypoints=False, echo=lambda line: None)
        graphs = {"with_keypoints (shipped)": DEFAULT_ONNX, "no_keypoints": Path(tmp) / "model.onnx"}
        for threads in (1, 2):
            medians, outputs = onnx_graph_medians(graphs, inputs, batches, args.iters, args.warmup, threads)
            rows = {f"batch_{b}": {"median_ms": {k: round(v, 2) for k, v in med.items()},
                                   "ratio_with_to_without": round(med["with_keypoints (shipped)"]
                                                                  / med["no_keypoints"], 3)}
                    for b, med in medians.items()}
            report["threads"][str(threads)] = {"outputs": outputs, **rows}
    report["load_after"] = os.getloadavg()
    atomic_write_text(args.json, json.dumps(report, indent=1) + "\n")
    print(json.dumps(report["threads"], indent=1))
    return report


if __name__ == "__main__":
    main()
