"""scripts/readout_depth_probe.py: its kernel-form ridge is the ridge, its whitening is vertex space."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import load_script

torch = pytest.importorskip("torch")


def test_kernel_form_ridge_equals_the_primal_ridge_of_the_heads_refit():
    from dfmvr.train.head_refit import ridge_fit

    rng = np.random.default_rng(0)
    fit = rng.normal(size=(30, 50)) * rng.uniform(0.5, 3, size=50)      # more features than rows
    targets = fit[:, :4] @ rng.normal(size=(4, 3)) + rng.normal(size=(30, 3)) * 0.1
    rows = rng.normal(size=(7, 50))
    predict = load_script("readout_depth_probe").kernel_ridge_path(fit, targets, strengths=(3.0,))
    weight, bias = ridge_fit(fit, targets, 3.0)
    np.testing.assert_allclose(predict(3.0, rows), rows @ weight.T + bias, rtol=1e-8, atol=1e-8)


def test_whitened_coefficients_measure_squared_vertex_error(synth4):
    from dfmvr.face.layout import COEFFS
    from dfmvr.face.metrics import face_shape
    from dfmvr.face.model import MorphableModel

    face_model = MorphableModel.load(synth4 / "face_model.npz")
    l_id, l_exp = load_script("readout_depth_probe").vertex_whitening(face_model)
    rng = np.random.default_rng(1)
    ident = rng.normal(size=(3, COEFFS.identity)).astype(np.float32)
    expr = rng.normal(size=(3, COEFFS.expression)).astype(np.float32)
    only_id = face_shape(face_model, ident, 0 * expr).astype(np.float64) - face_model.mean_shape
    np.testing.assert_allclose((only_id.reshape(3, -1) ** 2).sum(1), ((ident @ l_id) ** 2).sum(1), rtol=1e-4)
    only_exp = face_shape(face_model, 0 * ident, expr).astype(np.float64) - face_model.mean_shape
    np.testing.assert_allclose((only_exp.reshape(3, -1) ** 2).sum(1), ((expr @ l_exp) ** 2).sum(1), rtol=1e-4)


def test_the_probe_runs_end_to_end(synth4, lite_checkpoint, tmp_path, monkeypatch):
    import json
    import sys

    out = tmp_path / "probe.json"
    monkeypatch.setattr(sys, "argv", ["readout_depth_probe", "--checkpoint", str(lite_checkpoint), "--train", str(synth4),
                                      "--val", str(synth4), "--triplets", "4", "--mlp-epochs", "1", "--json", str(out)])
    load_script("readout_depth_probe").main()
    report = json.loads(out.read_text())
    assert report["rows"] == {"fit": 2, "choose_strength": 1, "score_unseen": 1, "val": 4}
    assert set(report["ridge"]) == {"fused", "block", "block_pooled", "readout"}
    assert report["ridge"]["readout"]["features"] == 8 * 14 * 14 and report["ridge"]["block"]["features"] == 128 * 14 * 14
    assert np.isfinite(report["ridge"]["readout"]["val"]["identity"]) and np.isfinite(report["mlp_on_readout"]["val"]["identity"])


def test_a_nearly_dead_feature_cannot_blow_up_an_unseen_row():
    rng = np.random.default_rng(2)
    fit = rng.normal(size=(40, 6))
    fit[:, 5] = 0.0
    fit[0, 5] = 1e-5                                    # fires once, barely, in the fit rows
    targets = fit[:, :2] @ rng.normal(size=(2, 2))
    predict = load_script("readout_depth_probe").kernel_ridge_path(fit, targets, strengths=(1.0,))
    row = rng.normal(size=(1, 6))
    quiet, firing = row.copy(), row.copy()
    quiet[0, 5], firing[0, 5] = 0.0, 3.0                 # the unseen row where it fires for real
    assert np.abs(predict(1.0, firing) - predict(1.0, quiet)).max() < 1.0
