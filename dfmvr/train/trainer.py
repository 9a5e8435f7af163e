"""The main-stage trainer: weakly supervised DF-MVR training, single process or DDP under torchrun.

Reproducibility and exact resume: everything random is derived from (seed, epoch, step, rank) —
the sample order of each epoch, the augmentation (torch's RNG, re-seeded at each epoch start) and
the single-view input dropout (a numpy generator per step) — so a run resumed from the checkpoint
of epoch k takes exactly the steps an uninterrupted run takes. The checkpoint (written atomically
at the end of every epoch) carries the weights, the card, Adam's state, the epoch and step
counters and the RNG states.

Distributed: under ``torchrun`` (env ``WORLD_SIZE`` > 1) the process group uses NCCL on CUDA and
gloo on CPU; DistributedSampler shards each epoch; rank 0 alone validates, logs and checkpoints.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from ..atomic import atomic_write_text
from ..errors import DfmvrError, InputError
from ..face.camera import Camera
from ..models.checkpoint import capture_rng_state, load_checkpoint, load_for_resume, save_checkpoint
from ..models.convert import DEAD_PREFIXES
from .data import TripletDataset
from .device import resolve_torch_device
from ..synth.face_torch import FaceModelTorch
from .losses.keypoints import keypoint_loss
from .losses.total import LossWeights, TrainingLoss
from ..models.sample_norm import INFERENCE_NORM_KEY, NORM_CHOICES, TRAINING_NORM_KEY
from ..models.heads import POOLING
from ..models.variants import build_model, make_card
from .precise_bn import recalibrate_batch_norm
from .schedule import lr_at, sample_view_masks
from .speed import autocast_dtype, prepare_model, resolve_speed_mode, wrap_forward
from ..synth.dataset import load_meta

__all__ = ["TrainConfig", "Trainer", "CHECKPOINT_NAME", "METRICS_NAME"]

CHECKPOINT_NAME = "checkpoint.safetensors"
METRICS_NAME = "metrics.jsonl"


@dataclass
class TrainConfig:
    """Everything a main-stage run needs. Paths are strings so the config is JSON-serialisable."""

    data: str
    out: str
    variant: str | None = "tiny"         # None only with init (the checkpoint's)
    epochs: int = 10
    batch: int = 4                       # per process
    lr: float = 1e-4
    final_lr: float = 1e-6
    clip_grad: float = 10.0              # max global gradient norm
    resume: bool = False
    face_model: str | None = None        # .npz; default: DATA/face_model.npz, else the synthetic default
    parse_net: str | None = None         # frozen parser weights (see parse_stage.load_parse_weights)
    val: str | None = None
    val_limit: int | None = 16           # triplets scored per validation (None: all)
    seed: int = 0
    augment: bool = True
    view_dropout: bool = True            # the paper's single-view training (p = 2/3 all views)
    workers: int = 0
    stop_after_epoch: int | None = None  # end this invocation after that epoch (resume later)
    max_steps_per_epoch: int | None = None
    device: str | None = None            # default: cuda if available, else cpu
    progress: bool = True
    weights: dict = field(default_factory=lambda: LossWeights().to_dict())
    bn_recalibration: int = 64           # triplets for the end-of-epoch batch-norm statistics (0 = off)
    per_sample_norm: str | None = None   # "instance" / "layer": batch norm with each sample's own statistics,
                                         # also in training (dfmvr/models/sample_norm.py); None: batch statistics
    pool: str | None = None              # "average" / "spatial" readout of RedNet's last map (dfmvr/models/heads.py);
                                         # None: the variant's own (average)
    keypoints: int = 0                   # > 0: a keypoint readout of that many landmarks per view
                                         # (dfmvr/models/keypoints.py), supervised with weights["keypoint_2d"]
    landmark_noise_px: float = 0.0       # detector-like error on the training landmarks (data.TripletDataset)
    parser_labels: bool = False          # ignore the data's label maps: the frozen parser's labels drive the
                                         # photo weight map and the mask loss, as on unlabelled photos
    init: str | None = None              # fine-tune: start from this checkpoint's weights (its card's
                                         # architecture), with a fresh optimizer, schedule and loss weights
    speed: str = "auto"                  # how forward/backward run (dfmvr/train/speed.py); "auto": the
                                         # mode measured fastest on this device
    train_only: list | None = None       # parameter-name prefixes: train only those, freeze the rest (a
                                         # heads-only phase; docs/training.md "With the landmark target")
    # What the command line set that a --resume takes from the checkpoint instead ({"variant": str | None,
    # "weights": {LossWeights field: value}}): refused when the run records something else (it was ignored)
    resume_expects: dict | None = None


def _dataset_camera(data_root) -> Camera:
    meta = Path(data_root) / "meta.json"
    if meta.is_file():
        try:
            return Camera.from_dict(load_meta(data_root)["camera"])
        except (KeyError, ValueError, TypeError) as exc:
            raise InputError(meta, f"dataset meta.json has no valid camera ({exc})") from exc
    return Camera()


def _attach_parser(model, card, path) -> None:
    """Freeze the parser in ``path`` into ``model`` and record its architecture in ``card``, the card
    the checkpoint is saved with. attach_parse_weights writes to ``model.card``, which build_model and
    load_checkpoint made as a copy: without carrying the parser's arguments over, a parser with a
    detail head (--parse-detail) is saved under a card that rebuilds it without one, and the
    checkpoint neither resumes nor loads."""
    from .parse_stage import attach_parse_weights
    attach_parse_weights(model, path)
    card.architecture = {**card.architecture, "parse": dict(model.card.architecture["parse"])}


def _check_resume_expects(expects: dict | None, card, checkpoint) -> None:
    """ValueError ("--option ...", exit 2 at the CLI) when the command line asks a --resume for another variant
    or other loss weights than the run records: a resume continues the checkpoint's architecture and losses, so
    these were ignored without a word. Rerunning the run's own command line (the recipe does) passes."""
    if not expects:
        return
    if expects.get("variant") and expects["variant"] != card.variant:
        raise ValueError(f"--variant {expects['variant']}: the run being resumed ({checkpoint}) is a "
                         f"'{card.variant}' network -- drop --variant, or train into a new --out")
    arch = card.architecture
    for name, asked, has in (
            ("keypoints", expects.get("keypoints"),
             (arch.get("unet") or {}).get("keypoints") or (arch.get("rednet") or {}).get("keypoints") or 0),
            ("per-sample-norm", NORM_CHOICES.get(expects.get("per_sample_norm"), expects.get("per_sample_norm")),
             arch.get(TRAINING_NORM_KEY)),
            ("pool", *(None if v == "average" else v         # "average": the official default, also when unrecorded
                       for v in (expects.get("pool"), (arch.get("rednet") or {}).get("pool"))))):
        key = name.replace("-", "_")
        if key in expects and (asked or None) != (has or None):
            raise ValueError(f"--{name} {expects[key]}: the run being resumed ({checkpoint}) has {name} {has or 'none'}; "
                             "a resume keeps its architecture -- drop the option, or train into a new --out")
    recorded = LossWeights.from_dict(card.loss_weights).to_dict()
    changed = {k: v for k, v in (expects.get("weights") or {}).items()
               if not math.isclose(float(v), float(recorded.get(k, 0.0)), rel_tol=1e-9, abs_tol=1e-12)}
    if changed:
        said = ", ".join(f"{k} {v:g} (the run: {float(recorded.get(k, 0.0)):g})" for k, v in sorted(changed.items()))
        raise ValueError(f"--resume continues the losses {checkpoint} records; asked for other weights: {said} -- "
                         f"drop those options, or fine-tune from it into a new run: --init {checkpoint} --out NEW")


