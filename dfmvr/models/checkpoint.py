"""dfmvr's checkpoint format: safetensors weights + model card, and an optional training-state sidecar.

``model.safetensors``
    Every tensor of ``model.state_dict()`` (parameters and BN buffers), and in the safetensors
    header metadata: ``format`` = "dfmvr-checkpoint", ``version``, ``model_card`` (the card's JSON)
    and ``checkpoint_id`` (random hex, shared with the sidecar). Loading parses JSON and raw tensors
    only: nothing pickled is ever executed.
``model.train.pt`` (only when a training state is saved)
    ``{"checkpoint_id", "train_state", "weights", "model_card"}`` written with ``torch.save`` and
    read with ``torch.load(weights_only=True)``, which admits only tensors, numbers, strings, None and
    dict/list/tuple containers: optimizer state dicts qualify as they are; RNG states go through
    ``capture_rng_state`` (numpy's state as a tensor) so that they qualify too. ``weights`` and
    ``model_card`` are the state's own copy of what it was saved with (sidecars written before
    2026-12-08 lack them).

Both files are written atomically (temporary file, then rename), the weights first; the shared
``checkpoint_id`` lets loading detect a sidecar that belongs to other weights. A hard kill (SIGKILL,
power) between the two renames leaves the new weights beside the previous state: ``load_for_resume``
then continues from the state's own copy of its weights, the last save that is whole.
The name ``default`` resolves to the bundled model ``dfmvr/assets/default/model.safetensors``.
"""

from __future__ import annotations

import contextlib
import random
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dfmvr.atomic import atomic_path, interrupts_held
from dfmvr.card import ModelCard
from dfmvr.errors import InputError, require
from dfmvr.runtime.artifacts import DEFAULT_CHECKPOINT, bundled_file, names_bundled

__all__ = ["save_checkpoint", "load_checkpoint", "load_for_resume", "read_card", "resolve_checkpoint", "sidecar_path",
           "capture_rng_state", "restore_rng_state", "DEFAULT_CHECKPOINT", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "dfmvr-checkpoint"
CHECKPOINT_VERSION = "1"
HALF_STORAGE = "float16"     # metadata ``storage_dtype`` of a checkpoint saved with half_storage=True


def _safetensors():
    return require("safetensors.torch", "train", "reading and writing dfmvr checkpoints")


def resolve_checkpoint(path) -> Path:
    """``"default"`` -> the bundled model; anything else -> Path. Missing file -> InputError."""
    if names_bundled(path):
        return bundled_file(DEFAULT_CHECKPOINT, "pass a checkpoint path (train one with 'dfmvr train' or convert "
                                                "the official weights with 'dfmvr convert official')")
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "checkpoint file not found", "check the path")
    return p


def sidecar_path(path) -> Path:
    """The training-state sidecar beside weights ``path``: ``x.safetensors`` -> ``x.train.pt``."""
    p = Path(path)
    return p.with_name(p.stem + ".train.pt")


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states in a form ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():  # pragma: no cover - no GPU here
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of ``capture_rng_state``."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():  # pragma: no cover - no GPU here
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path, model: torch.nn.Module, card: ModelCard, train_state: dict | None = None,
                    half_storage: bool = False) -> Path:
    """Write ``model``'s weights and ``card`` to ``path`` (.safetensors), plus the sidecar if asked.

    train_state: e.g. ``{"optimizer": opt.state_dict(), "epoch": 3, "rng": capture_rng_state()}``;
    anything ``torch.load(weights_only=True)`` reads back. Returns ``path``.
    half_storage: store float32 tensors as float16 (half the size, for shipping: the bundled model);
    loading turns them back into float32, so the model computes in float32 with fp16-rounded weights.
    """
    st = _safetensors()
    path = Path(path)
    checkpoint_id = secrets.token_hex(8)
    metadata = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                "model_card": card.to_json(), "checkpoint_id": checkpoint_id}
    if train_state is not None and path.is_file():
        # the save this one supersedes: a resume falls back to the state's own weights only when the
        # weights file is that state's successor (a kill between the renames), not another model put here
        metadata["previous_checkpoint_id"] = _read_header(path)[0].get("checkpoint_id", "")
    # safetensors needs contiguous CPU tensors (views of a GPU model would not serialise).
    full = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    tensors = full
    if half_storage:
        metadata["storage_dtype"] = HALF_STORAGE
        tensors = {k: _to_half(k, v) for k, v in tensors.items()}
    # both files or neither: interrupts wait for the two renames (weights first, then the state); a
    # hard kill between them cannot be held off, so the state carries its own copy of its weights
    with interrupts_held(), contextlib.ExitStack() as renames:
        if train_state is not None:
            side = renames.enter_context(atomic_path(sidecar_path(path)))
            torch.save({"checkpoint_id": checkpoint_id, "train_state": train_state, "weights": full,
                        "model_card": card.to_json()}, side)
        tmp = renames.enter_context(atomic_path(path))
        st.save_file(tensors, str(tmp), metadata=metadata)
    return path


