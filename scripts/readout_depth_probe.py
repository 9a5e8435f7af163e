"""Where does identity stop: would the heads do better reading a wider or deeper feature, or nonlinearly?

The heads refit (dfmvr/train/head_refit.py) made the heads the best *linear* map of the 1,568-long
readout. Before changing the main stage, this probe asks whether anything the regressor already
computes holds more: per feature depth of a ``lite`` checkpoint (eval mode, all views),

  - ``fused``    the attention-gated fusion map, averaged 2x2 (the regressor's input, 3*4w x 7 x 7);
  - ``block``    the involution bottleneck's output (128 x 14 x 14; what the readout conv reads);
  - ``block_pooled`` the same averaged 2x2 (128 x 7 x 7);
  - ``readout``  the heads' own input (readout_channels x 14 x 14);

a ridge regression to the identity and expression coefficients (kernel form: the widest depth has
25,088 features, more than the rows), and a one-hidden-layer MLP on the readout (loss in vertex space).
Rows: the first ``--triplets`` of ``--train`` minus 1,000 fit, the next 500 choose the ridge strength,
the last 500 and ``--val`` score (vertex-space R², dfmvr eval's). The first triplets of the recipe's
folder were trained on, the last ones were not: the 500 scored ones are never-seen faces.

Usage (about 6 min on 2 cores for 6,000 triplets):
  python scripts/readout_depth_probe.py --checkpoint runs/lite/checkpoint.safetensors \\
      --train DATA/train --val DATA/val --triplets 6000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dfmvr.face.layout import COEFFS
from dfmvr.face.metrics import shape_r2
from dfmvr.face.model import MorphableModel
from dfmvr.models.checkpoint import load_checkpoint
from dfmvr.train.data import TripletDataset
from dfmvr.train.head_refit import group_columns

DEPTHS = ("fused", "block", "block_pooled", "readout")
STRENGTHS = (1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6)
HELD = 500          # rows that choose the strength, and rows that score


@torch.no_grad()
def depth_features(model, dataset, count: int, batch: int = 16, depths=DEPTHS,
                   keypoints: bool = False) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Eval-mode features of the first ``count`` triplets at each of ``depths`` (float32) and their true
    coefficients. ``keypoints``: also what the encoders' keypoint heads (training-only, not in the
    graph) predict from the same forward (``keypoints`` [N, 3 * 68 * 2] px), the true 2D landmarks
    (``landmarks``, same layout) and which are visible (``visible`` [N, 3 * 68])."""
    regressor, fusion = model.rednet_fc, model.uuunet
    store = {name: [] for name in (*depths, *(("keypoints", "landmarks", "visible") if keypoints else ()))}
    encoded = {}

    def keep(name, transform):
        return lambda module, args: store[name].append(transform(args[0]).flatten(1).float().numpy())

    wanted = {"fused": (regressor.reduce, lambda x: F.avg_pool2d(x, 2)), "block": (regressor.spatial_reduce, lambda x: x),
              "block_pooled": (regressor.spatial_reduce, lambda x: F.avg_pool2d(x, 2)),
              "readout": (regressor.conv2_id, lambda x: x)}
    hooks = [wanted[name][0].register_forward_pre_hook(keep(name, wanted[name][1])) for name in depths]
    if keypoints:
        hooks += [getattr(fusion, f"enc_{v}").register_forward_hook(lambda m, args, out, v=v: encoded.__setitem__(v, out))
                  for v in range(fusion.num_views)]
    model.eval()
    truth = []
    try:
        for start in range(0, count, batch):
            items = [dataset[i] for i in range(start, min(start + batch, count))]
            model(torch.stack([it["images"] for it in items]))
            truth.append(torch.stack([it["coefficients"] for it in items]).numpy())
            if keypoints:
                store["keypoints"].append(fusion.keypoints_of([encoded[v] for v in range(fusion.num_views)]).flatten(1).numpy())
                store["landmarks"].append(torch.stack([it["landmarks"] for it in items]).flatten(1).numpy())
                store["visible"].append(torch.stack([it["landmarks_visible"] for it in items]).flatten(1).numpy())
    finally:
        for hook in hooks:
            hook.remove()
    return {name: np.concatenate(parts) for name, parts in store.items()}, np.concatenate(truth).astype(np.float64)


def kernel_ridge_path(fit: np.ndarray, targets: np.ndarray, strengths=STRENGTHS):
    """Ridge on standardised ``fit`` [N, D] -> ``targets`` [N, O] for every strength, solved in kernel
    form (one eigendecomposition of the N x N Gram matrix: D may exceed N). -> a function that maps
    (strength, rows [M, D]) to predictions [M, O]."""
    mean, std = fit.mean(0), fit.std(0)
    # A ReLU channel that almost never fires has a tiny spread in the fit rows; dividing by it would
    # blow up the one unseen row where it fires (seen: identity R² -4 on 500 unseen triplets). No
    # feature is scaled up by more than a tenth of the typical spread allows.
    floor = 0.1 * float(np.mean(std))
    scale = np.where(std > 0, 1.0 / np.maximum(std, floor), 0.0)
    a = (fit - mean) * scale
    values, vectors = np.linalg.eigh(a @ a.T)
    offset = targets.mean(0)
    projected = vectors.T @ (targets - offset)
    weights = {s: a.T @ (vectors @ (projected / (values + s)[:, None])) for s in strengths}
    return lambda strength, rows: ((rows - mean) * scale) @ weights[strength] + offset


