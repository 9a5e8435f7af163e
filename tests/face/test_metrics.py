"""The NoW-style evaluation: exact point-to-triangle distances, cropping, alignment, ICP, statistics."""

from __future__ import annotations

import numpy as np
import pytest

from dfmvr.errors import InputError
from dfmvr.face.geometry import build_vertex_triangles, vertex_normals
from dfmvr.face.metrics import (
    MeshDistance, closest_points_on_triangles, crop_scan, evaluate_reconstruction, paired_improvement, shape_r2,
    summarize,
)

RNG = np.random.default_rng(11)


# --- exact point-to-triangle distance ------------------------------------------------------------
TRI = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])


@pytest.mark.parametrize("point, closest", [
    ([0.2, 0.2, 3.0], [0.2, 0.2, 0.0]),     # above the interior: drop a perpendicular
    ([-1.0, -1.0, 0.0], [0.0, 0.0, 0.0]),   # beyond corner a
    ([2.0, -1.0, 0.5], [1.0, 0.0, 0.0]),    # beyond corner b
    ([-0.5, 3.0, 0.0], [0.0, 1.0, 0.0]),    # beyond corner c
    ([0.5, -2.0, 1.0], [0.5, 0.0, 0.0]),    # beyond edge ab
    ([-2.0, 0.3, -1.0], [0.0, 0.3, 0.0]),   # beyond edge ac
    ([1.0, 1.0, 0.0], [0.5, 0.5, 0.0]),     # beyond the hypotenuse bc
])
def test_closest_point_on_a_triangle_by_hand(point, closest):
    q, d2 = closest_points_on_triangles(np.array(point), *TRI)
    np.testing.assert_allclose(q, closest, atol=1e-12)
    assert d2 == pytest.approx(float(np.sum((np.array(point) - closest) ** 2)))


def test_degenerate_triangle_falls_back_to_its_edges():
    q, d2 = closest_points_on_triangles(np.array([1.0, 1.0, 0.0]), np.zeros(3), np.array([1.0, 0, 0]),
                                        np.array([2.0, 0, 0]))
    np.testing.assert_allclose(q, [1.0, 0.0, 0.0])
    assert d2 == pytest.approx(1.0)


def test_closest_point_is_never_beaten_by_dense_samples_of_the_triangle():
    a, b, c = RNG.normal(size=(3, 40, 3))
    p = RNG.normal(scale=2.0, size=(40, 3))
    q, d2 = closest_points_on_triangles(p, a, b, c)
    s = np.linspace(0, 1, 61)
    u, v = np.meshgrid(s, s)
    keep = u + v <= 1
    u, v = u[keep], v[keep]
    samples = a[:, None] + u[None, :, None] * (b - a)[:, None] + v[None, :, None] * (c - a)[:, None]
    sampled = ((samples - p[:, None]) ** 2).sum(-1).min(axis=1)
    assert (d2 <= sampled + 1e-12).all()
    assert np.allclose(np.sqrt(d2), np.sqrt(sampled), atol=0.05)      # sample spacing 1/60 of an edge
    # the closest point lies on the triangle: barycentric coordinates in [0, 1]
    n = np.cross(b - a, c - a)
    assert np.abs(np.einsum("ij,ij->i", q - a, n)).max() < 1e-9


def bumpy_mesh(seed=0):
    import trimesh

    mesh = trimesh.creation.icosphere(subdivisions=2, radius=1.0)
    v = mesh.vertices * (1 + 0.15 * np.sin(3 * mesh.vertices[:, :1]) * np.cos(2 * mesh.vertices[:, 1:2]))
    return v, mesh.faces


def test_mesh_distance_search_is_exact_against_brute_force():
    v, f = bumpy_mesh()
    md = MeshDistance(v, f)
    pts = RNG.normal(size=(150, 3)) * RNG.uniform(0.2, 2.0, size=(150, 1))
    pts[:50] = v[:50] * 1.01                                # some points close to the surface
    # k=1 starts from the single nearest centroid, so exactness rests on the widening search
    closest, dist, tri, bary = md.query(pts, k=1)
    _, d2_all = closest_points_on_triangles(pts[:, None], v[f[:, 0]][None], v[f[:, 1]][None], v[f[:, 2]][None])
    np.testing.assert_allclose(dist, np.sqrt(d2_all.min(axis=1)), atol=1e-10)
    np.testing.assert_allclose(np.linalg.norm(closest - pts, axis=1), dist, atol=1e-10)
    np.testing.assert_allclose((bary[:, :, None] * v[f[tri]]).sum(axis=1), closest, atol=1e-9)
    np.testing.assert_allclose(md.query(pts)[1], dist, atol=1e-10)          # default k
    # the fast search examines only k triangles: an upper bound, not always the answer
    _, approx, _, _ = md.query(pts, k=1, exact=False)
    assert (approx >= dist - 1e-12).all() and (approx > dist + 1e-6).any()


