"""Loading what the runtime runs: an ONNX graph or a TensorRT engine, its model card, the face model.

The ``onnx`` package is not part of the base install, so the card is read from the ONNX file's
``metadata_props`` with a minimal protobuf wire-format scan (top-level fields only; the graph is
skipped by seeking, so a 400 MB model costs a few reads). A truncated file is caught here, before
ONNX Runtime sees it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from ..assets import BUNDLED_DIR
from ..card import ONNX_METADATA_KEY, ModelCard, engine_card_path
from ..errors import InputError
from ..face.model import MorphableModel
from ..face.selection import BUNDLED_FACE_MODEL, select_face_model

__all__ = ["Artifact", "DEFAULT_DIR", "DEFAULT_ONNX", "DEFAULT_CHECKPOINT", "DEFAULT_FACE_MODEL", "BUNDLED",
           "names_bundled", "bundled_file", "resolve_onnx", "read_onnx_metadata",
           "load_onnx_artifact", "load_engine_artifact", "load_artifact", "load_face_model",
           "TRT_ENGINE_MAGIC", "engine_card_path"]

DEFAULT_DIR = BUNDLED_DIR                        # the folder's one spelling: dfmvr.assets
DEFAULT_ONNX = DEFAULT_DIR / "model.onnx"
DEFAULT_CHECKPOINT = DEFAULT_DIR / "model.safetensors"     # its torch weights (read by dfmvr.models.checkpoint)
DEFAULT_FACE_MODEL = BUNDLED_FACE_MODEL          # DEFAULT_DIR / "face_model.npz", named in dfmvr.face.selection
# The word every tool accepts in place of a model path (--onnx, --checkpoint, dfmvr-export's MODEL) for the
# bundled model. Its one home: the helpers below; torch-free, so the runtime and the trainer both use them.
BUNDLED = "default"
# Serialized TensorRT engines carry a "magic tag" TensorRT checks on load; we believe it is these bytes
# near the start (not verified here: no TensorRT). Files with it skip the foreign-format sniffing.
TRT_ENGINE_MAGIC = b"ftrt"
# Leading bytes of files people pass by mistake -> what they are.
_FOREIGN_MAGIC = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"PK\x03\x04": "a zip/npz archive",
                  b"BM": "a BMP image", b"RIFF": "a WebP image", b"\x93NUMPY": "a numpy array",
                  b"\x80": "a Python pickle / torch checkpoint", b"\x7fELF": "a shared library"}
_METADATA_FIELD = 14          # ModelProto.metadata_props (repeated StringStringEntryProto)
_GRAPH_FIELD = 7              # ModelProto.graph


@dataclass
class Artifact:
    """A network to run: ``kind`` "onnx" or "engine", the file, and the card that travels with it."""

    kind: str
    path: Path
    card: ModelCard

    @property
    def model_id(self) -> str:
        """A short id for reports: variant, face model and provenance when the card has them."""
        parts = [self.card.variant]
        fm = self.card.face_model.get("name")
        if fm:
            parts.append(fm)
        run = self.card.provenance.get("id") or self.card.provenance.get("checkpoint")
        if run:
            parts.append(str(run))
        return "/".join(parts) + f" ({self.path.name})"


# --- ONNX ------------------------------------------------------------------------------------------
def _varint(f) -> int:
    """One protobuf varint from file ``f``; EOFError at the end, ValueError if malformed."""
    shift, value = 0, 0
    while True:
        b = f.read(1)
        if not b:
            raise EOFError
        value |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return value
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 64 bits")


def _string_pair(blob: bytes) -> tuple[str, str]:
    """Decode a StringStringEntryProto (key = field 1, value = field 2)."""
    f, out = io.BytesIO(blob), {1: b"", 2: b""}
    while f.tell() < len(blob):
        tag = _varint(f)
        if tag & 7 != 2:
            raise ValueError("unexpected wire type in metadata entry")
        n = _varint(f)
        out[tag >> 3] = f.read(n)
    return out[1].decode("utf-8"), out[2].decode("utf-8")


def read_onnx_metadata(path) -> dict[str, str]:
    """ONNX file -> its ``metadata_props`` as a dict. Raises InputError if the file is not a whole ONNX model."""
    path = Path(path)
    if path.is_dir():
        raise InputError(path, "is a folder, not an ONNX model file", "pass the .onnx file inside it (e.g. model.onnx)")
    if not path.is_file():
        raise InputError(path, "ONNX model not found", "export one with 'dfmvr-export' or check the path")
    size = path.stat().st_size
    if size == 0:
        raise InputError(path, "ONNX model file is empty (0 bytes)", "re-export or re-copy the model")
    meta, seen_graph = {}, False
    with path.open("rb") as f:
        try:
            while f.tell() < size:
                tag = _varint(f)
                field_no, wire = tag >> 3, tag & 7
                if field_no == 0:
                    raise InputError(path, "not an ONNX model (malformed protobuf)",
                                     "pass a graph made by 'dfmvr-export', or re-export it")
                if wire == 0:
                    _varint(f)
                elif wire == 1:
                    f.seek(8, 1)
                elif wire == 5:
                    f.seek(4, 1)
                elif wire == 2:
                    n = _varint(f)
                    if f.tell() + n > size:
                        raise InputError(path, f"ONNX model is truncated (a field needs {n} bytes, "
                                         f"{size - f.tell()} remain)", "re-export or re-copy the model")
                    if field_no == _METADATA_FIELD:
                        k, v = _string_pair(f.read(n))
                        meta[k] = v
                    else:
                        seen_graph |= field_no == _GRAPH_FIELD
                        f.seek(n, 1)
                else:
                    raise InputError(path, "not an ONNX model (malformed protobuf)",
                                     "pass a graph made by 'dfmvr-export', or re-export it")
            if f.tell() != size:
                raise EOFError
        except (EOFError, ValueError, UnicodeDecodeError):
            raise InputError(path, "ONNX model is truncated or corrupt", "re-export or re-copy the model") from None
    if not seen_graph:
        raise InputError(path, "not an ONNX model (no graph found)", "pass a .onnx file made by 'dfmvr-export'")
    return meta


def load_onnx_artifact(path) -> Artifact:
    path = Path(path)
    meta = read_onnx_metadata(path)
    if ONNX_METADATA_KEY not in meta:
        raise InputError(path, f"ONNX model has no dfmvr model card (metadata key '{ONNX_METADATA_KEY}')",
                         "export the model with 'dfmvr-export' so that the card travels with it")
    return Artifact("onnx", path, ModelCard.from_json(meta[ONNX_METADATA_KEY], source=path))


# --- TensorRT engine ---------------------------------------------------------------------------------
def _foreign_format(path: Path, head: bytes) -> str | None:
    """What a supposed engine file really is, if we can tell; None when it may be an engine."""
    if TRT_ENGINE_MAGIC in head[:16]:
        return None
    for magic, what in _FOREIGN_MAGIC.items():
        if head.startswith(magic):
            return what
    if len(head) < 64:
        return f"a {len(head)}-byte file, far too small"
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        pass
    try:
        read_onnx_metadata(path)
        return "an ONNX model"
    except InputError:
        return None


def load_engine_artifact(path) -> Artifact:
    """Check an engine file and read ``<engine>.card.json`` beside it (TensorRT is not needed for this)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "TensorRT engine not found", "build one with 'dfmvr-export --engine' or check the path")
    with path.open("rb") as f:
        head = f.read(512)
    if not head:
        raise InputError(path, "TensorRT engine file is empty (0 bytes)", "rebuild the engine")
    foreign = _foreign_format(path, head)
    if foreign:
        raise InputError(path, f"not a serialized TensorRT engine (it looks like {foreign})",
                         "pass an engine built by 'dfmvr-export' (an .onnx file goes with --onnx)")
    card_path = engine_card_path(path)
    if not card_path.is_file():
        raise InputError(card_path, "the engine's model card is missing",
                         "keep the .card.json written by 'dfmvr-export' beside the engine")
    return Artifact("engine", path, ModelCard.from_json(card_path.read_text("utf-8"), source=card_path))


