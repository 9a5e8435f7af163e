"""How much slot-broken data should the heads' refit see? ``--stage heads --slot-breaks F`` at several F.

The refit (dfmvr/train/head_refit.py) fits the heads on the training mix of every triplet and, with
``--slot-breaks F``, on F x N of them again with their photos in the wrong slots (pose truth following the
photo). More broken rows read the pose from the photo better and cost the conventional order a little.
This sweep makes exactly the tool's rows once (the mix, and the broken rows of the largest F: each
smaller F takes a prefix of the same draw, as the tool would), refits a fresh copy of the checkpoint for
every F with ``refit_heads`` and scores held-out sets as they are and slot-broken three ways (front photo
in every slot, left and right swapped, random breaks): identity / expression R² (vertex space) and
median rotation error. Fraction 0 is the refit without slot breaks.

Usage (about 20 min on 2 cores for 16,000 training triplets):
  python scripts/slot_break_sweep.py --checkpoint WORK/runs/lite/checkpoint.safetensors --train WORK/data/train \\
      --select WORK/data/select --val WORK/data/val --val FRESH --fractions 0,0.01,0.02,0.05,0.1 --json out.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from dfmvr.face.model import MorphableModel
from dfmvr.models.checkpoint import load_checkpoint
from dfmvr.train.data import TripletDataset
from dfmvr.train.head_refit import (SLOT_BREAK_SEEDS, head_features, held_out_scores, joined, refit_heads,
                                    slot_broken_rows, training_mix_features)
from dfmvr.train.slot_breaks import SlotBroken, held_out_orders


def rows_at(parts, broken_count: int) -> list:
    """The mix and the first ``broken_count`` slot-broken rows: what --slot-breaks adds at that count."""
    mix, broken = parts
    return [mix] + ([broken.head(broken_count)] if broken_count else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--select", type=Path, required=True)
    parser.add_argument("--val", type=Path, action="append", required=True, help="held-out set (repeatable)")
    parser.add_argument("--fractions", default="0,0.01,0.02,0.05,0.1")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    fractions = sorted(float(f) for f in args.fractions.split(","))
    if len({v.name for v in args.val}) != len(args.val):
        parser.error("--val folders need distinct names (they key the report)")
    face_model = MorphableModel.load(args.train / "face_model.npz")
    model, _, _ = load_checkpoint(args.checkpoint, load_train_state=False)
    train, select = TripletDataset(args.train), TripletDataset(args.select)
    start = time.perf_counter()
    rows = {}
    for name, dataset in (("train", train), ("select", select)):
        most = round(fractions[-1] * len(dataset))
        rows[name] = (training_mix_features(model, dataset),
                      slot_broken_rows(model, dataset, most, SLOT_BREAK_SEEDS[name]) if most else None)
    report = {"checkpoint": args.checkpoint, "train": str(args.train), "training_triplets": len(train),
              "select": str(args.select), "held_out": [str(v) for v in args.val],
              "seconds_for_the_rows": round(time.perf_counter() - start, 1), "by_fraction": {}}
    for fraction in fractions:
        refit, _, _ = load_checkpoint(args.checkpoint, load_train_state=False)
        fit, sel = (rows_at(rows[name], round(fraction * n)) for name, n in (("train", len(train)),
                                                                             ("select", len(select))))
        entry = {"slot_broken_rows": sum(len(part.inputs) for part in fit[1:]),
                 "refit": refit_heads(refit, joined(*fit), joined(*sel), face_model)}
        for val in args.val:
            dataset = TripletDataset(val)
            entry[val.name] = {k: held_out_scores(face_model, head_features(
                refit, dataset if order is None else SlotBroken(dataset, order)))
                for k, order in held_out_orders(len(dataset)).items()}
        report["by_fraction"][f"{fraction:g}"] = entry
        print(f"--slot-breaks {fraction:g}: " + json.dumps({v.name: entry[v.name] for v in args.val}), flush=True)
    text = json.dumps(report, indent=1)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
