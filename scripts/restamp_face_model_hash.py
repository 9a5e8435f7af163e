"""Re-stamp artefacts written before face-model hash scheme 2 with the scheme-2 hash.

Scheme 1 hashed raw array bytes, so the sign of zeros that BLAS computed leaked into the hash and the
same synthetic model hashed differently on different CPUs (see ``dfmvr/face/model.py``). Old
artefacts still load (legacy hashes are recognised), but re-stamping makes them say what every machine
computes. Each artefact is rewritten atomically, weights and graph untouched; only the face-model
identity changes, and only where the stored identity matches ``--face-model``.

    python scripts/restamp_face_model_hash.py --face-model dfmvr/assets/default/face_model.npz \
        dfmvr/assets/default/model.safetensors dfmvr/assets/default/model.onnx \
        dfmvr/assets/default/eval.json examples/triplet/meta.json

Handles: face model .npz (re-saved), dfmvr checkpoints (.safetensors header), ONNX graphs
(``metadata_props``), and JSON files with a top-level ``face_model`` identity (dataset meta.json,
eval reports).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dfmvr.atomic import atomic_path, atomic_write_text
from dfmvr.face.model import MorphableModel, identity_matches


def _restamped(identity: dict, model: MorphableModel, where: Path) -> dict:
    if not identity_matches(identity, model):
        raise SystemExit(f"{where}: its face model ({identity.get('hash')}) is not {model.name}; left as it is")
    return {**identity, **model.identity(), "name": identity.get("name", model.name)}


def _restamp_checkpoint(path: Path, model: MorphableModel) -> None:
    from safetensors import safe_open
    from safetensors.numpy import save_file

    from dfmvr.card import ModelCard

    with safe_open(str(path), framework="np") as handle:
        meta = dict(handle.metadata())
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    card = ModelCard.from_json(meta["model_card"], source=path)
    card.face_model = _restamped(card.face_model, model, path)
    meta["model_card"] = card.to_json()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def _restamp_onnx(path: Path, model: MorphableModel) -> None:
    import onnx

    from dfmvr.card import ONNX_METADATA_KEY, ModelCard

    graph = onnx.load(str(path))
    for prop in graph.metadata_props:
        if prop.key == ONNX_METADATA_KEY:
            card = ModelCard.from_json(prop.value, source=path)
            card.face_model = _restamped(card.face_model, model, path)
            prop.value = card.to_json()
    with atomic_path(path) as tmp:
        onnx.save(graph, str(tmp))


def _restamp_json(path: Path, model: MorphableModel) -> None:
    text = path.read_text("utf-8")
    doc = json.loads(text)
    doc["face_model"] = _restamped(doc["face_model"], model, path)
    atomic_write_text(path, json.dumps(doc, indent=2) + ("\n" if text.endswith("\n") else ""))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--face-model", type=Path, required=True, help="the face model .npz the artefacts name")
    parser.add_argument("artefacts", type=Path, nargs="+")
    args = parser.parse_args(argv)
    model = MorphableModel.load(args.face_model)
    model.save(args.face_model)
    print(f"{args.face_model}: {model.content_hash()} (scheme 2)")
    handlers = {".safetensors": _restamp_checkpoint, ".onnx": _restamp_onnx, ".json": _restamp_json}
    for path in args.artefacts:
        handler = handlers.get(path.suffix)
        if handler is None:
            print(f"{path}: unknown kind of artefact", file=sys.stderr)
            return 2
        handler(path, model)
        print(f"{path}: re-stamped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
