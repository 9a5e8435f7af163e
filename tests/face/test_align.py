"""Five-point similarity alignment: estimation, inverse, pixel convention of the warped crop."""

from __future__ import annotations

import numpy as np
import pytest

from dfmvr.errors import InputError
from dfmvr.face.align import (
    TEMPLATE_224, Similarity, align_image, estimate_similarity, five_points_from_68, template_for_size,
)

RNG = np.random.default_rng(7)


def coordinate_image(h: int, w: int) -> np.ndarray:
    """float32 [h, w, 2] whose pixel (i, j) holds its own centre (u, v) = (j + 0.5, i + 0.5)."""
    v, u = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    return np.stack([u, v], axis=-1)


def test_five_points_from_68_picks_eye_centres_nose_and_mouth_corners():
    lm = RNG.normal(size=(2, 68, 2)).astype(np.float32)
    five = five_points_from_68(lm)
    assert five.shape == (2, 5, 2) and five.dtype == np.float32
    np.testing.assert_allclose(five[:, 0], (lm[:, 36] + lm[:, 39]) / 2, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(five[:, 1], (lm[:, 42] + lm[:, 45]) / 2, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(five[:, 2], lm[:, 30])
    np.testing.assert_array_equal(five[:, 3], lm[:, 48])
    np.testing.assert_array_equal(five[:, 4], lm[:, 54])
    with pytest.raises(ValueError):
        five_points_from_68(np.zeros((5, 2)))


def test_template_is_a_plausible_frontal_face_in_the_crop():
    t = TEMPLATE_224
    assert t.shape == (5, 2)
    assert ((t > 40) & (t < 184)).all()
    # mirror symmetric about the vertical centre line
    np.testing.assert_allclose(t[0, 0] + t[1, 0], 224.0, atol=1e-4)
    np.testing.assert_allclose(t[3, 0] + t[4, 0], 224.0, atol=1e-4)
    np.testing.assert_allclose(t[2, 0], 112.0, atol=1e-4)
    # eyes above nose above mouth (v grows downwards); eyes wider apart than mouth corners
    assert t[0, 1] < t[2, 1] < t[3, 1]
    assert t[1, 0] - t[0, 0] > t[4, 0] - t[3, 0]
    np.testing.assert_allclose(template_for_size(112), t / 2, rtol=1e-6)
    # Deep3D's crop: 102 px per decimetre about the centre, y up; its published right eye (0.30980,
    # 0.28972) and nose tip (0.00325, -0.04618) land within half a pixel after mirror-averaging
    np.testing.assert_allclose(t[1], [112 + 102 * 0.30980, 112 - 102 * 0.28972], atol=0.5)
    np.testing.assert_allclose(t[2], [112 + 102 * 0.00325, 112 + 102 * 0.04618], atol=0.5)
    with pytest.raises(ValueError):
        TEMPLATE_224[0, 0] = 1.0  # shared constant is read-only


def test_exact_recovery_of_a_known_similarity():
    truth = Similarity.from_params(scale=1.7, angle=0.4, translation=(-30.0, 55.0))
    src = RNG.uniform(0, 500, size=(5, 2))
    est = estimate_similarity(src, truth.apply(src))
    np.testing.assert_allclose(est.matrix, truth.matrix, atol=1e-4)
    assert est.scale == pytest.approx(1.7, rel=1e-6)
    assert est.angle == pytest.approx(0.4, abs=1e-6)


def test_estimate_is_the_least_squares_optimum_and_never_reflects():
    src = RNG.uniform(0, 100, size=(7, 2))
    dst = Similarity.from_params(0.8, -0.3, (5, 9)).apply(src) + RNG.normal(scale=2.0, size=(7, 2))
    est = estimate_similarity(src, dst)

    def cost(sim):
        return float(((sim.apply(src).astype(np.float64) - dst) ** 2).sum())

    best = cost(est)
    for _ in range(50):  # any perturbation of (scale, angle, translation) costs more
        d = RNG.normal(scale=[1e-2, 1e-2, 0.1, 0.1])
        other = Similarity.from_params(est.scale + d[0], est.angle + d[1], est.translation + d[2:])
        assert cost(other) >= best - 1e-6
    # a mirror image of the source cannot be matched by a reflection
    mirrored = src * np.array([-1.0, 1.0])
    sim = estimate_similarity(src, mirrored)
    assert np.linalg.det(sim.matrix[:, :2]) > 0


def test_inverse_and_compose_round_trip():
    sim = Similarity.from_params(2.5, 1.1, (12.0, -7.0))
    pts = RNG.uniform(-50, 50, size=(10, 2))
    np.testing.assert_allclose(sim.inverse().apply(sim.apply(pts)), pts, atol=1e-4)
    np.testing.assert_allclose(sim.compose(sim.inverse()).matrix, np.eye(2, 3), atol=1e-12)
    assert sim.inverse().scale == pytest.approx(1 / 2.5)
    other = Similarity.from_params(0.5, -0.2, (3.0, 4.0))
    np.testing.assert_allclose(other.compose(sim).apply(pts), other.apply(sim.apply(pts)), atol=1e-3)


def test_degenerate_or_non_finite_points_raise_input_error_naming_the_file():
    pts = np.ones((5, 2))
    with pytest.raises(InputError, match="faces/a.txt.*coincide"):
        estimate_similarity(pts, TEMPLATE_224, source="faces/a.txt")
    pts = TEMPLATE_224.copy()
    pts[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        estimate_similarity(pts, TEMPLATE_224)


def test_warped_crop_samples_the_photo_at_the_inverse_mapped_pixel_centres():
    """Bilinear sampling of a linear image is exact: crop pixel centre p' holds S^-1(p')."""
    photo = coordinate_image(480, 480)
    # photo points whose image under the template alignment keeps the crop inside the photo
    photo_points = Similarity.from_params(1.5, -0.25, (60.0, 80.0)).apply(TEMPLATE_224)
    crop, sim = align_image(photo, photo_points)
    assert crop.shape == (224, 224, 2) and crop.dtype == np.float32
    np.testing.assert_allclose(sim.apply(photo_points), TEMPLATE_224, atol=1e-3)
    assert sim.scale == pytest.approx(1 / 1.5, rel=1e-5)
    centres = coordinate_image(224, 224).reshape(-1, 2)
    expected = sim.inverse().apply(centres).reshape(224, 224, 2)
    inside = ((expected > 0.5) & (expected < 479.5)).all(axis=-1)
    assert inside.mean() > 0.99
    # cv2 quantises sample positions to 1/32 pixel, hence the tolerance
    np.testing.assert_allclose(crop[inside], expected[inside], atol=2e-2)
    # a half-pixel slip (cv2's integer-centred convention used naively) would be caught
    assert np.abs(crop[inside] - expected[inside]).max() < 0.1


def test_pure_translation_by_whole_pixels_copies_pixels_without_blur():
    photo = RNG.integers(0, 255, size=(300, 300, 3), dtype=np.uint8)
    shift = np.array([37.0, 21.0])
    points = TEMPLATE_224 + shift.astype(np.float32)   # photo = crop shifted by (37, 21)
    crop, sim = align_image(photo, points)
    assert crop.dtype == np.uint8
    np.testing.assert_array_equal(crop, photo[21:21 + 224, 37:37 + 224])
    np.testing.assert_allclose(sim.translation, -shift, atol=1e-4)


def test_border_modes_and_single_channel_images():
    photo = np.full((100, 100, 1), 200, np.uint8)
    far = TEMPLATE_224 * 0.3 + 70          # face near the bottom-right edge: crop runs off the photo
    crop_rep, _ = align_image(photo, far, border="replicate")
    crop_con, _ = align_image(photo, far, border="constant")
    assert crop_rep.shape == (224, 224, 1)
    assert (crop_rep == 200).all()
    assert (crop_con == 0).any() and (crop_con == 200).any()
    with pytest.raises(ValueError):
        align_image(photo, far, border="wrap")
    gray, _ = align_image(photo[..., 0], far, size=112)
    assert gray.shape == (112, 112)