# --- the protocol --------------------------------------------------------------------------------
def head_mesh():
    """A closed 'head' in model units (decimetres): an ellipsoid (75, 95, 65 mm half-axes) with a
    nose, and the 7 landmark vertex ids (eye corners 36, 39, 42, 45, nose tip 30, mouth 48, 54)."""
    import trimesh

    mesh = trimesh.creation.icosphere(subdivisions=4, radius=1.0)
    v = mesh.vertices * np.array([0.75, 0.95, 0.65])
    r2 = v[:, 0] ** 2 + (v[:, 1] + 0.1) ** 2
    v[:, 2] += np.where(v[:, 2] > 0, 0.2 * np.exp(-r2 / 0.03), 0.0)      # nose on the +z side
    f = mesh.faces.astype(np.int32)
    targets = np.array([[-0.47, 0.25], [-0.17, 0.25], [0.17, 0.25], [0.47, 0.25], [0.0, -0.1],
                        [-0.25, -0.45], [0.25, -0.45]])
    front = np.flatnonzero(v[:, 2] > 0)
    ids = [front[np.argmin(((v[front, :2] - t) ** 2).sum(1))] for t in targets]
    ids[4] = int(np.argmax(v[:, 2]))
    return v.astype(np.float32), f, np.array(ids)


def rotation(axis, angle):
    c, s = np.cos(angle), np.sin(angle)
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def test_crop_keeps_the_sphere_around_the_nose_tip_sized_by_the_eyes():
    lm = np.zeros((7, 3))
    lm[0], lm[3], lm[4] = [-45, 0, 0], [45, 0, 0], [0, -20, 30]
    pts = np.array([[0, -20, 30], [0, -20, 30 + 89.9], [0, -20, 30 - 90.1], [50, 50, 50]])
    mask, radius = crop_scan(pts, lm)
    assert radius == pytest.approx(90.0)
    np.testing.assert_array_equal(mask, [True, True, False, True])
    assert crop_scan(pts, lm, radius_factor=0.5)[0].tolist() == [True, False, False, False]


def test_uniform_one_millimetre_offset_reads_one_millimetre():
    v, f, ids = head_mesh()
    normals = vertex_normals(v, f, build_vertex_triangles(f, len(v)))
    scan = v * 100 + normals * 1.0                           # 1 mm outwards, in mm
    scan_lm = v[ids] * 100                                   # annotators mark the same points
    # whole head (symmetric, so rigid ICP has nothing to gain) with rigid refinement
    r = evaluate_reconstruction(v, f, ids, scan, f, scan_lm, crop_radius_factor=10.0, icp_scale=False)
    for key in ("mean_mm", "median_mm", "rmse_mm"):
        assert r[key] == pytest.approx(1.0, abs=0.01), key
    assert r["distances"].shape == (len(v),) and r["crop_mask"].all()
    # default crop, landmark alignment only
    r = evaluate_reconstruction(v, f, ids, scan, f, scan_lm, icp_iterations=0)
    assert 0 < r["crop_mask"].sum() < len(v)
    assert r["distances"].shape == (r["crop_mask"].sum(),)
    for key in ("mean_mm", "median_mm", "rmse_mm"):
        assert r[key] == pytest.approx(1.0, abs=0.01), key
    # full protocol: the similarity refinement may absorb part of an inflation, never add to it
    full = evaluate_reconstruction(v, f, ids, scan, f, scan_lm)
    assert 0.0 <= full["mean_mm"] <= 1.0 + 1e-6


