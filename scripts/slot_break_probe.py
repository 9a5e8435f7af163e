"""Does a heads refit that also sees slot-broken triplets read the pose from the photo, not the slot?

The network is trained on triplets that always follow the slot convention (left photo in the left
slot...), so a photo in the wrong slot, or one photo in every slot, gets the slot's pose (docs/findings.md).
This probe refits the heads (dfmvr/train/head_refit.py) two ways from the same checkpoint: on the
stage's mix (all views, half again with views missing), and on that mix plus as many rows again as
half the triplets with the slots broken (slot k shows the photo of a random view, repeats allowed,
the identity mapping excluded; the per-view pose truth follows the photo). Both are scored on the
held-out triplets as they are and slot-broken three ways (front photo in every slot, left and right
swapped, random breaks): identity / expression R² (vertex space) and median rotation error.

Usage (about 10 min on 2 cores for 8,000 training triplets):
  python scripts/slot_break_probe.py --checkpoint runs/lite/checkpoint.safetensors --train DATA/train \\
      --select DATA/select --val DATA/val --triplets 8000 --json out.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dfmvr.face.model import MorphableModel
from dfmvr.models.checkpoint import load_checkpoint
from dfmvr.train.data import TripletDataset
from dfmvr.train.head_refit import head_features, held_out_scores, joined, refit_heads, training_mix_features
from dfmvr.train.slot_breaks import SlotBroken, held_out_orders, random_breaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    for split in ("train", "select", "val"):
        parser.add_argument(f"--{split}", type=Path, required=True)
    parser.add_argument("--triplets", type=int, default=8000, help="training triplets for the mix (the slot-broken "
                        "rows come from the next half as many)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    face_model = MorphableModel.load(args.train / "face_model.npz")
    model, _, _ = load_checkpoint(args.checkpoint, load_train_state=False)
    train, select, val = (TripletDataset(p) for p in (args.train, args.select, args.val))
    n = min(args.triplets, len(train) * 2 // 3)
    mix = training_mix_features(model, train.subset(0, n))
    broken = head_features(model, SlotBroken(train.subset(n, n + n // 2), random_breaks(n // 2, 1)))
    select_mix = training_mix_features(model, select)
    select_broken = head_features(model, SlotBroken(select, random_breaks(len(select), 2)))
    held_out = {k: (lambda m, o=o: head_features(m, val if o is None else SlotBroken(val, o)))
                for k, o in held_out_orders(len(val)).items()}
    groups = ("identity", "expression", "rotation")
    report = {"checkpoint": args.checkpoint, "training_triplets": n, "slot_broken_rows": n // 2,
              "trained_heads": {k: held_out_scores(face_model, f(model)) for k, f in held_out.items()}}
    for name, (fit, sel) in {"refit_mix": (mix, select_mix),
                             "refit_mix_and_slot_breaks": (joined(mix, broken), joined(select_mix, select_broken))}.items():
        refit, _, _ = load_checkpoint(args.checkpoint, load_train_state=False)
        report[name] = {"refit": refit_heads(refit, fit, sel, face_model, groups=groups),
                        **{k: held_out_scores(face_model, f(refit)) for k, f in held_out.items()}}
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
