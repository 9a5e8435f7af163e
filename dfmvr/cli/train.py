"""``dfmvr train`` / ``dfmvr-train``: train DF-MVR (main stage), its parse net (``--stage parse``), or
refit a trained network's coefficient heads in closed form (``--stage heads``, dfmvr/train/head_refit.py).

Multi-process: ``torchrun --nproc_per_node N -m dfmvr.cli.train ...`` (or ``torchrun $(which
dfmvr-train) ...``); each process then uses ``--batch`` triplets per step.
"""

from __future__ import annotations

from pathlib import Path

import click

from .options import (FiniteFloatRange, OutputPath, batch_size_option, data_face_model_option, exit_codes,
                      given_on_command_line, quiet_option)
from .settings import HELP_SETTINGS

from ..errors import require

_PATH = click.Path(path_type=Path)


# What each stage reads. An option given on the command line that the stage would not read is refused: it was
# ignored without a word (loss weights with --stage parse, --epochs with --stage heads).
PARSE_STAGE_READS = {"data", "out", "variant", "stage", "epochs", "batch", "lr", "resume", "seed", "workers",
                     "max_steps", "quiet", "class_balanced", "parse_detail"}
HEADS_STAGE_READS = {"data", "out", "stage", "init", "val", "face_model", "landmark_noise", "targets", "groups",
                     "fits_from", "slot_breaks", "quiet"}
# The loss weight each option sets (LossWeights fields): a --resume compares the ones given with the run's.
WEIGHT_OPTIONS = {"supervised_weight": "supervised", "supervised_shape_weight": "supervised_shape",
                  "supervised_shape_aligned_weight": "supervised_shape_aligned",
                  "supervised_pose_weight": "supervised_pose", "supervised_expression_weight": "supervised_expression",
                  "prdl_weight": "prdl", "photo_weight": "photo", "photo_render_factor": "photo_render_factor",
                  "mask_weight": "mask", "eye_landmarks": "landmark_eyes", "keypoint_weight": "keypoint_2d",
                  "depth_prior_weight": "depth_prior", "size_prior_weight": "size_prior"}


def _refuse_what_is_ignored(ctx: click.Context, stage: str) -> None:
    reads = {"parse": PARSE_STAGE_READS, "heads": HEADS_STAGE_READS}.get(stage)
    extra = ["--" + n.replace("_", "-") for n in given_on_command_line(ctx) if reads is not None and n not in reads]
    if extra:
        raise click.UsageError(f"{', '.join(extra)}: not read by --stage {stage}, which would ignore it")


@click.command(name="train", context_settings=HELP_SETTINGS, epilog=exit_codes(c3=None))
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Training data: triplet folders (dfmvr data synth) or, for --stage parse, CelebAMask-HQ.")
@click.option("--out", required=True, type=OutputPath("folder"),
              help="Run folder: checkpoint.safetensors (+ .train.pt), metrics.jsonl.")
@click.option("--variant", default=None, type=click.Choice(["tiny", "lite", "paper"]),
              help="Network: 'paper' (the published DF-MVR), 'tiny' (its topology cut down, for tests) or "
                   "'lite' (DF-MVR's structure at 112 px with a spatial readout: learns on a CPU; the bundled "
                   "model's). Default: tiny, or with --init the checkpoint's.")
@click.option("--stage", default="main", show_default=True, type=click.Choice(["main", "parse", "heads"]),
              help="main: the reconstruction network; parse: the BiSeNet parser on label maps; heads: refit "
                   "the --init network's identity, expression and rotation heads by ridge regression on DATA "
                   "(synthetic, with gt.npz; or any triplets with landmarks: --targets landmark-fit), strength "
                   "chosen on --val; everything else unchanged.")
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(min=1),
              help="Passes over DATA; the learning-rate schedule spans them all.")
@batch_size_option(4, per="per training step, in each process")
@click.option("--lr", default=None, type=FiniteFloatRange(min=0, min_open=True),
              help="Peak learning rate (default 1e-4 main, 1e-3 parse); main: constant, then cosine to 1e-6.")
@click.option("--resume", is_flag=True, help="Continue the run in --out exactly where its checkpoint ends.")
@click.option("--init", "init", default=None, metavar="CHECKPOINT",
              help="Fine-tune: start from this checkpoint's weights and architecture (`default`: the bundled "
                   "model), with this run's losses, a fresh optimizer and schedule; the card records the source.")
