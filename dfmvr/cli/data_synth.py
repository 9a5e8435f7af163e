"""``dfmvr data synth``: render a synthetic multi-view dataset with exact ground truth."""

from __future__ import annotations

from pathlib import Path

import click

from .options import OutputPath, face_model_option, exit_codes, quiet_option
from .settings import HELP_SETTINGS

from ..errors import require


@click.command(name="synth", context_settings=HELP_SETTINGS, epilog=exit_codes(c3=None))
@click.option("--out", "out", required=True, type=OutputPath("folder"),
              help="Dataset folder (created; an existing one with the same settings is resumed).")
@click.option("--triplets", required=True, type=click.IntRange(min=1), help="Number of triplets.")
@click.option("--seed", default=0, show_default=True, type=int, help="Dataset seed.")
@face_model_option
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="Render in this many processes (the output does not depend on it).")
@quiet_option
def command(out: Path, triplets: int, seed: int, face_model: Path | None, workers: int, quiet: bool):
    """Render TRIPLETS (left, front, right) triplets with ground truth into OUT.

    Each triplet folder holds left/front/right.png (224x224, aligned like real crops) and gt.npz
    (coefficients, poses, 68 landmarks + visibility, label maps, vertices). Deterministic per
    (seed, index); finished triplets are skipped, so an interrupted run resumes.
    """
    from ..face.model import MorphableModel

    model = MorphableModel.load(face_model) if face_model is not None else None  # fail fast, before torch
    require("torch", "train", "Rendering the synthetic dataset")
    from ..synth.dataset import write_dataset

    report = write_dataset(out, triplets, seed=seed, model=model, progress=not quiet, workers=workers)
    click.echo(f"{out}: wrote {report.written} triplets, skipped {report.skipped} finished "
               f"({report.rate:.2f} triplets/s)" if report.written else
               f"{out}: all {report.skipped} triplets already present")
