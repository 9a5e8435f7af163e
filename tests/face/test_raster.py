"""The vectorised coverage behind the painter: exact against brute force, close to OpenCV's fill."""

from __future__ import annotations

import numpy as np
import pytest

from dfmvr.face import raster
from dfmvr.face.camera import Camera, project
from dfmvr.face.raster import covered_pixels_reference, nearest_triangle_image, nearest_triangle_image_opencv
from dfmvr.face.synthetic import synthetic_face_model


@pytest.mark.parametrize("lattice", [False, True])
def test_matches_brute_force_pixel_for_pixel(lattice):
    # Random triangles partly outside small images, in both windings; on the lattice, vertices sit on
    # pixel centres and corners, so edges pass exactly through centres and some triangles are flat.
    rng = np.random.default_rng(7)
    for _ in range(150):
        height, width = (int(n) for n in rng.integers(1, 40, size=2))
        tri = rng.uniform(-10, 50, size=(int(rng.integers(1, 12)), 3, 2))
        if lattice:
            tri = np.round(tri) + rng.choice([0.0, 0.5], size=tri.shape)
        if rng.random() < 0.2:
            tri[0, 1, 0] = np.nan                                   # skipped, like the reference
        np.testing.assert_array_equal(nearest_triangle_image(tri, height, width),
                                      covered_pixels_reference(tri, height, width))


def test_later_triangles_win_and_edges_leave_no_gap():
    square = np.array([[[2, 2], [12, 2], [12, 12]], [[2, 2], [12, 12], [2, 12]]], float)   # shares a diagonal
    inner = np.array([[[5, 5], [9, 5], [9, 9]]], float)
    winner = nearest_triangle_image(np.concatenate([square, inner]), 16, 16)
    assert (winner[2:12, 2:12] >= 0).all()                           # the diagonal is covered
    assert winner[7, 8] == 2                                         # the later one on top
    winner = nearest_triangle_image(np.concatenate([inner, square]), 16, 16)
    assert winner[7, 8] == 1                                         # hidden under the square (its upper half)


def test_huge_triangles_are_clipped_and_split_into_passes(monkeypatch):
    tri = np.array([[[-1e4, -1e4], [3e4, -1e4], [-1e4, 3e4]], [[3, 3], [30, 4], [10, 40]]], float)
    whole = nearest_triangle_image(tri, 50, 60)
    assert whole.shape == (50, 60) and (whole >= 0).all()
    monkeypatch.setattr(raster, "_PIXELS_PER_PASS", 7)               # many passes, same answer
    np.testing.assert_array_equal(nearest_triangle_image(tri, 50, 60), whole)


def test_close_to_the_opencv_fill_it_replaced():
    # The bundled-size face model at overlay size, front faces far to near as the painter draws them.
    model = synthetic_face_model(0)
    camera = Camera(image_size=512, focal=Camera().focal * 512 / 224)
    verts = model.mean_shape
    tri = project(verts, camera)[model.triangles]
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    front = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0] < 0
    order = np.argsort(-(camera.distance - verts[:, 2])[model.triangles].mean(axis=1), kind="stable")
    tri = tri[order[front[order]]]
    ours, theirs = nearest_triangle_image(tri, 512, 512) >= 0, nearest_triangle_image_opencv(tri, 512, 512) >= 0
    # OpenCV also paints the pixels its edge lines touch: its silhouette is at most a pixel wider.
    assert ours.sum() > 50_000
    assert not (ours & ~theirs).any()
    grown = np.zeros((514, 514), bool)
    for dy in range(3):
        for dx in range(3):
            grown[dy:dy + 512, dx:dx + 512] |= ours
    assert not (theirs & ~grown[1:513, 1:513]).any()
    assert (theirs & ~ours).sum() < 0.03 * ours.sum()


def test_bad_shape_refused():
    with pytest.raises(ValueError, match=r"\[T, 3, 2\]"):
        nearest_triangle_image(np.zeros((4, 2)), 8, 8)