@data_face_model_option
@click.option("--parse-net", "parse_net", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Frozen parser: parse_net.safetensors (--stage parse), face_mask.pth or 79999_iter.pth.")
@click.option("--val", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Validation triplets scored (mm) after every epoch.")
@click.option("--val-limit", default=16, show_default=True, type=click.IntRange(min=1),
              help="Validation triplets scored after each epoch.")
@click.option("--supervised-weight", default=0.0, show_default=True, type=FiniteFloatRange(min=0),
              help="Synthetic data only: weight of an MSE to the true coefficients (recorded in the card).")
@click.option("--supervised-shape-weight", default=0.0, show_default=True, type=FiniteFloatRange(min=0),
              help="Synthetic data only: weight of the mean squared vertex distance (mm^2) of the unposed "
                   "shape to the true one (recorded in the card).")
@click.option("--supervised-pose-weight", default=0.0, show_default=True, type=FiniteFloatRange(min=0),
              help="Synthetic data only: weight of each view's head-pose error (degrees² + cm²); the "
                   "coefficient MSE gives the pose almost no weight.")
@click.option("--supervised-expression-weight", default=0.0, show_default=True, type=FiniteFloatRange(min=0),
              help="Synthetic data only: weight of the expression part of the vertex error alone (mm^2), "
                   "added to --supervised-shape-weight's to weigh expression up (identity is ~78 % of it).")
@click.option("--supervised-shape-aligned-weight", default=0.0, show_default=True, type=FiniteFloatRange(min=0),
              help="Synthetic data only: the same after the best per-sample scale and translation (face size "
                   "and camera distance trade off in the image; the metric ignores scale).")
@click.option("--prdl-weight", default=0.0, show_default=True, type=FiniteFloatRange(min=0),
              help="Part re-projection distance loss weight (0 = off; 3DDFA-V3 used 8e-4).")
@click.option("--photo-weight", default=None, type=FiniteFloatRange(min=0), show_default="24, the official",
              help="Photometric loss weight. 0 skips the differentiable render (with --mask-weight 0): about "
                   "half of a lite step on a CPU (docs/training.md, 'What the render costs').")
@click.option("--photo-render-factor", default=1, show_default=True, type=click.IntRange(min=1), metavar="K",
              help="Render the photometric term at 1/K of the image size per side (photos box-averaged, labels "
                   "subsampled; needs --mask-weight 0). 2: a lite step 1.47x faster on a CPU "
                   "(docs/training.md, 'What the render costs').")
@click.option("--mask-weight", default=1.0, show_default=True, type=FiniteFloatRange(min=0),
              help="Parse-consistency (mask) loss weight, on after 100/280 of training.")
@click.option("--landmark-noise", "landmark_noise", default=0.0, show_default=True, type=FiniteFloatRange(min=0),
              metavar="PX", help="Gaussian error (pixels per coordinate, fixed per triplet) added to the training "
                                 "landmarks: weak supervision as a detector would give it.")
@click.option("--parser-labels", is_flag=True,
              help="Ignore the data's label maps (synthetic data has exact ones): the frozen parser's labels "
                   "drive the photometric weight map and the mask loss, as on unlabelled photos. For weak "
                   "supervision that uses nothing a real photo lacks.")
@click.option("--eye-landmarks", is_flag=True, help="Weigh the eye landmarks 20 too (the official code).")
@click.option("--clip-grad", default=10.0, show_default=True, type=FiniteFloatRange(min=0, min_open=True),
              help="Largest global gradient norm; larger gradients are scaled down to it.")
@click.option("--no-view-dropout", is_flag=True, help="Always feed all three views.")
@click.option("--no-augment", is_flag=True, help="No colour jitter / blur.")
@click.option("--bn-recalibration", "bn_recalibration", default=64, show_default=True, type=click.IntRange(min=0),
              help="After every epoch recompute batch-norm statistics on this many clean all-view training "
                   "triplets (0 = off): the running ones do not match inference (see dfmvr/train/precise_bn.py).")
@click.option("--per-sample-norm", type=click.Choice(["instance", "layer"]), is_flag=False, flag_value="instance",
              default=None,
              help="Batch norm with each sample's own statistics in training too (recorded in the card): "
                   "involution nets spread per-sample scales so far that batch statistics squash most "
                   "samples. 'instance' (the bare flag): per channel; 'layer': over all channels, which "
                   "keeps what global pooling needs (see dfmvr/models/sample_norm.py).")
@click.option("--pool", type=click.Choice(["average", "spatial"]), default=None,
              help="How the regressor reads RedNet's last map (recorded in the card): 'average' (the "
                   "official global average, the variant's default) or 'spatial' (a 1x1 reduction, then "
                   "the whole map flattened, so the heads know where features are; see "
                   "dfmvr/models/heads.py).")
@click.option("--keypoints", default=0, show_default=True, type=click.IntRange(min=0),
              help="Landmarks per view of a keypoint readout (68, or 0 = none, the official layout). "
                   "Official design: the heads also read each view's soft-argmax keypoints "
                   "(dfmvr/models/keypoints.py); 'lite': a training-only target of each view's encoder, "
                   "not in the exported graph (dfmvr/models/lite.py). Recorded in the card.")
@click.option("--keypoint-weight", default=0.0, show_default=True, type=FiniteFloatRange(min=0),
              help="Weight of the keypoints' squared pixel distance to the 2D landmarks (needs --keypoints).")
@click.option("--depth-prior-weight", default=0.0, show_default=True, type=FiniteFloatRange(min=0),
              help="Weight of each view's depth (translation z) away from where the crop alignment puts the mean "
                   "face, squared (cm^2): needs no ground truth. Aligned crops show every face at about one size; "
                   "without a prior the weak losses trade face size for camera distance (docs/training.md, "
                   "\"Weak supervision alone\").")
@click.option("--size-prior-weight", default=0.0, show_default=True, type=FiniteFloatRange(min=0),
              help="Weight of the identity's uniform-scale component (mean squared vertex displacement, mm^2): a prior "
                   "on the face's size, which the photos cannot show; needs no ground truth. Measured on weak-only runs: "
                   "it pins the size and costs the rest of the identity (docs/training.md, \"A prior on the size\").")
@click.option("--train-only", "train_only", multiple=True, metavar="PREFIX",
              help="Train only the parameters whose names start with PREFIX (repeatable; e.g. rednet_fc.conv2_id. "
                   "for the identity head), with --init: a heads-only phase. Everything else is frozen (its "
                   "batch-norm running statistics still follow the data). Recorded in the card "
                   "(docs/training.md, \"With the landmark target\").")
@click.option("--class-balanced", "class_balanced", is_flag=True,
              help="--stage parse: weigh the cross entropy by 1/sqrt(class pixel frequency), so the small parts "
                   "(eyes, brows, lips) the landmarks sit on count more.")
@click.option("--parse-detail", "parse_detail", type=click.IntRange(min=0), default=0, show_default=True,
              help="--stage parse: classify at 1/4 of the input with a decoder of this width on the trunk's 1/4 "
                   "map (0: the official 1/8 classifier, bilinearly upsampled). Recorded in the weights' "
                   "architecture (docs/training.md, \"A sharper parser\", items 7-8).")
@click.option("--targets", "targets", default="truth", show_default=True, type=click.Choice(["truth", "landmark-fit"]),
              help="--stage heads: what the heads are fitted to. truth: each triplet's gt.npz coefficients; "
                   "landmark-fit: each triplet fitted to its own 2D landmarks (the data's, plus --landmark-noise), "
                   "no ground truth read: weak supervision (dfmvr/train/landmark_fit.py).")
@click.option("--groups", "groups", default=None, metavar="G,G,...",
              help="--stage heads: the coefficient groups whose heads are refit, of identity, expression, texture, "
                   "lighting, rotation, translation (default: identity, expression, rotation; "
                   "head_refit.DEFAULT_GROUPS). Translation is left out by default: refit to the truth it "
                   "raised the demo's held-out translation error; refit to landmark fits it lowered a weak run's "
                   "(docs/training.md).")
@click.option("--fits", "fits_from", default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="--stage heads --targets landmark-fit: reuse the landmark fits an earlier such run saved "
                   "(its OUT/landmark_fits.npz) instead of fitting every triplet again; refused unless they are "
                   "the fits of the same triplet folders with the same settings (face model, noise, fit).")
@click.option("--slot-breaks", "slot_breaks", default=0.0, show_default=True, type=FiniteFloatRange(0, 1),
              help="--stage heads: add this fraction of the triplets again with their slots broken (a photo in "
                   "another view's slot, the pose truth following it), so the refit heads read each view's pose "
                   "from the photo, not the slot; costs some accuracy on conventional input (docs/training.md).")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed of everything random (sample order, augmentation, view dropout, initial weights).")
@click.option("--workers", default=0, show_default=True, type=click.IntRange(min=0), help="DataLoader workers.")
@click.option("--stop-after", "stop_after", default=None, type=click.IntRange(min=1),
              help="End after this epoch (the schedule still spans --epochs); continue with --resume.")
@click.option("--max-steps", "max_steps", default=None, type=click.IntRange(min=1), help="Cap steps per epoch.")
@click.option("--device", default=None, type=click.Choice(["cpu", "cuda"]),
              help="Where to train (default: cuda when a GPU is visible, else cpu).")
@click.option("--speed", default="auto", show_default=True,
              type=click.Choice(["auto", "eager", "channels_last", "compile", "bf16"]),
              help="How steps run on CPU (docs/training.md, 'Training speed'): auto picks the mode measured fastest "
                   "that keeps the training result (eager, on AVX2 and AVX512-BF16 CPUs alike); compile pays minutes of compilation first; "
                   "bf16 only where the CPU has native bf16. On CUDA: fp16 mixed precision.")
@quiet_option
def command(data, out, variant, stage, epochs, batch, lr, resume, init, face_model, parse_net, val, val_limit,
            supervised_weight, supervised_shape_weight, supervised_shape_aligned_weight, supervised_pose_weight, supervised_expression_weight, prdl_weight, photo_weight, photo_render_factor, mask_weight, landmark_noise, parser_labels, eye_landmarks, clip_grad, class_balanced, parse_detail, targets, groups, fits_from, slot_breaks, no_view_dropout, no_augment,
            bn_recalibration, per_sample_norm, pool, keypoints, keypoint_weight, depth_prior_weight, size_prior_weight, train_only, seed, workers, stop_after, max_steps, device, speed, quiet):
    """Train on DATA, writing checkpoints and metrics to OUT."""
    require("torch", "train", "Training")
    if stage == "parse" and init:
        raise click.UsageError("--init fine-tunes the main stage; the parse stage starts from scratch")
    if class_balanced and stage != "parse":
        raise click.UsageError("--class-balanced weighs the parse stage's loss; add --stage parse")
    if parse_detail and stage != "parse":
        raise click.UsageError("--parse-detail shapes the parser --stage parse trains; add --stage parse")
    if train_only and stage != "main":
        raise click.UsageError("--train-only freezes part of the main stage's network; drop it with --stage " + stage)
    if slot_breaks and stage != "heads":
        raise click.UsageError("--slot-breaks adds rows to the heads' refit; add --stage heads")
    if targets != "truth" and stage != "heads":
        raise click.UsageError("--targets chooses what the heads' refit fits; add --stage heads")
    groups = _parse_groups(groups, stage)
    if fits_from is not None and (stage != "heads" or targets != "landmark-fit"):
        raise click.UsageError("--fits reuses stored landmark fits; it needs --stage heads --targets landmark-fit")
    if targets != "truth" and slot_breaks:
        raise click.UsageError("--slot-breaks needs the true pose of each photo; drop it with --targets " + targets)
    _refuse_what_is_ignored(click.get_current_context(), stage)     # after the specific messages above
    if stage == "heads":
        if not init or not val:
            raise click.UsageError("--stage heads refits a trained network: give it --init CHECKPOINT and "
                                   "--val SELECTION_TRIPLETS (the ridge strength is chosen there)")
        from ..train.head_refit import run_head_refit

        path, report = run_head_refit(init, data, val, out, face_model_path=face_model,
                                      progress=(lambda _: None) if quiet else click.echo, slot_breaks=slot_breaks,
                                      targets=targets, landmark_noise=landmark_noise, fits_from=fits_from,
                                      **({"groups": groups} if groups else {}))
        for group, r in report["groups"].items():
            click.echo(f"{group}: selection set {r['select_before']} -> {r['select_after']} "
                       f"({'refit, strength ' + format(r['strength'], 'g') if r['refit'] else 'kept'})")
        click.echo(f"{path} ({report['seconds']} s)")
        return
    if stage == "parse":
        from ..train.parse_stage import ParseConfig, train_parse_net

        path = train_parse_net(ParseConfig(data=str(data), out=str(out), variant=variant or "tiny", epochs=epochs,
                                           batch=batch, lr=lr or 1e-3, resume=resume, seed=seed, workers=workers,
                                           max_steps_per_epoch=max_steps, progress=not quiet,
                                           class_balanced=class_balanced, detail_channels=parse_detail))
        click.echo(f"parse net: {path}")
        return
    from ..train.losses.total import LossWeights
    from ..train.trainer import Trainer, TrainConfig

    try:
        weights = LossWeights(supervised=supervised_weight, supervised_shape=supervised_shape_weight,
                              supervised_shape_aligned=supervised_shape_aligned_weight, supervised_pose=supervised_pose_weight,
                              supervised_expression=supervised_expression_weight, prdl=prdl_weight, mask=mask_weight,
                              landmark_eyes=eye_landmarks, keypoint_2d=keypoint_weight,
                              depth_prior=depth_prior_weight, size_prior=size_prior_weight,
                              photo_render_factor=photo_render_factor,
                              **({} if photo_weight is None else {"photo": photo_weight}))
    except ValueError as exc:              # weights no loss can compute (LossWeights.check): exit 2, no output yet
        raise click.UsageError(str(exc)) from None
    given = given_on_command_line(click.get_current_context())
    # what a --resume must find in the run it continues (it takes architecture and losses from the checkpoint)
    resume_expects = {"variant": variant if "variant" in given else None,
                      **{name: value for name, value in (("keypoints", keypoints), ("per_sample_norm", per_sample_norm),
                                                         ("pool", pool)) if name in given},
                      "weights": {field: getattr(weights, field) for name, field in WEIGHT_OPTIONS.items()
                                  if name in given}}
    if keypoint_weight and not keypoints and not init:     # with --init the checkpoint's architecture decides
        raise click.UsageError("--keypoint-weight needs a keypoint readout (--keypoints 68)")
    cfg = TrainConfig(data=str(data), out=str(out), variant=variant or (None if init else "tiny"), epochs=epochs, batch=batch, lr=lr or 1e-4,
                      clip_grad=clip_grad, resume=resume, face_model=str(face_model) if face_model else None,
                      parse_net=str(parse_net) if parse_net else None, val=str(val) if val else None,
                      val_limit=val_limit, seed=seed, augment=not no_augment, view_dropout=not no_view_dropout,
                      workers=workers, stop_after_epoch=stop_after, max_steps_per_epoch=max_steps,
                      device=device, progress=not quiet, weights=weights.to_dict(),
                      bn_recalibration=bn_recalibration, per_sample_norm=per_sample_norm, pool=pool,
                      keypoints=keypoints, init=init, landmark_noise_px=landmark_noise,
                      parser_labels=parser_labels, speed=speed, train_only=list(train_only) or None,
                      resume_expects=resume_expects)
    try:
        trainer = Trainer(cfg)
    except ValueError as exc:
        if str(exc).startswith("--speed"):
            raise click.BadParameter(str(exc).split(": ", 1)[1], param_hint="--speed") from None
        if str(exc).startswith("--"):       # options that contradict the --init checkpoint or the run: exit 2
            raise click.UsageError(str(exc)) from None
        raise
    try:
        last = trainer.run()
    finally:
        trainer.close()
    if trainer.rank == 0:
        shown = {k: round(v, 5) if isinstance(v, float) else v for k, v in last.items()
                 if k in ("epoch", "train_loss", "seconds_per_step", "val_mean_mm", "val_rmse_mm")}
        click.echo(f"{trainer.ckpt_path} ({shown})")


def _parse_groups(text: str | None, stage: str) -> tuple[str, ...] | None:
    """``--groups`` -> the head groups to refit (``head_refit.HEAD_GROUPS`` names), None for the default;
    only with --stage heads."""
    if text is None:
        return None
    if stage != "heads":
        raise click.UsageError("--groups chooses the heads the refit fits; add --stage heads")
    from ..train.head_refit import HEAD_GROUPS

    groups = tuple(dict.fromkeys(g.strip() for g in text.split(",") if g.strip()))
    unknown = [g for g in groups if g not in HEAD_GROUPS]
    if unknown or not groups:
        raise click.UsageError(f"--groups: {', '.join(unknown) or 'none given'}; choose from {', '.join(HEAD_GROUPS)}")
    return groups


if __name__ == "__main__":   # torchrun -m dfmvr.cli.train ...
    from . import invoke

    invoke(command, prog_name="dfmvr-train")

