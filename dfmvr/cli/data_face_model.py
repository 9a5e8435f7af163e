"""``dfmvr data face-model``: build the project's face-model .npz (synthetic, BFM front .mat, or
converted BFM2009) and/or draw a preview sheet of it."""

from __future__ import annotations

from pathlib import Path

import click

from .options import OutputPath, exit_codes, given_on_command_line
from .settings import HELP_SETTINGS

from ..errors import InputError

_FILE = click.Path(dir_okay=False, path_type=Path)
# the files --bfm2009 reads beside 01_MorphableModel.mat: (parameter, option)
BFM2009_FILES = (("exp_pca", "--exp"), ("std_exp", "--std-exp"), ("front_idx", "--front-idx"), ("exp_idx", "--exp-idx"),
                 ("info", "--info"))


@click.command(context_settings=HELP_SETTINGS, epilog=exit_codes(c3=None))
@click.option("--synthetic", is_flag=True, help="Generate the synthetic face model (no data needed).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the synthetic model.")
@click.option("--bfm", type=_FILE, help="Deep3D's BFM_model_front.mat (MATLAB v5 or v7.3).")
@click.option("--bfm2009", type=_FILE, help="BFM2009 01_MorphableModel.mat to convert (needs --exp).")
@click.option("--exp", "exp_pca", type=_FILE, help="Exp_Pca.bin (expression basis) for --bfm2009.")
@click.option("--std-exp", type=_FILE, help="std_exp.txt [default: beside Exp_Pca.bin].")
@click.option("--front-idx", type=_FILE, help="BFM_front_idx.mat [default: beside Exp_Pca.bin].")
@click.option("--exp-idx", type=_FILE, help="BFM_exp_idx.mat [default: beside Exp_Pca.bin].")
@click.option("--info", type=_FILE, help="facemodel_info.mat [default: beside Exp_Pca.bin].")
@click.option("--model", "model_npz", type=_FILE, help="An existing face-model .npz (e.g. to preview it).")
@click.option("--out", type=OutputPath("file"), help="Where to write the face model (.npz).")
@click.option("--preview", type=OutputPath("file"), help="Also draw a preview sheet (PNG): mean, +/-3 sigma, 3 views.")
def command(synthetic, seed, bfm, bfm2009, exp_pca, std_exp, front_idx, exp_idx, info, model_npz, out, preview):
    """Build a face model: synthetic, BFM front .mat, or BFM2009 (+ Exp_Pca.bin).

    \b
    Examples:
      dfmvr data face-model --synthetic --seed 0 --out fm.npz --preview sheet.png
      dfmvr data face-model --bfm BFM/BFM_model_front.mat --out bfm.npz
      dfmvr data face-model --bfm2009 BFM/01_MorphableModel.mat --exp BFM/Exp_Pca.bin --out bfm.npz
    """
    sources = [name for name, given in (("--synthetic", synthetic), ("--bfm", bfm), ("--bfm2009", bfm2009),
                                        ("--model", model_npz)) if given]
    if len(sources) != 1:
        raise click.UsageError(f"give exactly one source (--synthetic, --bfm, --bfm2009 or --model), got {sources or 'none'}")
    if out is None and preview is None:
        raise click.UsageError("nothing to do: give --out and/or --preview")
    if bfm2009 is not None and exp_pca is None:
        raise click.UsageError("--bfm2009 needs --exp Exp_Pca.bin")
    given = given_on_command_line(click.get_current_context())
    # options another source reads were ignored without a word (--seed with --model, --exp with --synthetic)
    stray = [flag for name, flag, reader in (("seed", "--seed", synthetic),
                                             *((n, f, bfm2009 is not None) for n, f in BFM2009_FILES))
             if name in given and not reader]
    if stray:
        raise click.UsageError(f"{', '.join(stray)}: not read with {sources[0]}")
    if out is not None and out.suffix != ".npz":
        raise click.UsageError(f"--out must end in .npz, got '{out.name}'")

    if synthetic:
        from ..face.synthetic import synthetic_face_model
        model = synthetic_face_model(seed)
    elif bfm is not None:
        from ..face.bfm import load_bfm_front
        model = load_bfm_front(bfm)
    elif bfm2009 is not None:
        from ..face.bfm import convert_bfm2009
        model = convert_bfm2009(bfm2009, exp_pca, std_exp=std_exp, front_idx=front_idx, exp_idx=exp_idx, info=info)
    else:
        from ..face.model import MorphableModel
        model = MorphableModel.load(model_npz)

    if out is not None:
        model.save(out)
        click.echo(f"wrote {out}: {model.name}, {model.num_vertices} vertices, {model.num_triangles} "
                   f"triangles, hash {model.content_hash()}")
    if preview is not None:
        write_preview(model, preview)
        click.echo(f"wrote {preview}")


def write_preview(model, path: Path) -> Path:
    """Draw ``paint.preview_sheet(model)`` into a PNG (atomically)."""
    import cv2

    from ..atomic import atomic_path
    from ..face.paint import preview_sheet

    sheet = preview_sheet(model)
    with atomic_path(path, suffix=".png") as tmp:
        if not cv2.imwrite(str(tmp), sheet[:, :, ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9]):
            raise InputError(path, "could not write the preview image", "check the folder and the .png suffix")
    return path
