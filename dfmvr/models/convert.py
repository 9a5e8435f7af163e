"""Foreign checkpoints -> dfmvr: the official DF-MVR weights and the two public parse-net weights.

- ``convert_official``: ``000000279.pth`` (a plain state dict, optionally ``module.``-prefixed and/or
  wrapped in ``{"state_dict" | "model" | "net": ...}``) -> a ``paper`` DFMVRNet loaded strictly, with
  a card whose camera is ``OFFICIAL_CAMERA`` (distance 1: the official weights learned z near -9).
  The dead weights (``uuunet.conv9``, ``rednet_fc.rednet.pts_net``) are kept, unused, so the
  conversion is lossless and strict; the report counts them.
- ``load_parse_net``: DF-MVR's ``face_mask.pth`` (10 classes) or face-parsing.PyTorch's
  ``79999_iter.pth`` (19 CelebAMask-HQ classes, merged onto our 10, see ``parse_net.CELEBAMASK_TO_PARSE``).
- ``attach_parse_net``: put such a parse net into a DFMVRNet (``paper`` parse widths) and its card.

Every file is read with ``torch.load(weights_only=True)``: no pickled code runs, and nothing is
downloaded. Wrong or partial files raise InputError listing the missing/unexpected keys.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dfmvr.card import ModelCard
from dfmvr.errors import InputError
from dfmvr.face.camera import OFFICIAL_CAMERA
from dfmvr.face.layout import NUM_PARSE_CLASSES

from .dfmvr_net import DFMVRNet
from .parse_net import CELEBAMASK_CLASSES, PAPER_PARSE_ARGS, BiSeNet, celebamask_class_map
from .variants import build_model, make_card

__all__ = ["read_state_dict", "convert_official", "ConversionReport", "load_parse_net",
           "attach_parse_net", "DEAD_PREFIXES"]

WRAPPER_KEYS = ("state_dict", "model", "net")
DEAD_PREFIXES = ("uuunet.conv9.", "rednet_fc.rednet.pts_net.")


def read_state_dict(path) -> dict[str, torch.Tensor]:
    """A foreign .pth -> flat {key: tensor} (unwrapped, ``module.`` stripped). Bad file -> InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "weights file not found", "check the path")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(path, f"cannot be read as a PyTorch weights file with weights_only=True ({exc})",
                         "pass the original .pth state dict (files holding pickled code are refused)") from exc
    for key in WRAPPER_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(path, "does not hold a state dict (a mapping of names to tensors)",
                         "pass the checkpoint file the authors released")
    if all(k.startswith("module.") for k in obj):   # saved from DistributedDataParallel
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def _preview(keys, n: int = 10) -> str:
    keys = sorted(keys)
    more = f", ... (+{len(keys) - n} more)" if len(keys) > n else ""
    return f"{len(keys)}: " + ", ".join(keys[:n]) + more if keys else "none"


def _load_strict(path, module: torch.nn.Module, state: dict[str, torch.Tensor], what: str,
                 assign: bool = False) -> None:
    expected = module.state_dict()
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    if missing or unexpected:
        raise InputError(path, f"is not {what}: missing keys {_preview(missing)}; "
                         f"unexpected keys {_preview(unexpected)}",
                         "pass the matching, complete weights file")
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
             for k, v in expected.items() if tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        raise InputError(path, f"is not {what}: shapes differ for {_preview(wrong)}")
    module.load_state_dict(state, strict=True, assign=assign)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class ConversionReport:
    tensors: int                                          # tensors read (parameters and BN buffers)
    parameters: int                                       # learnable numbers among them
    dead: dict[str, int] = field(default_factory=dict)    # prefix -> parameters kept but never used

    def lines(self) -> list[str]:
        out = [f"loaded {self.tensors} tensors ({self.parameters:,} parameters) strictly into 'paper'"]
        for prefix, n in self.dead.items():
            out.append(f"kept {n:,} dead parameters under '{prefix}*' (present in the official file, "
                       f"never used by the forward pass)")
        return out


def convert_official(path) -> tuple[DFMVRNet, ModelCard, ConversionReport]:
    """Official DF-MVR ``.pth`` -> (paper DFMVRNet in eval mode, card, report)."""
    path = Path(path)
    state = read_state_dict(path)
    card = make_card("paper", camera=OFFICIAL_CAMERA)
    card.provenance = {"source": "official DF-MVR checkpoint (weiguangzhao/DF_MVR)", "file": path.name,
                       "sha256": _sha256(path)}
    # Built on the meta device and then given the file's tensors (assign=True): no 110 M-parameter
    # random initialisation, and a wrong file is refused before any memory is allocated.
    with torch.device("meta"):
        model = build_model(card)
    _load_strict(path, model, state, "an official DF-MVR checkpoint", assign=True)
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):   # a tensor the file did not fill
        raise RuntimeError("official conversion left uninitialised (meta) tensors; this is a dfmvr bug")
    params = dict(model.named_parameters())   # counts exclude BN running statistics
    dead = {p: sum(v.numel() for k, v in params.items() if k.startswith(p)) for p in DEAD_PREFIXES}
    report = ConversionReport(tensors=len(state), parameters=sum(v.numel() for v in params.values()), dead=dead)
    return model.eval(), model.card, report


def load_parse_net(path) -> BiSeNet:
    """``face_mask.pth`` (10 classes) or ``79999_iter.pth`` (19 classes, merged) -> BiSeNet (eval).

    The class count is read from the classifier weight ``conv_out.conv_out.weight``; keys may carry a
    ``mask_model.`` prefix (as inside the official DF-MVR checkpoint).
    """
    state = read_state_dict(path)
    if all(k.startswith("mask_model.") for k in state):
        state = {k[len("mask_model."):]: v for k, v in state.items()}
    head = state.get("conv_out.conv_out.weight")
    if head is None:
        raise InputError(path, "has no BiSeNet classifier 'conv_out.conv_out.weight'",
                         "pass face_mask.pth (DF-MVR) or 79999_iter.pth (face-parsing.PyTorch)")
    classes = int(head.shape[0])
    args = dict(PAPER_PARSE_ARGS)
    if classes == len(CELEBAMASK_CLASSES):
        args.update(num_classes=classes, class_map=celebamask_class_map())
    elif classes != NUM_PARSE_CLASSES:
        raise InputError(path, f"parse net has {classes} classes; dfmvr reads 10 (face_mask.pth) "
                         f"or 19 (79999_iter.pth)")
    net = BiSeNet(**args)
    _load_strict(path, net, state, f"a BiSeNet face parser with {classes} classes")
    net.parse_args = args          # what a model card must record to rebuild this net
    return net.eval()


def attach_parse_net(model: DFMVRNet, path) -> DFMVRNet:
    """Replace ``model``'s parse net by the weights in ``path`` and record it in ``model.card``."""
    net = load_parse_net(path)
    old = model.card.architecture["parse"]
    if list(old["widths"]) != list(net.parse_args["widths"]):
        raise InputError(path, f"parse weights have paper widths, the model's parse net has {old['widths']}",
                         "use the 'paper' variant, or train the variant's own parse net")
    for p in net.parameters():
        p.requires_grad_(False)
    model.mask_model = net.eval()
    model.card.architecture["parse"] = dict(net.parse_args)
    model.card.provenance = {**model.card.provenance, "parse_net": Path(path).name}
    return model
