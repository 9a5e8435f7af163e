"""How much identity and expression the synthetic data shows, and how much a trained network keeps.

A diagnostic for #5 (the demo learns expression but no identity). Two ridge regressions, each fitted on
the training triplets, its ridge strength chosen on a selection set, scored on the held-out set with
the vertex-space R² of ``dfmvr eval`` (``dfmvr.face.metrics.shape_r2``):

- ceiling: from the true 2D landmarks of the three views (and of the front view alone). The landmarks
  are what the images show of the geometry after alignment; a linear read of them bounds from below what
  a network could recover.
- labels (with --labels): from the true parse-label maps of the three views, each sampled to 32 x 32
  (every 7th pixel; --label-grid changes it) and one-hot per class: the simple baseline on what the
  network itself reads (its parse net's labels), so a network that does not beat it has not learned
  what it can. With --labels-from GRAPH the maps are the ones that exported graph's parse net gives (its `labels`
  output on the triplet's images): exactly what that network reads, parse errors included.
- features (with --checkpoint): from the trained network's own features: what its identity head
  (``conv2_id``) reads, every design; for the official and tiny designs also the global average of
  RedNet's last map (what the heads see with ``pool: average``) and the MulEn-Unet output pooled to
  14 x 14. The first against the network's own identity R² says whether identity is lost before the
  head (the features do not hold it) or in it (they do, and the head does not read it).

Usage (about 10 s for the ceiling, 6 min on 2 cores with --checkpoint):
  python scripts/identity_observability.py --train DATA/train --select DATA/select --val DATA/val \
      [--train-limit N] [--labels [--labels-from model.onnx]] [--checkpoint model.safetensors] \
      --json benchmarks/results/identity_observability.json
--train-limit fits on the first N training triplets only (the dual-form ridge and the network's
features grow with N; 1,500 of the recipe's 16,000 take about 5 min per checkpoint at one thread).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from dfmvr.face.layout import COEFFS, NUM_PARSE_CLASSES
from dfmvr.face.metrics import shape_r2
from dfmvr.face.model import MorphableModel

RIDGE_STRENGTHS = (1.0, 10.0, 100.0, 1e3, 1e4, 1e5)


def synthetic_folders(root: Path, limit: int | None = None) -> list[Path]:
    """The triplet folders under ``root`` that hold a gt.npz, sorted (the order ``TripletDataset``
    reads them in), the first ``limit`` only if given."""
    return sorted(p for p in root.iterdir() if (p / "gt.npz").is_file())[:limit]


def read_truth(root: Path, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """-> landmarks [N, 3, 68, 2], coefficients [N, 269] of the triplets ``synthetic_folders`` lists."""
    folders = synthetic_folders(root, limit)
    arrays = [np.load(p / "gt.npz") for p in folders]
    return (np.stack([a["landmarks"] for a in arrays]).astype(np.float64),
            np.stack([a["coefficients"] for a in arrays]).astype(np.float32))


LABEL_GRID = 32        # label maps sampled to LABEL_GRID x LABEL_GRID per view for the --labels probe


def true_labels(folder: Path) -> np.ndarray:
    """The renderer's label maps of one triplet folder: [3, S, S] uint8."""
    return np.load(folder / "gt.npz")["labels"]


def graph_labels(onnx_path: Path):
    """-> a function folder -> [3, S, S] uint8: the `labels` output of an exported graph (ONNX Runtime,
    no torch) on the folder's three aligned crops, decoded by the runtime and normalised per the card."""
    from dfmvr.card import GRAPH_INPUT, GRAPH_OUTPUTS
    from dfmvr.face.layout import VIEWS
    from dfmvr.runtime.artifacts import load_onnx_artifact
    from dfmvr.runtime.inputs import decode_image
    from dfmvr.runtime.runners import OnnxrtRunner

    card = load_onnx_artifact(onnx_path).card
    runner = OnnxrtRunner(onnx_path).activate()

    def labels(folder: Path) -> np.ndarray:
        crops = np.stack([decode_image(folder / f"{view}.png") for view in VIEWS])
        if crops.shape[1:3] != (card.image_size, card.image_size):
            raise ValueError(f"{folder}: crops are {crops.shape[2]}x{crops.shape[1]}, the graph reads aligned "
                             f"{card.image_size}x{card.image_size} crops")
        return np.asarray(runner.infer({GRAPH_INPUT: card.normalise(crops[None])})[GRAPH_OUTPUTS[1]][0])
    return labels


