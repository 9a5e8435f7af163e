"""How well a parse net labels the photos: pixel accuracy, per-class IoU and boundary distance against the
true label maps.

The parse net is frozen during the main stage and its labels are half of what the `lite` network reads
(`docs/findings.md`: a ridge probe on its labels loses identity and expression against the true ones),
so its accuracy bounds the rest. Scored on every view of every labelled triplet folder under DATA
(synthetic gt.npz, or labels.npz), without augmentation.

IoU punishes a part one pixel too wide as much on the lips (a few pixels thick) as it rewards the skin,
so it can rank parsers against what the encoders need; the boundary distance (mean distance, px at 224,
from each part's predicted outline to its true one and back) measures where the parts are, which is
what the landmarks sit on (docs/training.md, "A sharper parser").

Usage (about a minute for 64 triplets on 2 cores):
  python scripts/parse_accuracy.py --parse-net runs/parse/parse_net.safetensors --data DATA/val \
      [--json benchmarks/results/parse_accuracy.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
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
    # predicted / true pixels: above 1 the parser paints the part too wide (a bias the encoders can learn
    # to undo), unlike the boundary noise IoU and boundary distance also count
    true_px, predicted_px = confusion.sum(1), confusion.sum(0)
    area = {name: (round(float(p / t), 3) if t else None) for name, t, p in zip(PARSE_CLASSES, true_px, predicted_px)}
    return {"pixel_accuracy": round(float(hits.sum() / confusion.sum()), 4),
            "mean_iou": round(float(np.mean(present)), 4), "iou": iou, "area_ratio": area}


def _outline(mask: np.ndarray) -> np.ndarray:
    """The mask's pixels with a 4-neighbour outside it (the image edge counts as inside)."""
    inner = cv2.erode(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3)),
                      borderType=cv2.BORDER_REPLICATE)
    return mask & (inner == 0)


def boundary_sums(truth: np.ndarray, predicted: np.ndarray, classes: int = NUM_PARSE_CLASSES) -> np.ndarray:
    """[classes, 4] for one [H, W] label map: summed distances (px) and their count, over both directions
    (each predicted outline pixel to the nearest true one, each true outline pixel to the nearest
    predicted one); whether the class is in the truth; whether the parser missed it entirely. A class
    present in only one of the two maps adds no distance (a miss is counted in the last column)."""
    out = np.zeros((classes, 4), np.float64)
    for c in range(classes):
        t, p = truth == c, predicted == c
        out[c, 2:] = t.any(), t.any() and not p.any()
        if not t.any() or not p.any():
            continue
        to_true = cv2.distanceTransform((~_outline(t)).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        to_predicted = cv2.distanceTransform((~_outline(p)).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        d = np.concatenate([to_true[_outline(p)], to_predicted[_outline(t)]])
        out[c, :2] = d.sum(), d.size
    return out


def boundary_scores(sums: np.ndarray) -> dict:
    """Mean boundary distance per class (None where never scored) and its mean over the classes scored;
    per class, the fraction of the views showing it where the parser labels none of it."""
    px = {name: (round(float(s / n), 3) if n else None) for name, (s, n, _, _) in zip(PARSE_CLASSES, sums)}
    missed = {name: (round(float(m / t), 4) if t else None) for name, (_, _, t, m) in zip(PARSE_CLASSES, sums)}
    present = [v for v in px.values() if v is not None]
    return {"mean_boundary_px": round(float(np.mean(present)), 3) if present else None, "boundary_px": px,
            "missed_fraction": missed}


def parse_confusion(parse_net: Path, data: Path, batch: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """The confusion counts and the boundary sums (``boundary_sums``) over every view under ``data``."""
    import torch

    from dfmvr.train.parse_stage import TripletViews, load_parse_weights

    net, _ = load_parse_weights(parse_net)
    net.eval()
    views = TripletViews(data, augment=False)
    total = np.zeros((NUM_PARSE_CLASSES, NUM_PARSE_CLASSES), np.int64)
    boundary = np.zeros((NUM_PARSE_CLASSES, 4), np.float64)
    for start in range(0, len(views), batch):
        items = [views[i] for i in range(start, min(start + batch, len(views)))]
        images = torch.stack([image for image, _ in items])
        predicted = net.labels(images).numpy()
        truth = torch.stack([labels for _, labels in items]).numpy()
        total += confusion_matrix(truth, predicted)
        for t, p in zip(truth, predicted):
            boundary += boundary_sums(t, p)
    return total, boundary


def _report(confusion: np.ndarray, boundary: np.ndarray) -> dict:
    return {**scores(confusion), **boundary_scores(boundary)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parse-net", type=Path, required=True, action="append",
                        help="parse-net weights (.safetensors or a foreign .pth); repeat to compare several")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = {"data": str(args.data), "classes": list(PARSE_CLASSES),
              "parse_nets": {str(p): _report(*parse_confusion(p, args.data)) for p in args.parse_net}}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
