"""``dfmvr-export`` / ``dfmvr export``: one ONNX graph (+ fp16 / int8 graphs, + TensorRT engine) and parity."""

from __future__ import annotations

import click

from .options import OutputPath, exit_codes, face_model_option
from .settings import HELP_SETTINGS


def _engine_batch(ctx, param, value):
    """MIN:OPT:MAX (or N) checked while parsing, before the export's minutes of work."""
    from ..errors import InputError
    from ..export.tensorrt_build import parse_batch

    try:
        parse_batch(value)
    except InputError:
        raise click.BadParameter(f"'{value}' is not MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX (e.g. 1:1:4)") from None
    return value


@click.command(context_settings=HELP_SETTINGS, epilog=exit_codes(
    c1="anything else; also a failed parity check (that artefact is renamed *.rejected.*, the report stays)",
    c3="--engine was given and this machine cannot build a TensorRT engine (the ONNX files and the "
       "parity report are still written)"))
@click.argument("checkpoint")
@click.option("--out", "out_dir", required=True, type=OutputPath("folder"),
              help="Output folder: model.onnx, model.parity.json (+ model.fp16.onnx, model.int8.onnx, model.plan).")
@click.option("--fp16", is_flag=True, help="Also write an fp16 graph (fp32 I/O); the engine is built with FP16.")
@click.option("--int8", is_flag=True,
              help="Also write model.int8.onnx: ONNX Runtime static quantization (QDQ, 8-bit weights per channel, "
                   "uint8 activations), calibrated on rendered synthetic triplets; gated on the mesh (1 mm).")
@click.option("--int8-weights", "int8_weights", default="auto", show_default=True,
              type=click.Choice(["auto", "s8", "u8"]),
              help="With --int8: s8 = int8 weights in 7 bits (fastest on CPUs with VNNI); u8 = uint8 weights in "
                   "all 8 bits (twice as fine, no VNNI path); auto = s8 if it passes the gate, else u8.")
@click.option("--calibration", default=8, show_default=True, type=click.IntRange(1, 256),
              help="With --int8: synthetic triplets rendered for calibration.")
@click.option("--calibration-seed", default=None, type=click.IntRange(0), show_default="2",
              help="With --int8: seed of the calibration triplets (not the parity inputs' seed, 0).")
@click.option("--engine", default=None, help="Demand a TensorRT engine at this path (relative: inside --out); "
              "exit 3 if this machine cannot build one. Without it an engine is built only where possible.")
@click.option("--engine-batch", "--batch", "batch", default="1:1:4", show_default=True, callback=_engine_batch,
              metavar="MIN:OPT:MAX",
              help="The batch sizes the TensorRT engine takes: smallest, the one it is tuned for, largest "
                   "(its optimisation profile). --batch is the old spelling.")
@click.option("--workspace", "workspace_gb", default=4.0, show_default=True, type=float,
              help="TensorRT builder workspace limit, GiB.")
@click.option("--timing-cache", default=None, type=click.Path(dir_okay=False),
              help="TensorRT timing cache file (read if present, written back).")
@face_model_option
@click.option("--parity-batch", default=2, show_default=True, type=click.IntRange(1, 16),
              help="Synthetic triplets used for the parity report.")
@click.option("--compact", is_flag=True,
              help="Store the weights of model.onnx that are exact float16 numbers as float16 + Cast: same "
                   "results, float32 compute, a smaller file. Pair it with 'dfmvr convert half'.")
@click.option("--no-keypoints", "no_keypoints", is_flag=True,
              help="Leave out the network's keypoint heads (the graph's optional 'keypoints' output, which "
                   "dfmvr-run --refine fits when no detector runs): a faster graph (docs/export.md).")
def command(checkpoint, out_dir, fp16, int8, int8_weights, calibration, calibration_seed, engine, batch, workspace_gb,
            timing_cache, face_model, parity_batch, compact, no_keypoints):
    """Export CHECKPOINT to one ONNX graph with dfmvr::Involution nodes, check parity, build engines.

    CHECKPOINT is a dfmvr .safetensors checkpoint, the official DF-MVR .pth weights (converted on the
    fly), 'default' (the bundled model), or a variant name ('tiny', 'paper') for random weights.
    The export fails (exit 1) if ONNX Runtime disagrees with PyTorch beyond the tolerances.
    """
    from ..export.pipeline import export_all

    export_all(checkpoint, out_dir, fp16=fp16, engine=engine, batch=batch, workspace_gb=workspace_gb,
               timing_cache=timing_cache, face_model=face_model, parity_batch=parity_batch,
               compact=compact, int8=int8, calibration=calibration, calibration_seed=calibration_seed,
               int8_weights=int8_weights, keypoints=not no_keypoints, echo=click.echo)