def test_transformed_copy_reads_zero_after_alignment_with_noisy_landmarks():
    v, f, ids = head_mesh()
    rot = rotation(1, 0.35) @ rotation(0, -0.2)
    scale, shift = 1.08, np.array([5.0, -3.0, 12.0])
    scan = scale * (v * 100) @ rot.T + shift                  # mm
    noisy_lm = scan[ids] + RNG.normal(scale=2.0, size=(7, 3))   # annotations off by ~2 mm
    coarse = evaluate_reconstruction(v, f, ids, scan, f, noisy_lm, icp_iterations=0)
    fine = evaluate_reconstruction(v, f, ids, scan, f, noisy_lm)
    assert coarse["mean_mm"] > 0.3                          # landmarks alone leave an error
    assert fine["mean_mm"] < 0.02 and fine["rmse_mm"] < 0.03 and fine["icp_iterations"] > 1
    expected = np.eye(4)
    expected[:3, :3], expected[:3, 3] = scale * rot, shift
    np.testing.assert_allclose(fine["transform"][:3, :3], expected[:3, :3], atol=0.005)
    np.testing.assert_allclose(fine["transform"][:3, 3], shift, atol=0.1)          # mm
    # landmark coordinates instead of vertex ids give the same answer
    same = evaluate_reconstruction(v, f, v[ids], scan, None, noisy_lm)
    assert same["mean_mm"] == pytest.approx(fine["mean_mm"], abs=1e-9)


def test_a_scaled_prediction_is_measured_in_millimetres():
    v, f, ids = head_mesh()
    scan = v * 100 + vertex_normals(v, f, build_vertex_triangles(f, len(v))) * 2.0
    r = evaluate_reconstruction(v * 10, f, ids, scan, f, v[ids] * 100, pred_scale=10.0, icp_iterations=0)
    assert r["mean_mm"] == pytest.approx(2.0, abs=0.02)


def test_bad_inputs_are_reported():
    v, f, ids = head_mesh()
    far_lm = v[ids] * 100 + 1000.0                  # landmarks in another place / unit than the scan
    with pytest.raises(InputError, match="scan.obj.*within"):
        evaluate_reconstruction(v, f, ids, v * 100, f, far_lm, source="scan.obj")
    with pytest.raises(InputError, match="triangles"):
        evaluate_reconstruction(v, f, ids, v * 100, f + len(v), v[ids] * 100)
    with pytest.raises(ValueError):
        evaluate_reconstruction(v, f, ids[:5], v * 100, f, v[ids] * 100)
    with pytest.raises(ValueError, match="vertex ids"):
        evaluate_reconstruction(v, f, ids + len(v), v * 100, f, v[ids] * 100)
    with pytest.raises(ValueError, match="pred_triangles"):
        evaluate_reconstruction(v, f + len(v), ids, v * 100, f, v[ids] * 100)


def test_summarize_averages_over_scans():
    s = summarize([{"mean_mm": 1.0, "median_mm": 0.5, "rmse_mm": 2.0},
                   {"mean_mm": 3.0, "median_mm": 1.5, "rmse_mm": 4.0}])
    assert s == {"mean_mm": 2.0, "median_mm": 1.0, "rmse_mm": 3.0, "num_scans": 2}
    with pytest.raises(ValueError):
        summarize([])


def test_paired_improvement_against_a_hand_computed_interval():
    method = [{"mean_mm": v} for v in (1.0, 2.0, 3.0, 4.0)]
    baseline = [{"mean_mm": v} for v in (1.5, 2.5, 3.0, 5.0)]      # d = 0.5, 0.5, 0.0, 1.0
    got = paired_improvement(method, baseline)
    # mean 0.5, sample sd sqrt(1/6), t(0.975, 3) = 3.182446: half width 3.182446 * 0.408248 / 2
    half = 3.182446305 * np.sqrt(1 / 6) / 2
    assert got["mean_mm"] == pytest.approx(0.5)
    assert got["ci95_mm"] == pytest.approx([0.5 - half, 0.5 + half], rel=1e-7)
    assert got["better_fraction"] == 0.75 and got["num_scans"] == 4
    worse = paired_improvement(baseline, method)                     # the same comparison the other way round
    assert worse["mean_mm"] == pytest.approx(-0.5) and worse["better_fraction"] == 0.0
    with pytest.raises(ValueError, match="two scans"):
        paired_improvement(method[:1], baseline[:1])


