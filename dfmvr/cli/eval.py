"""``dfmvr eval``: NoW-style evaluation (mm) of a checkpoint or an ONNX graph, with two baselines.

``--onnx`` needs no torch (``dfmvr.eval``: ONNX Runtime through ``dfmvr.runtime``); ``--checkpoint``
needs the ``train`` extra.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from .options import (FiniteFloatRange, batch_size_option, data_face_model_option, exit_codes, json_option, onnx_option, quiet_option,
                      refine_device_option, refine_landmark_weight_option, refine_landmark_anneal_option, refine_config)
from .settings import HELP_SETTINGS

from ..atomic import atomic_write_text
from ..errors import InputError, require
from ..face.layout import NUM_VIEWS, VIEWS
from ..face.selection import select_face_model


def _fmt(s: dict) -> str:
    return f"mean {s['mean_mm']:.4f}  median {s['median_mm']:.4f}  rmse {s['rmse_mm']:.4f} mm"


def _parse_slot_order(text: str | None) -> tuple[int, int, int] | None:
    if text is None:
        return None
    names = [t.strip().lower() for t in text.split(",")]
    if len(names) != NUM_VIEWS or any(n not in VIEWS for n in names):
        raise click.BadParameter(f"{text!r}: give three of {', '.join(VIEWS)}, comma-separated "
                                 "(the photo for the left, front and right slot)", param_hint="--slot-order")
    return tuple(VIEWS.index(n) for n in names)


@click.command(name="eval", context_settings=HELP_SETTINGS, epilog=exit_codes(c3=None))
@click.option("--checkpoint", type=str, default=None,
              help="A dfmvr checkpoint (.safetensors) or 'default' (needs the 'train' extra).")
@onnx_option
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Triplet folders: synthetic (gt.npz) or real (images + scan.obj|ply + scan_landmarks.*).")
@data_face_model_option
@json_option
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N triplets.")
@batch_size_option(4)
@click.option("--icp-iterations", type=click.IntRange(min=0), default=30, show_default=True,
              help="ICP refinement steps after the 7-landmark alignment of each mesh to its scan (NoW "
                   "protocol, dfmvr/face/metrics.py); 0: the landmark alignment only.")
@click.option("--refine", "refine_steps", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also score the network's prediction refined by N steps of analysis-by-synthesis on each "
                   "triplet with the weak losses only (photo, 2D landmarks, regularisers; docs/refine.md). "
                   "Needs torch (the 'train' extra). Each --batch of triplets is one optimisation.")
@refine_device_option
@refine_landmark_weight_option
@refine_landmark_anneal_option
@click.option("--refine-from-mean-face", is_flag=True,
              help="With --refine: also refine from the mean face (identity, expression and texture zeroed; "
                   "the network's pose and light) for the same steps: what the network's shape is worth "
                   "as a starting point.")
@click.option("--landmark-noise", "landmark_noise", default=0.0, show_default=True, type=FiniteFloatRange(min=0),
              metavar="PX", help="With --refine: add Gaussian error of PX pixels per coordinate to the data's 2D "
                                 "landmarks before the refinement fits them (a detector's error on synthetic data; "
                                 "drawn per triplet as dfmvr-train --landmark-noise draws it).")
@click.option("--refine-labels", "refine_labels", type=click.Choice(["data", "network"]), default="data",
              show_default=True, help="With --refine: the parse labels it fits. data: the folder's labels.npz "
                                      "(else gt.npz); network: the network's own parse labels, as dfmvr-run "
                                      "--refine uses (what a user's photos have).")
@click.option("--refine-landmarks", "refine_landmarks", type=click.Choice(["data", "network", "none"]), default="data",
              show_default=True, help="With --refine: the 2D landmarks it fits. data: the folder's (with "
                                      "--landmark-noise); network: the model's own keypoints (its graph's "
                                      "'keypoints' output), as dfmvr-run --refine fits them by default; none: "
                                      "no landmark term (an ablation).")
@click.option("--slot-order", type=str, default=None, metavar="V,V,V",
              help="Give the left, front and right slots the photos of these views instead, e.g. "
                   "'front,front,front' or 'right,front,left' (the pose truth follows the photo): does the "
                   "model read each view's pose from the photo or from the slot?")
@quiet_option
def command(checkpoint, onnx, data, face_model, json_out, limit, batch, icp_iterations, refine_steps,
            refine_device, refine_landmark_weight, refine_landmark_anneal, refine_from_mean_face, landmark_noise,
            refine_labels, refine_landmarks, slot_order, quiet):
    """Score a model on DATA: mean / median / RMSE point-to-surface error in mm (NoW protocol),
    next to the mean face and the same model given only the front view."""
    if (checkpoint is None) == (onnx is None):
        raise click.UsageError("give exactly one of --checkpoint or --onnx")
    from ..eval import OnnxPredictor, evaluate_dataset

    slot_order = _parse_slot_order(slot_order)
    if refine_steps == 0 and (landmark_noise > 0 or refine_labels != "data" or refine_landmarks != "data"
                              or refine_landmark_weight is not None or refine_landmark_anneal is not None):
        raise click.UsageError("--landmark-noise, --refine-labels, --refine-landmarks, --refine-landmark-weight and "
                               "--refine-landmark-anneal set up --refine; add --refine N")
    if refine_landmarks != "data" and landmark_noise > 0:
        raise click.UsageError(f"--landmark-noise adds error to the data's landmarks, not to --refine-landmarks "
                               f"{refine_landmarks}")

    if onnx is not None:
        from ..runtime.artifacts import resolve_onnx

        onnx = resolve_onnx(onnx, fix="pass --onnx model.onnx, or --checkpoint")
        if not onnx.is_file():
            raise InputError(onnx, "ONNX model not found", "export one with 'dfmvr-export'")
        predictor = OnnxPredictor(onnx)
        source = str(onnx)
    else:
        require("torch", "train", "Evaluating a torch checkpoint")
        from ..models.checkpoint import load_checkpoint
        from ..models.predictor import TorchPredictor

        model, _, _ = load_checkpoint(checkpoint, load_train_state=False)
        predictor = TorchPredictor(model)
        source = str(checkpoint)
    fm, _ = select_face_model(face_model, card=predictor.card, data=data)
    refiner = None
    if refine_steps > 0:
        require("torch", "train", "--refine")
        from ..train.refine import Refiner

        refiner = Refiner(fm, predictor.card.camera_obj(),
                          refine_config(refine_steps, refine_device, refine_landmark_weight, not quiet,
                                        refine_landmark_anneal))
    report = evaluate_dataset(predictor, data, fm, limit=limit, batch=batch, progress=not quiet,
                              refiner=refiner, refine_from_mean_face=refine_from_mean_face,
                              slot_order=slot_order, landmark_noise=landmark_noise, refine_labels=refine_labels,
                              refine_landmarks=refine_landmarks,
                              icp_iterations=icp_iterations)
    if refiner is not None:
        report["refine"]["config"] = refiner.config.to_dict()
    report["source"] = source
    report["data"] = str(data)
    report["face_model"] = fm.identity()
    report["icp_iterations"] = icp_iterations
    if not quiet:
        for row in report["rows"]:
            refined = f"  refined {row['refined']['mean_mm']:.4f}" if "refined" in row else ""
            click.echo(f"{row['name']}: model {row['model']['mean_mm']:.4f}{refined}  front-only "
                       f"{row['front_only']['mean_mm']:.4f}  mean-face {row['mean_face']['mean_mm']:.4f} mm")
    if slot_order is not None:
        click.echo(f"slots given the photos of: {', '.join(report['slot_order'])} (pose truth follows the photo)")
    click.echo(f"model       {_fmt(report['model'])}  ({report['num_triplets']} triplets)")
    if "refined" in report:
        r = report["refine"]
        click.echo(f"refined     {_fmt(report['refined'])}  ({refine_steps} steps, "
                   f"{r['seconds_per_triplet']:.2f} s per triplet, weak loss {r['loss_before_mean']:.4f} -> "
                   f"{r['loss_after_mean']:.4f})")
        click.echo(f"            fitted to landmarks: {report['refine_inputs']['landmarks']}; "
                   f"labels: {report['refine_inputs']['labels']}")
    if "refined_mean_face" in report:
        click.echo(f"refined from mean face  {_fmt(report['refined_mean_face'])}")
    click.echo(f"front only  {_fmt(report['baselines']['front_only'])}")
    click.echo(f"mean face   {_fmt(report['baselines']['mean_face'])}")
    for baseline, gain in report.get("refined_vs", {}).items():
        low, high = gain["ci95_mm"]
        click.echo(f"refined better than {baseline.replace('_', ' ')} by {gain['mean_mm']:.4f} mm per triplet "
                   f"(95% interval {low:.4f} to {high:.4f}), on {gain['better_fraction']:.0%} of triplets")
    for baseline, gain in report.get("model_vs", {}).items():
        low, high = gain["ci95_mm"]
        click.echo(f"model better than {baseline.replace('_', ' ')} by {gain['mean_mm']:.4f} mm per triplet "
                   f"(95% interval {low:.4f} to {high:.4f}), on {gain['better_fraction']:.0%} of triplets")
    for method, r2 in report.get("coefficient_r2", {}).items():   # synthetic data: true coefficients known
        click.echo(f"R² of the true coefficients, {method.replace('_', ' ')}: identity {r2['identity']:.3f} "
                   f"(size-free {r2['identity_size_free']:.3f})  expression {r2['expression']:.3f}")
    pose = report.get("pose")
    if pose:
        for method, label in (("model", "model"), ("refined", "refined"), ("slot_prior", "slot prior")):
            if method not in pose:
                continue
            rot, trans = pose[method]["rotation_deg"], pose[method]["translation_mm"]
            views = "  ".join(f"{v} {rot['per_view_median'][v]:.2f}" for v in rot["per_view_median"])
            click.echo(f"head pose, {label:<10} rotation median {rot['median']:.2f} deg ({views})  "
                       f"translation median {trans['median']:.1f} mm")
            parts = pose[method].get("translation_breakdown")
            if parts:
                axis = parts["per_axis_median_mm"]
                click.echo(f"  translation by axis: x {axis['x']:.1f}  y {axis['y']:.1f}  depth {axis['z']:.1f} mm; "
                           f"depth with the face's size error divided out {parts['depth_size_corrected_median_mm']:.1f} mm "
                           f"(a face drawn too big is placed too far)")
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(report, indent=2))
