"""Refit the coefficient heads in closed form: ridge regression on what they read (``--stage heads``).

Every head of both designs (``heads.py``, ``lite.py``) is a 1x1 conv on one vector [B, D, 1, 1]: a
linear map. After the main stage, the best linear map from that vector to the true coefficients can be
solved exactly on the training triplets instead of being approached by SGD. Why it pays (measured on
the bundled demo, docs/training.md, "Refitting the heads"): a ridge regression on the demo's own head
input, fitted on its 4,000 training triplets, scored held out, explained more identity and expression
than the demo's trained heads (0.518 / 0.779 against 0.482 / 0.724 R²). SGD left the heads short of
their optimum: augmented, view-dropped batches, weights that moved under them, a finite schedule.

What it does: eval-mode passes over the training triplets (clean: no augmentation) record the head
input, every triplet with all views and half of them again with views missing, the main stage's 2 : 1
mix (the network serves one or two views too); per coefficient group (identity, expression, ...) a
ridge regression on the standardised inputs, its strength chosen on the selection triplets (same mix); the
standardisation folds back into the conv's weight and bias, so the network and the exported graph
keep their shape. A group keeps its trained head when no strength beats it on the selection set.
Only the heads change; everything before them is untouched.

Without ground truth (``--targets landmark-fit``), the targets are each triplet's fit to its own 2D
landmarks (``landmark_fit.py``): what the weak landmark term says the face is, one triplet at a time.
The strength is then chosen by agreement with the selection triplets' fits, so nothing reads gt.npz.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dfmvr.atomic import atomic_write_text
from dfmvr.errors import InputError
from dfmvr.face.layout import COEFFS, VIEW_SUFFIXES
from dfmvr.face.metrics import rotation_error_deg, shape_r2
from dfmvr.face.model import MorphableModel
from dfmvr.models.heads import head_names

from .schedule import VIEW_PATTERNS

__all__ = ["DEFAULT_GROUPS", "HEAD_GROUPS", "TARGETS", "RIDGE_STRENGTHS", "SLOT_BREAK_SEEDS", "HeadFeatures", "head_features",
           "held_out_scores", "joined", "ridge_fit", "group_columns", "refit_heads", "run_head_refit",
           "slot_broken_rows", "training_mix_features"]

# group -> the heads (module names of heads.head_names) whose outputs form it
HEAD_GROUPS = {"identity": ("conv2_id",), "expression": ("conv2_exp",), "texture": ("conv2_color",),
               "lighting": ("conv2_gamma",),
               "rotation": tuple(f"conv2_rotate{sfx}" for sfx in VIEW_SUFFIXES),
               "translation": tuple(f"conv2_offset{part}{sfx}" for sfx in VIEW_SUFFIXES for part in ("_xy", "_z"))}
RIDGE_STRENGTHS = (1.0, 10.0, 100.0, 1e3, 1e4, 1e5)   # on standardised inputs; 1e3 won for the demo
DEFAULT_GROUPS = ("identity", "expression", "rotation")
TARGETS = ("truth", "landmark-fit")   # what the heads are fitted to (run_head_refit)
SLOT_BREAK_SEEDS = {"train": 1, "select": 2}   # separate random_breaks draws for the fit and the selection rows
# Translation is left out by default: on the demo the ridge lowered its coefficient MSE on the selection
# set but raised dfmvr eval's median translation error (29.9 -> 30.7 mm there, 24.3 -> 24.9 held out).


@dataclass
class HeadFeatures:
    """What the heads read [N, D] and the truth [N, COEFFS.size] for N triplets, in float64."""
    inputs: np.ndarray
    coefficients: np.ndarray
    predicted: np.ndarray | None = None     # the network's own output [N, COEFFS.size]

    def head(self, rows: int) -> "HeadFeatures":
        """The first ``rows`` rows."""
        return HeadFeatures(self.inputs[:rows], self.coefficients[:rows],
                            None if self.predicted is None else self.predicted[:rows])


@torch.no_grad()
def head_features(model, dataset, batch: int = 16, view_masks: np.ndarray | None = None,
                  targets: np.ndarray | None = None) -> HeadFeatures:
    """One eval-mode pass over ``dataset`` (a TripletDataset without augmentation); ``view_masks``
    [N, 3] bool: the views fed per triplet (a missing view is zeros, as in training and inference).
    ``targets`` [N, COEFFS.size]: what the heads are fitted to instead of the triplets' true
    coefficients, which are then never read (``--targets landmark-fit``)."""
    regressor = model.rednet_fc
    seen: list[torch.Tensor] = []
    hook = regressor.conv2_id.register_forward_pre_hook(lambda m, args: seen.append(args[0].flatten(1)))
    was_training = model.training
    model.eval()
    outputs, truth = [], []
    try:
        for start in range(0, len(dataset), batch):
            items = [dataset[i] for i in range(start, min(start + batch, len(dataset)))]
            if targets is None and any("coefficients" not in it for it in items):
                raise InputError(dataset.root, "refitting the heads needs each triplet's true coefficients "
                                 "(gt.npz) and this data has none", "use synthetic triplets (dfmvr data synth)")
            images = torch.stack([it["images"] for it in items])
            if view_masks is not None:
                mask = torch.from_numpy(view_masks[start:start + len(items)])
                images = images * mask[:, :, None, None, None].to(images.dtype)
            outputs.append(model(images)[0].double().numpy())
            truth.append(targets[start:start + len(items)].astype(np.float64) if targets is not None
                         else torch.stack([it["coefficients"] for it in items]).double().numpy())
    finally:
        hook.remove()
        model.train(was_training)
    return HeadFeatures(torch.cat(seen).double().numpy(), np.concatenate(truth), np.concatenate(outputs))


def training_mix_features(model, dataset, batch: int = 16, targets: np.ndarray | None = None) -> HeadFeatures:
    """Every triplet with all three views, and the first half again with views missing (the six
    patterns of the single-view training in turn): the 2 : 1 mix of ``schedule.sample_view_masks``.
    Why: heads fit on all-view inputs alone read a front view alone badly (measured on the demo:
    front-only identity R² 0.28 with the trained heads, 0.03 after an all-view-only refit).
    ``targets``: per triplet, in place of the truth (``head_features``)."""
    full = head_features(model, dataset, batch, targets=targets)
    half = dataset.subset(0, max(1, len(dataset) // 2))
    masks = VIEW_PATTERNS[np.arange(len(half)) % len(VIEW_PATTERNS)]
    return joined(full, head_features(model, half, batch, view_masks=masks,
                                      targets=None if targets is None else targets[:len(half)]))


def slot_broken_rows(model, dataset, count: int, seed: int) -> HeadFeatures:
    """The first ``count`` triplets of ``dataset`` with their slots broken at random (``random_breaks(count,
    seed)``; pose truth following the photo): the rows ``--slot-breaks`` adds. The draw is sequential, so
    a smaller count gives a prefix of the same rows (``HeadFeatures.head``)."""
    from .slot_breaks import SlotBroken, random_breaks

    return head_features(model, SlotBroken(dataset, random_breaks(count, seed)))


def held_out_scores(face_model: MorphableModel, features: HeadFeatures) -> dict:
    """The network's own outputs in ``features`` against the truth: identity / expression R² (vertex
    space, dfmvr eval's) and the median per-view rotation error (degrees)."""
    predicted = COEFFS.split(features.predicted.astype(np.float32))
    truth = COEFFS.split(features.coefficients.astype(np.float32))
    r2 = shape_r2(face_model, predicted, truth)
    rotation = float(np.median(rotation_error_deg(predicted.rotation, truth.rotation)))
    return {"identity": round(r2["identity"], 4), "expression": round(r2["expression"], 4),
            "rotation_median_deg": round(rotation, 3)}