def test_shape_r2_reads_zero_for_the_mean_and_grows_with_the_explained_part():
    from dfmvr.face.layout import COEFFS
    from dfmvr.face.synthetic import default_face_model

    fm = default_face_model()
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(200, COEFFS.size))
    r2 = lambda pred: shape_r2(fm, COEFFS.split(pred), COEFFS.split(truth))   # noqa: E731
    mean = r2(np.tile(truth.mean(0), (200, 1)))
    assert mean["identity"] == pytest.approx(0.0, abs=1e-5) and mean["expression"] == pytest.approx(0.0, abs=1e-5)
    half = truth.copy()
    half[:, :COEFFS.identity] = 0.5 * truth[:, :COEFFS.identity] + 0.5 * truth[:, :COEFFS.identity].mean(0)
    got = r2(half)
    assert got["identity"] == pytest.approx(0.75, abs=1e-5) and got["expression"] == 1.0   # a quarter left
    # vertex space, not coefficient space: the first identity component moves the surface most
    first, last = truth.copy(), truth.copy()
    first[:, 0] = truth[:, 0].mean()
    last[:, COEFFS.identity - 1] = truth[:, COEFFS.identity - 1].mean()
    assert r2(first)["identity"] < r2(last)["identity"] < 1
    assert r2(truth + rng.normal(size=truth.shape) * 3)["identity"] < -5     # worse than predicting the mean


def test_shape_r2_size_free_forgives_a_size_error_and_nothing_else():
    """A prediction that is the truth scaled 1.05 about the mean's centroid (a size error only) scores
    well below 1 plainly and ~1 with the uniform scaling projected out; random errors cost both."""
    from dfmvr.face.geometry import face_shape
    from dfmvr.face.layout import COEFFS
    from dfmvr.face.synthetic import default_face_model

    fm = default_face_model()
    rng = np.random.default_rng(3)
    truth = rng.normal(size=(40, COEFFS.size)).astype(np.float32)
    ident = COEFFS.shared_slices()["identity"]
    shapes = face_shape(fm, truth[:, ident], np.zeros((len(truth), COEFFS.expression), np.float32)).astype(np.float64)
    centre = fm.mean_shape.mean(axis=0)
    scaled = (shapes - centre) * 1.05 + centre - fm.mean_shape
    basis = fm.id_basis.reshape(-1, fm.id_basis.shape[-1]).astype(np.float64)
    coef, *_ = np.linalg.lstsq(basis, scaled.reshape(len(truth), -1).T, rcond=None)   # the scaled shapes' identity
    sized = truth.copy()
    sized[:, ident] = coef.T
    got = shape_r2(fm, COEFFS.split(sized), COEFFS.split(truth))
    assert got["identity"] < 0.7                     # 5 % too large costs half the plain R² here
    assert got["identity_size_free"] > 0.99          # the basis holds the scaling up to a residue
    noisy = shape_r2(fm, COEFFS.split(truth + rng.normal(scale=0.7, size=truth.shape).astype(np.float32)),
                     COEFFS.split(truth))
    assert noisy["identity_size_free"] < 0.8 and noisy["identity"] < 0.8
    exact = shape_r2(fm, COEFFS.split(truth), COEFFS.split(truth))
    assert exact["identity_size_free"] == pytest.approx(1.0, abs=1e-12)
    # at the mean size: the predictions lose their size, the truth keeps it
    assert exact["identity_at_mean_size"] < 0.95                     # the truth's own sizes are lost
    from dfmvr.face.size import mean_size_projection

    mean_sized = truth.copy()
    mean_sized[:, ident] = truth[:, ident] @ mean_size_projection(fm).matrix.T     # truths of the mean size
    wrong_size = shape_r2(fm, COEFFS.split(sized - truth + mean_sized), COEFFS.split(mean_sized))
    assert wrong_size["identity"] < 0.7 and wrong_size["identity_at_mean_size"] > 0.99


def test_without_uniform_scale_removes_a_uniform_scaling_and_nothing_else():
    from dfmvr.face.metrics import without_uniform_scale
    from dfmvr.face.synthetic import default_face_model

    mean = default_face_model().mean_shape.astype(np.float64)
    scaling = 0.05 * (mean - mean.mean(axis=0)).ravel()
    assert np.abs(without_uniform_scale(scaling, mean)).max() < 1e-9 * np.abs(scaling).max()
    other = np.random.default_rng(0).normal(size=scaling.shape)
    other -= (other @ scaling) / (scaling @ scaling) * scaling          # orthogonal to the scaling
    np.testing.assert_allclose(without_uniform_scale(other, mean), other, atol=1e-9)
    np.testing.assert_allclose(without_uniform_scale(np.stack([other + scaling, 2 * other]), mean),
                               np.stack([other, 2 * other]), atol=1e-9)
