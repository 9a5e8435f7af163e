"""How precisely can a `lite` view encoder place the 68 landmarks, by input stem and map size?

Why: the landmark-precision probe (scripts/landmark_precision_probe.py, docs/training.md "How
precise the landmarks must be") found that identity R² 0.6 and expression 0.85 need landmarks to
about 1.5 px per coordinate (~2.1 px radial RMS at 224 px), and that the bundled demo's encoders place
them to 3.0 px. Before a 2.5-hour retrain, this asks which encoder design can get there at all.

Each arm trains the three `lite` encoders (``LiteFusion.encode``, one per view slot, as shipped) and
their keypoint heads on the keypoint loss alone, for the same steps, batch and learning rate, from the
same seed; the labels channel is the rendered ground-truth parse labels (no parser: the question is the
encoder, not the parser), or with ``--labels none`` empty (the photo alone: how much of the precision
the exact labels carry), or with ``--labels parser --parse-net P`` a frozen parse net's (what the shipped
main stage reads), or with ``--labels parser-soft`` that parse net's class probabilities in place of the
one-hot of their argmax (does the argmax throw away where a boundary lies?). Arms, one change each from
the shipped design:

    --stem pool        224 px -> 2x2 average -> encoder at 112 px (the shipped `lite`)
    --stem unshuffle   224 px -> pixel-unshuffle (each 2x2 block into 4x the channels: nothing lost) -> 112
    --stem conv        224 px -> a learned 3x3 stride-2 conv (16 channels, BN, ReLU) -> 112
    --map 28           the keypoint head reads the encoder's 28x28 stage beside its 14x14 output
                       (upsampled), heat-map cells of 8 px instead of 16

Scored on held-out triplets (eval-mode batch norm, no augmentation): radial RMS pixel error per view
slot, against each slot's mean landmarks over the training set. Also the encoders' forward cost
(multiply-accumulates per triplet, counted from the layer shapes). One thread by default.

    python scripts/encoder_precision_probe.py --train data/train --val data/val --stem unshuffle \
        --steps 1500 --seed 0 --json probe_unshuffle.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landmark_precision_probe import keypoint_rms_px   # a sibling script: run from scripts/ or with it on sys.path

from dfmvr.models.dfmvr_net import fusion_input
from dfmvr.models.lite import POOL, LiteEncoder, LiteFusion, LiteKeypointHead
from dfmvr.train.data import TripletDataset
from dfmvr.train.losses.keypoints import keypoint_loss

STEM_CHANNELS = 16
STAGE_28 = 12            # LiteEncoder modules before its last stage: three per conv, two convs per stage


class StemmedFusion(LiteFusion):
    """``LiteFusion`` with another input stem and, optionally, a keypoint head on the 28x28 stage."""

    def __init__(self, stem: str, map_size: int, num_classes: int = 10, width: int = 32, keypoints: int = 68):
        super().__init__(num_classes=num_classes, width=width, keypoints=keypoints)
        self.stem, self.map_size = stem, map_size
        raw = 3 + num_classes
        encoder_in = {"pool": raw, "unshuffle": raw * POOL * POOL, "conv": STEM_CHANNELS}[stem]
        for v in range(self.num_views):
            self.add_module(f"enc_{v}", LiteEncoder(encoder_in, width))
            if stem == "conv":
                self.add_module(f"stem_{v}", nn.Sequential(
                    nn.Conv2d(raw, STEM_CHANNELS, 3, POOL, 1, bias=False), nn.BatchNorm2d(STEM_CHANNELS),
                    nn.ReLU(inplace=True)))
            if map_size == 28:
                self.add_module(f"kp_{v}", LiteKeypointHead(6 * width, keypoints, cell_px=float(POOL * 4)))

    def stemmed(self, v: int, x: Tensor) -> Tensor:
        # [B, 4, H, W] (RGB + label index, one-hot here) or, from --labels parser-soft, [B, 3 + classes, H, W]
        full = x if x.shape[1] == 3 + self.num_classes else self.full_resolution_input(x)
        if self.stem == "pool":
            return F.avg_pool2d(full, POOL)
        if self.stem == "unshuffle":
            return F.pixel_unshuffle(full, POOL)
        return getattr(self, f"stem_{v}")(full)

    def keypoints_of_views(self, views: list[Tensor]) -> Tensor:
        """[B, 4, 224, 224] per view -> keypoints [B, views, K, 2] px."""
        out = []
        for v, x in enumerate(views):
            encoder, head = getattr(self, f"enc_{v}"), getattr(self, f"kp_{v}")
            h = self.stemmed(v, x)
            if self.map_size == 28:
                layers = list(encoder)
                f28 = nn.Sequential(*layers[:STAGE_28])(h)
                f14 = nn.Sequential(*layers[STAGE_28:])(f28)
                h = torch.cat([f28, F.interpolate(f14, scale_factor=2, mode="nearest")], dim=1)
            else:
                h = encoder(h)
            out.append(head(h))
        return torch.stack(out, dim=1)

    def encoder_macs(self, size: int = 224) -> int:
        """Multiply-accumulates of the stems, encoders and keypoint heads for one triplet (convs only)."""
        macs, hooks = [0], []

        def count(module, _inputs, output):
            k = module.kernel_size[0] * module.kernel_size[1]
            macs[0] += output.numel() * (module.in_channels // module.groups) * k

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                hooks.append(m.register_forward_hook(count))
        was_training = self.training
        self.eval()
        with torch.no_grad():
            self.keypoints_of_views([torch.zeros(1, 4, size, size)] * self.num_views)
        self.train(was_training)
        for h in hooks:
            h.remove()
        return macs[0]


def views_of(item_images: Tensor, labels: Tensor | None) -> list[Tensor]:
    """images [B, 3, 3, H, W], labels [B, 3, H, W] -> per view [B, 4, H, W] (RGB + label index).
    ``labels=None``: every pixel class 0 (background), so the encoder sees the photo alone. Class
    probabilities [B, 3, classes, H, W] (``--labels parser-soft``) -> per view [B, 3 + classes, H, W]."""
    if labels is not None and labels.dim() == 5:
        return [torch.cat([item_images[:, v], labels[:, v].to(item_images.dtype)], dim=1)
                for v in range(item_images.shape[1])]
    if labels is None:
        labels = torch.zeros(item_images.shape[:2] + item_images.shape[3:], dtype=torch.int64)
    x = fusion_input(item_images, labels)
    return [x[:, v] for v in range(x.shape[1])]


class LabelSource:
    """What the labels channel holds: ``truth`` (the rendered parse labels), ``none`` (class 0 everywhere:
    the photo alone), ``parser`` (a frozen parse net's labels, as the shipped main stage reads them) or
    ``parser-soft`` (its class probabilities instead of their argmax: where a boundary lies between two
    pixels, and how sure the parser is, which the argmax throws away)."""

    def __init__(self, kind: str, parse_net: str | None = None):
        self.kind, self.parser = kind, None
        if kind.startswith("parser"):
            if not parse_net:
                raise SystemExit("--labels parser needs --parse-net (a dfmvr-train --stage parse output)")
            from dfmvr.train.parse_stage import load_parse_weights
            self.parser = load_parse_weights(parse_net)[0].eval()

    def __call__(self, images: Tensor, truth: Tensor) -> Tensor | None:
        if self.kind == "truth":
            return truth
        if self.kind == "none":
            return None
        b, v, c, h, w = images.shape
        with torch.no_grad():
            if self.kind == "parser":
                return self.parser.labels(images.reshape(b * v, c, h, w)).reshape(b, v, h, w)
            out = self.parser(images.reshape(b * v, c, h, w))
            logits = out[0] if isinstance(out, tuple) else out
            return logits.softmax(dim=1).reshape(b, v, -1, h, w)


def batches(dataset: TripletDataset, batch: int, rng: np.random.Generator):
    while True:
        order = rng.permutation(len(dataset))
        for start in range(0, len(order) - batch + 1, batch):
            items = [dataset[int(i)] for i in order[start:start + batch]]
            yield (torch.stack([t["images"] for t in items]), torch.stack([t["labels"] for t in items]),
                   torch.stack([t["landmarks"] for t in items]))


def predict_landmarks(net: StemmedFusion, dataset: TripletDataset, count: int,
                      labels_of: LabelSource) -> dict[str, np.ndarray]:
    """Eval-mode keypoints of the first ``count`` triplets: ``predicted`` and ``truth`` [N, views, K, 2]
    px, ``visible`` [N, views, K] and the true ``coefficients`` [N, 269] where gt.npz has them."""
    out = {"predicted": [], "truth": [], "visible": [], "coefficients": []}
    net.eval()
    with torch.no_grad():
        for start in range(0, min(count, len(dataset)), 8):
            items = [dataset[i] for i in range(start, min(start + 8, count, len(dataset)))]
            images = torch.stack([t["images"] for t in items])
            labels = labels_of(images, torch.stack([t["labels"] for t in items]))
            out["predicted"].append(net.keypoints_of_views(views_of(images, labels)).numpy())
            out["truth"] += [t["landmarks"].numpy() for t in items]
            out["visible"] += [t["landmarks_visible"].numpy() for t in items]
            out["coefficients"] += [t["coefficients"].numpy() for t in items if "coefficients" in t]
    net.train()
    return {"predicted": np.concatenate(out["predicted"]), **{k: np.stack(v) for k, v in out.items()
                                                             if k != "predicted" and v}}


def ridge_scores(fit_rows: dict, scored: dict[str, dict], face_model_path: Path) -> dict:
    """Identity / expression R² (vertex space) of a ridge from each landmark source to the true
    coefficients: the encoders' predicted keypoints, the exact landmarks, the exact ones with 1.5 px of
    error per coordinate. The landmark-precision probe's protocol: kernel ridge, the last 500 (or a
    quarter) of the fit rows choose the strength by identity R²."""
    from landmark_precision_probe import identity_expression_scorer, noisy
    from readout_depth_probe import HELD, STRENGTHS, kernel_ridge_path

    from dfmvr.face.model import MorphableModel

    columns, r2 = identity_expression_scorer(MorphableModel.load(face_model_path))

    sources = {"predicted keypoints": lambda rows, seed: rows["predicted"],
               "exact landmarks": lambda rows, seed: rows["truth"],
               "exact landmarks + 1.5 px": lambda rows, seed: noisy(rows["truth"], 1.5, seed)}
    n = len(fit_rows["predicted"])
    held = min(HELD, n // 4)
    fit, choose = slice(0, n - held), slice(n - held, n)
    truth = fit_rows["coefficients"].astype(np.float64)
    report = {"rows": {"fit": fit.stop, "choose_strength": held, **{k: len(v["predicted"]) for k, v in scored.items()}}}
    for name, features_of in sources.items():
        x = features_of(fit_rows, 0).reshape(n, -1).astype(np.float64)
        predict = kernel_ridge_path(x[fit], truth[fit][:, columns])
        best = max(STRENGTHS, key=lambda s: r2(predict(s, x[choose]), truth[choose])["identity"])
        report[name] = {"strength": best, **{
            set_name: r2(predict(best, features_of(rows, 1 + i).reshape(len(rows["predicted"]), -1).astype(np.float64)),
                         rows["coefficients"].astype(np.float64))
            for i, (set_name, rows) in enumerate(scored.items())}}
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=Path, required=True)
    ap.add_argument("--val", type=Path, required=True)
    ap.add_argument("--stem", choices=["pool", "unshuffle", "conv"], default="pool")
    ap.add_argument("--map", dest="map_size", type=int, choices=[14, 28], default=14)
    ap.add_argument("--labels", choices=["truth", "none", "parser", "parser-soft"], default="truth",
                    help="the labels channel: the rendered parse labels, none (the photo alone), --parse-net's, "
                         "or --parse-net's class probabilities")
    ap.add_argument("--parse-net", default=None, help="with --labels parser: a dfmvr-train --stage parse output")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-limit", type=int, default=64)
    ap.add_argument("--evals", type=int, default=5, help="held-out scorings along the run")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ridge-triplets", type=int, default=0,
                    help="after training, ridge from the predicted keypoints of the first N training triplets "
                         "to the true identity and expression, scored on --val and --unseen (0: skip)")
    ap.add_argument("--unseen", type=Path, default=None, help="more held-out triplets for the ridge scores")
    ap.add_argument("--save", type=Path, default=None, help="the trained encoders and heads (safetensors)")
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train, val = TripletDataset(args.train, augment=True), TripletDataset(args.val)
    net = StemmedFusion(args.stem, args.map_size)
    labels_of = LabelSource(args.labels, args.parse_net)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
    sample = range(0, len(train), max(1, len(train) // 400))
    slot_mean = np.mean([train[i]["landmarks"].numpy() for i in sample], axis=0)
    truth_val = np.stack([val[i]["landmarks"].numpy() for i in range(min(args.val_limit, len(val)))])
    visible_val = np.stack([val[i]["landmarks_visible"].numpy() for i in range(len(truth_val))])
    prior = keypoint_rms_px(np.broadcast_to(slot_mean, truth_val.shape), truth_val)
    prior_visible = keypoint_rms_px(np.broadcast_to(slot_mean, truth_val.shape), truth_val, visible_val)
    curve, start = [], time.perf_counter()
    stream = batches(train, args.batch, np.random.default_rng(args.seed))
    every = max(1, args.steps // args.evals)
    net.train()
    for step in range(1, args.steps + 1):
        images, labels, landmarks = next(stream)
        predicted = net.keypoints_of_views(views_of(images, labels_of(images, labels)))
        loss = keypoint_loss(predicted, landmarks, torch.ones(images.shape[0], 3, dtype=torch.bool))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        if step % every == 0 or step == args.steps:
            rows = predict_landmarks(net, val, args.val_limit, labels_of)
            curve.append({"step": step, "train_loss": round(float(loss.detach()), 3),
                          "held_out_rms_px": keypoint_rms_px(rows["predicted"], rows["truth"]),
                          "held_out_rms_visible_px": keypoint_rms_px(rows["predicted"], rows["truth"], rows["visible"]),
                          "seconds": round(time.perf_counter() - start, 1)})
            print(json.dumps(curve[-1]), flush=True)
    record = {"stem": args.stem, "map": args.map_size, "seed": args.seed, "steps": args.steps, "batch": args.batch,
              "lr": args.lr, "schedule": "cosine to 0", "threads": args.threads,
              "labels": {"truth": "rendered ground truth", "none": "none (class 0 everywhere)",
                         "parser": f"parse net {args.parse_net}",
                         "parser-soft": f"parse net {args.parse_net}, class probabilities"}[args.labels], "augment": True,
              "encoder_macs_per_triplet": net.encoder_macs(),
              "held_out_triplets": len(truth_val), "slot_prior_rms_px": prior, "slot_prior_rms_visible_px": prior_visible,
              "held_out_rms_px": curve[-1]["held_out_rms_px"],
              "held_out_rms_visible_px": curve[-1]["held_out_rms_visible_px"], "seconds": curve[-1]["seconds"]}
    if args.save:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(args.save))
    if args.ridge_triplets:
        scored = {"val": predict_landmarks(net, val, len(val), labels_of)}
        if args.unseen:
            scored["unseen"] = predict_landmarks(net, TripletDataset(args.unseen), 10**9, labels_of)
        record["ridge"] = ridge_scores(predict_landmarks(net, TripletDataset(args.train), args.ridge_triplets, labels_of),
                                       scored, args.train / "face_model.npz")
    record["curve"] = curve
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2))
    print(json.dumps({k: v for k, v in record.items() if k != "curve"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
