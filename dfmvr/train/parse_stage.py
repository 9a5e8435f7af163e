"""The parse-net stage: train the BiSeNet face parser on label maps, and choose the frozen parser.

Training data (``--stage parse --data DIR``):
- synthetic / triplet folders (``TripletDataset``): every view is one training image with its
  ``labels`` [224, 224];
- CelebAMask-HQ's layout: ``DIR/CelebA-HQ-img/<id>.jpg`` and
  ``DIR/CelebAMask-HQ-mask-anno/<id // 2000>/<id:05d>_<class>.png`` (one binary mask per class),
  merged onto our 10 classes with ``parse_net.CELEBAMASK_TO_PARSE`` (hair, ears, neck, cloth, hat ->
  background; eyeglasses -> skin) and resized to 224.

Weights file (``parse_net.safetensors``): the BiSeNet state dict with metadata ``format`` =
"dfmvr-parse-net" and ``parse_args`` (the constructor arguments, JSON). ``--parse-net WEIGHTS`` for
the main stage accepts that file, DF-MVR's ``face_mask.pth`` or face-parsing.PyTorch's
``79999_iter.pth`` (the latter two through ``convert.load_parse_net``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, RandomSampler

from ..atomic import atomic_path, interrupts_held
from ..errors import InputError, require
from ..face.layout import PARSE_CLASSES
from ..models.parse_net import CELEBAMASK_CLASSES, CELEBAMASK_TO_PARSE, BiSeNet
from ..models.variants import variant_architecture

__all__ = ["PARSE_FORMAT", "ParseConfig", "CelebAMaskHQ", "TripletViews", "save_parse_weights",
           "load_parse_weights", "attach_parse_weights", "train_parse_net", "parse_dataset", "class_weights"]

PARSE_FORMAT = "dfmvr-parse-net"
WEIGHTS_NAME = "parse_net.safetensors"


@dataclass
class ParseConfig:
    data: str
    out: str
    variant: str = "tiny"
    epochs: int = 10
    batch: int = 8
    lr: float = 1e-3
    resume: bool = False
    seed: int = 0
    workers: int = 0
    max_steps_per_epoch: int | None = None
    progress: bool = True
    class_balanced: bool = False          # weigh the cross entropy by class_weights(): small parts count more
    detail_channels: int = 0              # > 0: classify at 1/4 of the input (models.parse_net.DetailHead)


class CelebAMaskHQ(Dataset):
    """CelebAMask-HQ as (image [3, S, S] in [-1, 1], labels [S, S] int64 in our 10 classes)."""

    def __init__(self, root, size: int = 224):
        self.root = Path(root)
        self.size = size
        img_dir = self.root / "CelebA-HQ-img"
        self.ids = sorted(int(p.stem) for p in img_dir.glob("*.jpg") if p.stem.isdigit())
        if not self.ids:
            raise InputError(img_dir, "no CelebA-HQ images (<id>.jpg) found",
                             "pass the CelebAMask-HQ folder holding CelebA-HQ-img/ and CelebAMask-HQ-mask-anno/")
        ours = {name: PARSE_CLASSES.index(CELEBAMASK_TO_PARSE[name]) for name in CELEBAMASK_CLASSES}
        self.class_to_ours = ours

    def __len__(self) -> int:
        return len(self.ids)

    def labels(self, i: int) -> np.ndarray:
        """Our 10-class label map [S, S] uint8; later CelebAMask classes paint over earlier ones."""
        k = self.ids[i]
        folder = self.root / "CelebAMask-HQ-mask-anno" / str(k // 2000)
        out = np.zeros((self.size, self.size), np.uint8)
        for name in CELEBAMASK_CLASSES[1:]:
            path = folder / f"{k:05d}_{name}.png"
            if not path.is_file():
                continue
            m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if m is None:
                raise InputError(path, "cannot decode the mask", "replace the file")
            m = cv2.resize(m, (self.size, self.size), interpolation=cv2.INTER_NEAREST) > 127
            out[m] = self.class_to_ours[name]
        return out

    def __getitem__(self, i: int):
        path = self.root / "CelebA-HQ-img" / f"{self.ids[i]}.jpg"
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise InputError(path, "cannot decode the image", "replace the file")
        img = cv2.resize(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), (self.size, self.size), interpolation=cv2.INTER_AREA)
        x = torch.from_numpy(img).permute(2, 0, 1).float() / 127.5 - 1.0
        return x, torch.from_numpy(self.labels(i).astype(np.int64))


class TripletViews(Dataset):
    """Every view of every triplet folder as (image [3, H, W] in [-1, 1], labels [H, W] int64)."""

    def __init__(self, root, augment: bool = True):
        from .data import TripletDataset

        self.triplets = TripletDataset(root, augment=augment)
        first = self.triplets[0]
        if not bool(first["has_labels"]):
            raise InputError(self.triplets.folders[0], "triplet has no label maps (gt.npz or labels.npz)",
                             "the parse stage needs labelled data: synthetic folders or CelebAMask-HQ")

    def __len__(self) -> int:
        return 3 * len(self.triplets)

    def __getitem__(self, i: int):
        item = self.triplets[i // 3]
        return item["images"][i % 3], item["labels"][i % 3]


def parse_dataset(root, augment: bool = True) -> Dataset:
    root = Path(root)
    if (root / "CelebA-HQ-img").is_dir():
        return CelebAMaskHQ(root)
    return TripletViews(root, augment=augment)


def save_parse_weights(path, net: BiSeNet, parse_args: dict, provenance: dict | None = None) -> Path:
    st = require("safetensors.torch", "train", "saving parse-net weights")
    meta = {"format": PARSE_FORMAT, "parse_args": json.dumps(parse_args),
            "provenance": json.dumps(provenance or {})}
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    with atomic_path(path) as tmp:
        st.save_file(tensors, str(tmp), metadata=meta)
    return Path(path)


def load_parse_weights(path) -> tuple[BiSeNet, dict]:
    """Our ``.safetensors`` parse weights, or a foreign ``.pth`` -> (BiSeNet in eval mode, its args)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "parse-net weights not found", "train them with 'dfmvr-train --stage parse'")
    if path.suffix != ".safetensors":
        from ..models.convert import load_parse_net
        net = load_parse_net(path)
        return net, dict(net.parse_args)
    st = require("safetensors", "train", "reading parse-net weights")
    try:
        with st.safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise InputError(path, f"not a readable safetensors file ({exc})", "re-run the parse stage") from exc
    if meta.get("format") != PARSE_FORMAT:
        raise InputError(path, "not dfmvr parse-net weights (no 'dfmvr-parse-net' metadata)",
                         "pass the parse_net.safetensors written by 'dfmvr-train --stage parse'")
    args = json.loads(meta["parse_args"])
    net = BiSeNet(**args)
    try:
        net.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise InputError(path, f"weights do not fit their recorded architecture ({exc})") from exc
    return net.eval(), args