def _check_sets_face_model(face_model, source, data, val) -> None:
    """InputError when --data's or --val's synthetic triplets were made with another face model than the one
    training uses (--face-model, else --data's): their ground truth would be scored against the wrong mesh.
    (dfmvr eval refuses a mismatched set; training and its validation took it silently.)"""
    from ..face.model import MorphableModel, identity_matches
    from ..face.selection import DATASET_FACE_MODEL

    for flag, root in (("--data", data), ("--val", val)):
        path = Path(root) / DATASET_FACE_MODEL if root else None
        if path is None or not path.is_file() or str(path) == str(source):
            continue
        theirs = MorphableModel.load(path)
        if not identity_matches(theirs.identity(), face_model):
            raise InputError(path, f"{flag}'s triplets were made with face model '{theirs.name}', training uses "
                             f"'{face_model.name}' ({source})", "use sets made with one face model, or drop "
                             "--face-model so that --data's is used")


class Trainer:
    """Builds model, data, loss and optimizer from a ``TrainConfig``; ``run()`` trains."""

    def __init__(self, config: TrainConfig):
        self.cfg = config
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if config.device is not None:       # exit 3, not a traceback, for cuda without one; this rank's GPU, not GPU 0
            name = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if config.device == "cuda" else config.device
            resolve_torch_device(name, "--device")
        want_cuda = config.device == "cuda" or (config.device is None and torch.cuda.is_available())
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if want_cuda else "gloo")
        if want_cuda:
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            self.device = torch.device("cuda", local)
        else:
            self.device = torch.device("cpu")
        self.amp = self.device.type == "cuda"          # mixed precision on GPU only
        self.out = Path(config.out)
        self.ckpt_path = self.out / CHECKPOINT_NAME
        existed = self.out.exists()
        try:        # before any work: an unwritable --out was a traceback from the metrics log after the model was built
            self.out.mkdir(parents=True, exist_ok=True)
            if not existed:
                self.out.rmdir()        # made for real with the first file: a refused run leaves no empty folder
        except OSError as exc:
            raise InputError(self.out, f"cannot create the output folder ({exc.strerror or exc})",
                             "choose another --out") from exc
        torch.manual_seed(config.seed)

        self.dataset = TripletDataset(config.data, augment=config.augment,
                                      landmark_noise_px=config.landmark_noise_px, noise_seed=config.seed)
        from ..face.selection import select_face_model      # the one rule for every command
        face_model, fm_source = select_face_model(config.face_model, data=config.data)
        camera = _dataset_camera(config.data)
        self.face_model = face_model
        _check_sets_face_model(face_model, fm_source, config.data, config.val)
        if config.val_limit is not None and config.val_limit < 1:     # 0 meant "all" once; now it would fail after an epoch
            raise ValueError(f"val_limit must be at least 1 (None: every triplet), got {config.val_limit}")
        if config.val:      # an empty or unreadable validation set fails now, not after the first epoch's training
            from ..eval.dataset import find_eval_folders, load_eval_sample

            for folder in find_eval_folders(config.val)[:config.val_limit]:     # the triplets validate() scores
                load_eval_sample(folder, face_model)
        if self.ckpt_path.is_file() and not config.resume:     # hours of someone's training: never overwritten
            raise InputError(self.ckpt_path, "a run's checkpoint is already here",
                             "continue that run with --resume, or pass another --out")
        train_state = None
        if config.resume and self.ckpt_path.is_file():
            model, card, train_state, note = load_for_resume(self.ckpt_path)
            if note and self.rank == 0:
                print(f"note: {note}")
            if train_state is None:
                raise InputError(self.ckpt_path.with_suffix(".train.pt"), "no training state beside the checkpoint",
                                 "cannot resume exactly; start a new run (--out elsewhere)")
            card.check_face_model(face_model, source=fm_source)
            _check_resume_expects(config.resume_expects, card, self.ckpt_path)
            weights = LossWeights.from_dict(card.loss_weights)
        elif config.init:
            if config.resume and self.rank == 0:
                print(f"no checkpoint at {self.ckpt_path}; starting a new run from {config.init}")
            weights = LossWeights.from_dict(config.weights)
            model, card = self._init_from(config.init, face_model, fm_source, weights)
        else:
            if config.resume and self.rank == 0:
                print(f"no checkpoint at {self.ckpt_path}; starting a new run")
            weights = LossWeights.from_dict(config.weights)
            card = make_card(config.variant, camera=camera, face_model=face_model.identity(),
                             loss_weights=weights.to_dict())
            if config.per_sample_norm:   # see dfmvr/models/sample_norm.py for why
                if config.per_sample_norm not in NORM_CHOICES:
                    raise ValueError(f"per_sample_norm must be one of {sorted(NORM_CHOICES)} or None, "
                                     f"got {config.per_sample_norm!r}")
                value = NORM_CHOICES[config.per_sample_norm]
                card.architecture = {**card.architecture, TRAINING_NORM_KEY: value, INFERENCE_NORM_KEY: value}
            lite = card.architecture.get("design") == "lite"
            if lite and config.pool:
                raise ValueError("--pool applies to the official design's RedNet regressor; "
                                 "the 'lite' variant always reads its map spatially (dfmvr/models/lite.py)")
            if config.pool:   # see dfmvr/models/heads.py for why
                if config.pool not in POOLING:
                    raise ValueError(f"pool must be one of {POOLING} or None, got {config.pool!r}")
                card.architecture = {**card.architecture,
                                     "rednet": {**card.architecture["rednet"], "pool": config.pool}}
            if config.keypoints and lite:   # a training target of the encoders: dfmvr/models/lite.py
                card.architecture = {**card.architecture,
                                     "unet": {**card.architecture["unet"], "keypoints": int(config.keypoints)}}
            elif config.keypoints:   # see dfmvr/models/keypoints.py for why
                card.architecture = {**card.architecture,
                                     "rednet": {**card.architecture["rednet"], "keypoints": int(config.keypoints)}}
            card.provenance = self._provenance(weights, fm_source)
            model = build_model(card)
            if config.parse_net:
                _attach_parser(model, card, config.parse_net)
        self.card = model.card = card
        if "parse_net" not in card.provenance or str(card.provenance["parse_net"]).startswith("untrained"):
            if config.parser_labels:
                raise InputError(self.dataset.folders[0], "--parser-labels asks for the parse net's labels, but it is untrained",
                                 "pass --parse-net WEIGHTS (train one with --stage parse) or fine-tune with --init")
            if not bool(self.dataset[0]["has_labels"]):
                raise InputError(self.dataset.folders[0], "the data has no label maps and the parse net is untrained",
                                 "pass --parse-net WEIGHTS (train one with --stage parse) or add labels.npz")
        # Parameters the forward pass never uses (the official checkpoint's dead conv9 / pts_net):
        # frozen, so that Adam skips them and DDP does not wait for their gradients.
        for name, p in model.named_parameters():
            if name.startswith(DEAD_PREFIXES):
                p.requires_grad_(False)
        self._freeze_all_but(model, card, config.train_only, resuming=train_state is not None)
        self.weights = weights
        self.model = model.to(self.device).train()
        self.face = FaceModelTorch(face_model, Camera.from_dict(card.camera)).to(self.device)
        depth_centre = None
        if weights.depth_prior > 0:
            from ..synth.dataset import aligned_mean_face_pose
            depth_centre = aligned_mean_face_pose(face_model, Camera.from_dict(card.camera))[1][:, 2]
            self.card.provenance["depth_prior_centre_dm"] = [round(float(z), 4) for z in depth_centre]
        self.loss = TrainingLoss(self.face, weights, parse_net=self.model.parse_net,
                                 depth_centre=depth_centre).to(self.device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=config.lr)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.epoch, self.step = 0, 0
        if train_state is not None:
            self.optimizer.load_state_dict(train_state["optimizer"])
            self.epoch, self.step = int(train_state["epoch"]), int(train_state["step"])
            if train_state.get("scaler"):
                self.scaler.load_state_dict(train_state["scaler"])
        self.speed_mode = resolve_speed_mode(config.speed, self.device)
        self._record_speed_mode()
        self.autocast = autocast_dtype(self.speed_mode, self.device)
        prepare_model(self.model, self.speed_mode)           # before DDP: it views the parameters as they are
        self.net = self.model
        if self.world > 1:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.net = wrap_forward(self.net, self.speed_mode)
        per_epoch = len(self.dataset) // (config.batch * self.world)
        if per_epoch == 0:
            raise InputError(config.data, f"{len(self.dataset)} triplets are fewer than one batch "
                             f"({config.batch} x {self.world} processes)", "lower --batch or add data")
        self.steps_per_epoch = min(per_epoch, config.max_steps_per_epoch or per_epoch)
        self.total_steps = self.steps_per_epoch * config.epochs
        if train_state is not None:
            self._record_schedule_change()
            self._record_data_change()

    def _init_from(self, source: str, face_model, fm_source: str, weights: LossWeights):
        """Fine-tuning: the weights (parse net included) and architecture of checkpoint ``source``; the
        loss weights, optimizer and schedule of this run. The card keeps where the weights came from
        and that run's own provenance, so a fine-tuned model still says everything it was trained on."""
        cfg = self.cfg
        if cfg.per_sample_norm or cfg.pool or cfg.keypoints:
            raise ValueError("--init takes the architecture from the checkpoint's card; "
                             "drop --per-sample-norm, --pool and --keypoints")
        model, source_card, _ = load_checkpoint(source, load_train_state=False)
        source_card.check_face_model(face_model, source=fm_source)
        arch = source_card.architecture
        if weights.keypoint_2d > 0 and not (arch["unet"].get("keypoints") or arch["rednet"].get("keypoints")):
            raise ValueError(f"--keypoint-weight needs keypoint heads, and {source} has none "
                             "(train it with --keypoints 68, or drop --keypoint-weight)")
        if cfg.variant not in (None, source_card.variant) and self.rank == 0:
            print(f"--init {source}: a '{source_card.variant}' model; --variant {cfg.variant} is ignored")
        card = source_card
        card.loss_weights = weights.to_dict()
        provenance = self._provenance(weights, fm_source)
        for key in ("per_sample_norm", "pool", "keypoints"):     # the architecture is the source's
            provenance[key] = source_card.provenance.get(key)
        card.provenance = {**provenance, "init_from": str(source), "init_provenance": source_card.provenance}
        if cfg.parse_net:
            _attach_parser(model, card, cfg.parse_net)
        else:
            card.provenance["parse_net"] = f"from {source}"
        return model.float(), card

    @staticmethod
    def _freeze_all_but(model, card, prefixes, resuming: bool) -> None:
        """``train_only``: every parameter whose name starts with none of ``prefixes`` is frozen (Adam and
        the gradient clip see only the rest; batch-norm running statistics still follow the data in train
        mode). Recorded in the card; a resumed run keeps its own (the optimizer state is for those)."""
        recorded = card.provenance.get("train_only")
        if resuming:
            if prefixes and list(prefixes) != list(recorded or []):
                raise ValueError(f"--train-only {' '.join(prefixes)}: this run trained {recorded or 'every parameter'}; "
                                 "a resumed run keeps what it trains")
            prefixes = recorded
        if not prefixes:
            return
        prefixes = tuple(prefixes)
        names = [name for name, _ in model.named_parameters()]
        for prefix in prefixes:
            if not any(name.startswith(prefix) for name in names):
                heads = sorted({n.rsplit(".", 1)[0] for n in names if n.startswith("rednet_fc.conv2_")})
                raise ValueError(f"--train-only {prefix}: no parameter of this network starts with it "
                                 f"(the heads: {', '.join(heads) or 'none'})")
        for name, p in model.named_parameters():
            if not name.startswith(prefixes):
                p.requires_grad_(False)
        card.provenance["train_only"] = list(prefixes)

    def _record_schedule_change(self) -> None:
        """``--resume`` with another ``--epochs`` stretches the learning-rate schedule from here on
        (train longer when the curve is still falling). The card must say so, or its recipe would not
        reproduce the weights: ``epochs`` becomes the new count and ``schedule_changes`` lists each
        change with the step it took effect at."""
        before = self.card.provenance.get("epochs")
        if before is None or before == self.cfg.epochs:
            return
        if self.cfg.epochs < self.epoch:
            raise ValueError(f"--epochs {self.cfg.epochs} is fewer than the {self.epoch} epochs already trained "
                             f"in {self.ckpt_path}")
        changes = [*self.card.provenance.get("schedule_changes", []),
                   {"at_step": self.step, "at_epoch": self.epoch, "epochs_before": before, "epochs": self.cfg.epochs}]
        self.card.provenance = {**self.card.provenance, "epochs": self.cfg.epochs, "schedule_changes": changes}
        if self.rank == 0:
            print(f"resuming at epoch {self.epoch} with --epochs {self.cfg.epochs} (was {before}): the learning-rate "
                  f"schedule is stretched from step {self.step} on; recorded in the card")

    def _record_data_change(self) -> None:
        """``--resume`` on other data (typically the same dataset grown with ``dfmvr data synth
        --triplets N``: triplets are deterministic per (seed, index), so growing keeps the first ones)
        trains the rest of the run on it. The card lists each change with the step it took effect at,
        so the recipe that made the weights stays readable from the card."""
        prov = self.card.provenance
        data, triplets = str(self.cfg.data), len(self.dataset)
        same_folder = prov.get("data") is not None and Path(prov["data"]).resolve() == Path(data).resolve()
        if same_folder and prov.get("triplets") == triplets:      # the same folder, spelt another way or not
            return
        change = {"at_step": self.step, "at_epoch": self.epoch, "data_before": prov.get("data"),
                  "triplets_before": prov.get("triplets"), "data": data, "triplets": triplets}
        self.card.provenance = {**prov, "data": data, "triplets": triplets,
                                "data_changes": [*prov.get("data_changes", []), change]}
        if self.rank == 0:
            print(f"resuming at step {self.step} on {data} ({triplets} triplets; was {prov.get('triplets')} in "
                  f"{prov.get('data')}): recorded in the card")

    def _record_speed_mode(self) -> None:
        """The card says how the run computed its steps; a resume in another mode is listed, since bf16
        changes the arithmetic (the other modes change only the speed)."""
        before = self.card.provenance.get("speed_mode")
        prov = {**self.card.provenance, "speed_mode": self.speed_mode}
        if before is not None and before != self.speed_mode:
            prov["speed_mode_changes"] = [*prov.get("speed_mode_changes", []),
                                          {"at_step": self.step, "before": before, "after": self.speed_mode}]
        self.card.provenance = prov

    def _provenance(self, weights: LossWeights, fm_source: str) -> dict:
        c = self.cfg
        prov = {"trainer": "dfmvr-train", "stage": "main", "data": str(c.data), "triplets": len(self.dataset),
                "epochs": c.epochs, "batch_per_process": c.batch, "processes": self.world, "lr": c.lr,
                "final_lr": c.final_lr, "seed": c.seed, "augment": c.augment, "view_dropout": c.view_dropout,
                "face_model_source": fm_source, "parse_net": c.parse_net or "untrained (random init)",
                "bn_recalibration_triplets": 0 if c.per_sample_norm else c.bn_recalibration,
                "per_sample_norm": c.per_sample_norm, "pool": c.pool,
                "keypoints": c.keypoints}
        if c.landmark_noise_px > 0:
            prov["landmark_noise_px"] = c.landmark_noise_px
        if c.parser_labels:
            prov["labels"] = "the parse net's (the data's label maps ignored)"
        if weights.supervised > 0:
            prov["supervised_weight"] = weights.supervised   # not weak supervision alone: say so
        if weights.supervised_shape > 0:
            prov["supervised_shape_weight"] = weights.supervised_shape
        if weights.supervised_shape_aligned > 0:
            prov["supervised_shape_aligned_weight"] = weights.supervised_shape_aligned
        if weights.supervised_pose > 0:
            prov["supervised_pose_weight"] = weights.supervised_pose
        if weights.supervised_expression > 0:
            prov["supervised_expression_weight"] = weights.supervised_expression
        return prov

    # --- data ------------------------------------------------------------------------------
    def _loader(self, epoch: int) -> DataLoader:
        seed = self.cfg.seed * 100003 + epoch
        if self.world > 1:
            sampler = DistributedSampler(self.dataset, self.world, self.rank, shuffle=True, seed=seed, drop_last=True)
            sampler.set_epoch(0)
        else:
            sampler = RandomSampler(self.dataset, generator=torch.Generator().manual_seed(seed))
        return DataLoader(self.dataset, batch_size=self.cfg.batch, sampler=sampler, drop_last=True,
                          num_workers=self.cfg.workers, pin_memory=self.device.type == "cuda")

    def _loss_batch(self, item: dict, labels_pred: torch.Tensor) -> dict:
        """Dataset items -> the loss batch (see ``TrainingLoss.forward``)."""
        d = self.device
        has_lab = item["has_labels"].to(d)[:, None, None, None]
        if self.cfg.parser_labels:      # weak supervision on labelled (synthetic) data: use none of the labels
            has_lab = torch.zeros_like(has_lab)
        batch = {
            "photos": (item["images"].to(d) * self.card.input_std + self.card.input_mean).clamp(0, 1),
            # without annotated labels the frozen parser's own labels drive the weight map
            "labels": torch.where(has_lab, item["labels"].to(d), labels_pred),
            "landmarks": item["landmarks"].to(d),
            "landmark_visible": item["landmarks_visible"].to(d) & item["has_landmarks"].to(d)[:, None, None],
        }
        if "landmarks3d" in item:
            batch["landmarks_3d"] = item["landmarks3d"].to(d)
        if "coefficients" in item:
            batch["gt_coefficients"] = item["coefficients"].to(d)
        return batch

    def _recalibration_batches(self):
        """The first ``bn_recalibration`` triplets, in order, all views, no augmentation: the same on
        every rank and in every run (see precise_bn)."""
        clean = TripletDataset(self.cfg.data, augment=False)
        n = min(self.cfg.bn_recalibration, len(clean))
        size = min(self.cfg.batch, n)
        for start in range(0, n - size + 1, size):       # whole batches only
            yield torch.stack([clean[i]["images"] for i in range(start, start + size)]).to(self.device)

    # --- loop ------------------------------------------------------------------------------
    def train_step(self, item: dict, epoch: int, index: int) -> dict:
        cfg = self.cfg
        lr = lr_at(self.step / max(self.total_steps, 1), cfg.lr, cfg.final_lr)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        images = item["images"].to(self.device)
        b = images.shape[0]
        if cfg.view_dropout:
            rng = np.random.default_rng([cfg.seed, epoch, index, self.rank])
            view_mask = torch.from_numpy(sample_view_masks(b, rng)).to(self.device)
        else:
            view_mask = torch.ones(b, 3, dtype=torch.bool, device=self.device)
        net_in = images * view_mask[:, :, None, None, None].to(images.dtype)   # missing view = zeros
        with torch.autocast(self.device.type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None):
            coeffs, labels_pred = self.net(net_in)
        batch = self._loss_batch(item, labels_pred)
        progress = self.step / max(self.total_steps, 1)
        total, terms = self.loss(coeffs.float(), batch, view_mask, progress)
        keypoints = self.model.last_keypoints
        if keypoints is not None and self.loss.weights.keypoint_2d > 0:
            terms["keypoint_2d"] = keypoint_loss(keypoints.float(), batch["landmarks"],
                                                 view_mask & item["has_landmarks"].to(self.device)[:, None])
            total = total + self.loss.weights.keypoint_2d * terms["keypoint_2d"]
        if not self.amp and not self._all_finite(total):   # on CUDA, mixed precision's scaler skips such steps
            kept = (f"the last checkpoint (epoch {self.epoch}) is kept" if self.ckpt_path.is_file()
                    else "no checkpoint was written")
            raise DfmvrError(f"training diverged at step {self.step}: the loss is {float(total)} "
                             f"({', '.join(f'{k} {float(v):.4g}' for k, v in terms.items())}); {kept} -- lower --lr "
                             "or check the data for non-finite values")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        return {"loss": float(total.detach()), "lr": lr, "grad_norm": float(grad_norm),
                **{k: float(v.detach()) for k, v in terms.items()}}

    def _all_finite(self, loss: torch.Tensor) -> bool:
        """Whether the loss is finite on every rank (agreed, so that all ranks stop together, none left waiting)."""
        finite = torch.isfinite(loss.detach()).to(torch.float32).reshape(1)
        if self.world > 1:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        return bool(finite.item() > 0)

    def run(self) -> dict:
        """Train from ``self.epoch`` to ``cfg.epochs`` (or ``stop_after_epoch``); returns the last
        epoch's record."""
        cfg = self.cfg
        logger = _MetricsLog(self.out, enabled=self.rank == 0, through_step=self.step)
        last = {}
        end = cfg.epochs if cfg.stop_after_epoch is None else min(cfg.epochs, cfg.stop_after_epoch)
        while self.epoch < end:
            epoch = self.epoch
            torch.manual_seed(cfg.seed * 100003 + epoch * 101 + self.rank)   # augmentation stream
            self.model.train()
            bar = None
            if cfg.progress and self.rank == 0:
                from tqdm import tqdm
                bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step")
            sums: dict[str, float] = {}
            start = time.perf_counter()
            for index, item in enumerate(self._loader(epoch)):
                if index >= self.steps_per_epoch:
                    break
                rec = self.train_step(item, epoch, index)
                logger.write({"kind": "step", "epoch": epoch, "step": self.step, **rec})
                for k, v in rec.items():
                    sums[k] = sums.get(k, 0.0) + v
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{rec['loss']:.4f}", lr=f"{rec['lr']:.2e}")
            if bar is not None:
                bar.close()
            self.epoch = epoch + 1
            if cfg.bn_recalibration and self.card.architecture.get(TRAINING_NORM_KEY) is None:
                recalibrate_batch_norm(self.model, self._recalibration_batches())
            seconds = time.perf_counter() - start
            last = {"kind": "epoch", "epoch": epoch, "step": self.step, "seconds": seconds,
                    "seconds_per_step": seconds / max(self.steps_per_epoch, 1),
                    **{f"train_{k}": v / max(self.steps_per_epoch, 1) for k, v in sums.items()}}
            if self.world > 1:
                last["replicas_identical"] = self._replicas_identical()
            if self.rank == 0:
                if cfg.val:
                    last.update(self.validate())
                self.save()
                logger.write(last)
            if self.world > 1:
                dist.barrier()
        logger.close()
        return last

    def close(self) -> None:
        """Leave the process group (if this trainer created one)."""
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()

    def validate(self) -> dict:
        from ..eval import evaluate_dataset
        from ..models.predictor import TorchPredictor

        self.model.eval()
        predictor = _LargestCoefficient(TorchPredictor(self.model, str(self.device)))
        try:
            report = evaluate_dataset(predictor, self.cfg.val, self.face_model, limit=self.cfg.val_limit,
                                      baselines=False)
        finally:
            self.model.train()
        # Eval-mode blow-ups (|coef| 1e5+ on a few inputs, see precise_bn) hide inside a mean mm after
        # the similarity alignment; the largest coefficient shows them (healthy models stay near 1-3).
        return {**{f"val_{k}": v for k, v in report["model"].items()},
                "val_max_abs_coefficient": predictor.largest}

    def save(self) -> Path:
        self.card.provenance = {**self.card.provenance, "epochs_trained": self.epoch, "steps_trained": self.step}
        state = {"optimizer": self.optimizer.state_dict(), "epoch": self.epoch, "step": self.step,
                 "rng": capture_rng_state(), "config": json.dumps(asdict(self.cfg)),
                 "scaler": self.scaler.state_dict() if self.amp else {}}
        return save_checkpoint(self.ckpt_path, self.model, self.card, state)

    def _replicas_identical(self) -> bool:
        """All ranks hold bit-identical trainable parameters (a DDP sanity check, every epoch)."""
        # per-parameter sum and sum of squares: tiny to gather, and any drift changes them
        probe = torch.stack([torch.stack([p.detach().double().sum(), p.detach().double().square().sum()])
                             for p in self.model.parameters() if p.requires_grad]).reshape(-1)
        gathered = [torch.zeros_like(probe) for _ in range(self.world)]
        dist.all_gather(gathered, probe)
        return all(torch.equal(g, gathered[0]) for g in gathered)


