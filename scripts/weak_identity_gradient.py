"""Does the weak loss, at a network's prediction, pull identity towards the truth? (issue 18, item 4)

For each synthetic triplet: the network's prediction x, the weak loss that weak-only training and
``--refine`` use (``TrainingLoss`` with ``refine.weak_weights``: photometric, 2D landmarks, regularisers;
the inputs from gt.npz, the landmarks with --landmark-noise px of error as ``dfmvr-train
--landmark-noise`` gives them), and its gradient g with respect to the identity coefficients. The
descent direction -g and the wanted change (true - predicted identity) are both mapped into vertex
space by the identity basis, and their cosine is reported, in all and per term, and again with the
uniform scaling about the mean shape's centroid projected out of both (``without_uniform_scale``: the one shape
change an aligned crop cannot show, docs/refine.md "Size and distance").

The gradient is taken at x as predicted and with parts of the truth put in (SUBSTITUTIONS): each
view's rotation, its translation across the image (x, y), its depth (z), the whole pose, the pose and
the expression. Where the cosine rises when a part is made true, that part's error is what scrambles
the identity signal a network trained on these losses receives.

    python scripts/weak_identity_gradient.py --checkpoint run/checkpoint.safetensors --data DATA/val \
        --triplets 24 --landmark-noise 2 --json out.json

It also reports, over every triplet under --data, the network's identity R² (vertex space, as
``dfmvr eval``), the same with the uniform scaling projected out, and the plain R² had the network
predicted the mean face's size (``identity_r2``: what its size reading is worth, against the mean).

One torch thread; about 2.5 s per triplet of --triplets.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from dfmvr.face.geometry import face_shape
from dfmvr.face.layout import COEFFS
from dfmvr.face.metrics import shape_r2, without_uniform_scale

TERMS = ("landmark_2d", "photo", "coefficient_reg")

_SHARED = COEFFS.shared_slices()
_COLUMNS = COEFFS.split(np.arange(COEFFS.size)[None])        # which flat column holds what (the layout's own split)
SUBSTITUTIONS = {
    "prediction": np.array([], int),
    "true_rotation": _COLUMNS.rotation[0].ravel(),
    "true_xy": _COLUMNS.translation[0, :, :2].ravel(),
    "true_depth": _COLUMNS.translation[0, :, 2].ravel(),
    "true_pose": np.concatenate([_COLUMNS.rotation[0].ravel(), _COLUMNS.translation[0].ravel()]),
    "true_pose_expression": np.concatenate([_COLUMNS.expression[0], _COLUMNS.rotation[0].ravel(),
                                            _COLUMNS.translation[0].ravel()]),
}


def identity_offsets(face_model, identity: np.ndarray) -> np.ndarray:
    """[N, Ki] identity coefficients (or coefficient changes: the map is linear) -> [N, V * 3] vertex
    offsets from the mean shape (``face_shape`` with no expression)."""
    identity = np.atleast_2d(identity)
    no_expression = np.zeros((len(identity), COEFFS.expression), np.float32)
    return (face_shape(face_model, identity, no_expression).astype(np.float64) - face_model.mean_shape).reshape(len(identity), -1)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def identity_descent_cosines(loss, face_model, predicted: np.ndarray, truth: np.ndarray, batch: dict) -> dict:
    """{substitution: {term or "all": cosine, term + "_scale_free": cosine}} for one triplet.
    loss: a ``TrainingLoss`` (its weights weigh each term); predicted, truth: [269]; batch: the loss's
    batch of that one triplet (``Refiner.make_batch``)."""
    import torch

    identity = _SHARED["identity"]
    wanted = identity_offsets(face_model, truth[identity] - predicted[identity])[0]
    out = {}
    for name, columns in SUBSTITUTIONS.items():
        x = predicted.astype(np.float32).copy()
        x[columns] = truth[columns]
        row = {}
        for term in TERMS + ("all",):
            c = torch.from_numpy(x[None]).requires_grad_(True)
            total, parts = loss(c, batch)
            value = total if term == "all" else parts[term] * getattr(loss.weights, term)
            grad, = torch.autograd.grad(value, c)
            descent = identity_offsets(face_model, -grad[0, identity].numpy())[0]
            row[term] = _cosine(descent, wanted)
            row[term + "_scale_free"] = _cosine(without_uniform_scale(descent, face_model.mean_shape),
                                                without_uniform_scale(wanted, face_model.mean_shape))
        out[name] = row
    return out


def identity_r2(face_model, predicted: np.ndarray, truth: np.ndarray) -> dict:
    """Identity R² of [N, 269] predictions as ``dfmvr eval`` reports it, plain and with the uniform
    scaling projected out (``shape_r2``'s ``identity_size_free``: how much of the identity a network
    reads apart from the size, which an aligned crop does not show), and ``identity_at_mean_size``: the
    plain R² with the uniform scaling projected out of the predictions only (their size set to the mean
    face's). Above the plain R²: the network's size reading costs more than not reading it."""
    r2 = shape_r2(face_model, COEFFS.split(predicted), COEFFS.split(truth))
    return {"identity": r2["identity"], "identity_scale_free": r2["identity_size_free"],
            "identity_at_mean_size": r2["identity_at_mean_size"]}


def summarise(rows: list[dict]) -> dict:
    """Mean cosine and the share of triplets where it is positive, per substitution and term."""
    return {name: {key: {"mean_cosine": round(float(np.mean([r[name][key] for r in rows])), 3),
                         "positive_fraction": round(float(np.mean([r[name][key] > 0 for r in rows])), 3)}
                   for key in rows[0][name]}
            for name in rows[0]}


def main() -> None:
    import torch

    from dfmvr.eval.dataset import find_eval_folders, load_eval_sample
    from dfmvr.face.selection import select_face_model
    from dfmvr.models.checkpoint import load_checkpoint
    from dfmvr.models.predictor import TorchPredictor
    from dfmvr.train.refine import Refiner

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="synthetic triplets (gt.npz)")
    parser.add_argument("--triplets", type=int, default=24)
    parser.add_argument("--landmark-noise", type=float, default=0.0, help="px of Gaussian error per coordinate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, card, _ = load_checkpoint(args.checkpoint, load_train_state=False)
    predictor = TorchPredictor(model)
    face_model, _ = select_face_model(None, card=card, data=args.data)
    refiner = Refiner(face_model, card.camera_obj())
    rng = np.random.default_rng(args.seed)
    rows, predictions, truths = [], [], []
    for k, folder in enumerate(find_eval_folders(args.data)):
        sample = load_eval_sample(folder, face_model, int(card.image_size))
        if sample.true_coefficients is None or sample.landmarks is None:
            raise SystemExit(f"{folder}: no true coefficients or landmarks (gt.npz); this probe needs synthetic data")
        predicted = predictor(card.normalise(sample.images[None]))[0]
        predictions.append(predicted)
        truths.append(sample.true_coefficients)
        if k >= args.triplets:
            continue                  # the R² below reads every triplet, the gradients the first --triplets
        landmarks = sample.landmarks + rng.normal(0.0, args.landmark_noise, sample.landmarks.shape)
        batch = refiner.make_batch(sample.images[None], landmarks[None], sample.landmark_visible[None],
                                   None if sample.labels is None else sample.labels[None])
        rows.append(identity_descent_cosines(refiner.loss, face_model, predicted, sample.true_coefficients, batch))
    report = {"checkpoint": str(args.checkpoint), "data": str(args.data), "triplets": len(rows),
              "landmark_noise_px": args.landmark_noise, "cosines": summarise(rows) if rows else None,
              "r2_on_all_triplets": {"triplets": len(truths),
                                     **identity_r2(face_model, np.stack(predictions), np.stack(truths))}}
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
