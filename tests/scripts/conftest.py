"""Fixtures shared by the probe scripts' tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def random_lite_checkpoint(synth4, tmp_path):
    """A freshly initialised ``lite`` network (seed 0) for synth4's face model, saved as a checkpoint:
    what a probe script reads, without training one."""
    torch = pytest.importorskip("torch")
    from dfmvr.face.model import MorphableModel
    from dfmvr.models.checkpoint import save_checkpoint
    from dfmvr.models.variants import build_model, make_card

    torch.manual_seed(0)
    model = build_model(make_card("lite", face_model=MorphableModel.load(synth4 / "face_model.npz").identity()))
    return save_checkpoint(tmp_path / "lite.safetensors", model.eval(), model.card)