def _to_half(name: str, tensor: torch.Tensor) -> torch.Tensor:
    if tensor.dtype != torch.float32:
        return tensor
    half = tensor.half()
    if not torch.isfinite(half).all():
        raise ValueError(f"weight {name} does not fit float16 (|max| {tensor.abs().max().item():.3g}); "
                         "save it without half_storage")
    return half


def _read_header(path: Path) -> tuple[dict[str, str], Any]:
    st = _safetensors()
    try:
        handle = st.safe_open(str(path), framework="pt")
    except Exception as exc:  # safetensors raises its own error type for corrupt/truncated files
        raise InputError(path, f"not a readable safetensors checkpoint ({exc})",
                         "pass a checkpoint written by dfmvr (official .pth weights: run "
                         "'dfmvr convert official')") from exc
    meta = handle.metadata() or {}
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise InputError(path, "safetensors file has no dfmvr checkpoint metadata",
                         "pass a checkpoint written by dfmvr (save_checkpoint / dfmvr convert)")
    if meta.get("version") != CHECKPOINT_VERSION:
        raise InputError(path, f"checkpoint format version {meta.get('version')} is not supported "
                         f"(this dfmvr reads {CHECKPOINT_VERSION})")
    return meta, handle


def read_card(path) -> ModelCard:
    """Only the model card of a checkpoint (reads the header, not the tensors)."""
    path = resolve_checkpoint(path)
    meta, _ = _read_header(path)
    return ModelCard.from_json(meta.get("model_card", ""), source=path)


def load_checkpoint(path, load_train_state: bool = True):
    """-> (model DFMVRNet in eval mode, card ModelCard, train_state dict or None).

    Raises InputError for a missing, corrupt, truncated or foreign file, or weights that do not fit
    the architecture the card describes.
    """
    path = resolve_checkpoint(path)
    meta, card, tensors = _read_weights(path)
    model = _build(card, tensors, path)
    train_state = _load_sidecar(path, meta["checkpoint_id"]) if load_train_state else None
    return model, card, train_state


def load_for_resume(path):
    """-> (model, card, train_state or None, note or None): what ``--resume`` continues from.

    Normally ``load_checkpoint``'s three. When the weights are newer than the training state beside them
    (a hard kill between the checkpoint's two renames: the weights record the state's id as the save they
    superseded), the state's own copy of its weights and card, the last save that is whole, and a note saying
    so. A state beside weights that are not its successor (another model copied here) or without that copy
    (written before 2026-12-08) is refused as before.
    """
    path = resolve_checkpoint(path)
    meta, _ = _read_header(path)
    blob = _read_sidecar(path)
    if blob is None or blob.get("checkpoint_id") == meta["checkpoint_id"]:
        _, card, tensors = _read_weights(path)
        return _build(card, tensors, path), card, None if blob is None else blob["train_state"], None
    side = sidecar_path(path)
    if "weights" not in blob or meta.get("previous_checkpoint_id") != blob.get("checkpoint_id"):
        raise _other_weights(side)      # another model put here (or a state from before 2026-12-08)
    card = ModelCard.from_json(blob.get("model_card", ""), source=side)
    state = blob["train_state"]
    note = (f"{path.name} is newer than its training state (the run was stopped between the checkpoint's two "
            f"renames); resuming from the state's own copy of its weights (epoch {state.get('epoch', '?')})")
    return _build(card, blob["weights"], side), card, state, note