def names_bundled(spec) -> bool:
    """Whether a model argument is the word 'default' (the bundled model) rather than a path."""
    return spec is not None and str(spec) == BUNDLED


def bundled_file(path: Path, fix: str) -> Path:
    """``path``, one of the bundled model's files, or the error saying the bundled model is not installed."""
    if not path.is_file():
        raise InputError(path, "the bundled default model is not installed", fix)
    return path


def resolve_onnx(onnx, fix: str = "pass --onnx model.onnx or --engine model.plan") -> Path:
    """An ``--onnx`` value -> its path: 'default' is the bundled graph (an error naming ``fix`` when it is
    not installed); anything else is returned as a Path, unchecked (its loader says what is wrong)."""
    return bundled_file(DEFAULT_ONNX, fix) if names_bundled(onnx) else Path(onnx)


def load_artifact(onnx=None, engine=None) -> Artifact:
    """``--onnx`` / ``--engine`` / neither or ``--onnx default`` (the bundled default ONNX graph)."""
    if onnx is not None and engine is not None:
        raise InputError(None, "both --onnx and --engine given", "pass one of them")
    if engine is not None:
        return load_engine_artifact(engine)
    return load_onnx_artifact(resolve_onnx(BUNDLED if onnx is None else onnx))


def load_face_model(path, card: ModelCard, source=None) -> "MorphableModel":
    """``--face-model`` (or the bundled default) checked against the card: ``dfmvr.face.selection``'s rule."""
    return select_face_model(path, card=card)[0]
