"""The synthetic morphable model: BFM interface, units, orientation, keypoints, parts and bases."""

from __future__ import annotations

import numpy as np
import pytest

from dfmvr.face import parts as P
from dfmvr.face.camera import Camera
from dfmvr.face.geometry import assemble_mesh, face_albedo, face_shape, triangle_normals, vertex_normals
from dfmvr.face.layout import COEFFS, PARSE_CLASSES
from dfmvr.face.synthetic import default_face_model, synthetic_face_model

CLS = {name: i for i, name in enumerate(PARSE_CLASSES)}


@pytest.fixture(scope="module")
def model():
    return synthetic_face_model(0)


def shape_of(model, identity=None, expression=None):
    ident = np.zeros((1, 80), np.float32) if identity is None else np.asarray(identity, np.float32)[None]
    expr = np.zeros((1, 64), np.float32) if expression is None else np.asarray(expression, np.float32)[None]
    return face_shape(model, ident, expr)[0]


def roughness(model, basis):
    """Per component: |v - mean of its neighbours| / |v| over the mesh (white noise gives ~1)."""
    from scipy import sparse

    tri, n = model.triangles, model.num_vertices
    i = np.concatenate([tri[:, 0], tri[:, 1], tri[:, 2], tri[:, 1], tri[:, 2], tri[:, 0]])
    j = np.concatenate([tri[:, 1], tri[:, 2], tri[:, 0], tri[:, 0], tri[:, 1], tri[:, 2]])
    adj = sparse.coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)).tocsr()
    adj.data[:] = 1.0                                                    # duplicates -> one edge
    b = basis.astype(np.float64).reshape(n, -1)
    lap = b - (adj @ b) / np.asarray(adj.sum(axis=1))
    k = basis.shape[2]
    return np.linalg.norm(lap.reshape(n, 3, k), axis=(0, 1)) / np.linalg.norm(b.reshape(n, 3, k), axis=(0, 1))


def unit(k, i, s):
    v = np.zeros(k, np.float32)
    v[i] = s
    return v


def test_interface_and_determinism(model):
    assert model.dims == {"identity": 80, "expression": 64, "texture": 80}
    assert 2500 <= model.num_vertices <= 3500
    assert default_face_model().content_hash() == model.content_hash()
    small = synthetic_face_model(0, num_vertices=400)
    assert synthetic_face_model(0, num_vertices=400).content_hash() == small.content_hash()
    other = synthetic_face_model(1, num_vertices=400)
    assert other.content_hash() != small.content_hash()
    np.testing.assert_array_equal(other.mean_shape, small.mean_shape)   # the seed changes bases only
    assert not np.array_equal(other.id_basis, small.id_basis)


def test_units_and_centring(model):
    v = model.mean_shape
    width, height = np.ptp(v[:, 0]), np.ptp(v[:, 1])
    assert 1.5 <= width <= 1.9 and 2.2 <= height <= 2.45               # decimetres
    assert np.abs(v.mean(axis=0)).max() < 1e-3
    tip = v[model.keypoints[P.NOSE_TIP]]
    assert tip[2] > 0.3 and tip[2] >= v[:, 2].max() - 0.02             # nose tip in front, at +z


def test_triangles_face_outwards_and_grid_valence(model):
    n = triangle_normals(model.mean_shape, model.triangles)
    assert (n[:, 2] > 0).mean() > 0.97                                 # seen from the camera (+z)
    vn = vertex_normals(model.mean_shape[None], model.triangles, model.vertex_triangles)[0]
    assert vn[model.keypoints[P.NOSE_TIP], 2] > 0.8
    valence = (model.vertex_triangles >= 0).sum(axis=1)
    rim = P.boundary_vertices(model.triangles, model.num_vertices)
    assert valence.max() <= 8 and np.all(valence[~rim] == 6) and valence.min() >= 1


def test_keypoints_sit_on_named_features(model):
    kp = model.mean_shape[model.keypoints]
    assert len(set(model.keypoints.tolist())) == 68
    jaw = kp[P.JAW]
    assert np.all(np.diff(jaw[:, 0]) >= 0) and np.argmin(jaw[:, 1]) == 8  # ear to ear via the chin
    assert jaw[0, 0] < -0.6 < 0.6 < jaw[16, 0] and jaw[0, 1] > kp[30, 1]
    assert kp[P.RIGHT_BROW, 0].max() < 0 < kp[P.LEFT_BROW, 0].min()        # subject's right at -x
    assert kp[P.RIGHT_EYE, 0].max() < 0 < kp[P.LEFT_EYE, 0].min()
    assert kp[P.RIGHT_BROW, 1].min() > kp[P.RIGHT_EYE, 1].max()
    assert kp[P.RIGHT_EYE, 1].min() > kp[30, 1] > kp[P.OUTER_LIP, 1].max()
    assert kp[30, 2] == kp[:, 2].max()                                     # nose tip the most forward
    assert kp[48, 0] < kp[62, 0] < kp[54, 0] and kp[51, 1] > kp[62, 1] > kp[66, 1] > kp[57, 1]
    assert kp[36, 0] < kp[39, 0] < kp[42, 0] < kp[45, 0]                    # eye corners in order
    # The eye sockets are deeper than the eyebrows and the cheekbones.
    assert kp[P.RIGHT_EYE, 2].mean() < kp[P.RIGHT_BROW, 2].mean()


