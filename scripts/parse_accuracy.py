"""How well a parse net labels the photos: pixel accuracy and per-class IoU against the true label maps.

The parse net is frozen during the main stage and its labels are half of what the `lite` network reads
(`docs/findings.md`: a ridge probe on its labels loses identity and expression against the true ones),
so its accuracy bounds the rest. Scored on every view of every labelled triplet folder under DATA
(synthetic gt.npz, or labels.npz), without augmentation.

Usage (about a minute for 64 triplets on 2 cores):
  python scripts/parse_accuracy.py --parse-net runs/parse/parse_net.safetensors --data DATA/val \
      [--json benchmarks/results/parse_accuracy.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from dfmvr.face.layout import NUM_PARSE_CLASSES, PARSE_CLASSES


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, classes: int = NUM_PARSE_CLASSES) -> np.ndarray:
    """[classes, classes] int64 counts, rows the true class, columns the predicted one."""
    index = truth.astype(np.int64).ravel() * classes + predicted.astype(np.int64).ravel()
    return np.bincount(index, minlength=classes * classes).reshape(classes, classes)


def scores(confusion: np.ndarray) -> dict:
    """Pixel accuracy, per-class IoU (None for a class absent from both truth and prediction) and their mean."""
    hits = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - hits
    iou = {name: (round(float(h / u), 4) if u else None) for name, h, u in zip(PARSE_CLASSES, hits, union)}
    present = [v for v in iou.values() if v is not None]
    return {"pixel_accuracy": round(float(hits.sum() / confusion.sum()), 4),
            "mean_iou": round(float(np.mean(present)), 4), "iou": iou}


def parse_confusion(parse_net: Path, data: Path, batch: int = 12) -> np.ndarray:
    import torch

    from dfmvr.train.parse_stage import TripletViews, load_parse_weights

    net, _ = load_parse_weights(parse_net)
    net.eval()
    views = TripletViews(data, augment=False)
    total = np.zeros((NUM_PARSE_CLASSES, NUM_PARSE_CLASSES), np.int64)
    for start in range(0, len(views), batch):
        items = [views[i] for i in range(start, min(start + batch, len(views)))]
        images = torch.stack([image for image, _ in items])
        predicted = net.labels(images).numpy()
        truth = torch.stack([labels for _, labels in items]).numpy()
        total += confusion_matrix(truth, predicted)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parse-net", type=Path, required=True, action="append",
                        help="parse-net weights (.safetensors or a foreign .pth); repeat to compare several")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = {"data": str(args.data), "classes": list(PARSE_CLASSES),
              "parse_nets": {str(p): scores(parse_confusion(p, args.data)) for p in args.parse_net}}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