def joined(*parts: HeadFeatures) -> HeadFeatures:
    """The rows of ``parts`` stacked in order."""
    return HeadFeatures(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("inputs", "coefficients", "predicted")))


def ridge_fit(inputs: np.ndarray, targets: np.ndarray, strength: float) -> tuple[np.ndarray, np.ndarray]:
    """Ridge on standardised ``inputs`` [N, D] -> ``targets`` [N, O], folded back to raw inputs:
    (weight [O, D], bias [O]) with prediction = inputs @ weight.T + bias. Constant inputs get weight 0."""
    mean, std = inputs.mean(0), inputs.std(0)
    scale = np.where(std > 1e-8, 1.0 / np.maximum(std, 1e-8), 0.0)
    a = (inputs - mean) * scale
    offset = targets.mean(0)
    gram = a.T @ a + strength * np.eye(a.shape[1])
    w = np.linalg.solve(gram, a.T @ (targets - offset))             # [D, O] on standardised inputs
    weight = (w * scale[:, None]).T
    return weight, offset - weight @ mean


def _head_columns(layout) -> dict[str, np.ndarray]:
    """head name -> its columns of the coefficient vector (heads fill it in head_names order)."""
    columns, start = {}, 0
    for name, width in head_names(layout):
        columns[name], start = np.arange(start, start + width), start + width
    return columns


def group_columns(layout) -> dict[str, np.ndarray]:
    heads = _head_columns(layout)
    return {g: np.concatenate([heads[name] for name in names]) for g, names in HEAD_GROUPS.items()}


