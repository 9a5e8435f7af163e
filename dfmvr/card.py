"""The model card: a small JSON record that travels with every artefact (checkpoint, ONNX, engine).

The runtime reads the card from the artefact and never falls back to defaults in its own code. The
graph I/O names below are the contract between ``dfmvr.export`` and ``dfmvr.runtime``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .errors import InputError
from .face.camera import Camera
from .face.layout import COEFFS, PARSE_CLASSES, VIEWS, CoefficientLayout
from .face.model import MorphableModel, identity_matches

__all__ = ["ModelCard", "CARD_FORMAT", "CARD_VERSION", "GRAPH_INPUT", "GRAPH_OUTPUTS", "GRAPH_KEYPOINTS",
           "ONNX_METADATA_KEY", "INPUT_MEAN", "INPUT_STD", "IMAGE_SIZE", "engine_card_path"]

CARD_FORMAT = "dfmvr-model-card"
CARD_VERSION = 1
# Exported graph I/O. Input: "images" float32 [B, V=3, 3, 224, 224], RGB normalised with the card's
# mean/std, views in VIEWS order, a missing view all zeros. Outputs: "coefficients" float32 [B, 269]
# in COEFFS layout; "labels" uint8 [B, V, 224, 224] parse classes. Optional third output, present
# when the network predicts landmarks (``DFMVRNet.predicts_keypoints``, the bundled demo does):
# "keypoints" float32 [B, V, K=68, 2], each view's landmarks in crop pixels (x right, y down), what
# ``dfmvr-run --refine`` fits when no detector ran (docs/refine.md).
GRAPH_INPUT = "images"
GRAPH_OUTPUTS = ("coefficients", "labels")
GRAPH_KEYPOINTS = "keypoints"
ONNX_METADATA_KEY = "dfmvr.model_card"
# The network's input normalisation and crop size, the one home of these numbers: a new card's
# defaults, and what training feeds the network. x_normalised = (rgb01 - INPUT_MEAN) / INPUT_STD,
# which maps [0, 1] to [-1, 1]. Artefacts carry their own values in their card.
INPUT_MEAN = 0.5
INPUT_STD = 0.5
IMAGE_SIZE = 224


def engine_card_path(engine) -> Path:
    """Where an engine's card travels: ``model.plan`` -> ``model.plan.card.json`` beside it."""
    engine = Path(engine)
    return engine.with_name(engine.name + ".card.json")


@dataclass
class ModelCard:
    variant: str                                   # registry name: "paper", "tiny", ...
    architecture: dict[str, Any]                   # widths/depths the variant was built with
    camera: dict[str, Any] = field(default_factory=lambda: Camera().to_dict())
    layout: dict[str, int] = field(default_factory=COEFFS.to_dict)
    views: list[str] = field(default_factory=lambda: list(VIEWS))
    input_mean: float = INPUT_MEAN                 # x_normalised = (rgb01 - mean) / std  -> [-1, 1]
    input_std: float = INPUT_STD
    image_size: int = IMAGE_SIZE
    parse_classes: list[str] = field(default_factory=lambda: list(PARSE_CLASSES))
    face_model: dict[str, Any] = field(default_factory=dict)   # MorphableModel.identity()
    loss_weights: dict[str, float] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    dfmvr_version: str = __version__
    format: str = CARD_FORMAT
    version: int = CARD_VERSION

    # --- derived ---------------------------------------------------------------------------
    def camera_obj(self) -> Camera:
        return Camera.from_dict(self.camera)

    def layout_obj(self) -> CoefficientLayout:
        return CoefficientLayout(**self.layout)

    def normalise(self, images: np.ndarray) -> np.ndarray:
        """uint8 RGB crops [B, V, S, S, 3] -> the graph input [B, V, 3, S, S] float32,
        (v / 255 - input_mean) / input_std. Transposed while still 1 byte per value, then converted and
        scaled in place: 2-3.7x faster than a 256-entry lookup
        (benchmarks/results/bench_stage_proposals.json)."""
        images = np.asarray(images)
        size = int(self.image_size)
        if images.dtype != np.uint8 or images.ndim != 5 or images.shape[2:] != (size, size, 3):
            # float crops in [0, 1] or already [B, V, 3, S, S] went through without a word, into nonsense
            raise ValueError(f"expected uint8 RGB crops [B, V, {size}, {size}, 3], got {images.dtype} "
                             f"{list(images.shape)}")
        x = np.ascontiguousarray(images.transpose(0, 1, 4, 2, 3)).astype(np.float32)
        x *= np.float32(1.0 / (255.0 * self.input_std))
        x -= np.float32(self.input_mean / self.input_std)
        return x

    # --- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source=None) -> "ModelCard":
        if not isinstance(d, dict) or d.get("format") != CARD_FORMAT:
            raise InputError(source, "no dfmvr model card found (or it is of another format)",
                             "export the model with 'dfmvr-export' so that the card travels with it")
        if d.get("version") != CARD_VERSION:
            raise InputError(source, f"model card version {d.get('version')} is not supported "
                             f"(this dfmvr reads version {CARD_VERSION})", "re-export with this dfmvr")
        known = set(cls.__dataclass_fields__)
        try:
            return cls(**{k: v for k, v in d.items() if k in known})
        except TypeError as exc:
            raise InputError(source, f"model card is incomplete ({exc})") from exc

    @classmethod
    def from_json(cls, text: str, source=None) -> "ModelCard":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(source, f"model card is not valid JSON ({exc})",
                             "dfmvr writes the card: restore the file, or re-save / re-export the model") from exc
        return cls.from_dict(d, source)

    def check_face_model(self, face_model: MorphableModel, source=None) -> None:
        """Refuse a face model that differs from the one the network was trained with.

        A card without a face-model hash (e.g. converted official weights, trained on the user's own
        BFM) accepts any model with the right vertex count. Hashes stamped before the current scheme
        still match equal content (``dfmvr.face.model.identity_matches``).
        """
        want = self.face_model
        if not want:
            return
        if not identity_matches(want, face_model):
            raise InputError(source, f"face model '{face_model.name}' (hash {face_model.content_hash()}) does "
                             f"not match the model card's '{want.get('name')}' (hash {want.get('hash')}, scheme "
                             f"{want.get('hash_scheme', 1)})",
                             "pass the face model the network was trained with (--face-model)")
        if want.get("num_vertices") and want["num_vertices"] != face_model.num_vertices:
            raise InputError(source, f"face model has {face_model.num_vertices} vertices, "
                             f"the model card expects {want['num_vertices']}")