def attach_parse_weights(model, path):
    """Make the parser in ``path`` the frozen parse net of ``model`` (a DFMVRNet); record it in the card."""
    net, args = load_parse_weights(path)
    for p in net.parameters():
        p.requires_grad_(False)
    model.mask_model = net.eval()
    model.card.architecture["parse"] = dict(args)
    model.card.provenance = {**model.card.provenance, "parse_net": Path(path).name}
    return model


def class_weights(data: Dataset, images: int = 600) -> torch.Tensor:
    """Per-class loss weights 1/sqrt(pixel frequency), scaled so the mean weight per pixel is 1.

    Why: the landmarks sit on the small parts (eyes, brows, lips: under 1 % of the pixels each), which
    plain cross entropy leaves the least trained (held-out IoU 0.39-0.66 against 0.94 for skin). The
    square root tempers median-frequency balancing, whose 100x weights on the lips would trade the
    skin/background boundary (the jaw line) for them. Counted on the first ``images`` images
    (deterministic, so --resume recomputes the same weights); a class never seen counts as one pixel."""
    counts = torch.ones(len(PARSE_CLASSES), dtype=torch.float64)
    for i in range(min(images, len(data))):
        counts += torch.bincount(data[i][1].reshape(-1), minlength=len(PARSE_CLASSES)).double()
    freq = counts / counts.sum()
    w = freq.rsqrt()
    return (w / (freq * w).sum()).float()


