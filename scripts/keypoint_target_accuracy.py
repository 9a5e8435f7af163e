"""Held-out accuracy of a `lite` checkpoint's landmark target (`dfmvr-train --keypoints 68`).

The keypoint heads are a training target of each view's encoder and not part of the exported graph;
this scores them as the encoders are at the end of training (eval-mode batch norm, no augmentation):
mean squared pixel distance to the true 2D landmarks of every view of every triplet under DATA,
against the slot prior (each view slot's mean landmark positions over the same triplets: what a head
that ignores the photo could at best do). It says whether the encoder maps locate the face's parts.

Usage (seconds for 64 triplets):
  python scripts/keypoint_target_accuracy.py --checkpoint runs/lite/checkpoint.safetensors --data DATA/val \\
      [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from dfmvr.models.checkpoint import load_checkpoint
from dfmvr.train.data import TripletDataset


def predicted_and_true_landmarks(checkpoint: str, data: Path, batch: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """([N, views, K, 2] predicted, [N, views, K, 2] true) pixels."""
    model, _, _ = load_checkpoint(checkpoint, load_train_state=False)
    model.eval()
    dataset = TripletDataset(data, augment=False)
    predicted, truth = [], []
    with torch.no_grad():
        for start in range(0, len(dataset), batch):
            items = [dataset[i] for i in range(start, min(start + batch, len(dataset)))]
            x, _ = model.view_inputs(torch.stack([it["images"] for it in items]))
            fusion = model.uuunet
            predicted.append(fusion.keypoints_of(fusion.encode(x[:, 0], x[:, 1], x[:, 2])).numpy())
            truth += [it["landmarks"].numpy() for it in items]
    return np.concatenate(predicted), np.stack(truth)


def keypoint_report(predicted: np.ndarray, truth: np.ndarray) -> dict:
    def px2(a: np.ndarray, b: np.ndarray) -> float:
        return round(float(np.square(a - b).sum(axis=-1).mean()), 2)
    slot_mean = truth.mean(axis=0, keepdims=True)
    return {"triplets": int(len(truth)), "keypoint_px2": px2(predicted, truth),
            "slot_prior_px2": px2(np.broadcast_to(slot_mean, truth.shape), truth),
            "per_view_px2": [px2(predicted[:, v], truth[:, v]) for v in range(truth.shape[1])]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = {"checkpoint": args.checkpoint, "data": str(args.data),
              **keypoint_report(*predicted_and_true_landmarks(args.checkpoint, args.data))}
    print(json.dumps(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
