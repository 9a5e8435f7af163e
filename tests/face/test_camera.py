"""The pinhole camera contract: known projections worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from dfmvr.face.camera import DEEP3D_CAMERA, OFFICIAL_CAMERA, Camera, project


def test_defaults_are_the_papers_camera():
    assert DEEP3D_CAMERA.focal == 1015.0 and DEEP3D_CAMERA.image_size == 224
    assert DEEP3D_CAMERA.distance == 10.0 and OFFICIAL_CAMERA.distance == 1.0
    assert DEEP3D_CAMERA.center == 112.0
    # official fov 12.593637 degrees: 2 atan(112 / 1015)
    assert OFFICIAL_CAMERA.fov_deg == pytest.approx(12.593637, abs=1e-5)


def test_point_on_the_axis_lands_at_the_image_centre():
    for z in (-3.0, 0.0, 0.9):
        np.testing.assert_allclose(project(np.array([0.0, 0.0, z]), DEEP3D_CAMERA), [112.0, 112.0])


def test_offsets_scale_with_focal_over_depth():
    cam = Camera(focal=1015.0, image_size=224, distance=10.0)
    # x = 1 at depth 10: u = 112 + 1015 / 10; x right -> u right
    np.testing.assert_allclose(project(np.array([1.0, 0.0, 0.0]), cam), [112.0 + 101.5, 112.0], rtol=1e-6)
    # y up -> v up (smaller v)
    np.testing.assert_allclose(project(np.array([0.0, 1.0, 0.0]), cam), [112.0, 112.0 - 101.5], rtol=1e-6)
    # z towards the camera halves the depth: (1, -1, 5) at depth 5
    np.testing.assert_allclose(project(np.array([1.0, -1.0, 5.0]), cam), [112.0 + 203.0, 112.0 + 203.0],
                               rtol=1e-6)
    # the official camera (distance 1) with the learned z offset near -9 sees the same picture
    np.testing.assert_allclose(project(np.array([0.3, 0.2, -9.0]), OFFICIAL_CAMERA),
                               project(np.array([0.3, 0.2, 0.0]), DEEP3D_CAMERA), rtol=1e-6)


def test_batched_shapes_and_dtype():
    pts = np.random.default_rng(0).normal(size=(2, 3, 68, 3))
    uv = project(pts, DEEP3D_CAMERA)
    assert uv.shape == (2, 3, 68, 2) and uv.dtype == np.float32
    np.testing.assert_allclose(uv[1, 2, 5], project(pts[1, 2, 5], DEEP3D_CAMERA))


def test_points_on_the_camera_plane_are_not_finite():
    uv = project(np.array([[0.5, 0.0, 10.0]]), DEEP3D_CAMERA)
    assert not np.isfinite(uv[0, 0])


def test_dict_round_trip():
    cam = Camera(focal=800.0, image_size=256, distance=1.0)
    assert Camera.from_dict(cam.to_dict()) == cam
    assert cam.center == 128.0


def test_a_downscaled_camera_sees_every_point_at_its_pixel_divided_by_the_factor():
    """Coarse renders (refinement, training's half-size photo term) rely on u -> u / k, v -> v / k, which
    is what box-averaging a photo by k does to its pixel coordinates."""
    rng = np.random.default_rng(0)
    points = rng.normal(scale=0.8, size=(50, 3)).astype(np.float32)
    full = Camera()
    for factor in (2, 4):
        small = full.downscaled(factor)
        assert small.image_size == full.image_size // factor and small.distance == full.distance
        np.testing.assert_allclose(project(points, small), project(points, full) / factor, rtol=1e-5, atol=1e-4)
    assert full.downscaled(1) == full
    with pytest.raises(ValueError, match="divide"):
        full.downscaled(3)
