"""How precise must the landmarks be, and how precise are the encoders' own?

The readout-depth probe found that no depth of the regressor holds more identity than the readout the
heads read: the limit is in what the encoders extract. Identity is geometry, and the issue's first probe
found it in the 2D landmarks (ridge from the exact landmarks of three views: identity R² 0.82). This
probe puts the two side by side, on the same rows and with the same ridge (kernel form, strength chosen
on held-back rows, vertex-space R² as dfmvr eval scores it):

  - ``landmarks + noise s``: the exact landmarks of ``gt.npz`` with Gaussian error of s px per
    coordinate, drawn once per triplet, for each s of ``--noise``: identity against landmark precision;
  - ``keypoints``: what a ``lite`` checkpoint's keypoint heads (``--keypoints 68``, a training target of
    the encoders, not in the exported graph) predict, and their RMS error in px (visible points);
  - ``readout`` and ``readout + keypoints``: does the heads' input already hold what the keypoints do?

Rows: the first ``--triplets`` of ``--train`` minus 500 fit, the last 500 of them choose the strength;
scored on 500 triplets of ``--unseen`` from index ``--unseen-from`` (faces the checkpoint never trained
on: the folder grown past what it saw) and on ``--val``.

Usage (about 4 min on 2 cores for 6,000 triplets):
  python scripts/landmark_precision_probe.py --checkpoint runs/lite/checkpoint.safetensors \\
      --train DATA/train --triplets 5500 --unseen DATA/train --unseen-from 16000 --val DATA/val --json out.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from readout_depth_probe import HELD, STRENGTHS, depth_features, kernel_ridge_path

from dfmvr.face.layout import COEFFS
from dfmvr.face.metrics import shape_r2
from dfmvr.face.model import MorphableModel
from dfmvr.models.checkpoint import load_checkpoint
from dfmvr.train.data import TripletDataset
from dfmvr.train.head_refit import group_columns

NOISE_PX = (0.0, 1.0, 1.5, 2.0, 3.0)


def keypoint_rms_px(predicted: np.ndarray, truth: np.ndarray, visible: np.ndarray | None = None,
                    views: int = 3) -> list[float]:
    """Per view, the root-mean-square 2D distance (px) between predicted and true landmarks, over the
    visible ones when ``visible`` is given (else all). predicted / truth [N, views * K * 2] or
    [N, views, K, 2]; visible [N, views * K] or [N, views, K]."""
    n = len(predicted)
    squared = ((predicted - truth).reshape(n, views, -1, 2) ** 2).sum(-1)        # [N, views, K]
    shown = np.ones(squared.shape, bool) if visible is None else visible.reshape(n, views, -1).astype(bool)
    return [round(float(np.sqrt(squared[:, v][shown[:, v]].mean())), 3) for v in range(views)]


def noisy(landmarks: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """The landmarks with Gaussian error of ``sigma`` px per coordinate (one draw per row and seed)."""
    return landmarks + np.random.default_rng(seed).normal(0.0, sigma, landmarks.shape) if sigma else landmarks


def identity_expression_scorer(face_model: MorphableModel):
    """(the identity and expression columns of COEFFS, r2): ``r2(predicted_columns, true_full)`` puts the
    predicted columns into a copy of the true coefficients [N, 269] and scores the shape as dfmvr eval
    does (vertex-space R² per group, 4 decimals)."""
    columns = np.concatenate([group_columns(COEFFS)[k] for k in ("identity", "expression")])

    def r2(predicted_columns, true_full):
        predicted = true_full.copy()
        predicted[:, columns] = predicted_columns
        scores = shape_r2(face_model, COEFFS.split(predicted.astype(np.float32)), COEFFS.split(true_full.astype(np.float32)))
        return {k: round(v, 4) for k, v in scores.items()}

    return columns, r2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a lite checkpoint with keypoint heads (the main stage's)")
    parser.add_argument("--train", required=True, help="training triplets (dfmvr data synth, with gt.npz)")
    parser.add_argument("--triplets", type=int, default=5500, help="first N of --train (N - 500 fit)")
    parser.add_argument("--unseen", required=True, help="a folder holding triplets the checkpoint never trained on")
    parser.add_argument("--unseen-from", type=int, default=0, help="index of the first unseen triplet in --unseen")
    parser.add_argument("--val", required=True, help="held-out triplets")
    parser.add_argument("--noise", default=",".join(str(s) for s in NOISE_PX), help="landmark error levels, px")
    parser.add_argument("--json", required=True)
    args = parser.parse_args()

    started = time.perf_counter()
    model, card, _ = load_checkpoint(args.checkpoint, load_train_state=False)
    if not card.architecture["unet"].get("keypoints"):
        raise SystemExit(f"{args.checkpoint} has no keypoint heads (train with --keypoints 68)")
    face_model = MorphableModel.load(Path(args.train) / "face_model.npz")
    train, unseen, val = TripletDataset(args.train), TripletDataset(args.unseen), TripletDataset(args.val)
    count = min(args.triplets, len(train))
    held = min(HELD, count // 4)
    unseen = unseen.subset(args.unseen_from, args.unseen_from + held)
    rows = {name: depth_features(model, data, len(data) if name != "train" else count, depths=("readout",), keypoints=True)
            for name, data in (("train", train), ("unseen", unseen), ("val", val))}
    fit, choose = slice(0, count - held), slice(count - held, count)
    columns, r2 = identity_expression_scorer(face_model)

    sources = {"readout": lambda f, seed: f["readout"], "keypoints": lambda f, seed: f["keypoints"],
               "readout + keypoints": lambda f, seed: np.concatenate([f["readout"], f["keypoints"]], 1)}
    for sigma in (float(s) for s in args.noise.split(",")):
        sources[f"landmarks + noise {sigma:g} px"] = lambda f, seed, s=sigma: noisy(f["landmarks"], s, seed)
    report = {"checkpoint": str(args.checkpoint), "train": str(args.train), "unseen": f"{args.unseen}[{args.unseen_from}:]",
              "val": str(args.val), "rows": {"fit": fit.stop, "choose_strength": held, "unseen": len(unseen), "val": len(val)},
              "keypoint_rms_px": {name: keypoint_rms_px(f["keypoints"], f["landmarks"], f["visible"])
                                  for name, (f, _) in rows.items()},
              "ridge": {}}
    print("keypoint RMS px per view", report["keypoint_rms_px"], flush=True)
    (train_f, truth), seeds = rows["train"], {"train": 0, "unseen": 1, "val": 2}
    for name, features_of in sources.items():
        x = {set_name: features_of(f, seeds[set_name]).astype(np.float64) for set_name, (f, _) in rows.items()}
        predict = kernel_ridge_path(x["train"][fit], truth[fit][:, columns])
        best = max(STRENGTHS, key=lambda s: r2(predict(s, x["train"][choose]), truth[choose])["identity"])
        report["ridge"][name] = {"features": int(x["train"].shape[1]), "strength": best,
                                 **{set_name: r2(predict(best, x[set_name]), rows[set_name][1]) for set_name in ("unseen", "val")}}
        print(name, report["ridge"][name], flush=True)
    report["seconds"] = round(time.perf_counter() - started, 1)
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    with torch.no_grad():
        main()