def _parse_loss(out, labels: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """BiSeNet's deep supervision: cross entropy on the main and both auxiliary outputs."""
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return sum(F.cross_entropy(o, labels, weight=weight) for o in outs)


def _refuse_a_second_loss(weights_path: Path, class_balanced: bool) -> None:
    """--resume must keep the loss the file was trained with: its provenance records one set of class
    weights for every epoch, so a silent switch would leave it describing a loss some epochs never saw."""
    st = require("safetensors", "train", "resuming the parse stage")
    with st.safe_open(str(weights_path), framework="pt") as f:
        recorded = json.loads((f.metadata() or {}).get("provenance") or "{}")
    was_balanced = recorded.get("class_weights") is not None
    if was_balanced != class_balanced:
        flag = "--class-balanced"
        raise InputError(weights_path, f"was trained {'with' if was_balanced else 'without'} {flag}; resuming "
                         f"{'without' if was_balanced else 'with'} it would mix two losses in one file",
                         f"{'add' if was_balanced else 'drop'} {flag} to resume, or train into a new --out")


def train_parse_net(cfg: ParseConfig) -> Path:
    """Train the variant's parser on ``cfg.data``; writes OUT/parse_net.safetensors (+ .train.pt for
    --resume) and appends to OUT/metrics.jsonl. Returns the weights path."""
    out = Path(cfg.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(out, f"cannot create the output folder ({exc.strerror or exc})", "choose another --out") from exc
    weights_path, state_path = out / WEIGHTS_NAME, out / "parse_net.train.pt"
    torch.manual_seed(cfg.seed)
    data = parse_dataset(cfg.data)
    args = dict(variant_architecture(cfg.variant)["parse"])
    if cfg.detail_channels:
        args["detail_channels"] = cfg.detail_channels
    net = BiSeNet(**args).train()
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    epoch, lr_per_epoch = 0, []
    if weights_path.is_file() and not cfg.resume:     # a trained parser is never overwritten by a new run
        raise InputError(weights_path, "a parse run's weights are already here",
                         "continue that run with --resume, or pass another --out")
    if cfg.resume and weights_path.is_file() and not state_path.is_file():   # it restarted at epoch 0, overwriting
        raise InputError(state_path, "no training state beside the parse net's weights",
                         "cannot resume exactly; start a new run (--out elsewhere)")
    if cfg.resume and weights_path.is_file() and state_path.is_file():
        loaded, args = load_parse_weights(weights_path)       # first: a corrupt file gets its clear error
        if {k: v for k, v in args.items() if k != "detail_channels"} != {
                k: v for k, v in variant_architecture(cfg.variant)["parse"].items() if k != "detail_channels"}:
            raise InputError(weights_path, f"is another parser than --variant {cfg.variant}'s",
                             "resume with the run's --variant, or train into a new --out")
        _refuse_a_second_loss(weights_path, cfg.class_balanced)
        if args.get("detail_channels", 0) != cfg.detail_channels:
            raise InputError(weights_path, f"has detail_channels {args.get('detail_channels', 0)}; "
                             f"--parse-detail {cfg.detail_channels} asks for another architecture",
                             "resume with the same --parse-detail, or train into a new --out")
        net.load_state_dict(loaded.state_dict())
        net.train()
        try:
            state = torch.load(state_path, map_location="cpu", weights_only=True)
        except Exception as exc:   # torch raises OSError, RuntimeError, UnpicklingError... for a damaged file
            raise InputError(state_path, f"training state is truncated or corrupt ({type(exc).__name__})",
                             "restore it, or start a new run (--out elsewhere)") from exc
        if "net" in state:      # the state's own copy of its weights: the file may be a save newer (a hard kill between the renames)
            net.load_state_dict(state["net"])
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        opt.load_state_dict(state["optimizer"])
        epoch = int(state["epoch"])
        # states written before the list existed ran every epoch at their optimizer's one lr
        saved_lr = state["optimizer"]["param_groups"][0]["lr"]
        lr_per_epoch = [float(v) for v in state.get("lr_per_epoch", [saved_lr] * epoch)]
    for group in opt.param_groups:      # --resume --lr X continues at X (a step decay: 8 epochs, then 2 at 1e-4)
        group["lr"] = cfg.lr
    weight = class_weights(parse_dataset(cfg.data, augment=False)) if cfg.class_balanced else None
    per_epoch = len(data) // cfg.batch
    if per_epoch == 0:
        raise InputError(cfg.data, f"{len(data)} images are fewer than one batch of {cfg.batch}", "lower --batch")
    steps = min(per_epoch, cfg.max_steps_per_epoch or per_epoch)
    log = open(out / "metrics.jsonl", "a", encoding="utf-8")
    try:
        while epoch < cfg.epochs:
            torch.manual_seed(cfg.seed * 100003 + epoch)
            loader = DataLoader(data, batch_size=cfg.batch, drop_last=True, num_workers=cfg.workers,
                                sampler=RandomSampler(data, generator=torch.Generator().manual_seed(cfg.seed + epoch)))
            start, total = time.perf_counter(), 0.0
            it = loader
            if cfg.progress:
                from tqdm import tqdm
                it = tqdm(loader, total=steps, desc=f"parse epoch {epoch + 1}/{cfg.epochs}", unit="step")
            for i, (x, y) in enumerate(it):
                if i >= steps:
                    break
                loss = _parse_loss(net(x), y, weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                value = float(loss.detach())
                total += value
                log.write(json.dumps({"kind": "parse_step", "epoch": epoch, "loss": value}) + "\n")
            epoch += 1
            lr_per_epoch.append(cfg.lr)
            prov = {"trainer": "dfmvr-train --stage parse", "data": str(cfg.data), "images": len(data),
                    "epochs": epoch, "batch": cfg.batch, "lr": cfg.lr, "lr_per_epoch": lr_per_epoch, "variant": cfg.variant,
                    "class_weights": None if weight is None else dict(zip(PARSE_CLASSES, weight.round(decimals=4).tolist()))}
            # both or neither (interrupts wait): weights without their state cannot be resumed; a hard kill
            # between the renames cannot be held off, so the state keeps its own copy of the weights
            with interrupts_held():
                save_parse_weights(weights_path, net, args, prov)
                with atomic_path(state_path) as tmp:
                    torch.save({"optimizer": opt.state_dict(), "epoch": epoch, "lr_per_epoch": lr_per_epoch,
                                "net": {k: v.detach().cpu() for k, v in net.state_dict().items()}}, tmp)
            log.write(json.dumps({"kind": "parse_epoch", "epoch": epoch - 1, "loss": total / steps,
                                  "seconds": time.perf_counter() - start}) + "\n")
            log.flush()
    finally:
        log.close()
    return weights_path
