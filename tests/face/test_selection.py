"""The one rule that picks a command's face model (dfmvr.face.selection), and that every command uses it."""

from __future__ import annotations

import pytest

from dfmvr.card import ModelCard
from dfmvr.errors import InputError
from dfmvr.face.selection import BUNDLED_FACE_MODEL, DEFAULT_SOURCE, select_face_model
from dfmvr.face.synthetic import default_face_model, synthetic_face_model

from tests.conftest import REPO


@pytest.fixture(scope="module")
def small():
    return synthetic_face_model(seed=5, num_vertices=400)


def _card(model) -> ModelCard:
    return ModelCard(variant="t", architecture={}, face_model=model.identity())


def test_the_bundled_face_model_is_the_default_synthetic_one():
    """Rule 3 reads the bundled file where it exists and builds the model where it does not: the same model."""
    assert BUNDLED_FACE_MODEL.is_file()
    model, where = select_face_model()
    assert where == DEFAULT_SOURCE
    assert model.content_hash() == default_face_model().content_hash()


def test_path_then_dataset_then_default(tmp_path, small):
    given = small.save(tmp_path / "given.npz")
    data = tmp_path / "data"
    data.mkdir()
    other = synthetic_face_model(seed=6, num_vertices=400)
    other.save(data / "face_model.npz")
    assert select_face_model(given, data=data)[0].content_hash() == small.content_hash()
    model, where = select_face_model(None, data=data)
    assert model.content_hash() == other.content_hash() and where == str(data / "face_model.npz")
    assert select_face_model(None, data=tmp_path)[1] == DEFAULT_SOURCE        # no face_model.npz there


def test_the_card_is_checked_whichever_rule_chose(tmp_path, small):
    card = _card(small)
    assert select_face_model(small.save(tmp_path / "fm.npz"), card=card)[0].content_hash() == small.content_hash()
    with pytest.raises(InputError) as err:
        select_face_model(None, card=card)                                   # the default does not match
    assert DEFAULT_SOURCE in str(err.value) and "--face-model" in str(err.value)
    data = tmp_path / "data"
    data.mkdir()
    synthetic_face_model(seed=6, num_vertices=400).save(data / "face_model.npz")
    with pytest.raises(InputError) as err:
        select_face_model(None, card=card, data=data)
    assert "face_model.npz" in str(err.value)


def test_basis_sizes_must_fit_the_cards_layout(tmp_path, small):
    card = ModelCard(variant="t", architecture={})                         # no hash: any model of the right sizes
    card.layout = {**card.layout, "identity": card.layout["identity"] - 1}
    with pytest.raises(InputError) as err:
        select_face_model(small.save(tmp_path / "fm.npz"), card=card)
    assert "basis sizes" in str(err.value)


def test_every_command_goes_through_the_one_rule(monkeypatch, small):
    """runtime (run, bench), export and eval all call select_face_model; the trainer's call site does too."""
    import inspect

    import dfmvr.cli.eval as cli_eval
    import dfmvr.export.pipeline as export_pipeline
    import dfmvr.runtime.artifacts as artifacts

    calls = []

    def fake(path=None, card=None, data=None):
        calls.append((path, data))
        return small, "fake"

    for module in (artifacts, export_pipeline, cli_eval):
        monkeypatch.setattr(module, "select_face_model", fake)
    card = _card(small)
    assert artifacts.load_face_model("x.npz", card) is small
    assert export_pipeline._face_model("y.npz", card) is small
    assert calls == [("x.npz", None), ("y.npz", None)]
    assert "select_face_model(face_model, card=predictor.card, data=data)" in inspect.getsource(cli_eval.command.callback)
    trainer = REPO / "dfmvr" / "train" / "trainer.py"       # read, not imported: it needs torch
    assert "select_face_model(config.face_model, data=config.data)" in trainer.read_text()
