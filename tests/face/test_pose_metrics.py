"""Head-pose metrics: the geodesic rotation error and the slot-prior baseline (dfmvr.face.metrics)."""

from __future__ import annotations

import numpy as np
import pytest

from dfmvr.face.geometry import euler_from_matrix, rotation_matrix
from dfmvr.face.layout import COEFFS
from dfmvr.face.metrics import pose_errors, rotation_error_deg, slot_prior


def _axis_angle(axis, degrees) -> np.ndarray:
    axis = np.asarray(axis, np.float64) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = np.radians(degrees)
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


@pytest.mark.parametrize("axis", [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, -2, 0.5)])
def test_rotation_error_is_the_angle_of_the_relative_rotation_about_any_axis(axis):
    base = np.array([0.2, -0.7, 0.1])
    moved = euler_from_matrix(_axis_angle(axis, 3.0) @ rotation_matrix(base).astype(np.float64))
    assert rotation_error_deg(moved, base) == pytest.approx(3.0, abs=2e-3)      # float32 matrices
    assert rotation_error_deg(base, moved) == pytest.approx(3.0, abs=2e-3)
    assert rotation_error_deg(base, base) < 0.05


def _truth(n: int, yaw_sd_deg: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    truth = COEFFS.zeros(n)
    truth.rotation[:, :, 1] = np.radians([-50.0, 0.0, 50.0])[None] + np.radians(yaw_sd_deg) * rng.standard_normal((n, 3))
    truth.translation[:, :, 2] = 0.1 * rng.standard_normal((n, 3))
    return truth


def test_slot_prior_is_each_slots_mean_pose():
    exact = _truth(6, 0.0)
    exact.translation[:] = 0.25
    prior = slot_prior(exact)
    assert pose_errors(prior, exact)["rotation_deg"]["median"] < 0.05
    assert pose_errors(prior, exact)["translation_mm"]["median"] < 1e-3
    spread = _truth(400, 6.0)
    prior = slot_prior(spread)
    np.testing.assert_allclose(np.degrees(prior.rotation[0, :, 1]), [-50, 0, 50], atol=1.0)
    errors = pose_errors(prior, spread)["rotation_deg"]
    # |N(0, 6 deg)| has median 0.674 * 6 = 4.05 deg
    assert errors["median"] == pytest.approx(4.05, abs=0.5)
    assert set(errors["per_view_median"]) == {"left", "front", "right"}


def test_translation_error_is_in_millimetres():
    truth = _truth(3, 0.0)
    moved = COEFFS.split(COEFFS.join(truth))
    moved.translation[:, :, 0] += 0.02                      # 0.02 dm = 2 mm
    assert pose_errors(moved, truth)["translation_mm"]["median"] == pytest.approx(2.0, rel=1e-4)


def _scaling_face_model():
    """A small synthetic model whose first identity component scales the whole face: identity
    coefficient a makes it (1 + a) times the mean face's size, exactly."""
    from dfmvr.face.synthetic import synthetic_face_model
    model = synthetic_face_model(0, num_vertices=400)
    model.id_basis[:, :, 0] = model.mean_shape
    return model


def _posed_truth(rng, n=12):
    from dfmvr.face.camera import Camera
    truth = COEFFS.zeros(n)
    truth.translation[...] = np.concatenate([rng.normal(0, 0.05, (n, 3, 2)), rng.normal(0, 0.5, (n, 3, 1))], -1)
    return truth, Camera()


def test_a_size_error_is_told_apart_from_a_depth_error():
    from dfmvr.face.metrics import translation_breakdown
    rng = np.random.default_rng(0)
    model = _scaling_face_model()
    truth, camera = _posed_truth(rng)
    distance = camera.distance
    s = rng.normal(0, 0.03, truth.batch)                     # each face predicted (1 + s) times too big ...
    big = COEFFS.split(COEFFS.join(truth).copy())
    big.identity[:, 0] = s
    big.translation[..., 2] = distance - (distance - truth.translation[..., 2]) * (1 + s)[:, None]   # ... and as far
    out = translation_breakdown(model, big, truth, camera)
    assert out["per_axis_median_mm"]["x"] == 0 and out["per_axis_median_mm"]["y"] == 0
    assert out["per_axis_median_mm"]["z"] > 10                       # ~3 % of ~1 m
    assert out["depth_size_corrected_median_mm"] < 1e-3
    assert out["size_error_vs_relative_depth_error_corr"] == pytest.approx(1.0, abs=1e-6)
    assert out["face_size_error_std"] == pytest.approx(s.std(), rel=1e-3)

    near = COEFFS.split(COEFFS.join(truth).copy())                   # the right size, 20 mm nearer: a depth error
    near.translation[..., 2] += 0.2
    out = translation_breakdown(model, near, truth, camera)
    assert out["per_axis_median_mm"]["z"] == pytest.approx(20.0, rel=1e-4)
    assert out["depth_size_corrected_median_mm"] == pytest.approx(20.0, rel=1e-4)
    assert out["depth_mean_error_mm"] == pytest.approx(-20.0, rel=1e-4)
    assert out["size_error_vs_relative_depth_error_corr"] is None     # no size error to correlate
