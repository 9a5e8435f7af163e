"""scripts/weak_identity_gradient.py: the weak loss's identity descent direction against the wanted change."""

from __future__ import annotations

import numpy as np
import pytest

from dfmvr.face.layout import COEFFS
from dfmvr.face.synthetic import default_face_model
from tests.conftest import load_script


def _script():
    return load_script("weak_identity_gradient")


def test_the_pose_substitutions_split_every_views_pose_into_rotation_xy_and_depth():
    subs = _script().SUBSTITUTIONS
    parts = np.concatenate([subs["true_rotation"], subs["true_xy"], subs["true_depth"]])
    assert sorted(parts) == list(range(COEFFS.shared, COEFFS.size))           # disjoint and complete
    assert len(subs["true_depth"]) == COEFFS.views
    blocks = COEFFS.split(np.arange(COEFFS.size)[None].astype(float))
    assert sorted(subs["true_depth"]) == sorted(blocks.translation[0, :, 2].astype(int))
    assert len(subs["prediction"]) == 0
    assert set(subs["true_pose_expression"]) >= set(subs["true_pose"])


@pytest.mark.slow      # renders and differentiates the weak loss 24 times (~3 s)
def test_at_the_mean_identity_the_loss_points_to_the_truth_and_a_depth_error_is_undone_by_true_depth(synth4, one_torch_thread):
    """A real synthetic triplet, exact inputs: from the truth with identity zeroed the weak loss's descent
    direction points towards the true identity (positive cosine, in all and for the landmark and
    photometric terms). With a depth error added the prediction's cosine changes, and putting the true
    depth back gives the error-free value again."""
    from dfmvr.eval.dataset import find_eval_folders, load_eval_sample
    from dfmvr.face.model import MorphableModel
    from dfmvr.models.variants import make_card
    from dfmvr.train.refine import Refiner

    script = _script()
    face_model = MorphableModel.load(synth4 / "face_model.npz")
    refiner = Refiner(face_model, make_card("lite", face_model=face_model.identity()).camera_obj())
    sample = load_eval_sample(find_eval_folders(synth4)[0], face_model, 224)
    truth = sample.true_coefficients
    batch = refiner.make_batch(sample.images[None], sample.landmarks[None], sample.landmark_visible[None], sample.labels[None])
    id0 = truth.copy()
    id0[COEFFS.shared_slices()["identity"]] = 0.0
    clean = script.identity_descent_cosines(refiner.loss, face_model, id0, truth, batch)
    assert clean["prediction"]["all"] > 0.2
    assert clean["prediction"]["landmark_2d"] > 0 and clean["prediction"]["photo"] > 0
    far = id0.copy()
    far[script.SUBSTITUTIONS["true_depth"]] -= 0.3                     # every head 3 cm farther
    shifted = script.identity_descent_cosines(refiner.loss, face_model, far, truth, batch)
    assert abs(shifted["prediction"]["all"] - clean["prediction"]["all"]) > 0.05
    assert shifted["true_depth"]["all"] == pytest.approx(clean["prediction"]["all"], abs=1e-6)
    assert shifted["true_rotation"]["all"] == pytest.approx(shifted["prediction"]["all"], abs=1e-6)


def test_identity_r2_is_dfmvr_evals():
    """Both numbers are shape_r2's (what dfmvr eval reports): the plain identity R² and the size-free one."""
    from dfmvr.face.metrics import shape_r2

    script, fm = _script(), default_face_model()
    rng = np.random.default_rng(3)
    truth = rng.normal(size=(40, COEFFS.size)).astype(np.float32)
    noisy = truth + rng.normal(scale=0.7, size=truth.shape).astype(np.float32)
    want = shape_r2(fm, COEFFS.split(noisy), COEFFS.split(truth))
    got = script.identity_r2(fm, noisy, truth)
    assert got["identity"] == pytest.approx(want["identity"], abs=1e-9)
    assert got["identity_scale_free"] == pytest.approx(want["identity_size_free"], abs=1e-9)
    assert got["identity_scale_free"] != got["identity"]


def test_identity_at_mean_size_costs_a_right_size_and_forgives_a_wrong_one():
    """The plain R² with the predictions' size set to the mean face's: below 1 for the exact truth (its
    size is lost), and above the plain R² for a prediction whose only error is a 5 % size error."""
    from dfmvr.face.geometry import face_shape

    script, fm = _script(), default_face_model()
    truth = np.random.default_rng(4).normal(size=(40, COEFFS.size)).astype(np.float32)
    exact = script.identity_r2(fm, truth, truth)
    assert exact["identity"] == pytest.approx(1.0) and 0.3 < exact["identity_at_mean_size"] < 0.95
    ident = COEFFS.shared_slices()["identity"]
    shapes = face_shape(fm, truth[:, ident], np.zeros((len(truth), COEFFS.expression), np.float32)).astype(np.float64)
    centre = fm.mean_shape.mean(axis=0)
    scaled = (shapes - centre) * 1.05 + centre - fm.mean_shape
    basis = fm.id_basis.reshape(-1, fm.id_basis.shape[-1]).astype(np.float64)
    coef, *_ = np.linalg.lstsq(basis, scaled.reshape(len(truth), -1).T, rcond=None)
    sized = truth.copy()
    sized[:, ident] = coef.T
    wrong = script.identity_r2(fm, sized, truth)
    assert wrong["identity_at_mean_size"] > wrong["identity"]
    assert wrong["identity_at_mean_size"] == pytest.approx(exact["identity_at_mean_size"], abs=0.02)
