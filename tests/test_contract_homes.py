"""Contracts with one home: normalisation and crop size (dfmvr.card), the engine card's path."""

from __future__ import annotations

import pytest

from dfmvr import card


def test_a_new_card_and_the_training_data_use_the_one_normalisation():
    fresh = card.ModelCard(variant="t", architecture={})
    assert (fresh.input_mean, fresh.input_std, fresh.image_size) == (card.INPUT_MEAN, card.INPUT_STD,
                                                                     card.IMAGE_SIZE)
    pytest.importorskip("torch")
    from dfmvr.export import pipeline
    from dfmvr.train import data

    assert (data.INPUT_MEAN, data.INPUT_STD, data.IMAGE_SIZE) == (card.INPUT_MEAN, card.INPUT_STD, card.IMAGE_SIZE)
    assert data.INPUT_MEAN is card.INPUT_MEAN and data.IMAGE_SIZE is card.IMAGE_SIZE     # imported, not copied
    assert pipeline.GRAPH_IMAGE_SIZE == card.IMAGE_SIZE


def test_the_engine_card_path_has_one_definition(tmp_path):
    from dfmvr.runtime import artifacts

    assert artifacts.engine_card_path is card.engine_card_path
    assert card.engine_card_path(tmp_path / "model.plan") == tmp_path / "model.plan.card.json"
    pytest.importorskip("onnx")
    from dfmvr.export import tensorrt_build

    # the export side imports the one definition and keeps no alias of its own
    assert tensorrt_build.engine_card_path is card.engine_card_path
    assert not hasattr(tensorrt_build, "card_path_for")


def test_the_word_default_for_the_bundled_model_has_one_home():
    """'default' (the bundled model, accepted by --onnx, --checkpoint and dfmvr-export) is resolved by
    runtime.artifacts alone: no other module compares a model argument with the word, and the checkpoint
    side imports the bundled weights' path rather than spelling it again."""
    import re
    from pathlib import Path

    from dfmvr.runtime import artifacts

    root = Path(artifacts.__file__).resolve().parents[1]
    compares_the_word = re.compile(r"""[=!]=\s*["']default["']""")
    assert [str(p.relative_to(root)) for p in root.rglob("*.py") if compares_the_word.search(p.read_text("utf-8"))] == []
    pytest.importorskip("torch")
    from dfmvr.models import checkpoint

    assert checkpoint.DEFAULT_CHECKPOINT is artifacts.DEFAULT_CHECKPOINT


def test_the_bundled_models_folder_is_spelled_once():
    """dfmvr.assets names the bundled model's folder; the face-model selection and the runtime import it
    (face/ must not import runtime/, so neither can be the other's home) and no module spells it again."""
    import re
    from pathlib import Path

    from dfmvr import assets
    from dfmvr.face import selection
    from dfmvr.runtime import artifacts

    assert artifacts.DEFAULT_DIR is assets.BUNDLED_DIR
    assert selection.BUNDLED_FACE_MODEL.parent == assets.BUNDLED_DIR == Path(assets.__file__).parent / "default"
    assert {artifacts.DEFAULT_ONNX.parent, artifacts.DEFAULT_CHECKPOINT.parent, artifacts.DEFAULT_FACE_MODEL.parent} \
        == {assets.BUNDLED_DIR}
    root = Path(assets.__file__).resolve().parents[1]
    spells_the_folder = re.compile(r"""["']assets["']""")
    assert [str(p.relative_to(root)) for p in root.rglob("*.py") if spells_the_folder.search(p.read_text("utf-8"))] == []