def _score(group: str, predicted: np.ndarray, truth: np.ndarray, face_model: MorphableModel | None) -> float:
    """Higher is better: vertex-space R² for identity/expression (dfmvr eval's), else -MSE."""
    if group in ("identity", "expression") and face_model is not None:
        return shape_r2(face_model, COEFFS.split(predicted.astype(np.float32)),
                        COEFFS.split(truth.astype(np.float32)))[group]
    columns = group_columns(COEFFS)[group]
    return -float(np.mean((predicted[:, columns] - truth[:, columns]) ** 2))


@torch.no_grad()
def refit_heads(model, train: HeadFeatures, select: HeadFeatures, face_model: MorphableModel | None,
                groups=DEFAULT_GROUPS, strengths=RIDGE_STRENGTHS) -> dict:
    """Refit ``groups``' heads of ``model`` in place; -> a report per group (strength, select score
    before/after, kept or refit)."""
    layout = model.card.layout_obj()
    if layout.size != COEFFS.size:
        raise ValueError(f"head refit supports the standard coefficient layout ({COEFFS.size}); got {layout.size}")
    columns = group_columns(layout)
    report = {}
    for group in groups:
        cols = columns[group]
        base = _score(group, select.predicted, select.coefficients, face_model)
        trials = []
        for strength in strengths:
            weight, bias = ridge_fit(train.inputs, train.coefficients[:, cols], strength)
            predicted = select.predicted.copy()
            predicted[:, cols] = select.inputs @ weight.T + bias
            trials.append((_score(group, predicted, select.coefficients, face_model), strength, weight, bias))
        best_score, best_strength, weight, bias = max(trials, key=lambda t: t[0])
        refit = best_score > base
        if refit:
            row = 0
            for name in HEAD_GROUPS[group]:      # the group's rows, head by head in column order
                conv = getattr(model.rednet_fc, name)
                width = conv.out_channels
                conv.weight.copy_(torch.from_numpy(weight[row:row + width]).to(conv.weight)[:, :, None, None])
                conv.bias.copy_(torch.from_numpy(bias[row:row + width]).to(conv.bias))
                row += width
        report[group] = {"select_before": round(base, 4), "select_after": round(best_score, 4),
                         "strength": best_strength, "refit": refit,
                         "select_by_strength": {f"{s:g}": round(sc, 4) for sc, s, _, _ in trials}}
    return report


def _folder_names(dataset) -> list[str]:
    """The dataset's triplet folders relative to its root: what identifies a stored fit's triplet."""
    return [Path(f).relative_to(dataset.root).as_posix() for f in dataset.folders]


def _landmark_fit_targets(dataset, face_model: MorphableModel, card, progress, set_name: str,
                          fits_from=None) -> tuple[np.ndarray, dict]:
    """-> (per-triplet landmark fits of ``dataset``, their ``landmark_fit.fit_settings``). The fits are
    computed (no ground truth read; dfmvr/train/landmark_fit.py), or read from ``fits_from``, a file an
    earlier run wrote, when it holds the fits of the same triplets with the same settings
    (``landmark_fit.load_fits``: InputError otherwise)."""
    from .landmark_fit import fit_settings, landmark_fits, load_fits

    settings = fit_settings(face_model, card.camera_obj(), dataset.landmark_noise_px, dataset.noise_seed)
    if fits_from is not None:
        progress(f"the landmark fits of {len(dataset)} triplets from {fits_from}")
        return load_fits(fits_from, set_name, _folder_names(dataset), settings), settings
    progress(f"fitting each of {len(dataset)} triplets to its own landmarks (no ground truth)")
    try:
        return landmark_fits(dataset, face_model, card.camera_obj()), settings
    except ValueError as exc:
        raise InputError(dataset.root, str(exc), "give every triplet its 2D landmarks (a detector's)") from exc


# Head inputs are pooled activations of a trained network (order 1-10); beyond this the network blew up.
HEAD_INPUT_LIMIT = 1e6


def _check_head_inputs(features: HeadFeatures, init, root) -> None:
    """InputError naming the checkpoint when what its heads read is not finite or absurdly large on ``root``'s
    rows: a ridge on such rows gave NaN heads, reported as kept, and a heads.json with NaN in it."""
    bad = ~np.isfinite(features.inputs).all(axis=1) | (np.abs(features.inputs).max(axis=1) > HEAD_INPUT_LIMIT)
    if bad.any():
        raise InputError(init, f"the network's head inputs are NaN, infinite or beyond {HEAD_INPUT_LIMIT:g} on "
                         f"{int(bad.sum())} of {len(bad)} rows of {root} (all-view, missing-view and slot-broken "
                         "triplets): the network is unstable there, so no head fitted to them can be trusted",
                         "refit the heads of a network trained longer (its validation's val_max_abs_coefficient "
                         "stays near 1-3)")


