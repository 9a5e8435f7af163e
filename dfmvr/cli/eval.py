"""``dfmvr eval``: NoW-style evaluation (mm) of a checkpoint or an ONNX graph, with two baselines.

``--onnx`` needs no torch (ONNX Runtime through ``dfmvr.runtime``); ``--checkpoint`` needs the
``train`` extra.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from .settings import HELP_SETTINGS

from ..atomic import atomic_write_text
from ..errors import InputError, require


def _face_model(path, card, data: Path):
    """--face-model, else the dataset's face_model.npz, else the bundled / synthetic default;
    checked against the card's face-model hash."""
    from ..face.model import MorphableModel

    if path is None and (data / "face_model.npz").is_file():
        path = data / "face_model.npz"
    if path is not None:
        model = MorphableModel.load(path)
        card.check_face_model(model, source=path)
        return model
    from ..runtime.artifacts import load_face_model
    return load_face_model(None, card)


def _fmt(s: dict) -> str:
    return f"mean {s['mean_mm']:.4f}  median {s['median_mm']:.4f}  rmse {s['rmse_mm']:.4f} mm"


@click.command(name="eval", context_settings=HELP_SETTINGS)
@click.option("--checkpoint", type=str, default=None, help="A dfmvr checkpoint (.safetensors) or 'default'.")
@click.option("--onnx", type=str, default=None, help="An exported ONNX graph, or 'default' (no torch needed).")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Triplet folders: synthetic (gt.npz) or real (images + scan.obj|ply + scan_landmarks.*).")
@click.option("--face-model", "face_model", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Face model .npz (default: DATA/face_model.npz, else the bundled one).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the report (summaries and per-triplet rows) as JSON.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N triplets.")
@click.option("--batch", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--icp-iterations", type=click.IntRange(min=0), default=30, show_default=True)
@click.option("--quiet", is_flag=True, help="No per-triplet rows, no progress bar.")
def command(checkpoint, onnx, data, face_model, json_out, limit, batch, icp_iterations, quiet):
    """Score a model on DATA: mean / median / RMSE point-to-surface error in mm (NoW protocol),
    next to the mean face and the same model given only the front view."""
    if (checkpoint is None) == (onnx is None):
        raise click.UsageError("give exactly one of --checkpoint or --onnx")
    from ..train.evaluate import OnnxPredictor, evaluate_dataset

    if onnx is not None:
        if onnx == "default":
            from ..runtime.artifacts import DEFAULT_ONNX
            onnx = DEFAULT_ONNX
        if not Path(onnx).is_file():
            raise InputError(onnx, "ONNX model not found", "export one with 'dfmvr-export'")
        predictor = OnnxPredictor(onnx)
        source = str(onnx)
    else:
        require("torch", "train", "Evaluating a torch checkpoint")
        from ..train.checkpoint import load_checkpoint
        from ..train.evaluate import TorchPredictor

        model, _, _ = load_checkpoint(checkpoint, load_train_state=False)
        predictor = TorchPredictor(model)
        source = str(checkpoint)
    fm = _face_model(face_model, predictor.card, data)
    report = evaluate_dataset(predictor, data, fm, limit=limit, batch=batch, progress=not quiet,
                              icp_iterations=icp_iterations)
    report["source"] = source
    report["data"] = str(data)
    report["face_model"] = fm.identity()
    report["icp_iterations"] = icp_iterations
    if not quiet:
        for row in report["rows"]:
            click.echo(f"{row['name']}: model {row['model']['mean_mm']:.4f}  front-only "
                       f"{row['front_only']['mean_mm']:.4f}  mean-face {row['mean_face']['mean_mm']:.4f} mm")
    click.echo(f"model       {_fmt(report['model'])}  ({report['num_triplets']} triplets)")
    click.echo(f"front only  {_fmt(report['baselines']['front_only'])}")
    click.echo(f"mean face   {_fmt(report['baselines']['mean_face'])}")
    for baseline, gain in report.get("model_vs", {}).items():
        low, high = gain["ci95_mm"]
        click.echo(f"model better than {baseline.replace('_', ' ')} by {gain['mean_mm']:.4f} mm per triplet "
                   f"(95% interval {low:.4f} to {high:.4f}), on {gain['better_fraction']:.0%} of triplets")
    for method, r2 in report.get("coefficient_r2", {}).items():   # synthetic data: true coefficients known
        click.echo(f"R² of the true coefficients, {method.replace('_', ' ')}: identity {r2['identity']:.3f}  "
                   f"expression {r2['expression']:.3f}")
    pose = report.get("pose")
    if pose:
        for method, label in (("model", "model"), ("slot_prior", "slot prior")):
            rot, trans = pose[method]["rotation_deg"], pose[method]["translation_mm"]
            views = "  ".join(f"{v} {rot['per_view_median'][v]:.2f}" for v in rot["per_view_median"])
            click.echo(f"head pose, {label:<10} rotation median {rot['median']:.2f} deg ({views})  "
                       f"translation median {trans['median']:.1f} mm")
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(report, indent=2))