def _read_weights(path: Path) -> tuple[dict[str, str], ModelCard, dict[str, torch.Tensor]]:
    """-> (header metadata, card, float tensors) of a checkpoint file."""
    meta, handle = _read_header(path)
    card = ModelCard.from_json(meta.get("model_card", ""), source=path)
    try:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        if meta.get("storage_dtype") == HALF_STORAGE:     # shipped in float16, computed in float32
            tensors = {k: v.float() if v.dtype == torch.float16 else v for k, v in tensors.items()}
    except Exception as exc:
        raise InputError(path, f"checkpoint is truncated or corrupt ({exc})", "re-save or re-download it") from exc
    return meta, card, tensors


def _build(card: ModelCard, tensors: dict, path: Path):
    """The model ``card`` describes holding ``tensors`` (read from ``path``), in eval mode."""
    from .variants import build_model

    broken = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:      # else an export fails its parity gate and a run writes no mesh, neither naming this file
        raise InputError(path, f"{len(broken)} weight tensor(s) hold NaN or infinite values (first: {broken[0]}): "
                         "a diverged or damaged checkpoint", "use an earlier checkpoint of the run, or retrain "
                         "with a lower learning rate")
    try:
        # Built on the meta device, then handed the file's tensors (assign=True): a paper model
        # skips its 110 M-parameter random initialisation.
        with torch.device("meta"):
            model = build_model(card)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(path, f"model card describes an architecture this dfmvr cannot build ({exc})") from exc
    missing, unexpected = _key_diff(model.state_dict(), tensors)
    if missing or unexpected:
        raise InputError(path, f"weights do not match the card's '{card.variant}' architecture: "
                         f"missing {_preview(missing)}, unexpected {_preview(unexpected)}")
    try:
        model.load_state_dict(tensors, strict=True, assign=True)
        if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
            # Non-persistent buffers (e.g. a parse-class merge matrix) are not in the file: build
            # the model for real and copy the weights in.
            model = build_model(card)
            model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:   # shape mismatches
        raise InputError(path, f"weights do not match the card's architecture ({exc})") from exc
    return model.eval()


def _read_sidecar(path: Path) -> dict | None:
    side = sidecar_path(path)
    if not side.is_file():
        return None
    try:
        blob = torch.load(side, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(side, f"training state is corrupt or contains non-tensor objects ({exc})",
                         "delete it to load the weights alone") from exc
    if not isinstance(blob, dict) or "train_state" not in blob:
        raise InputError(side, "is not a dfmvr training state", "delete it to load the weights alone")
    return blob


def _load_sidecar(path: Path, checkpoint_id: str):
    blob = _read_sidecar(path)
    if blob is None:
        return None
    if blob.get("checkpoint_id") != checkpoint_id:
        raise _other_weights(sidecar_path(path))
    return blob["train_state"]


def _other_weights(side: Path) -> InputError:
    return InputError(side, "training state belongs to other weights (checkpoint ids differ)",
                      "delete it, or restore the matching .safetensors file")


def _key_diff(expected: dict, found: dict) -> tuple[list[str], list[str]]:
    return sorted(set(expected) - set(found)), sorted(set(found) - set(expected))


def _preview(keys: list[str], n: int = 8) -> str:
    if not keys:
        return "none"
    more = f" ... (+{len(keys) - n} more)" if len(keys) > n else ""
    return f"{len(keys)} [" + ", ".join(keys[:n]) + more + "]"

