"""How much of a face the 2D landmarks alone determine, and how much a network's heads can learn from them.

A diagnostic for the weak-supervision item of #18 (docs/training.md, "Targets from the landmarks alone").
Two measurements, both scored on held-out synthetic triplets with ``dfmvr eval``'s vertex-space R²
(``shape_r2``, plus the R² had the prediction the mean face's size) and the median rotation error:

- fits: each triplet fitted to its own landmarks (``dfmvr.train.landmark_fit``: no ground truth read), with
  ``--landmark-noise`` px of detector-like error, at each ``--coefficient-reg``: what the weak landmark term
  determines per triplet. The regulariser is chosen on ``--select`` (``--val`` is only scored).
- heads (with --checkpoint): ridge regressions from what the network's identity head reads (all views) to
  the training triplets' fits and, for comparison, to their truth; the strength of the first chosen by
  agreement with the selection triplets' fits (no ground truth), of the second on their truth. What
  ``dfmvr-train --stage heads --targets landmark-fit`` does, without the missing-view rows.

The truth is read for scoring only (and for the truth ridge). Usage (one thread: about 0.5 s per triplet
fitted, and a forward pass per triplet with --checkpoint):
  python scripts/landmark_fit_probe.py --select DATA/select --val DATA/val --landmark-noise 2 \
      [--coefficient-reg 3e-4 1e-3 3e-3 1e-2] [--checkpoint C --train DATA/train --train-limit 2000] \
      --json benchmarks/results/landmark_fit_targets.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from dfmvr.face.layout import COEFFS
from dfmvr.face.metrics import rotation_error_deg, shape_r2
from dfmvr.face.model import MorphableModel
from dfmvr.train.head_refit import RIDGE_STRENGTHS

IDENTITY, EXPRESSION = COEFFS.shared_slices()["identity"], COEFFS.shared_slices()["expression"]


def scores(face_model: MorphableModel, predicted: np.ndarray, truth: np.ndarray) -> dict:
    """Identity (plain, size-free, at the mean size) and expression R², median rotation error (°)."""
    p, t = COEFFS.split(predicted.astype(np.float32)), COEFFS.split(truth.astype(np.float32))
    r2 = shape_r2(face_model, p, t)
    return {"identity": round(r2["identity"], 4), "identity_size_free": round(r2["identity_size_free"], 4),
            "identity_at_mean_size": round(r2["identity_at_mean_size"], 4), "expression": round(r2["expression"], 4),
            "rotation_median_deg": round(float(np.median(rotation_error_deg(p.rotation, t.rotation))), 3)}


def fit(root: Path, face_model, camera, noise: float, reg: float, steps: int, limit=None):
    """-> (fits [N, 269], truth [N, 269], seconds) for the first ``limit`` triplets of ``root``."""
    from dfmvr.train.data import TripletDataset
    from dfmvr.train.landmark_fit import landmark_fit_config, landmark_fits

    data = TripletDataset(root, landmark_noise_px=noise)
    if limit:
        data = data.subset(0, limit)
    start = time.perf_counter()
    fits = landmark_fits(data, face_model, camera, config=landmark_fit_config(steps=steps, coefficient_reg=reg))
    seconds = time.perf_counter() - start
    truth = np.stack([np.load(folder / "gt.npz")["coefficients"] for folder in data.folders])
    return fits, truth, seconds


def head_ridge(checkpoint, train: Path, select: Path, val: Path, fits: dict, limit) -> dict:
    """Ridge from the network's identity-head input to the fits and to the truth (see the docstring)."""
    from dfmvr.models.checkpoint import load_checkpoint
    from dfmvr.train.data import TripletDataset
    from dfmvr.train.head_refit import head_features, ridge_fit

    model, card, _ = load_checkpoint(checkpoint, load_train_state=False)
    face_model = MorphableModel.load(val / "face_model.npz")
    card.check_face_model(face_model, source=str(val / "face_model.npz"))
    feats = {name: head_features(model, TripletDataset(root).subset(0, limit if name == "train" else None))
             for name, root in (("train", train), ("select", select), ("val", val))}
    out = {"own_heads": scores(face_model, feats["val"].predicted, feats["val"].coefficients), "strengths": {}}
    best = {}
    for target in ("fits", "truth"):
        train_y = fits["train"] if target == "fits" else feats["train"].coefficients
        select_y = fits["select"] if target == "fits" else feats["select"].coefficients
        for strength in RIDGE_STRENGTHS:
            predicted = {name: feats[name].predicted.copy() for name in ("select", "val")}
            for cols in (IDENTITY, EXPRESSION):
                weight, bias = ridge_fit(feats["train"].inputs, train_y[:, cols], strength)
                for name in predicted:
                    predicted[name][:, cols] = feats[name].inputs @ weight.T + bias
            agreement = shape_r2(face_model, COEFFS.split(predicted["select"].astype(np.float32)),
                                 COEFFS.split(select_y.astype(np.float32)))["identity"]
            row = {"select_agreement_identity": round(agreement, 4),
                   "val": scores(face_model, predicted["val"], feats["val"].coefficients)}
            out["strengths"].setdefault(f"{strength:g}", {})[target] = row
            if agreement > best.get(target, (-np.inf,))[0]:
                best[target] = (agreement, strength, row["val"])
    out["chosen"] = {target: {"strength": s, "val": v} for target, (_, s, v) in best.items()}
    return out


def main() -> None:
    import torch

    from dfmvr.models.variants import make_card

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--select", type=Path, required=True)
    ap.add_argument("--val", type=Path, required=True)
    ap.add_argument("--train", type=Path, default=None)
    ap.add_argument("--train-limit", type=int, default=None)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--landmark-noise", type=float, default=2.0)
    ap.add_argument("--coefficient-reg", type=float, nargs="+", default=[3e-4, 1e-3, 3e-3, 1e-2])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    face_model = MorphableModel.load(args.val / "face_model.npz")
    camera = make_card("lite", face_model=face_model.identity()).camera_obj()
    report = {"landmark_noise_px": args.landmark_noise, "steps": args.steps, "fits": {}}
    for reg in args.coefficient_reg:
        row = {}
        for name, root in (("select", args.select), ("val", args.val)):
            fits, truth, seconds = fit(root, face_model, camera, args.landmark_noise, reg, args.steps)
            row[name] = {**scores(face_model, fits, truth), "seconds_per_triplet": round(seconds / len(fits), 3)}
        report["fits"][f"{reg:g}"] = row
        print(json.dumps({"coefficient_reg": reg, **row}), flush=True)
    chosen = max(args.coefficient_reg, key=lambda r: report["fits"][f"{r:g}"]["select"]["identity_size_free"])
    report["chosen_coefficient_reg"] = chosen
    if args.checkpoint:
        if args.train is None:
            ap.error("--checkpoint needs --train (the triplets whose fits the heads learn)")
        fits = {name: fit(root, face_model, camera, args.landmark_noise, chosen, args.steps,
                          args.train_limit if name == "train" else None)[0]
                for name, root in (("train", args.train), ("select", args.select))}
        report["heads"] = {"checkpoint": str(args.checkpoint), "train_triplets": len(fits["train"]),
                           **head_ridge(args.checkpoint, args.train, args.select, args.val, fits, args.train_limit)}
        print(json.dumps(report["heads"]["chosen"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
