"""Evaluation of a reconstruction against a 3D scan, the NoW-style protocol DF-MVR reports (mm).

Protocol (``evaluate_reconstruction``):
1. Crop the scan: keep the scan vertices within ``radius`` of the scan's nose tip, where
   radius = ``crop_radius_factor`` (default 1.0) x the distance between the outer eye corners
   (iBUG 36 and 45). For an adult that is about 90-100 mm: forehead, cheeks and chin stay, ears,
   neck and hair go, much like the BFM front face the network predicts.
2. Align the prediction to the scan with the least-squares similarity (rotation, translation,
   scale; Umeyama) that maps its 7 landmarks onto the scan's: eye corners 36, 39, 42, 45, nose tip 30,
   mouth corners 48, 54 (``SEVEN_POINTS_IBUG``).
3. Refine with ICP: alternately find, for every cropped scan vertex, the exact closest point on the
   predicted surface (point-to-triangle, not point-to-vertex), and re-fit the similarity (or rigid
   transform with ``icp_scale=False``) to those pairs, until the mean distance stops improving.
   The scale in the refinement means a uniform inflation of a near-spherical shape is partly
   absorbed, as in the published protocol; rigid refinement does not absorb it.
4. Report the scan-to-mesh distances of the cropped scan vertices in millimetres: mean, median and
   RMSE (the published numbers are means; DF-MVR's code calls its mean "RMSE").

Units: predictions are in model units (decimetres), multiplied by ``pred_scale`` (100) to mm; scans
and scan landmarks are expected in mm (``meshio.read_mesh(..., scale=...)`` converts others).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from ..errors import InputError
from .align import umeyama
from .camera import Camera
from .geometry import euler_from_matrix, face_shape, rotation_matrix
from .layout import COEFFS, VIEWS, Coefficients
from .meshio import MM_PER_MODEL_UNIT
from .model import MorphableModel

__all__ = [
    "SEVEN_POINTS_IBUG", "NOSE_TIP_OF_SEVEN", "OUTER_EYE_CORNERS_OF_SEVEN", "closest_points_on_triangles",
    "MeshDistance", "crop_scan", "evaluate_reconstruction", "summarize", "paired_improvement", "shape_r2",
    "rotation_error_deg", "slot_prior", "pose_errors", "face_size", "uniform_scale_direction", "without_uniform_scale",
    "translation_breakdown",
]

SEVEN_POINTS_IBUG = (36, 39, 42, 45, 30, 48, 54)   # 0-based iBUG-68 ids, in this order
NOSE_TIP_OF_SEVEN = 4
OUTER_EYE_CORNERS_OF_SEVEN = (0, 3)


def _closest_on_segments(p, a, b):
    """Closest points on segments a-b to p (all [..., 3]) and their squared distances."""
    ab = b - a
    len2 = np.einsum("...i,...i->...", ab, ab)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(len2 > 0, np.einsum("...i,...i->...", p - a, ab) / np.where(len2 > 0, len2, 1.0), 0.0)
    q = a + np.clip(t, 0.0, 1.0)[..., None] * ab
    d = q - p
    return q, np.einsum("...i,...i->...", d, d)


def closest_points_on_triangles(points: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray):
    """Exact closest point on triangle (a, b, c) to each point; all arrays [..., 3] broadcastable.

    Returns (closest [..., 3], squared distance [...]), float64. If the point's orthogonal projection
    onto the triangle's plane falls inside the triangle it is the answer; otherwise the closest point
    lies on the boundary, so it is the nearest of the three edge answers. Degenerate (zero-area)
    triangles fall back to their edges.
    """
    p, a, b, c = np.broadcast_arrays(*(np.asarray(x, np.float64) for x in (points, a, b, c)))
    ab, ac = b - a, c - a
    n = np.cross(ab, ac)
    n2 = np.einsum("...i,...i->...", n, n)
    ok = n2 > 1e-300
    with np.errstate(divide="ignore", invalid="ignore"):
        ap = p - a
        # barycentric coordinates of the projection (Cramer's rule with the normal)
        v = np.einsum("...i,...i->...", np.cross(ap, ac), n) / np.where(ok, n2, 1.0)
        w = np.einsum("...i,...i->...", np.cross(ab, ap), n) / np.where(ok, n2, 1.0)
    inside = ok & (v >= 0) & (w >= 0) & (v + w <= 1)
    plane = a + v[..., None] * ab + w[..., None] * ac
    dp = plane - p
    best_q = plane
    best_d2 = np.where(inside, np.einsum("...i,...i->...", dp, dp), np.inf)
    for e0, e1 in ((a, b), (b, c), (c, a)):
        q, d2 = _closest_on_segments(p, e0, e1)
        better = d2 < best_d2
        best_q = np.where(better[..., None], q, best_q)
        best_d2 = np.where(better, d2, best_d2)
    return best_q, best_d2


class MeshDistance:
    """Exact point-to-surface queries against one triangle mesh (numpy + scipy, no torch).

    vertices [N, 3], triangles [T, 3] (0-based). Candidate triangles come from a k-d tree over
    triangle centroids; the candidate set is grown until it provably holds the closest triangle
    (until no unexamined triangle's bounding sphere is nearer than the best distance), so results are exact.
    """

    def __init__(self, vertices, triangles):
        self.vertices = np.asarray(vertices, np.float64)
        self.triangles = np.asarray(triangles, np.int64)
        if self.triangles.ndim != 2 or self.triangles.shape[1] != 3 or len(self.triangles) == 0:
            raise ValueError(f"need a triangle mesh, got triangles of shape {self.triangles.shape}")
        corners = self.vertices[self.triangles]                         # [T, 3, 3]
        self.centroids = corners.mean(axis=1)
        self.max_radius = float(np.linalg.norm(corners - self.centroids[:, None], axis=-1).max())
        normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
        self.face_normals = normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-300)
        self._centroid_tree = cKDTree(self.centroids)

    def query(self, points, k: int = 8, exact: bool = True):
        """points [P, 3] -> (closest [P, 3], distance [P], triangle id [P], barycentric [P, 3]).

        Same units as the mesh; float64. With ``exact=False`` only the ``k`` triangles with the
        nearest centroids are examined (the distances are then upper bounds, exact almost always
        for points near a regular mesh): fast enough for the inner loop of ICP.
        """
        points = np.asarray(points, np.float64)
        kk = min(k, len(self.triangles))
        dist, ids = self._centroid_tree.query(points, k=kk)
        dist, ids = dist.reshape(len(points), kk), ids.reshape(len(points), kk)
        pt, d2 = self._pairs(points[:, None], ids)
        j = d2.argmin(axis=1)
        rows = np.arange(len(points))
        best_d2, best_pt, best_tri = d2[rows, j], pt[rows, j], ids[rows, j]
        if exact and kk < len(self.triangles):
            # A triangle is at least (centroid distance - max_radius) away, so only triangles whose
            # centroid lies within best + max_radius can beat the best found: examine all of them.
            todo = np.flatnonzero(dist[:, -1] - self.max_radius < np.sqrt(best_d2))
            if todo.size:
                radii = np.sqrt(best_d2[todo]) + self.max_radius
                lists = self._centroid_tree.query_ball_point(points[todo], radii)
                counts = np.fromiter((len(x) for x in lists), np.int64, len(lists))
                cand = np.fromiter((t for x in lists for t in x), np.int64, int(counts.sum()))
                owner = np.repeat(todo, counts)
                cpt, cd2 = self._pairs(points[owner], cand)
                # per point minimum over its (contiguous) run of candidates
                order = np.lexsort((cd2, owner))
                first = np.r_[True, owner[order][1:] != owner[order][:-1]]
                win = order[first]
                better = cd2[win] < best_d2[owner[win]]
                upd = owner[win][better]
                best_d2[upd], best_pt[upd], best_tri[upd] = cd2[win][better], cpt[win][better], cand[win][better]
        return best_pt, np.sqrt(best_d2), best_tri, self._barycentric(best_pt, best_tri)

    def _pairs(self, points, tri_ids):
        tri = self.triangles[tri_ids]
        v = self.vertices
        return closest_points_on_triangles(points, v[tri[..., 0]], v[tri[..., 1]], v[tri[..., 2]])

    def _barycentric(self, pts, tri_ids):
        a, b, c = (self.vertices[self.triangles[tri_ids, i]] for i in range(3))
        v0, v1, v2 = b - a, c - a, pts - a
        d00, d01, d11 = (v0 * v0).sum(1), (v0 * v1).sum(1), (v1 * v1).sum(1)
        d20, d21 = (v2 * v0).sum(1), (v2 * v1).sum(1)
        den = d00 * d11 - d01 * d01
        safe = np.where(np.abs(den) > 1e-30, den, 1.0)
        v = np.where(np.abs(den) > 1e-30, (d11 * d20 - d01 * d21) / safe, 0.0)
        w = np.where(np.abs(den) > 1e-30, (d00 * d21 - d01 * d20) / safe, 0.0)
        return np.stack([1.0 - v - w, v, w], axis=1)


def crop_scan(scan_vertices, scan_landmarks7, radius_factor: float = 1.0) -> tuple[np.ndarray, float]:
    """Mask [M] bool of scan vertices within the crop sphere, and the radius (scan units).

    radius = ``radius_factor`` x |outer eye corner (36) - outer eye corner (45)|, centred on the nose tip.
    """
    lm = np.asarray(scan_landmarks7, np.float64)
    left, right = OUTER_EYE_CORNERS_OF_SEVEN
    radius = radius_factor * float(np.linalg.norm(lm[left] - lm[right]))
    d = np.linalg.norm(np.asarray(scan_vertices, np.float64) - lm[NOSE_TIP_OF_SEVEN], axis=1)
    return d <= radius, radius


def _as_points(name, x, n=None):
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or x.shape[1] != 3 or (n is not None and x.shape[0] != n):
        want = f"[{n}, 3]" if n else "[N, 3]"
        raise ValueError(f"{name} must be {want}, got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def _transform(scale, rot, t, x):
    return scale * x @ rot.T + t


def evaluate_reconstruction(pred_vertices, pred_triangles, pred_landmarks, scan_vertices, scan_triangles,
                            scan_landmarks7, *, pred_scale: float = MM_PER_MODEL_UNIT,
                            crop_radius_factor: float = 1.0, icp_iterations: int = 30,
                            icp_scale: bool = True, icp_tolerance_mm: float = 1e-4, icp_max_points: int = 2000,
                            source=None) -> dict:
    """Scan-to-mesh error of one reconstruction, in millimetres (see the module docstring).

    pred_vertices   [N, 3] float, model units (x ``pred_scale`` -> mm); pred_triangles [T, 3] int
    pred_landmarks  [7, 3] float (model units, ``SEVEN_POINTS_IBUG`` order) or [7] int vertex ids
                    (e.g. ``model.keypoints[list(SEVEN_POINTS_IBUG)]``)
    scan_vertices   [M, 3] mm; scan_triangles [S, 3] int or None (only the scan's vertices are
                    measured, as in NoW; the triangles are checked for consistency when given)
    scan_landmarks7 [7, 3] mm, ``SEVEN_POINTS_IBUG`` order
    source          the scan's file name, for error messages
    Returns dict: mean_mm, median_mm, rmse_mm (floats), distances [M'] float32 mm (cropped scan
    vertices, in scan order), crop_mask [M] bool, crop_radius_mm, transform [4, 4] (pred mm ->
    scan mm), landmark_error_mm (mean 7-point error after the final alignment), icp_iterations.
    """
    pv = _as_points("pred_vertices", pred_vertices) * pred_scale
    pt = np.asarray(pred_triangles)
    if pt.ndim != 2 or pt.shape[1] != 3 or not len(pt) or pt.min() < 0 or pt.max() >= len(pv):
        raise ValueError(f"pred_triangles must be [T, 3] ids into the {len(pv)} predicted vertices")
    pl = np.asarray(pred_landmarks)
    if pl.ndim == 1:
        if pl.shape != (7,) or not np.issubdtype(pl.dtype, np.integer) or pl.min() < 0 or pl.max() >= len(pv):
            raise ValueError(f"pred_landmarks as vertex ids must be 7 integers in [0, {len(pv)}), got {pl}")
        pl = pv[pl]
    else:
        pl = _as_points("pred_landmarks", pl, 7) * pred_scale
    sv = _as_points("scan_vertices", scan_vertices)
    sl = _as_points("scan_landmarks7", scan_landmarks7, 7)
    if scan_triangles is not None:
        st = np.asarray(scan_triangles)
        if st.size and (st.ndim != 2 or st.shape[1] != 3 or st.min() < 0 or st.max() >= len(sv)):
            raise InputError(source, "scan triangles do not index the scan's vertices", "re-export the scan")

    mask, radius = crop_scan(sv, sl, crop_radius_factor)
    if mask.sum() < 10:
        raise InputError(source, f"only {int(mask.sum())} scan vertices lie within {radius:.1f} mm of the nose "
                         "tip landmark", "check that the scan and its landmarks share units (mm) and order")
    scan_pts = sv[mask]
    try:
        scale, rot, t = umeyama(pl, sl)
    except ValueError as exc:
        raise InputError(source, "the predicted landmarks all coincide", "check the landmark vertex ids") from exc

    surface = MeshDistance(pv, pt)
    # ICP works on an even subsample of the crop (enough to pin 7 degrees of freedom) with the fast
    # closest-point search; the reported distances use every cropped vertex and the exact search.
    stride = max(1, int(np.ceil(len(scan_pts) / icp_max_points)))
    icp_pts = scan_pts[::stride]
    scale, rot, t, iterations = _refine(surface, icp_pts, scale, rot, t, icp_iterations, icp_scale,
                                        icp_tolerance_mm)
    local = (scan_pts - t) @ rot / scale
    _, dist, _, _ = surface.query(local, exact=True)
    dist_mm = dist * scale
    transform = np.eye(4)
    transform[:3, :3], transform[:3, 3] = scale * rot, t
    lm_err = float(np.linalg.norm(_transform(scale, rot, t, pl) - sl, axis=1).mean())
    return {
        "mean_mm": float(dist_mm.mean()), "median_mm": float(np.median(dist_mm)),
        "rmse_mm": float(np.sqrt((dist_mm ** 2).mean())), "distances": dist_mm.astype(np.float32),
        "crop_mask": mask, "crop_radius_mm": radius, "transform": transform,
        "landmark_error_mm": lm_err, "icp_iterations": iterations,
    }


def _rodrigues(omega):
    angle = float(np.linalg.norm(omega))
    if angle < 1e-15:
        return np.eye(3)
    k = omega / angle
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


def _refine(surface: MeshDistance, scan_pts, scale, rot, t, iterations: int, with_scale: bool, tol: float):
    """ICP as Gauss-Newton on the scan-to-mesh distances: returns (scale, rot, t, iterations used).

    Each step finds the closest surface point c_i of every scan point s_i and linearises its distance
    along the direction u_i in which it grows: the face normal where c_i is inside a triangle (the
    point-to-plane distance, which lets the surfaces slide), else (s_i - c_i) / |s_i - c_i| (an edge
    or corner). It solves for a small rotation, scale and translation of the prediction about the
    centroid of the c_i, and stops when the RMS distance improves by less than ``tol`` mm.
    Point-to-point ICP would need hundreds of steps on smooth faces; this needs a handful.
    """

    def measure(scale, rot, t):
        local = (scan_pts - t) @ rot / scale            # the prediction's frame: trees built once
        closest, dist, tri, bary = surface.query(local, exact=False)
        return closest, dist * scale, tri, bary

    closest, dist, tri, bary = measure(scale, rot, t)
    rms = float(np.sqrt((dist ** 2).mean()))
    used = 0
    for used in range(1, iterations + 1):
        c = scale * closest @ rot.T + t                 # closest points in scan millimetres
        normal = surface.face_normals[tri] @ rot.T
        diff = scan_pts - c
        inside = (bary > 1e-9).all(axis=1)
        u = np.where(inside[:, None], normal, diff / np.maximum(dist, 1e-12)[:, None])
        mu = c.mean(axis=0)
        q = c - mu
        cols = [np.cross(q, u), u] + ([np.einsum("ij,ij->i", u, q)[:, None]] if with_scale else [])
        jac = np.concatenate(cols, axis=1)              # [P, 6 or 7]: rotation, translation, (scale)
        resid = np.einsum("ij,ij->i", u, diff)
        jtj = jac.T @ jac
        step = np.linalg.solve(jtj + 1e-9 * np.trace(jtj) * np.eye(len(jtj)), jac.T @ resid)
        grow = 1.0 + (step[6] if with_scale else 0.0)
        r_step = _rodrigues(step[:3])
        new_scale, new_rot = scale * grow, r_step @ rot
        new_t = grow * r_step @ (t - mu) + mu + step[3:6]
        n_closest, n_dist, n_tri, n_bary = measure(new_scale, new_rot, new_t)
        new_rms = float(np.sqrt((n_dist ** 2).mean()))
        if new_rms > rms:                                # a bad step: keep the previous transform
            used -= 1
            break
        scale, rot, t = new_scale, new_rot, new_t
        closest, dist, tri, bary = n_closest, n_dist, n_tri, n_bary
        improved, rms = rms - new_rms, new_rms
        if improved < tol:
            break
    return scale, rot, t, used


def summarize(results) -> dict:
    """Aggregate per-scan results: the mean over scans of mean/median/RMSE (mm), and the count."""
    results = list(results)
    if not results:
        raise ValueError("no results to summarize")
    out = {k: float(np.mean([r[k] for r in results])) for k in ("mean_mm", "median_mm", "rmse_mm")}
    out["num_scans"] = len(results)
    return out


def paired_improvement(method, baseline, key: str = "mean_mm") -> dict:
    """How much ``method`` beats ``baseline`` on the same scans (two lists of per-scan results, in the
    same order): per scan d = baseline[key] - method[key] (mm, positive = method better). Returns
    mean_mm (mean d), ci95_mm ([low, high]: Student's t interval of that mean over scans), and
    better_fraction (share of scans with d > 0), num_scans. Paired because scans differ far more in
    difficulty than methods do: the interval says whether a margin is clear on this data."""
    from scipy import stats

    d = np.array([float(b[key]) - float(m[key]) for m, b in zip(method, baseline, strict=True)])
    if d.size < 2:
        raise ValueError("a paired comparison needs at least two scans")
    mean = float(d.mean())
    half = float(stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size))
    return {"mean_mm": mean, "ci95_mm": [mean - half, mean + half], "better_fraction": float((d > 0).mean()),
            "num_scans": int(d.size)}


def shape_r2(face_model: MorphableModel, predicted: Coefficients, truth: Coefficients) -> dict:
    """How much of the true identity and of the true expression the predictions explain, per group, in
    vertex space ([N, ...] coefficients, N >= 2 samples): R² = 1 - sum of squared vertex errors of the
    group's shape offset / sum of squared deviations of the true offsets from their mean over the data.
    Each component counts by how far it moves the surface, as in the mm metric. 0: no better than
    predicting the data's mean; negative: worse.

    Why beside the mm metric: the mm error mixes identity, expression and the whole face, so a model
    can beat the mean face by a little without recovering identity at all (the case of the tiny demo;
    see docs/training.md).

    ``identity_size_free``: the identity's R² with the uniform scaling of the mean shape projected out
    of every offset (``without_uniform_scale``). The size is 18 % of the identity's variance and an
    aligned crop does not show it (docs/refine.md, "Size and distance"): this is how much of the rest
    a model reads, the number to compare a weakly supervised model by. ``identity_at_mean_size``: the plain
    identity R² with the scaling projected out of the predictions only (each predicted face set to the mean
    face's size, as ``dfmvr convert mean-size`` does): above ``identity``, the model's size reading costs
    more than not reading it."""
    def offsets(group: str, c: Coefficients) -> np.ndarray:   # [N, V, 3]: that group's part of the shape
        identity, expression = c.identity, c.expression
        if group == "identity":
            expression = np.zeros_like(expression)
        else:
            identity = np.zeros_like(identity)
        return face_shape(face_model, identity, expression).astype(np.float64) - face_model.mean_shape

    out = {}
    for group in ("identity", "expression"):
        p, t = offsets(group, predicted), offsets(group, truth)
        spread = float(((t - t.mean(axis=0)) ** 2).sum())
        out[group] = 1.0 - float(((p - t) ** 2).sum()) / spread if spread > 0 else float("nan")
        if group == "identity":
            p, t = (x.reshape(len(x), -1) for x in (p, t))
            p_free = without_uniform_scale(p, face_model.mean_shape)
            out["identity_at_mean_size"] = 1.0 - float(((p_free - t) ** 2).sum()) / spread if spread > 0 else float("nan")
            t_free = without_uniform_scale(t, face_model.mean_shape)
            spread_free = float(((t_free - t_free.mean(axis=0)) ** 2).sum())
            out["identity_size_free"] = (1.0 - float(((p_free - t_free) ** 2).sum()) / spread_free
                                         if spread_free > 0 else float("nan"))
    return out


def rotation_error_deg(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Geodesic angle (degrees) between rotations given as Euler angles [..., 3] (``rotation_matrix``
    convention): the angle of R_pred^T R_true, whatever axis the error is about."""
    rp, rt = rotation_matrix(predicted).astype(np.float64), rotation_matrix(truth).astype(np.float64)
    # ||Rp - Rt||_F = 2 sqrt(2) sin(angle / 2): unlike arccos of the trace, exact near zero with the
    # float32 matrices of rotation_matrix (arccos read 0.013 degrees for equal angles)
    chord = np.linalg.norm(rp - rt, axis=(-2, -1)) / (2.0 * np.sqrt(2.0))
    return np.degrees(2.0 * np.arcsin(np.clip(chord, 0.0, 1.0)))


def slot_prior(truth: Coefficients) -> Coefficients:
    """The slot-prior baseline: every sample gets each view slot's mean pose over ``truth`` (rotation:
    the mean rotation matrix projected back onto SO(3); translation: the mean), everything else zero.
    What a network that reads the pose from the slot and not from the photo would at best output."""
    rot = rotation_matrix(truth.rotation).astype(np.float64).mean(axis=0)       # [V, 3, 3]
    u, _, vt = np.linalg.svd(rot)
    fix = np.tile(np.eye(3), rot.shape[:-2] + (1, 1))
    fix[..., 2, 2] = np.sign(np.linalg.det(u @ vt))                             # proper rotations
    mean_rot = euler_from_matrix(u @ fix @ vt)
    prior = COEFFS.zeros(truth.batch)
    prior.rotation[:] = mean_rot[None]
    prior.translation[:] = truth.translation.mean(axis=0)[None]
    return prior


def pose_errors(predicted: Coefficients, truth: Coefficients) -> dict:
    """Per-view head-pose errors of [N, ...] coefficients against the truth: rotation in degrees
    (geodesic), translation in mm (Euclidean). Returns {"rotation_deg"|"translation_mm": {"median",
    "mean", "per_view_median": {view: value}}}."""
    errors = {"rotation_deg": rotation_error_deg(predicted.rotation, truth.rotation),            # [N, V]
              "translation_mm": np.linalg.norm(predicted.translation - truth.translation, axis=-1)
              * MM_PER_MODEL_UNIT}
    return {name: {"median": float(np.median(e)), "mean": float(e.mean()),
                   "per_view_median": {v: float(np.median(e[:, i])) for i, v in enumerate(VIEWS)}}
            for name, e in errors.items()}


def face_size(shapes: np.ndarray) -> np.ndarray:
    """[N, V, 3] unposed shapes -> [N]: root mean square distance of the vertices from their centroid."""
    centred = np.asarray(shapes, np.float64) - np.asarray(shapes, np.float64).mean(axis=1, keepdims=True)
    return np.sqrt((centred ** 2).sum(-1).mean(-1))


def uniform_scale_direction(mean_shape: np.ndarray) -> np.ndarray:
    """Unit [V * 3] vertex-space direction of a uniform scaling of ``mean_shape`` [V, 3] about its
    centroid: the face's size, which an aligned crop does not show (docs/refine.md, "Size and distance")."""
    direction = (np.asarray(mean_shape, np.float64) - np.asarray(mean_shape, np.float64).mean(axis=0)).ravel()
    return direction / np.linalg.norm(direction)


def without_uniform_scale(changes: np.ndarray, mean_shape: np.ndarray) -> np.ndarray:
    """[..., V * 3] vertex-space shape changes with their component along a uniform scaling of
    ``mean_shape`` [V, 3] about its centroid projected out: the part of a shape an aligned crop shows
    (a face's absolute size it does not; docs/refine.md, "Size and distance")."""
    direction = uniform_scale_direction(mean_shape)
    changes = np.asarray(changes, np.float64)
    return changes - (changes @ direction)[..., None] * direction


def translation_breakdown(face_model: MorphableModel, predicted: Coefficients, truth: Coefficients,
                          camera: Camera) -> dict:
    """Where the per-view translation error of [N, ...] coefficients lies, N >= 2 samples.

    A photo shows a face's size over its distance: a face predicted (1 + s) times too big and put
    (1 + s) times too far draws the same picture, up to the slight perspective at a metre. So beside
    the median |error| per axis (mm; x right, y up, z towards the camera; depth is ``camera.distance``
    - z, ``dfmvr.face.camera``) this reports the spread of the predicted face's size error, its
    correlation with the relative depth error, and the depth error left once the size error is
    divided out (the depth the prediction implies for a face of the true size).
    """
    error_mm = (predicted.translation - truth.translation).astype(np.float64) * MM_PER_MODEL_UNIT   # [N, V, 3]
    size_error = (face_size(face_shape(face_model, predicted.identity, predicted.expression))
                  / face_size(face_shape(face_model, truth.identity, truth.expression)) - 1.0)      # [N]
    depth_true = camera.distance - truth.translation[..., 2].astype(np.float64)
    depth_pred = camera.distance - predicted.translation[..., 2].astype(np.float64)
    relative = (depth_pred / depth_true - 1.0).mean(axis=1)
    corrected_mm = (depth_pred / (1.0 + size_error[:, None]) - depth_true) * MM_PER_MODEL_UNIT
    constant = np.std(size_error) == 0 or np.std(relative) == 0
    return {"per_axis_median_mm": {axis: float(np.median(np.abs(error_mm[..., k]))) for k, axis in enumerate("xyz")},
            "depth_mean_error_mm": float(-error_mm[..., 2].mean()),      # > 0: placed too far
            "face_size_error_std": float(np.std(size_error)),
            "size_error_vs_relative_depth_error_corr": None if constant else float(np.corrcoef(size_error, relative)[0, 1]),
            "depth_size_corrected_median_mm": float(np.median(np.abs(corrected_mm)))}