def label_features(root: Path, grid: int = LABEL_GRID, read=true_labels, limit: int | None = None) -> np.ndarray:
    """-> [N, 3 * grid * grid * NUM_PARSE_CLASSES] float32: the label maps (``read(folder)``, default
    the true ones) of the triplets ``synthetic_folders`` lists, sampled at the centres of a grid x grid
    tiling and one-hot per class."""
    rows = []
    for folder in synthetic_folders(root, limit):
        labels = read(folder)                                                # [3, S, S] uint8
        step = labels.shape[-1] // grid
        sampled = labels[:, step // 2::step, step // 2::step][:, :grid, :grid]
        rows.append((sampled[..., None] == np.arange(NUM_PARSE_CLASSES)).reshape(-1))
    return np.stack(rows).astype(np.float32)


def ridge_scores(face_model, features: dict, truth: dict) -> dict:
    """features/truth: {'train'|'select'|'val': [N, D] / [N, 269]}. Dual-form ridge (D may exceed N),
    features standardised on the training set. -> {lambda, identity, expression} on 'val'."""
    mean, std = features["train"].mean(0), features["train"].std(0) + 1e-6
    a = {k: (v - mean) / std for k, v in features.items()}
    gram = a["train"] @ a["train"].T
    target = truth["train"].astype(np.float64)
    offset = target.mean(0)

    def predict(split: str, strength: float) -> np.ndarray:
        alpha = np.linalg.solve(gram + strength * np.eye(len(gram)), target - offset)
        pred = truth[split].astype(np.float64).copy()       # poses, texture: the truth, untouched
        fitted = (a[split] @ a["train"].T) @ alpha + offset
        groups = COEFFS.split(np.arange(COEFFS.size)[None])
        for group in ("identity", "expression"):
            columns = getattr(groups, group)[0]
            pred[:, columns] = fitted[:, columns]
        return pred.astype(np.float32)

    def r2(split: str, strength: float) -> dict:
        return shape_r2(face_model, COEFFS.split(predict(split, strength)), COEFFS.split(truth[split]))

    best = max(RIDGE_STRENGTHS, key=lambda s: sum(r2("select", s).values()))
    return {"ridge_strength": best, **{k: round(v, 3) for k, v in r2("val", best).items()}}


def network_features(checkpoint: Path, roots: dict, limits: dict | None = None) -> dict:
    """{name: {split: [N, D]}}: what the identity head reads (``conv2_id``'s input, flattened), and for
    designs with a RedNet trunk and MulEn-Unet (official, tiny) its pooled last map and the U-Net output
    at 14 x 14. ``limits``: {split: N} reads only the first N triplets of that split."""
    import torch
    import torch.nn.functional as F

    from dfmvr.models.checkpoint import load_checkpoint
    from dfmvr.train.data import TripletDataset

    model, _, _ = load_checkpoint(checkpoint, load_train_state=False)
    model.eval()
    seen = {}
    readers = {"identity_head_input": lambda: seen["head"].flatten(1)}
    model.rednet_fc.conv2_id.register_forward_pre_hook(lambda m, args: seen.__setitem__("head", args[0]))
    rednet = getattr(model.rednet_fc, "rednet", None)
    if rednet is not None and hasattr(rednet, "layer4"):
        rednet.layer4.register_forward_hook(lambda m, i, o: seen.__setitem__("map", o))
        model.uuunet.register_forward_hook(lambda m, i, o: seen.__setitem__("unet", o))
        readers["rednet_average"] = lambda: seen["map"].mean(dim=(2, 3))
        readers["unet_14x14"] = lambda: F.adaptive_avg_pool2d(seen["unet"], 14).flatten(1)
    out = {name: {} for name in readers}
    for split, root in roots.items():
        dataset = TripletDataset(root)
        n = min(len(dataset), (limits or {}).get(split) or len(dataset))
        rows = {name: [] for name in readers}
        for start in range(0, n, 16):
            images = torch.stack([dataset[i]["images"] for i in range(start, min(start + 16, n))])
            with torch.no_grad():
                model(images)
            for name, read in readers.items():
                rows[name].append(read().numpy())
        for name in readers:
            out[name][split] = np.concatenate(rows[name]).astype(np.float64)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for split in ("train", "select", "val"):
        parser.add_argument(f"--{split}", type=Path, required=True)
    parser.add_argument("--labels", action="store_true", help="also the ridge probe on the true parse labels")
    parser.add_argument("--labels-from", type=Path, help="with --labels: an exported graph whose parse labels to read")
    parser.add_argument("--label-grid", type=int, default=LABEL_GRID,
                        help="with --labels: sample each label map on this grid (default 32, every 7th pixel of 224)")
    parser.add_argument("--train-limit", type=int, help="fit on the first N training triplets only")
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not 1 <= args.label_grid <= 224:
        parser.error(f"--label-grid must be 1 to 224 (the crops' size), got {args.label_grid}")
    roots = {"train": args.train, "select": args.select, "val": args.val}
    face_model = MorphableModel.load(args.train / "face_model.npz")
    landmarks, truth = {}, {}
    for split, root in roots.items():
        landmarks[split], truth[split] = read_truth(root, args.train_limit if split == "train" else None)
    report = {"triplets": {k: len(v) for k, v in truth.items()}, "metric": "vertex-space R² on --val",
              "landmarks_three_views": ridge_scores(face_model, {k: v.reshape(len(v), -1) for k, v in landmarks.items()}, truth),
              "landmarks_front_view": ridge_scores(face_model, {k: v[:, 1].reshape(len(v), -1) for k, v in landmarks.items()}, truth)}
    if args.labels:
        read = graph_labels(args.labels_from) if args.labels_from else true_labels
        report["labels_source"] = str(args.labels_from) if args.labels_from else "true (gt.npz)"
        grid = args.label_grid
        features = {split: label_features(root, grid, read=read, limit=len(truth[split])) for split, root in roots.items()}
        report[f"labels_{grid}x{grid}_three_views"] = ridge_scores(face_model, features, truth)
        report[f"labels_{grid}x{grid}_front_view"] = ridge_scores(
            face_model, {k: v.reshape(len(v), 3, -1)[:, 1] for k, v in features.items()}, truth)
    if args.checkpoint:
        report["checkpoint"] = str(args.checkpoint)
        for name, features in network_features(args.checkpoint, roots, {"train": args.train_limit}).items():
            report[f"network_{name}"] = ridge_scores(face_model, features, truth)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
