"""Is what the network gets wrong variance or a shared error? Average the coefficients of several exported graphs.

Two networks trained apart (another loss, another sample order) err partly at random and partly the same
way. Averaging their coefficients removes the first part: if the average scores far better than each, the
gap to the accuracy targets is run-to-run variance (an ensemble, or more seeds, would close it); if it
scores about the same, the error is what every run of this design shares (what the encoders can read).

Each member and the average go through ``dfmvr.eval.evaluate_dataset`` (the shipped graphs, ONNX
Runtime, no torch): mean mm, identity / expression R² (vertex space), median rotation and translation
error per view, and the average's paired gain in mean mm over each member (95 % interval).

Usage (about 30 s per member and set of 64 triplets on 2 cores):
  python scripts/ensemble_probe.py --onnx default --onnx runs/other/export/model.onnx \\
      --data DATA/val --data DATA/fresh --json out.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from dfmvr.eval import OnnxPredictor, evaluate_dataset
from dfmvr.face.metrics import paired_improvement
from dfmvr.face.selection import select_face_model
from dfmvr.runtime.artifacts import load_artifact


class AveragedGraphs:
    """The mean of several graphs' coefficients; a predictor for ``evaluate_dataset``."""

    def __init__(self, members: list[OnnxPredictor]):
        inputs = {(int(m.card.image_size), float(m.card.input_mean), float(m.card.input_std)) for m in members}
        if len(inputs) != 1:                # evaluate_dataset normalises once, with the first card
            raise ValueError(f"the graphs take different inputs (size, mean, std) {sorted(inputs)}: "
                             "they cannot share one")
        self.members = members
        self.card = members[0].card

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return np.mean([member(images) for member in self.members], axis=0)


def summary(report: dict) -> dict:
    pose = report["pose"]["model"]
    return {"mean_mm": report["model"]["mean_mm"], **report["coefficient_r2"]["model"],
            "rotation_deg_median": pose["rotation_deg"]["median"],
            "translation_mm_median": pose["translation_mm"]["median"]}


def probe(members: list[OnnxPredictor], data: Path) -> dict:
    face_model, where = select_face_model(None, card=members[0].card, data=data)
    for member in members[1:]:              # coefficients of different face models do not average
        member.card.check_face_model(face_model, source=where)
    reports = [evaluate_dataset(m, data, face_model, baselines=False) for m in members]
    averaged = evaluate_dataset(AveragedGraphs(members), data, face_model, baselines=False)
    rows = [r["model"] for r in averaged["rows"]]
    return {"data": str(data), "num_triplets": averaged["num_triplets"],
            "members": [summary(r) for r in reports], "average": summary(averaged),
            "average_vs_member": [paired_improvement(rows, [r["model"] for r in rep["rows"]]) for rep in reports]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", action="append", required=True, help="an exported graph, or 'default' (twice or more)")
    parser.add_argument("--data", action="append", type=Path, required=True, help="a folder of synthetic triplets")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if len(args.onnx) < 2:
        parser.error("give --onnx at least twice: an average of one graph is that graph")
    members = [OnnxPredictor(load_artifact(onnx=path).path, threads=args.threads) for path in args.onnx]   # "default": the bundled graph
    report = {"graphs": args.onnx, "sets": [probe(members, data) for data in args.data]}
    for result in report["sets"]:
        print(result["data"])
        for name, row in zip(args.onnx + ["average"], result["members"] + [result["average"]]):
            print(f"  {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
