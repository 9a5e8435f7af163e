"""``dfmvr convert``: foreign checkpoints -> dfmvr checkpoints (``official``: the DF-MVR weights;
``half``: a dfmvr checkpoint stored in float16 for shipping; ``mean-size``: a checkpoint whose identity
head predicts the mean face's size)."""

from __future__ import annotations

from pathlib import Path

import click

from .options import OutputPath, exit_codes, face_model_option
from .settings import HELP_SETTINGS

_EXIT_CODES = exit_codes(c3=None)


@click.group(context_settings=HELP_SETTINGS, epilog=_EXIT_CODES)
def command():
    """Convert foreign checkpoints (the official DF-MVR weights) to dfmvr's format, store one in float16,
    or set its predicted face size to the mean face's."""


@command.command("official", context_settings=HELP_SETTINGS, epilog=_EXIT_CODES)
@click.argument("weights", type=click.Path(path_type=Path))
@click.option("--out", "out", required=True, type=OutputPath("file"),
              help="Output checkpoint (.safetensors) with the model card in its metadata.")
@click.option("--parse-net", "parse_net", type=click.Path(path_type=Path), default=None,
              help="Replace the parse net by face_mask.pth (10 classes) or 79999_iter.pth (19 classes, "
                   "merged onto dfmvr's 10).")
def official(weights: Path, out: Path, parse_net: Path | None):
    """Convert the official DF-MVR checkpoint WEIGHTS (e.g. 000000279.pth) into the 'paper' variant.

    The file is loaded strictly (read with torch.load(weights_only=True): no pickled code runs); a
    wrong or partial file is refused with its missing/unexpected keys. The card's camera distance is
    1, the convention the official weights were trained with.
    """
    from dfmvr.models.checkpoint import save_checkpoint
    from dfmvr.models.convert import attach_parse_net, convert_official

    if out.suffix != ".safetensors":
        raise click.BadParameter("the output must end in .safetensors", param_hint="--out")
    model, card, report = convert_official(weights)
    for line in report.lines():
        click.echo(line)
    if parse_net is not None:
        attach_parse_net(model, parse_net)
        click.echo(f"parse net replaced by {parse_net.name} ({model.parse_net.num_classes} classes)")
    save_checkpoint(out, model, model.card)
    click.echo(f"wrote {out} (variant '{card.variant}', camera distance {card.camera['distance']:g})")


@command.command("half", context_settings=HELP_SETTINGS, epilog=_EXIT_CODES)
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--out", "out", required=True, type=OutputPath("file"),
              help="Output checkpoint (.safetensors), weights stored as float16.")
@click.option("--sample-statistics", is_flag=True,
              help="Also record in the card that batch norm uses each sample's own statistics at inference "
                   "(see dfmvr/models/sample_norm.py): stable where running statistics blow up.")
def half(checkpoint: Path, out: Path, sample_statistics: bool):
    """Store CHECKPOINT's float32 weights as float16 (half the file; for shipping a model).

    Loading turns them back into float32, so the model still computes in float32, with every weight
    rounded to the nearest float16. 'dfmvr-export --compact' then writes a graph of the same size
    with bit-identical numbers. Check the rounded model with 'dfmvr eval' before shipping it.
    """
    from dfmvr.models.checkpoint import load_checkpoint, save_checkpoint

    if out.suffix != ".safetensors":
        raise click.BadParameter("the output must end in .safetensors", param_hint="--out")
    model, card, _ = load_checkpoint(checkpoint, load_train_state=False)
    card.provenance = {**(card.provenance or {}), "weights_rounded_to": "float16"}
    if sample_statistics:
        from dfmvr.models.sample_norm import INFERENCE_NORM_KEY, PER_SAMPLE

        card.architecture = {**card.architecture, INFERENCE_NORM_KEY: PER_SAMPLE}
    try:
        save_checkpoint(out, model, card, half_storage=True)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, float16 storage of {checkpoint})")


@command.command("mean-size", context_settings=HELP_SETTINGS, epilog=_EXIT_CODES)
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--out", "out", required=True, type=OutputPath("file"),
              help="Output checkpoint (.safetensors, float32 weights).")
@face_model_option
def mean_size(checkpoint: Path, out: Path, face_model: Path | None):
    """Make CHECKPOINT predict every face at the mean face's size (CHECKPOINT may be 'default').

    An aligned crop shows a face's shape, not its absolute size (a larger face farther away looks the
    same), so a network trained on the weak losses alone reads the size worse than not reading it. This
    folds a fixed linear map into the identity head: each predicted identity loses its component along
    a uniform scaling of the mean shape, and nothing else moves more than that needs. The graph keeps
    its shape; export and run it as any checkpoint. For a network trained with 3D supervision, which
    does read the size, it costs accuracy: compare both with 'dfmvr eval' (docs/training.md, "A prior
    on the size").
    """
    from dfmvr.face.selection import select_face_model
    from dfmvr.models.checkpoint import load_checkpoint, save_checkpoint
    from dfmvr.models.mean_size import MEAN_SIZE_KEY, fold_mean_size

    if out.suffix != ".safetensors":
        raise click.BadParameter("the output must end in .safetensors", param_hint="--out")
    model, card, _ = load_checkpoint(checkpoint, load_train_state=False)
    fm, where = select_face_model(face_model, card=card)
    try:
        record = fold_mean_size(model, fm)
    except ValueError as exc:
        raise click.ClickException(f"{where}: {exc}") from exc
    card.provenance = {**(card.provenance or {}), MEAN_SIZE_KEY: record}
    save_checkpoint(out, model, card)
    click.echo(f"wrote {out}: identity set to the mean face's size ({where}; the identity basis holds "
               f"{record['scaling_in_identity_basis']:.4f} of a uniform scaling)")
