"""Which design choices let a small per-view CNN learn identity, expression and pose from the photos?

The accuracy issue's ablation, run on a cheap proxy so that each row takes minutes on one CPU thread:
a plain per-view CNN at 112 px (the 224-px renders averaged 2x2) regresses identity and expression
(vertex-weighted loss: the squared vertex error of the predicted shape offset, exactly what the R²
below scores) and each view's pose. One flag changes per row, the step count stays the same:

  --norm batch|sample      BatchNorm, or per-sample statistics (GroupNorm with one group: what
                           ``--per-sample-norm layer`` gives the shipped tiny)
  --readout points|gap|flatten
                           soft-argmax of K learned heat maps per view (where things are), global
                           average (what the official heads read: which things are there), or a
                           1x1 reduction read at every position
  --batch, --lr, --train-size, --view-dropout
                           the optimisation and data choices of the shipped recipe
  --labels none|scalar|onehot
                           the true parse labels as a fourth input channel: absent, as the class
                           index (what DF-MVR feeds its U-Net), or one channel per class

Scores on held-out triplets (a dataset never trained on): vertex-space R² of identity and expression
(``dfmvr.face.metrics.shape_r2``) and the median rotation error against the slot prior
(``pose_errors`` / ``slot_prior``). The first run caches the decoded data under --cache.

    python scripts/identity_learning_probe.py --train data/train --val data/val --out probe.json \
        --steps 600 --readout points
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dfmvr.face.layout import COEFFS, NUM_PARSE_CLASSES, Coefficients
from dfmvr.face.metrics import pose_errors, shape_r2, slot_prior
from dfmvr.face.model import MorphableModel
from dfmvr.train.data import TripletDataset

SIZE = 112


def load_split(root: Path, cache: Path, limit: int | None) -> dict[str, np.ndarray]:
    """images [N, 3, 3, 112, 112] uint8, labels [N, 3, 112, 112] uint8, coefficients [N, 269]."""
    if cache.exists():
        data = dict(np.load(cache))
    else:
        ds = TripletDataset(root)
        images, labels, coefficients = [], [], []
        for i in range(len(ds)):
            item = ds[i]
            rgb01 = (item["images"] * 0.5 + 0.5).clamp(0, 1)                     # [3, 3, 224, 224]
            images.append((F.avg_pool2d(rgb01, 2) * 255).round().to(torch.uint8).numpy())
            labels.append(item["labels"][:, ::2, ::2].numpy().astype(np.uint8))  # nearest (the top-left pixel)
            coefficients.append(item["coefficients"].numpy())
        data = {"images": np.stack(images), "labels": np.stack(labels), "coefficients": np.stack(coefficients)}
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **data)
    if limit:
        data = {k: v[:limit] for k, v in data.items()}
    return data


class ViewEncoder(nn.Module):
    """[B, C, 112, 112] -> [B, 128, 14, 14]: six 3x3 convs, three of stride 2."""

    def __init__(self, in_channels: int, norm: str, width: int = 32):
        super().__init__()
        def block(cin, cout, stride):
            normaliser = nn.BatchNorm2d(cout) if norm == "batch" else nn.GroupNorm(1, cout)
            return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), normaliser, nn.ReLU(inplace=True)]
        w = width
        layers = (block(in_channels, w, 2) + block(w, w, 1) + block(w, 2 * w, 2) + block(2 * w, 2 * w, 1)
                  + block(2 * w, 4 * w, 2) + block(4 * w, 4 * w, 1))
        self.net = nn.Sequential(*layers)
        self.out_channels = 4 * w

    def forward(self, x):
        return self.net(x)


class Readout(nn.Module):
    """[B, C, h, w] -> [B, features]."""

    def __init__(self, kind: str, channels: int, points: int, h: int):
        super().__init__()
        self.kind = kind
        if kind == "points":
            self.maps = nn.Conv2d(channels, points, 1)
            self.features = 2 * points + channels
        elif kind == "flatten":
            self.reduce = nn.Conv2d(channels, 8, 1)
            self.features = 8 * h * h
        else:
            self.features = channels

    def forward(self, x):
        if self.kind == "gap":
            return x.mean((2, 3))
        if self.kind == "flatten":
            return self.reduce(x).flatten(1)
        b, _, h, w = x.shape
        prob = self.maps(x).flatten(2).softmax(-1)                                   # [B, K, h*w]
        ys = torch.linspace(-1, 1, h).repeat_interleave(w)
        xs = torch.linspace(-1, 1, w).repeat(h)
        points = torch.stack([prob @ xs, prob @ ys], -1).flatten(1)                    # [B, 2K]
        return torch.cat([points * 4.0, x.mean((2, 3))], 1)   # x4: a cell is 1/7 of [-1, 1]


class ProbeNet(nn.Module):
    """Three per-view encoders (one per slot), readouts concatenated, a linear head to
    identity + expression (shared) and each view's pose (6 values)."""

    def __init__(self, in_channels: int, norm: str, readout: str, points: int, shared: bool):
        super().__init__()
        encoders = [ViewEncoder(in_channels, norm)] * 3 if shared else [ViewEncoder(in_channels, norm) for _ in range(3)]
        self.encoders = nn.ModuleList(encoders)
        self.readouts = nn.ModuleList(Readout(readout, encoders[0].out_channels, points, SIZE // 8) for _ in range(3))
        features = sum(r.features for r in self.readouts)
        self.shape = nn.Linear(features, COEFFS.identity + COEFFS.expression)
        self.pose = nn.Linear(features, 18)
        for head in (self.shape, self.pose):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, views):                       # views [B, 3, C, H, W]
        f = torch.cat([r(e(views[:, i])) for i, (e, r) in enumerate(zip(self.encoders, self.readouts))], 1)
        return self.shape(f), self.pose(f)


def network_input(images: np.ndarray, labels: np.ndarray, mode: str) -> torch.Tensor:
    x = torch.from_numpy(images).float() / 127.5 - 1.0                               # [B, 3, 3, H, W]
    if mode == "none":
        return x
    lab = torch.from_numpy(labels).long()
    if mode == "scalar":
        extra = lab[:, :, None].float()
    else:
        extra = F.one_hot(lab, NUM_PARSE_CLASSES).permute(0, 1, 4, 2, 3).float()
    return torch.cat([x, extra], 2)


def targets(coefficients: np.ndarray):
    c = COEFFS.split(coefficients)
    shape = np.concatenate([c.identity, c.expression], 1)
    pose = np.concatenate([c.rotation, c.translation], 2).reshape(len(coefficients), 18)
    return torch.from_numpy(shape).float(), torch.from_numpy(pose).float()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", type=Path, required=True)
    p.add_argument("--val", type=Path, required=True)
    p.add_argument("--cache", type=Path, default=Path("probe_cache"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--train-size", type=int, default=None)
    p.add_argument("--norm", choices=["batch", "sample"], default="batch")
    p.add_argument("--readout", choices=["points", "gap", "flatten"], default="points")
    p.add_argument("--points", type=int, default=32)
    p.add_argument("--labels", choices=["none", "scalar", "onehot"], default="none")
    p.add_argument("--shared", action="store_true", help="one encoder for the three slots")
    p.add_argument("--view-dropout", type=float, default=0.0, help="probability of zeroing each side view")
    p.add_argument("--pose-weight", type=float, default=1.0)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)

    train = load_split(a.train, a.cache / f"{a.train.name}.npz", a.train_size)
    val = load_split(a.val, a.cache / f"{a.val.name}.npz", None)
    face_model = MorphableModel.load(a.train / "face_model.npz")
    n = face_model.num_vertices
    basis = np.concatenate([face_model.id_basis.reshape(3 * n, -1), face_model.exp_basis.reshape(3 * n, -1)], 1)
    # The vertex loss as a quadratic form: ||B d||^2 / n = ||L^T d||^2 / n with B^T B = L L^T.
    chol = torch.from_numpy(np.linalg.cholesky(basis.T.astype(np.float64) @ basis + 1e-9 * np.eye(basis.shape[1]))).float()
    train_shape, train_pose = targets(train["coefficients"])
    pose_mean, pose_std = train_pose.mean(0), train_pose.std(0) + 1e-6

    in_channels = {"none": 3, "scalar": 4, "onehot": 3 + NUM_PARSE_CLASSES}[a.labels]
    net = ProbeNet(in_channels, a.norm, a.readout, a.points, a.shared)
    opt = torch.optim.Adam(net.parameters(), lr=a.lr)
    # warm-up: a tenth of the steps, at least two (OneCycleLR divides by the warm-up length minus one)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=a.steps, pct_start=max(0.1, 2.5 / a.steps))

    def evaluate():
        net.eval()
        shapes, poses = [], []
        with torch.no_grad():
            for i in range(0, len(val["images"]), 32):
                s, q = net(network_input(val["images"][i:i + 32], val["labels"][i:i + 32], a.labels))
                shapes.append(s)
                poses.append(q * pose_std + pose_mean)
        net.train()
        shape, pose = torch.cat(shapes).numpy(), torch.cat(poses).numpy().reshape(-1, 3, 6)
        truth = COEFFS.split(val["coefficients"])
        pred = Coefficients(identity=shape[:, :COEFFS.identity], expression=shape[:, COEFFS.identity:],
                            texture=truth.texture * 0, lighting=truth.lighting * 0,
                            rotation=pose[:, :, :3], translation=pose[:, :, 3:])
        r2 = shape_r2(face_model, pred, truth)
        rot_model = pose_errors(pred, truth)["rotation_deg"]["median"]
        rot_prior = pose_errors(slot_prior(truth), truth)["rotation_deg"]["median"]
        return {"identity_r2": r2["identity"], "expression_r2": r2["expression"],
                "rotation_median_deg": rot_model, "slot_prior_rotation_median_deg": rot_prior}

    history, start = [], time.perf_counter()
    for step in range(1, a.steps + 1):
        idx = rng.integers(0, len(train["images"]), a.batch)
        x = network_input(train["images"][idx], train["labels"][idx], a.labels)
        if a.view_dropout:
            drop = torch.from_numpy(rng.random((a.batch, 3)) < a.view_dropout)
            drop[:, 1] = False                                       # the front view always stays
            x = x * (~drop)[:, :, None, None, None]
        shape, pose = net(x)
        d = shape - train_shape[idx]
        shape_loss = ((d @ chol) ** 2).sum(1).mean() / n * 1e2         # dm^2 per vertex, x100
        pose_loss = ((pose - (train_pose[idx] - pose_mean) / pose_std) ** 2).mean()
        loss = shape_loss + a.pose_weight * pose_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % a.eval_every == 0 or step == a.steps:
            row = {"step": step, "seconds": round(time.perf_counter() - start, 1),
                   "train_loss": float(loss.detach()), **evaluate()}
            history.append(row)
            print(json.dumps(row), flush=True)
    a.out.write_text(json.dumps({"config": {k: str(v) for k, v in vars(a).items()},
                                 "threads": torch.get_num_threads(), "history": history}, indent=1))


if __name__ == "__main__":
    main()