def vertex_whitening(face_model: MorphableModel) -> tuple[np.ndarray, np.ndarray]:
    """Cholesky factors L (identity, expression) of each group's Gram matrix B^T B (B: the face
    model's basis, [3 * vertices, K]): |c @ L|^2 = |B c|^2, so a plain MSE on c @ L is the squared
    vertex error, the quantity shape_r2 scores."""
    factors = []
    for basis in (face_model.id_basis, face_model.exp_basis):
        flat = basis.reshape(-1, basis.shape[-1]).astype(np.float64)
        factors.append(np.linalg.cholesky(flat.T @ flat))
    return factors[0], factors[1]


def mlp_probe(fit_x, fit_y, score_sets, whiten, hidden=1024, epochs=60, seed=0):
    """One hidden layer (dropout 0.3, AdamW, one-cycle) on standardised inputs; targets whitened to
    vertex space. -> {set name: predictions [M, O] in coefficients}."""
    l_id, l_exp = whiten
    n_id = l_id.shape[0]

    def to_vertex(y):
        return np.concatenate([y[:, :n_id] @ l_id, y[:, n_id:] @ l_exp], 1)

    def from_vertex(w):
        return np.concatenate([np.linalg.solve(l_id.T, w[:, :n_id].T).T, np.linalg.solve(l_exp.T, w[:, n_id:].T).T], 1)

    torch.manual_seed(seed)
    mean, std = fit_x.mean(0), fit_x.std(0) + 1e-6
    target = to_vertex(fit_y)
    t_mean, t_scale = target.mean(0), target.std(0).mean()
    x = torch.from_numpy(((fit_x - mean) / std).astype(np.float32))
    y = torch.from_numpy(((target - t_mean) / t_scale).astype(np.float32))
    net = torch.nn.Sequential(torch.nn.Dropout(0.3), torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(),
                              torch.nn.Dropout(0.3), torch.nn.Linear(hidden, y.shape[1]))
    steps_per_epoch = (len(x) + 127) // 128
    optimiser = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, 1e-3, total_steps=epochs * steps_per_epoch)
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for start in range(0, len(x), 128):
            rows = order[start:start + 128]
            loss = ((net(x[rows]) - y[rows]) ** 2).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
    net.eval()
    with torch.no_grad():
        return {name: from_vertex(net(torch.from_numpy(((rows - mean) / std).astype(np.float32))).double().numpy()
                                  * t_scale + t_mean) for name, rows in score_sets.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a lite checkpoint (the main stage's, or the demo)")
    parser.add_argument("--train", required=True, help="training triplets (dfmvr data synth, with gt.npz)")
    parser.add_argument("--val", required=True, help="held-out triplets")
    parser.add_argument("--triplets", type=int, default=6000, help="first N of --train (N - 1000 fit)")
    parser.add_argument("--json", required=True)
    parser.add_argument("--mlp-epochs", type=int, default=60)
    args = parser.parse_args()

    started = time.perf_counter()
    model, _, _ = load_checkpoint(args.checkpoint, load_train_state=False)
    face_model = MorphableModel.load(Path(args.train) / "face_model.npz")
    train = TripletDataset(args.train)
    count = min(args.triplets, len(train))
    held = min(HELD, count // 4)
    fit, choose, score = slice(0, count - 2 * held), slice(count - 2 * held, count - held), slice(count - held, count)
    feats, truth = depth_features(model, train, count)
    val_feats, val_truth = depth_features(model, TripletDataset(args.val), len(TripletDataset(args.val)))
    groups = group_columns(COEFFS)
    columns = np.concatenate([groups["identity"], groups["expression"]])

    def r2(predicted_columns, true_full):
        predicted = true_full.copy()
        predicted[:, columns] = predicted_columns
        scores = shape_r2(face_model, COEFFS.split(predicted.astype(np.float32)), COEFFS.split(true_full.astype(np.float32)))
        return {k: round(v, 4) for k, v in scores.items()}

    report = {"checkpoint": str(args.checkpoint), "train": str(args.train), "val": str(args.val),
              "rows": {"fit": fit.stop - fit.start, "choose_strength": held, "score_unseen": held,
                       "val": len(val_truth)},
              "ridge": {}}
    for depth in DEPTHS:
        predict = kernel_ridge_path(feats[depth][fit].astype(np.float64), truth[fit][:, columns])
        by_strength = {s: r2(predict(s, feats[depth][choose].astype(np.float64)), truth[choose]) for s in STRENGTHS}
        best = max(STRENGTHS, key=lambda s: by_strength[s]["identity"])
        report["ridge"][depth] = {
            "features": int(feats[depth].shape[1]), "strength": best,
            "unseen": r2(predict(best, feats[depth][score].astype(np.float64)), truth[score]),
            "val": r2(predict(best, val_feats[depth].astype(np.float64)), val_truth)}
        print(depth, report["ridge"][depth], flush=True)
    predictions = mlp_probe(feats["readout"][fit], truth[fit][:, columns],
                            {"unseen": feats["readout"][score], "val": val_feats["readout"]},
                            vertex_whitening(face_model), epochs=args.mlp_epochs)
    report["mlp_on_readout"] = {"hidden": 1024, "epochs": args.mlp_epochs,
                                "unseen": r2(predictions["unseen"], truth[score]),
                                "val": r2(predictions["val"], val_truth)}
    print("mlp", report["mlp_on_readout"], flush=True)
    report["seconds"] = round(time.perf_counter() - started, 1)
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
