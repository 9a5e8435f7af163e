"""The registry of DF-MVR model variants. Each variant is a short function returning its architecture.

- ``paper``: the official DF-MVR architecture and widths (BiSeNet-18, MulEn-Unet 64..1024,
  RedNet-50 with the dead ``pts_net``); official weights load into it strictly.
- ``tiny``: the same topology with widths and depths cut (RedNet-26, MulEn-Unet 8..128, a quarter
  width BiSeNet) so that one triplet runs in well under a second on a 2-core CPU and a model trains
  in minutes: for tests, demos and the bundled default.
- ``lite``: the same parse net as ``tiny``; DF-MVR's structure (three view encoders, attention-gated
  fusion, an involution regressor, the official heads) at 112 px with a spatial readout, designed to
  learn identity on a CPU (``lite.py`` says why).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from dfmvr.card import ModelCard
from dfmvr.face.camera import DEEP3D_CAMERA, Camera

from .dfmvr_net import DFMVRNet
from .sample_norm import INFERENCE_NORM_KEY, SAMPLE_STATISTICS, TRAINING_NORM_KEY, use_sample_statistics
from .parse_net import PAPER_PARSE_ARGS
from .rednet import PAPER_REDNET_ARGS
from .unet import PAPER_UNET_ARGS

__all__ = ["VARIANTS", "build_model", "make_card", "variant_architecture"]


def _paper() -> dict[str, Any]:
    return {"parse": dict(PAPER_PARSE_ARGS), "unet": dict(PAPER_UNET_ARGS), "rednet": dict(PAPER_REDNET_ARGS)}


def _tiny() -> dict[str, Any]:
    return {
        "parse": {"num_classes": 10, "widths": [16, 32, 64, 128], "context_channels": 32,
                  "fuse_channels": 64, "aux_mid_channels": 16, "class_map": None},
        "unet": {"in_channels": 4, "widths": [8, 16, 32, 64, 128], "out_channels": 8},
        # stem 32 -> involution on 16 channels = one group of 16; stage widths 64..512.
        "rednet": {"depth": 26, "in_channels": 32, "stem_channels": 32, "base_channels": 16,
                   "group_channels": 16, "pts_net": False, "pts_outputs": 318},
    }


def _lite() -> dict[str, Any]:
    tiny = _tiny()
    return {"design": "lite", "parse": tiny["parse"],
            "unet": {"num_classes": tiny["parse"]["num_classes"], "width": 32},
            "rednet": {"channels": 128, "readout_channels": 8, "group_channels": 16}}


VARIANTS: dict[str, Callable[[], dict[str, Any]]] = {"paper": _paper, "tiny": _tiny, "lite": _lite}


def variant_architecture(name: str) -> dict[str, Any]:
    if name not in VARIANTS:
        raise KeyError(f"unknown model variant '{name}'; known: {sorted(VARIANTS)}")
    return VARIANTS[name]()


def make_card(name: str, camera: Camera = DEEP3D_CAMERA, **card_fields) -> ModelCard:
    """A fresh model card for variant ``name`` (architecture args recorded in full)."""
    return ModelCard(variant=name, architecture=variant_architecture(name), camera=camera.to_dict(),
                     **card_fields)


def build_model(name_or_card: str | ModelCard) -> DFMVRNet:
    """A randomly initialised DFMVRNet for a variant name or for a card (e.g. read from a checkpoint)."""
    card = make_card(name_or_card) if isinstance(name_or_card, str) else copy.deepcopy(name_or_card)
    model = DFMVRNet(card)
    training, inference = card.architecture.get(TRAINING_NORM_KEY), card.architecture.get(INFERENCE_NORM_KEY)
    for key, value in ((TRAINING_NORM_KEY, training), (INFERENCE_NORM_KEY, inference)):
        if value is not None and value not in SAMPLE_STATISTICS:
            raise ValueError(f"model card architecture['{key}'] = '{value}' is not one of "
                             f"{sorted(SAMPLE_STATISTICS)}; the card was written by a newer or broken dfmvr")
    if training is not None:
        use_sample_statistics(model, skip=model.mask_model, in_training=True, statistics=training)
    elif inference is not None:
        use_sample_statistics(model, skip=model.mask_model, statistics=inference)
    return model
