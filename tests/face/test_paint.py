"""The numpy/OpenCV painter: winding and culling, coverage, depth order, colours, shading, alpha."""

from __future__ import annotations

import numpy as np
import pytest

from dfmvr.face.camera import Camera, project
from dfmvr.face.paint import paint_mesh, preview_sheet
from dfmvr.face.synthetic import synthetic_face_model

# A unit square in model space (x right, y up), counter-clockwise seen from +z (the viewer).
SQUARE_TRIS = np.array([[0, 1, 2], [0, 2, 3]])


def square_pixels(u0, v0, u1, v1):
    """Image corners of that square: model (0,0),(1,0),(1,1),(0,1) -> u right, v down."""
    return np.array([[u0, v1], [u1, v1], [u1, v0], [u0, v0]], float)


def blank(size=16):
    return np.zeros((size, size, 3), np.uint8)


def painted(image):
    return image.any(axis=2)


def test_front_facing_square_covers_its_pixels():
    img = paint_mesh(blank(), square_pixels(2, 2, 6, 6), np.ones(4), SQUARE_TRIS, np.ones((4, 3)))
    mask = painted(img)
    # Pixel centres inside [2, 6] x [2, 6] are rows/cols 2..5; OpenCV may add the boundary row.
    assert mask[2:6, 2:6].all()
    rows, cols = np.nonzero(mask)
    assert rows.min() >= 1 and rows.max() <= 6 and cols.min() >= 1 and cols.max() <= 6


def test_back_faces_are_culled_unless_asked():
    flipped = SQUARE_TRIS[:, ::-1]                              # clockwise from the viewer
    img = paint_mesh(blank(), square_pixels(2, 2, 6, 6), np.ones(4), flipped, np.ones((4, 3)))
    assert not painted(img).any()
    img = paint_mesh(blank(), square_pixels(2, 2, 6, 6), np.ones(4), flipped, np.ones((4, 3)),
                     cull_backfaces=False)
    assert painted(img)[2:6, 2:6].all()


@pytest.mark.parametrize("near_first", [True, False])
def test_nearer_triangles_win(near_first):
    pixels = np.concatenate([square_pixels(2, 2, 12, 12), square_pixels(4, 4, 10, 10)])
    depth = np.array([5.0] * 4 + [2.0] * 4)                      # the small square is nearer
    colours = np.array([[1, 0, 0]] * 4 + [[0, 0, 1]] * 4, float)
    tris = np.concatenate([SQUARE_TRIS, SQUARE_TRIS + 4])
    if near_first:
        tris = tris[[2, 3, 0, 1]]
    img = paint_mesh(blank(), pixels, depth, tris, colours)
    assert tuple(img[7, 7]) == (0, 0, 255) and tuple(img[3, 3]) == (255, 0, 0)


def test_colours_shading_and_alpha():
    px = square_pixels(2, 2, 14, 14)
    colours = np.array([[0.2, 0.4, 0.6]] * 4)
    img = paint_mesh(blank(), px, np.ones(4), SQUARE_TRIS, colours)
    assert tuple(img[8, 8]) == (51, 102, 153)
    grey = paint_mesh(blank(), px, np.ones(4), SQUARE_TRIS, None, base_color=(0.5, 0.5, 0.5))
    assert tuple(grey[8, 8]) == (128, 128, 128)
    # Lambert: the same square facing the light is brighter than one tilted away from it.
    flat = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], float)
    tilted = flat.copy()
    tilted[[1, 2], 2] = -1.5                                      # right edge pushed away from the viewer
    lit = lambda v: paint_mesh(blank(), px, np.ones(4), SQUARE_TRIS, np.ones((4, 3)), vertices=v,
                               light=(0, 0, 1), ambient=0.2)[8, 8, 0]
    assert lit(flat) == 255 and 0.2 * 255 < lit(tilted) < 0.7 * 255
    base = np.full((16, 16, 3), 200, np.uint8)
    half = paint_mesh(base, px, np.ones(4), SQUARE_TRIS, np.zeros((4, 3)), alpha=0.5)
    assert tuple(half[8, 8]) == (100, 100, 100) and tuple(half[0, 0]) == (200, 200, 200)
    assert (base == 200).all()                                    # the input is untouched


def test_invalid_vertices_are_skipped_and_bad_images_refused():
    px = square_pixels(2, 2, 6, 6)
    px[1] = np.nan                                                 # bottom-right corner
    img = paint_mesh(blank(), px, np.ones(4), SQUARE_TRIS, np.ones((4, 3)))
    assert painted(img)[2, 2] and not painted(img)[5, 5]           # only the triangle without it
    behind = paint_mesh(blank(), square_pixels(2, 2, 6, 6), -np.ones(4), SQUARE_TRIS, np.ones((4, 3)))
    assert not painted(behind).any()
    with pytest.raises(ValueError, match="uint8"):
        paint_mesh(np.zeros((8, 8, 3), np.float32), px, np.ones(4), SQUARE_TRIS)


def test_paints_a_face_model():
    model = synthetic_face_model(0, num_vertices=400)
    camera = Camera()
    verts = model.mean_shape
    img = paint_mesh(blank(224), project(verts, camera), camera.distance - verts[:, 2], model.triangles,
                     model.mean_albedo, vertices=verts)
    mask = painted(img)
    tip = project(verts[model.keypoints[30]], camera)
    assert mask[int(tip[1]), int(tip[0])]
    cols = np.nonzero(mask.any(axis=0))[0]
    assert abs((cols.min() + cols.max()) / 2 - 112) <= 2            # symmetric about the centre
    sheet = preview_sheet(model, tile=64)
    assert sheet.shape == (3 * 64, 7 * 64, 3) and sheet.dtype == np.uint8
    centre = sheet[32, 32]                                         # the mean face, front view
    assert centre[0] > centre[2]                                   # skin, not the grey background


def test_default_model_and_painter_run_without_torch(tmp_path):
    from tests.conftest import run_python

    code = f"""
        import numpy as np
        from dfmvr.face.synthetic import synthetic_face_model
        from dfmvr.face.camera import Camera, project
        from dfmvr.face.paint import paint_mesh
        m = synthetic_face_model(0, num_vertices=400)   # the same code as default_face_model(), smaller
        cam = Camera()
        img = paint_mesh(np.zeros((224, 224, 3), np.uint8), project(m.mean_shape, cam),
                         cam.distance - m.mean_shape[:, 2], m.triangles, m.mean_albedo, vertices=m.mean_shape)
        m.save({str(tmp_path / 'fm.npz')!r})
        print("painted", int(img.any(axis=2).sum()))
    """
    result = run_python(code, block_torch=True)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.split()[-1]) > 5000
    assert (tmp_path / "fm.npz").is_file()
