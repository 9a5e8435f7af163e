"""scripts/identity_observability.py: its ridge read-out recovers a linear signal and finds none in noise."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from dfmvr.face.layout import COEFFS
from dfmvr.face.synthetic import default_face_model
from tests.conftest import REPO


def _script():
    spec = importlib.util.spec_from_file_location("identity_observability", REPO / "scripts" / "identity_observability.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _truth(rng, sizes=(300, 40, 60)) -> dict:
    return {k: rng.normal(size=(n, COEFFS.size)).astype(np.float32) for k, n in zip(("train", "select", "val"), sizes)}


def test_ridge_recovers_identity_and_expression_that_are_linear_in_the_features():
    script, rng = _script(), np.random.default_rng(0)
    truth = _truth(rng)
    mixing = rng.normal(size=(COEFFS.size, 3 * COEFFS.size))
    # features: an invertible linear image of the coefficients (more features than coefficients), plus a little noise
    features = {k: v.astype(np.float64) @ mixing + 0.01 * rng.normal(size=(len(v), mixing.shape[1])) for k, v in truth.items()}
    got = script.ridge_scores(default_face_model(), features, truth)
    assert got["identity"] > 0.9 and got["expression"] > 0.9, got
    assert got["ridge_strength"] in script.RIDGE_STRENGTHS


def test_ridge_finds_nothing_in_features_unrelated_to_the_face():
    script, rng = _script(), np.random.default_rng(1)
    truth = _truth(rng)
    features = {k: rng.normal(size=(len(v), 50)) for k, v in truth.items()}
    got = script.ridge_scores(default_face_model(), features, truth)
    assert got["identity"] < 0.05 and got["expression"] < 0.05, got
    assert got["identity"] == pytest.approx(0.0, abs=0.2)        # near the mean face, not far worse