def test_parts(model):
    counts = np.bincount(model.parts, minlength=len(PARSE_CLASSES))
    assert counts[CLS["background"]] == 0 and np.all(counts[1:] > 0)
    x, y = model.mean_shape[:, 0], model.mean_shape[:, 1]
    for side, sign in (("left", 1), ("right", -1)):
        assert np.all(sign * x[model.parts == CLS[f"{side}_eye"]] > 0)
        assert np.all(sign * x[model.parts == CLS[f"{side}_brow"]] > 0)
    assert y[model.parts == CLS["upper_lip"]].mean() > y[model.parts == CLS["lower_lip"]].mean()
    assert y[model.parts == CLS["left_brow"]].mean() > y[model.parts == CLS["left_eye"]].mean()
    eye_centre = model.mean_shape[model.keypoints[P.LEFT_EYE]].mean(axis=0)
    assert np.linalg.norm(model.mean_shape[model.parts == CLS["left_eye"]].mean(0) - eye_centre) < 0.03


def test_masks(model):
    rim = P.boundary_vertices(model.triangles, model.num_vertices)
    assert model.skin_mask.sum() > 0.4 * model.num_vertices and not np.any(model.skin_mask & rim)
    assert np.all(np.isin(model.parts[model.skin_mask], [CLS["skin"], CLS["nose"]]))
    tip = model.mean_shape[model.keypoints[P.NOSE_TIP]]
    region = model.front_region
    assert region[model.keypoints[P.NOSE_TIP]] and not np.any(region & rim)
    assert np.linalg.norm(model.mean_shape[region] - tip, axis=1).max() <= 0.95
    assert 0.3 < region.mean() < 0.95


def test_bases_orthogonal_smooth_and_float16(model):
    for basis in (model.id_basis, model.exp_basis, model.albedo_basis):
        flat = basis.reshape(-1, basis.shape[2]).astype(np.float64)
        flat = flat / np.linalg.norm(flat, axis=0)
        cosines = flat.T @ flat - np.eye(flat.shape[1])
        assert np.abs(cosines).max() < 0.01                                  # orthogonal (float16 rounding)
        # Smooth: a vertex differs from the mean of its neighbours by a small part of the field
        # (white noise would give a ratio near 1).
        rough = roughness(model, basis)
        assert rough.max() < 0.35 and np.median(rough) < 0.12
        assert np.array_equal(basis.astype(np.float16).astype(np.float32), basis)
    sd = np.linalg.norm(model.id_basis, axis=1).max(axis=0)
    assert sd[0] > sd[-1] * 3                                                 # decaying std


def test_random_faces_stay_plausible(model):
    rng = np.random.default_rng(0)
    for _ in range(5):
        v = shape_of(model, rng.normal(size=80), rng.normal(size=64))
        assert 1.35 < np.ptp(v[:, 0]) < 2.1 and 2.0 < np.ptp(v[:, 1]) < 2.7
        n = triangle_normals(v, model.triangles)
        assert (n[:, 2] > 0).mean() > 0.9                                     # no folded-over surface
        albedo = face_albedo(model, rng.normal(size=(1, 80)).astype(np.float32))[0]
        assert ((albedo >= 0) & (albedo <= 1)).mean() > 0.98


def test_semantic_components(model):
    kp = model.keypoints
    mean = shape_of(model)
    wide = shape_of(model, identity=unit(80, 0, 3))
    assert np.ptp(wide[:, 0]) > np.ptp(mean[:, 0]) + 0.1                    # face width
    jaw_open = shape_of(model, expression=unit(64, 0, 2))
    gap = lambda v: v[kp[62], 1] - v[kp[66], 1]
    assert gap(jaw_open) > gap(mean) + 0.1 and jaw_open[kp[8], 1] < mean[kp[8], 1] - 0.1
    smile = shape_of(model, expression=unit(64, 1, 2))
    assert smile[kp[48], 1] > mean[kp[48], 1] + 0.03 and smile[kp[54], 1] > mean[kp[54], 1] + 0.03
    brows = shape_of(model, expression=unit(64, 2, 2))
    assert brows[kp[19], 1] > mean[kp[19], 1] + 0.03 and abs(brows[kp[57], 1] - mean[kp[57], 1]) < 0.01


def test_albedo_colours(model):
    a = model.mean_albedo
    assert a.min() >= 0 and a.max() <= 1
    skin, lips = a[model.parts == CLS["skin"]].mean(0), a[model.parts == CLS["upper_lip"]].mean(0)
    brow = a[model.parts == CLS["left_brow"]].mean(0)
    assert lips[0] / lips[1] > skin[0] / skin[1] and brow.sum() < 0.7 * skin.sum()
    assert 0.45 < skin[0] < 0.9 and skin[0] > skin[1] > skin[2]


def test_renders_in_the_default_camera(model):
    mesh = assemble_mesh(model, COEFFS.zeros(1), Camera())
    lm = mesh.landmarks[0, 1, 17:]                                            # brows, eyes, nose, mouth
    assert np.all((lm > 0) & (lm < 224))
    assert np.isfinite(mesh.colors).all()