def run_head_refit(init: str, data, select, out, groups=DEFAULT_GROUPS, face_model_path=None,
                   progress=print, slot_breaks: float = 0.0, targets: str = "truth",
                   landmark_noise: float = 0.0, fits_from=None) -> tuple[Path, dict]:
    """``dfmvr-train --stage heads``: load ``init``, refit ``groups`` on ``data`` (strength chosen on
    ``select``), write OUT/checkpoint.safetensors (float32, the card's provenance records the refit)
    and OUT/heads.json. ``slot_breaks`` > 0 adds that fraction of each set's triplets again with their
    slots broken at random (dfmvr/train/slot_breaks.py), so the heads read the pose from the photo
    rather than the slot. ``targets``: "truth" (the triplets' gt.npz coefficients) or "landmark-fit"
    (each triplet's fit to its own 2D landmarks, with ``landmark_noise`` px of detector-like error:
    weak supervision; the strength is then chosen by agreement with the selection triplets' fits, and
    no ground truth is read; the fits are saved as OUT/landmark_fits.npz, and ``fits_from``, such a file
    from an earlier run, reuses them where the triplets and the fit's settings are the same).
    -> (checkpoint path, report)."""
    import json
    import time

    from dfmvr.face.selection import select_face_model
    from dfmvr.models.checkpoint import load_checkpoint, save_checkpoint

    from .data import TripletDataset

    if targets not in TARGETS:
        raise ValueError(f"targets must be one of {TARGETS}, not {targets!r}")
    if targets != "truth" and slot_breaks:
        raise ValueError("slot-broken rows need the true pose of each photo; they cannot be added to landmark-fit targets")
    if fits_from is not None and targets != "landmark-fit":
        raise ValueError("stored landmark fits serve only landmark-fit targets")
    model, card, _ = load_checkpoint(init, load_train_state=False)
    face_model, _ = select_face_model(face_model_path, card=card, data=data)
    start = time.perf_counter()
    features, counts, fits, settings = {}, {}, {}, None
    for name, root in (("train", data), ("select", select)):
        dataset = TripletDataset(root, landmark_noise_px=landmark_noise)
        if len(dataset) == 0:
            raise InputError(root, "no triplet folders", "point --data/--val at folders made by dfmvr data synth")
        if name == "select" and len(dataset) < 2:   # R² over one triplet is undefined: every strength scores NaN
            raise InputError(root, f"the selection set has {len(dataset)} triplet; the ridge strength is chosen by "
                             "R² over it, which needs at least 2", "pass a --val folder of several triplets")
        fitted = None
        if targets == "landmark-fit":
            fitted, settings = _landmark_fit_targets(dataset, face_model, card, progress, name, fits_from)
            fits[name] = (_folder_names(dataset), fitted)
        progress(f"head inputs of {len(dataset)} triplets in {root} (all views, then half with views missing)")
        features[name], counts[name] = training_mix_features(model, dataset, targets=fitted), len(dataset)
        broken = round(slot_breaks * len(dataset))
        if broken:
            progress(f"and {broken} of them with their slots broken")
            features[name] = joined(features[name], slot_broken_rows(model, dataset, broken, SLOT_BREAK_SEEDS[name]))
    for name, root in (("train", data), ("select", select)):
        _check_head_inputs(features[name], init, root)
    report = {"init": str(init), "data": str(data), "triplets": counts["train"], "slot_breaks": slot_breaks,
              "targets": targets, "rows": len(features["train"].inputs), "select": str(select),
              "select_triplets": counts["select"], "select_rows": len(features["select"].inputs),
              "groups": refit_heads(model, features["train"], features["select"], face_model, groups=groups)}
    out = Path(out)
    if targets == "landmark-fit":
        from .landmark_fit import FITS_FILE, save_fits

        report["landmark_fit"] = {**{k: v for k, v in settings.items() if k not in ("face_model", "camera")},
                                  **({"fits_from": str(fits_from)} if fits_from is not None else {})}
        save_fits(out / FITS_FILE, fits, settings)        # the same settings for both sets
    report["seconds"] = round(time.perf_counter() - start, 1)
    card.provenance = {**card.provenance, "head_refit": {k: v for k, v in report.items() if k != "seconds"}}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "heads.json", json.dumps(report, indent=1) + "\n")
    path = save_checkpoint(out / "checkpoint.safetensors", model, card)    # last: the recipe's marker
    return path, report
