"""A synthetic morphable model with BFM's interface, built from first principles (no data).

Used wherever the real Basel Face Model is absent: tests, the synthetic multi-view dataset, and the
runtime's default. Same dimensions and conventions as Deep3D's ``BFM_model_front.mat`` (80 identity,
64 expression, 80 albedo bases already scaled by their standard deviation; decimetres; nose along +z).

Construction:
- the surface is a regular grid over a half-cylinder (angle around the head, height), so the face
  curves back at the cheeks for the side views; interior vertices touch exactly 6 triangles;
- the face (brow ridge, eye sockets and eyeballs, nose with alae, cheekbones, lips, chin, temples)
  is a sum of smooth bumps, written in terms of the frontal position (X right, Y up) of each vertex;
- the 68 iBUG keypoints are the vertices nearest to landmark targets placed on those same features;
- bases are semantic deformation fields (face width, nose length, jaw open, smile, skin tone, ...)
  followed by random smooth bump fields, orthonormalised in order and scaled by a decaying standard
  deviation, then rounded to float16-representable values so that the .npz can store them in half
  precision without changing the content hash.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import sparse
from scipy.linalg import solve_triangular

from . import parts as P
from .geometry import build_vertex_triangles
from .layout import COEFFS, PARSE_CLASSES
from .model import MorphableModel

__all__ = ["synthetic_face_model", "default_face_model", "DEFAULT_SEED", "FEATURES"]

DEFAULT_SEED = 0

# Frontal feature positions (decimetres, before centring). Eye level y=0.25, mouth line y=-0.6,
# chin -1.15, forehead top 1.15: 2.3 dm chin to forehead, ~1.6 dm wide at the cheeks.
FEATURES = {
    "eye_x": 0.32, "eye_y": 0.25, "eye_half_width": 0.15, "eye_upper": 0.055, "eye_lower": 0.045,
    "brow_y": 0.47, "nose_top_y": 0.32, "nose_tip_y": -0.2, "nose_base_y": -0.31,
    "mouth_y": -0.6, "mouth_half_width": 0.25, "chin_y": -1.15, "top_y": 1.15,
}
_F = FEATURES
_THETA_MAX = 1.38          # radians (79 degrees) around the head on each side
_HEAD_RADIUS = 0.80        # frontal half-width at the cheeks
_HEAD_DEPTH = 0.85         # how far the sides curve back


def default_face_model() -> MorphableModel:
    """The synthetic model with the project's default seed: what training and the runtime use when no
    face model is given."""
    return synthetic_face_model(DEFAULT_SEED)


def synthetic_face_model(seed: int = DEFAULT_SEED, num_vertices: int = 3000) -> MorphableModel:
    """Build the synthetic face model (deterministic for ``seed``; ~``num_vertices`` vertices).

    The mean surface, keypoints and parts do not depend on the seed; the bases' random tails do.
    Built models are cached; each call returns a private copy, so callers may modify it.
    """
    cached = _build(int(seed), int(num_vertices))
    return MorphableModel(**{k: getattr(cached, k).copy() for k in cached.array_names()},
                          name=cached.name, source=dict(cached.source))


@functools.lru_cache(maxsize=4)
def _build(seed: int, num_vertices: int) -> MorphableModel:
    theta, height, triangles, row_step = _grid(num_vertices)
    X, Y, Z = _surface(theta, height)
    design = np.stack([X, Y, Z], axis=1)                                 # design frame, [N, 3]
    keypoints = _keypoints(design, row_step)
    design_parts = P.parts_from_landmarks(design, keypoints)
    rng = np.random.default_rng(seed)
    adjacency = _adjacency(triangles, len(design))
    stretch = _height_slope(Y)                                          # d(final y) / d(design y)
    expression_sd = _decay(64, 0.05, 4, 0.9)
    expression_sd[0] = 0.12                                             # jaw open: the chin moves 12 mm at 1 sigma
    id_basis = _basis(_identity_fields(design) + _random_fields(design, rng, 80 - 17, 0.35, 0.15),
                      _decay(80, 0.05, 8, 0.8), rng, stretch)
    exp_basis = _basis(_expression_fields(design) + _random_fields(design, rng, 64 - 12, 0.15, 0.08, local=True),
                       expression_sd, rng, stretch)
    mean_albedo = _mean_albedo(design, design_parts, keypoints, adjacency)
    albedo_basis = _basis(_albedo_fields(design, design_parts, mean_albedo, adjacency)
                          + _random_fields(design, rng, 80 - 8, 0.3, 0.1, colour=True),
                          _decay(80, 0.07, 6, 0.9), rng)
    ref = np.stack([X, _height(Y), Z], axis=1)
    mean_shape = _half(ref - ref.mean(axis=0))
    parts = P.parts_from_landmarks(mean_shape, keypoints)   # as the BFM loaders derive them
    return MorphableModel(
        mean_shape=mean_shape, id_basis=id_basis, exp_basis=exp_basis,
        mean_albedo=_half(mean_albedo), albedo_basis=albedo_basis, triangles=triangles,
        vertex_triangles=build_vertex_triangles(triangles, len(design)), keypoints=keypoints,
        skin_mask=P.skin_mask_from_parts(parts, triangles), parts=parts,
        front_region=P.front_region_mask(mean_shape, keypoints, triangles),
        name=f"synthetic-seed{seed}", source={"generator": "dfmvr.face.synthetic", "seed": int(seed)},
    )


# --- mesh ---------------------------------------------------------------------------------------
def _grid(num_vertices: int):
    """Grid over (theta, height) clipped to the face outline -> theta [N], height [N], triangles [T, 3].

    Triangles are counter-clockwise seen from outside (theta and height increase to +x and +y)."""
    kept_fraction = 0.78                                   # share of the rectangle inside the outline
    cells = num_vertices / kept_fraction
    aspect = (2 * _THETA_MAX * _HEAD_RADIUS * 0.85) / (_F["top_y"] - _F["chin_y"])
    nv = int(round(np.sqrt(cells / aspect)))
    nu = int(round(cells / nv)) | 1                        # odd: a column on the midline
    t = np.linspace(_F["chin_y"], _F["top_y"], nv)
    # Put the mouth line exactly on a row: it becomes the dark seam that opens with the jaw.
    t = t + (_F["mouth_y"] - t[np.argmin(np.abs(t - _F["mouth_y"]))]) * np.clip(1 - np.abs(t - _F["mouth_y"]) / 0.6, 0, 1)
    th = np.linspace(-_THETA_MAX, _THETA_MAX, nu)
    TH, T = np.meshgrid(th, t)                             # [nv, nu]
    r = np.abs(TH) / _THETA_MAX
    inside = (T >= _F["chin_y"] + 0.95 * r ** 2.2 - 1e-9) & (T <= _F["top_y"] - 0.5 * r ** 2.5 + 1e-9)
    ids = np.arange(nu * nv).reshape(nv, nu)
    a, b, c, d = ids[:-1, :-1], ids[:-1, 1:], ids[1:, 1:], ids[1:, :-1]   # c = +u+v corner
    tri = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    flat_inside = inside.ravel()
    tri = tri[flat_inside[tri].all(axis=1)]
    used = np.zeros(nu * nv, bool)
    used[tri.ravel()] = True
    remap = np.cumsum(used) - 1
    tri = remap[tri].astype(np.int32)
    theta, height = _smooth_rim(TH.ravel()[used], T.ravel()[used], tri)
    return theta, height, tri, float(t[1] - t[0])


def _smooth_rim(theta, height, triangles, iterations: int = 12):
    """Slide the rim vertices along the boundary loop to turn the grid's staircase outline into a
    smooth curve (each moves by less than a cell, so no triangle flips)."""
    edges = np.sort(np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]]), axis=1)
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    rim_edges = unique[counts == 1]
    p = np.stack([theta / _THETA_MAX, height], axis=1)
    for _ in range(iterations):
        total = np.zeros_like(p)
        n = np.zeros(len(p))
        np.add.at(total, rim_edges[:, 0], p[rim_edges[:, 1]])
        np.add.at(total, rim_edges[:, 1], p[rim_edges[:, 0]])
        np.add.at(n, rim_edges.ravel(), 1)
        on_rim = n > 0
        p[on_rim] = 0.5 * p[on_rim] + 0.5 * total[on_rim] / n[on_rim, None]
    return p[:, 0] * _THETA_MAX, p[:, 1]


def _g(X, Y, cx, cy, sx, sy):
    return np.exp(-0.5 * ((X - cx) / sx) ** 2 - 0.5 * ((Y - cy) / sy) ** 2)


def _g2(X, Y, cx, cy, sx, sy):
    """A bump and its mirror image across the midline."""
    return _g(X, Y, cx, cy, sx, sy) + _g(X, Y, -cx, cy, sx, sy)


def _box(v, half, soft):
    return 1.0 / (1.0 + np.exp((np.abs(v) - half) / soft))


# The features are laid out in a design frame; the final heights compress the lower face a little
# (eyes to chin 1.24 dm) and extend the forehead, keeping 2.3 dm from chin to forehead top.
_DESIGN_Y = np.array([_F["chin_y"], _F["eye_y"], _F["top_y"]])
_FINAL_Y = np.array([-0.97, 0.27, 1.33])


def _height(y):
    return np.interp(y, _DESIGN_Y, _FINAL_Y)


def _height_slope(y):
    slopes = np.diff(_FINAL_Y) / np.diff(_DESIGN_Y)
    return np.where(y < _DESIGN_Y[1], slopes[0], slopes[1])


def _nose_height(X, Y):
    knots_y = np.array([-0.40, -0.33, -0.27, -0.20, -0.10, 0.10, 0.30, 0.45])
    knots_h = np.array([0.00, 0.05, 0.20, 0.26, 0.21, 0.11, 0.04, 0.00])
    h = np.interp(Y, knots_y, knots_h)
    width = np.interp(Y, [-0.3, 0.35], [0.075, 0.045])
    return h * np.exp(-0.5 * (X / width) ** 2) + 0.04 * _g(X, Y, 0, _F["nose_tip_y"], 0.05, 0.05)


def _surface(theta, height):
    """Frontal position of each grid vertex: X right, Y up, Z towards the viewer (decimetres)."""
    Y = height
    radius = _HEAD_RADIUS - 0.22 * np.clip((-0.2 - Y) / 0.95, 0, 1) ** 1.5     # narrower jaw
    X = radius * np.sin(theta)
    Z = _HEAD_DEPTH * (np.cos(theta) - 1.0)
    Z = Z - 0.35 * np.maximum(Y - 0.55, 0) ** 2 - 0.08 * np.maximum(-0.75 - Y, 0)
    ex, ey, my = _F["eye_x"], _F["eye_y"], _F["mouth_y"]
    lip_window = _box(X, _F["mouth_half_width"] - 0.02, 0.025)
    Z = Z + (
        0.06 * np.exp(-0.5 * ((Y - _F["brow_y"]) / 0.07) ** 2) * _box(X, 0.5, 0.06)     # brow ridge
        - 0.015 * _g(X, Y, 0, 0.40, 0.06, 0.05)                                       # glabella
        - 0.11 * _g2(X, Y, ex, ey + 0.01, 0.13, 0.085)                                # eye sockets
        + 0.05 * _g2(X, Y, ex, ey, 0.085, 0.05)                                       # eyeballs
        + 0.05 * _g2(X, Y, 0.47, -0.02, 0.13, 0.11)                                   # cheekbones
        + _nose_height(X, Y)
        + 0.09 * _g2(X, Y, 0.115, -0.265, 0.05, 0.045)                                # alae
        + 0.10 * _g(X, Y, 0, my - 0.02, 0.27, 0.22)                                   # muzzle
        + 0.035 * _g(X, Y, 0, my + 0.045, 0.2, 0.03) * lip_window                     # upper lip
        + 0.04 * _g(X, Y, 0, my - 0.06, 0.17, 0.04) * lip_window                      # lower lip
        - 0.035 * _g(X, Y, 0, my, 0.5, 0.008) * lip_window                            # mouth seam
        - 0.012 * _g(X, Y, 0, -0.44, 0.025, 0.05)                                     # philtrum
        - 0.03 * _g(X, Y, 0, -0.78, 0.15, 0.035)                                      # under the lip
        + 0.07 * _g(X, Y, 0, -0.95, 0.15, 0.09)                                       # chin
        - 0.025 * _g2(X, Y, 0.38, -0.5, 0.08, 0.15)                                   # nasolabial
        - 0.04 * _g2(X, Y, 0.62, 0.5, 0.1, 0.2)                                       # temples
    )
    return X, Y, Z


def _keypoints(ref, dy: float) -> np.ndarray:
    """The 68 iBUG keypoints as the vertices nearest (frontal XY) to targets on the features."""
    ex, ey, hw = _F["eye_x"], _F["eye_y"], _F["eye_half_width"]
    up, lo, my, mw = _F["eye_upper"], _F["eye_lower"], _F["mouth_y"], _F["mouth_half_width"]
    eye_r = [(-ex - hw, ey), (-ex - 0.05, ey + up), (-ex + 0.05, ey + up), (-ex + hw, ey),
             (-ex + 0.05, ey - lo), (-ex - 0.05, ey - lo)]
    eye_l = [(-x, y) for x, y in (eye_r[3], eye_r[2], eye_r[1], eye_r[0], eye_r[5], eye_r[4])]
    brow_r = [(-0.56, 0.44), (-0.47, 0.49), (-0.37, 0.51), (-0.26, 0.50), (-0.14, 0.48)]
    brow_l = [(-x, y) for x, y in brow_r[::-1]]
    bridge = [(0, y) for y in np.linspace(ey, _F["nose_tip_y"], 4)]
    base = [(x, _F["nose_base_y"] + 0.02 * (abs(x) > 0.05)) for x in (-0.12, -0.06, 0.0, 0.06, 0.12)]
    outer_top = [(-mw, my), (-0.17, my + 0.05), (-0.07, my + 0.09), (0, my + 0.08), (0.07, my + 0.09),
                 (0.17, my + 0.05), (mw, my)]
    outer_bottom = [(0.17, my - 0.07), (0.08, my - 0.10), (0, my - 0.105), (-0.08, my - 0.10), (-0.17, my - 0.07)]
    # dy: the rows just above and below the seam (the seam itself is a row).
    inner = [(-mw + 0.03, my), (-0.08, my + dy), (0, my + dy), (0.08, my + dy), (mw - 0.03, my),
             (0.08, my - dy), (0, my - dy), (-0.08, my - dy)]
    targets = np.array(_jaw_targets(ref) + brow_r + brow_l + bridge + base + eye_r + eye_l
                       + outer_top + outer_bottom + inner)
    d = ((ref[None, :, :2] - targets[:, None, :]) ** 2).sum(-1)
    return np.argmin(d, axis=1).astype(np.int32)


def _jaw_targets(ref) -> list:
    """17 points equally spaced along the lower face outline (ear to chin to ear), just inside it."""
    th = np.concatenate([np.full(20, -_THETA_MAX), np.linspace(-_THETA_MAX, _THETA_MAX, 200), np.full(20, _THETA_MAX)])
    r = np.abs(th) / _THETA_MAX
    bottom = _F["chin_y"] + 0.95 * r ** 2.2
    y = np.concatenate([np.linspace(0.12, bottom[20], 20), bottom[20:220], np.linspace(bottom[219], 0.12, 20)])
    X, Y, _ = _surface(th * 0.96, y + 0.03)
    arc = np.concatenate([[0], np.cumsum(np.hypot(np.diff(X), np.diff(Y)))])
    s = np.linspace(0, arc[-1], 17)
    return list(zip(np.interp(s, arc, X), np.interp(s, arc, Y)))


def _adjacency(triangles, n):
    t = triangles
    i = np.concatenate([t[:, 0], t[:, 1], t[:, 2], t[:, 1], t[:, 2], t[:, 0]])
    j = np.concatenate([t[:, 1], t[:, 2], t[:, 0], t[:, 0], t[:, 1], t[:, 2]])
    a = sparse.coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)).tocsr()
    a.data[:] = 1.0
    deg = np.asarray(a.sum(axis=1)).ravel()
    return sparse.diags(1.0 / deg) @ a                    # row-normalised: neighbour average


def _smooth(values, adjacency, iterations):
    for _ in range(iterations):
        values = 0.5 * values + 0.5 * (adjacency @ values)
    return values


# --- bases --------------------------------------------------------------------------------------
def _decay(k, first, knee, power):
    """Per-component standard deviation (peak displacement at 1 sigma) decaying with the index."""
    return first * (1.0 + np.arange(k) / knee) ** -power


def _half(a):
    """Round to float16-representable float32 values, every zero made +0.0: the sign of a zero that
    BLAS computes differs between kernels (OPENBLAS_CORETYPE), and the arrays must not."""
    return np.asarray(a, np.float32).astype(np.float16).astype(np.float32) + np.float32(0)


def _basis(fields, peaks, rng, y_stretch=None):
    """Fields (list of [N, C]) -> orthonormalised in order, scaled so that the largest per-vertex
    displacement at 1 sigma equals ``peaks[k]`` -> [N, C, K] float32 (float16-representable).

    A field that is (numerically) a combination of earlier ones, e.g. a part with no vertices on a
    coarse mesh, is replaced by random noise so that the basis keeps full rank."""
    n, c = np.asarray(fields[0]).shape
    if y_stretch is not None:   # displacements follow the design -> final height map
        fields = [np.asarray(f) * np.stack([np.ones(n), y_stretch, np.ones(n)], axis=1) for f in fields]
    m = np.stack([np.asarray(f, np.float64).ravel() for f in fields], axis=1)      # [N*C, K]
    gram = np.einsum("dk,dl->kl", m, m)      # not BLAS: steady speed on a busy machine, same bits
    try:    # fast path: Gram-Schmidt in order through the Cholesky factor of the K x K Gram matrix
        chol = np.linalg.cholesky(gram)
        well_posed = np.all(np.diag(chol) > 1e-4 * np.sqrt(np.diag(gram)))
    except np.linalg.LinAlgError:
        well_posed = False
    if well_posed:
        q = solve_triangular(chol, m.T, lower=True).T
    else:
        q = _gram_schmidt(m, rng)
    q = q.reshape(n, c, -1)
    peak = np.linalg.norm(q, axis=1).max(axis=0)
    return _half(q * (np.asarray(peaks) / peak)[None, None])


def _gram_schmidt(m, rng):
    """Column-by-column Gram-Schmidt of m [D, K]; dependent columns are replaced by noise."""
    q = np.zeros_like(m)
    for k, v in enumerate(m.T):
        for attempt in range(3):
            norm0 = np.linalg.norm(v)
            for _ in range(2):                       # Gram-Schmidt twice: orthogonal to float64 precision
                v = v - q[:, :k] @ (q[:, :k].T @ v)
            if np.linalg.norm(v) > 1e-6 * max(norm0, 1e-30):
                break
            v = rng.normal(size=len(v))
        q[:, k] = v / np.linalg.norm(v)
    return q


def _identity_fields(ref):
    X, Y, Z = ref.T
    one, zero = np.ones_like(X), np.zeros_like(X)
    sx = np.sign(X)
    jaw = 1 / (1 + np.exp((Y + 0.4) / 0.12))
    nose = _nose_height(X, Y) / 0.26
    v = lambda x, y, z: np.stack([x * one, y * one, z * one], axis=1)
    return [
        v(X, 0, 0),                                                     # face width
        v(0, Y, 0),                                                     # face length
        v(0, 0, Z - Z.mean()),                                          # face depth
        v(0, -0.7, 0) * _g(X, Y, 0, -0.1, 0.14, 0.22)[:, None],         # nose length
        v(0, 0, 1) * nose[:, None],                                     # nose protrusion
        v(X, 0, 0) * _g(X, Y, 0, -0.25, 0.16, 0.1)[:, None],            # nose width
        v(X, 0, -0.3 * np.abs(X)) * jaw[:, None],                       # jaw width
        v(0, -1, 0.6) * _g(X, Y, 0, -1.0, 0.22, 0.15)[:, None],         # chin height and protrusion
        v(sx, 0, 0) * _g2(X, Y, _F["eye_x"], _F["eye_y"], 0.14, 0.12)[:, None],   # eye spacing
        v(0, 0, 1) * (np.exp(-0.5 * ((Y - _F["brow_y"]) / 0.08) ** 2) * _box(X, 0.5, 0.06))[:, None],
        v(0.5 * sx, 0, 1) * _g2(X, Y, 0.45, -0.25, 0.18, 0.2)[:, None],  # cheek fullness
        v(0, 0.3 * np.sign(Y - _F["mouth_y"]), 1) * _g(X, Y, 0, _F["mouth_y"], 0.2, 0.07)[:, None],  # lips
        v(0, 0, -1) * (np.maximum(Y - 0.4, 0) ** 2)[:, None],           # forehead slope
        v(X, 0, 0) * _g(X, Y, 0, _F["mouth_y"], 0.3, 0.1)[:, None],     # mouth width
        v(0, 0, -1) * _g2(X, Y, _F["eye_x"], _F["eye_y"], 0.12, 0.09)[:, None],   # eye depth
        v(0, 0, X),                                                     # asymmetry (yaw of the face)
        v(0, 1, 0.3) * _g2(X, Y, 0.47, 0.0, 0.13, 0.12)[:, None],       # cheekbone height
    ]


def _expression_fields(ref):
    X, Y, Z = ref.T
    one = np.ones_like(X)
    my, mw = _F["mouth_y"], _F["mouth_half_width"]
    v = lambda x, y, z: np.stack([x * one, y * one, z * one], axis=1)
    # Sharp at the lips (they part), soft beyond the mouth corners (the cheeks stretch).
    softness = 0.012 + 0.2 * np.clip((np.abs(X) - mw + 0.03) / 0.3, 0, 1)
    below = 1 / (1 + np.exp((Y - my) / softness)) * _box(X, 0.6, 0.12)
    hinge_y, hinge_z = -0.1, -0.8
    mouth = _g(X, Y, 0, my, 0.22, 0.1)
    upper_lid = _g2(X, Y, _F["eye_x"], _F["eye_y"] + 0.04, 0.09, 0.035)
    brows = np.exp(-0.5 * ((Y - _F["brow_y"]) / 0.1) ** 2) * _box(X, 0.6, 0.06)
    return [
        v(0, -(Z - hinge_z), Y - hinge_y) * below[:, None],              # jaw open (rotation about the ear axis)
        v(np.sign(X) * 0.6, 1, -0.3) * _g2(X, Y, mw, my, 0.08, 0.08)[:, None]
        + v(0, 0.4, 0.4) * _g2(X, Y, 0.33, -0.3, 0.12, 0.12)[:, None],    # smile
        v(0, 1, 0) * brows[:, None],                                    # brow raise
        v(-np.sign(X) * 0.6, -1, 0.3) * _g2(X, Y, 0.15, _F["brow_y"], 0.08, 0.07)[:, None],   # frown
        v(0, -1, 0.2) * upper_lid[:, None],                             # eyes close
        v(-X * 3, 0, 1) * mouth[:, None],                               # pucker
        v(np.sign(X) * 0.5, 0, 1) * _g2(X, Y, 0.4, -0.45, 0.12, 0.15)[:, None],   # cheek puff
        v(1, 0, 0) * _g(X, Y, 0, my, 0.25, 0.15)[:, None],              # mouth sideways
        v(np.sign(X), -0.3, -0.3) * _g2(X, Y, mw, my, 0.1, 0.08)[:, None],          # lip stretch
        v(0, -1, 0.3) * _g(X, Y, 0, my - 0.07, 0.16, 0.04)[:, None],    # lower lip down
        v(0, 1, 0.3) * _g(X, Y, 0, my + 0.05, 0.16, 0.04)[:, None],     # upper lip raise
        v(1, 0, 0) * below[:, None],                                    # jaw sideways
    ]


def _random_fields(ref, rng, count, sigma_hi, sigma_lo, local=False, colour=False):
    """``count`` smooth fields [N, 3], each a few Gaussian bumps (mirrored in 3 of 4 fields) with
    random centres and directions; bump size shrinks along the list so later bases carry detail."""
    X, Y = ref[:, 0], ref[:, 1]
    out = []
    for k in range(count):
        sigma = sigma_hi + (sigma_lo - sigma_hi) * k / max(count - 1, 1)
        f = np.zeros((len(X), 3))
        mirrored = rng.random() < 0.75
        for _ in range(int(rng.integers(2, 6))):
            if local:   # expressions live around the mouth, eyes and brows
                cx, cy = rng.choice([[0.0, -0.6], [0.3, 0.3], [0.3, 0.5], [0.25, -0.45], [0.0, -0.9]])
                cx, cy = cx + rng.normal(0, 0.08), cy + rng.normal(0, 0.08)
            else:
                cx, cy = rng.uniform(-0.7, 0.7), rng.uniform(-1.1, 1.1)
            if colour:   # skin-like variation: mostly lightness, then red-brown and yellow axes
                d = rng.normal(0, 1, 3) @ np.array([[0.7, 0.55, 0.45], [0.45, -0.05, -0.2], [0.15, 0.15, -0.3]])
            else:
                d = rng.normal(0, 1, 3) * np.array([0.6, 0.6, 1.0])
            f += _g(X, Y, cx, cy, sigma, sigma)[:, None] * d
            if mirrored:
                f += _g(X, Y, -cx, cy, sigma, sigma)[:, None] * (d if colour else d * [-1, 1, 1])
        out.append(f)
    return out


def _masks(parts):
    idx = {name: i for i, name in enumerate(PARSE_CLASSES)}
    lips = np.isin(parts, [idx["upper_lip"], idx["lower_lip"]]).astype(float)
    brows = np.isin(parts, [idx["left_brow"], idx["right_brow"]]).astype(float)
    eyes = np.isin(parts, [idx["left_eye"], idx["right_eye"]]).astype(float)
    return lips, brows, eyes, (parts == idx["mouth"]).astype(float)


def _mean_albedo(ref, parts, keypoints, adjacency):
    """Mean RGB albedo [N, 3] in [0, 1]: skin, lips, brows, sclera and iris, softly blended."""
    X, Y = ref[:, 0], ref[:, 1]
    lips, brows, eyes, mouth = _masks(parts)
    colour = np.tile([0.74, 0.54, 0.44], (len(X), 1))
    colour += 0.05 * _g2(X, Y, 0.42, -0.2, 0.12, 0.12)[:, None] * [1, -0.3, -0.3]     # cheeks
    colour = np.where(lips[:, None] > 0, [0.68, 0.38, 0.36], colour)
    colour = np.where(brows[:, None] > 0, [0.30, 0.21, 0.16], colour)
    colour = _smooth(colour, adjacency, 2)
    colour = np.where(mouth[:, None] > 0, [0.25, 0.08, 0.08], colour)
    centres = [ref[keypoints[36:42]].mean(0), ref[keypoints[42:48]].mean(0)]
    iris = np.zeros(len(X), bool)
    for c in centres:
        iris |= np.hypot(X - c[0], Y - c[1]) < 0.055
    colour = np.where(eyes[:, None] > 0, np.where(iris[:, None], [0.22, 0.15, 0.11], [0.86, 0.82, 0.78]), colour)
    return np.clip(colour, 0, 1)


def _albedo_fields(ref, parts, mean_albedo, adjacency):
    X, Y = ref[:, 0], ref[:, 1]
    lips, brows, eyes, _ = _masks(parts)
    skin = 1 - np.maximum(lips, np.maximum(brows, eyes))
    soft = lambda m: _smooth(m, adjacency, 3)[:, None]
    return [
        mean_albedo * soft(skin),                                       # skin brightness
        soft(skin) * [1.0, -0.2, -0.4],                                  # redness
        soft(skin) * [0.3, 0.3, -0.6],                                   # yellowness
        soft(lips) * [0.6, -0.1, -0.1],                                  # lip colour
        soft(brows) * [-1.0, -0.9, -0.8],                                # brow darkness
        _g2(X, Y, 0.42, -0.2, 0.12, 0.12)[:, None] * [1.0, 0.1, 0.1],    # blush
        soft(eyes) * [0.2, 0.3, 0.5],                                    # eye colour
        np.clip(-0.6 - Y, 0, None)[:, None] * [-0.5, -0.45, -0.4],       # beard shadow
    ]
