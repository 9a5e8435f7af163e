"""Which features can the keypoint readout localise landmarks from? An ablation of the feature source.

Trains only ``KeypointReadout`` (dfmvr/models/keypoints.py) and what feeds it, on the keypoint
loss alone (squared pixel distance to gt.npz's 2D landmarks), and scores held-out triplets against the
simplest baseline: each view slot's mean landmark positions over the training set.

    --source images   the readout on the three views' RGB, stacked (9 channels): no network in front
    --source unet     the readout on the tiny MulEn-Unet's fusion feature (U-Net trained jointly,
                      labels channel from --parse-net, per-sample layer statistics as the demo)

    python scripts/keypoint_localisation_probe.py --train data/train --val data/val --source unet \
        --parse-net runs/parse/parse_net.safetensors --steps 300 --json probe_unet.json

    --loss px2        the soft-argmax keypoints' squared pixel distance (what dfmvr-train uses)
    --loss heatmap    plus a cross-entropy of each heat map against a Gaussian (sigma one cell) at
                      the landmark: a gradient wherever the peak is, not only through the mean
    --stride N        heat-map cell size in pixels (the readout's default 8)

One thread by default (run two sources side by side on two cores). Writes a JSON record.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from dfmvr.train.data import TripletDataset
from dfmvr.models.keypoints import KeypointReadout
from dfmvr.train.losses.keypoints import keypoint_loss


class ImageSource(torch.nn.Module):
    out_channels = 9

    def forward(self, images):                       # [B, 3, 3, H, W] -> [B, 9, H, W]
        return images.flatten(1, 2)


class UnetSource(torch.nn.Module):
    def __init__(self, parse_net: str | None):
        super().__init__()
        from dfmvr.models.sample_norm import use_sample_statistics
        from dfmvr.models.variants import build_model
        self.net = build_model("tiny")
        use_sample_statistics(self.net, skip=self.net.mask_model, in_training=True, statistics="per_sample_layer")
        if parse_net:
            from dfmvr.train.parse_stage import attach_parse_weights
            attach_parse_weights(self.net, parse_net)
        self.out_channels = self.net.uuunet.out_features

    def forward(self, images):
        with torch.no_grad():
            b, v, c, h, w = images.shape
            labels = self.net.mask_model(images.reshape(b * v, c, h, w)).max(dim=1).indices.reshape(b, v, h, w)
        x = torch.cat([images, labels.unsqueeze(2).to(images.dtype)], dim=2)
        return self.net.uuunet(x[:, 0], x[:, 1], x[:, 2])


def heatmap_loss(readout, feature, landmarks):
    """Cross-entropy of softmax(heat maps) against a Gaussian target (sigma = one cell) at each
    landmark, plus the soft-argmax px^2 (so both runs optimise the scored quantity)."""
    heat = readout.heatmaps(feature)                                   # [B, V*K, h, w]
    b, _, h, w = heat.shape
    s = readout.stride
    ys = (torch.arange(h, dtype=heat.dtype) + 0.5) * s
    xs = (torch.arange(w, dtype=heat.dtype) + 0.5) * s
    lm = landmarks.reshape(b, -1, 2)
    d2 = (xs[None, None, None, :] - lm[..., 0, None, None]) ** 2 + (ys[None, None, :, None] - lm[..., 1, None, None]) ** 2
    target = torch.softmax((-d2 / (2 * s * s)).flatten(2), dim=-1)
    ce = -(target * torch.log_softmax(heat.flatten(2), dim=-1)).sum(-1).mean()
    kp = readout(feature)
    return ce + 1e-2 * keypoint_loss(kp, landmarks, torch.ones(b, 3, dtype=torch.bool)), kp


def _batches(dataset, batch, rng):
    while True:
        order = rng.permutation(len(dataset))
        for start in range(0, len(order) - batch + 1, batch):
            items = [dataset[int(i)] for i in order[start:start + batch]]
            yield torch.stack([t["images"] for t in items]), torch.stack([t["landmarks"] for t in items])


def _held_out_error(source, readout, dataset, limit) -> float:
    errors = []
    with torch.no_grad():
        for i in range(min(limit, len(dataset))):
            t = dataset[i]
            kp = readout(source(t["images"][None]))
            errors.append(float(keypoint_loss(kp, t["landmarks"][None], torch.ones(1, 3, dtype=torch.bool))))
    return float(np.mean(errors))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=Path, required=True)
    ap.add_argument("--val", type=Path, required=True)
    ap.add_argument("--source", choices=["images", "unet"], required=True)
    ap.add_argument("--parse-net", default=None)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--val-limit", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--loss", choices=["px2", "heatmap"], default="px2")
    ap.add_argument("--stride", type=int, default=8)
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    train, val = TripletDataset(args.train), TripletDataset(args.val)
    source = ImageSource() if args.source == "images" else UnetSource(args.parse_net)
    readout = KeypointReadout(source.out_channels, stride=args.stride)
    params = list(readout.parameters()) + [p for p in source.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=args.lr)
    mean = np.mean([train[i]["landmarks"].numpy() for i in range(0, len(train), max(1, len(train) // 400))], axis=0)
    baseline = float(np.mean([((val[i]["landmarks"].numpy() - mean) ** 2).sum(-1).mean()
                              for i in range(min(args.val_limit, len(val)))]))
    curve, start = [], time.perf_counter()
    batches = _batches(train, args.batch, np.random.default_rng(0))
    source.train(), readout.train()
    for step in range(1, args.steps + 1):
        images, landmarks = next(batches)
        feature = source(images)
        if args.loss == "heatmap":
            loss, _ = heatmap_loss(readout, feature, landmarks)
        else:
            loss = keypoint_loss(readout(feature), landmarks, torch.ones(images.shape[0], 3, dtype=torch.bool))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % max(1, args.steps // 6) == 0 or step == args.steps:
            source.eval(), readout.eval()
            curve.append({"step": step, "train_loss": float(loss.detach()), "held_out_px2": _held_out_error(source, readout, val, args.val_limit)})
            source.train(), readout.train()
            print(json.dumps(curve[-1]), flush=True)
    record = {"source": args.source, "loss": args.loss, "stride": args.stride, "steps": args.steps, "batch": args.batch, "lr": args.lr,
              "threads": args.threads, "seconds": round(time.perf_counter() - start, 1),
              "held_out_triplets": min(args.val_limit, len(val)),
              "slot_mean_baseline_px2": baseline, "curve": curve}
    args.json.write_text(json.dumps(record, indent=2))
    print(json.dumps({k: v for k, v in record.items() if k != "curve"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