class _LargestCoefficient:
    """A predictor wrapper that remembers the largest |coefficient| it returned."""

    def __init__(self, predictor):
        self.predictor, self.card, self.largest = predictor, predictor.card, 0.0

    def __call__(self, images):
        coefficients = self.predictor(images)
        self.largest = max(self.largest, float(np.abs(np.asarray(coefficients)).max()))
        return coefficients


def _drop_records_after(path: Path, step: int) -> None:
    """Rewrite metrics.jsonl without the records of steps after ``step`` and without a line cut off by a kill."""
    if not path.is_file():
        return
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] > step:
            dropped += 1
            continue
        kept.append(line)
    if dropped:
        atomic_write_text(path, "".join(f"{line}\n" for line in kept))


class _MetricsLog:
    """metrics.jsonl (one JSON object per line, appended and flushed) + TensorBoard if installed."""

    def __init__(self, out: Path, enabled: bool, through_step: int | None = None):
        """through_step: the step the run (re)starts from; records of later steps are an interrupted attempt's
        (steps trained after the last checkpoint, which the run now trains again) and are dropped, so that a
        resumed run lists every step once."""
        self.enabled = enabled
        self.file = None
        self.tb = None
        if not enabled:
            return
        out.mkdir(parents=True, exist_ok=True)
        if through_step is not None:
            _drop_records_after(out / METRICS_NAME, through_step)
        self.file = open(out / METRICS_NAME, "a", encoding="utf-8")
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(out / "tensorboard"))
        except Exception:          # tensorboard is optional
            self.tb = None

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in record.items()}
        self.file.write(json.dumps(clean) + "\n")
        self.file.flush()
        if self.tb is not None:
            prefix = record.get("kind", "x")
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("epoch", "step"):
                    self.tb.add_scalar(f"{prefix}/{k}", v, record.get("step", 0))

    def close(self) -> None:
        if self.file:
            self.file.close()
        if self.tb is not None:
            self.tb.close()
