"""Which face model a command uses: the one rule, for every command (run, eval, export, bench, train).

1. ``--face-model PATH`` when given;
2. else the dataset's ``face_model.npz`` when the command reads a dataset (``data``) that has one
   (``dfmvr data synth`` writes it);
3. else the bundled one, ``dfmvr/assets/default/face_model.npz`` (the synthetic seed-0 model), or, where
   that file is absent, the same model built in memory (``default_face_model()``).

When a network's model card is given, the model must match it: the card's face-model identity (hash,
vertex count: ``ModelCard.check_face_model``) and its coefficient layout (basis sizes). A new training
run passes no card: its card is made from the model chosen here.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..assets import BUNDLED_DIR
from ..errors import InputError
from .model import MorphableModel

__all__ = ["BUNDLED_FACE_MODEL", "DATASET_FACE_MODEL", "DEFAULT_SOURCE", "select_face_model"]

BUNDLED_FACE_MODEL = BUNDLED_DIR / "face_model.npz"
DATASET_FACE_MODEL = "face_model.npz"          # the file name inside a dataset folder
DEFAULT_SOURCE = "default synthetic face model"


def select_face_model(path=None, card=None, data=None) -> tuple[MorphableModel, str]:
    """-> (model, where it came from: its path, or ``DEFAULT_SOURCE`` for rule 3), by the rule above.

    path  the user's ``--face-model`` or None
    card  the network's ``dfmvr.card.ModelCard`` to check against, or None (nothing to check)
    data  a dataset folder whose ``face_model.npz`` is the default, or None
    Raises InputError (exit 2) naming the file when it cannot be read or does not match the card.
    """
    if path is None and data is not None and (Path(data) / DATASET_FACE_MODEL).is_file():
        path = Path(data) / DATASET_FACE_MODEL
    if path is not None:
        model, where = MorphableModel.load(path), str(path)
    elif BUNDLED_FACE_MODEL.is_file():        # the default, stored (a test checks it is that model)
        model, where = MorphableModel.load(BUNDLED_FACE_MODEL), DEFAULT_SOURCE
    else:
        from .synthetic import default_face_model

        model, where = default_face_model(), DEFAULT_SOURCE
    if card is not None:
        card.check_face_model(model, source=where)
        layout = card.layout_obj()
        want = {"identity": layout.identity, "expression": layout.expression, "texture": layout.texture}
        if model.dims != want:
            raise InputError(where, f"face model basis sizes {model.dims} differ from the card's layout "
                             f"{json.dumps(layout.to_dict())}", "pass the face model the network was trained with")
    return model, where
