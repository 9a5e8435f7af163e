"""``dfmvr convert``: foreign checkpoints -> dfmvr checkpoints (``official``: the DF-MVR weights)."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def command():
    """Convert foreign checkpoints (the official DF-MVR weights) to dfmvr's format."""


@command.command("official")
@click.argument("weights", type=click.Path(path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
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
    from dfmvr.train.checkpoint import save_checkpoint
    from dfmvr.train.convert import attach_parse_net, convert_official

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
