"""Per-vertex face parts, skin mask and evaluation region, derived from the 68 iBUG keypoints.

BFM ships keypoints but no parse classes; the synthetic model has both. Both get their labels the
same way here: the mean shape is seen from the front (orthographic, x right, y up), the 68 landmarks
are joined into polygons (brows, eyes, nose, lips, inner mouth) and every vertex inside a polygon
takes that polygon's class from ``layout.PARSE_CLASSES``; everything else is skin.

iBUG order: jaw 0-16, right brow 17-21, left brow 22-26, nose bridge 27-30, nostril base 31-35, right
eye 36-41, left eye 42-47, outer lip 48-59, inner lip 60-67 ("left"/"right" are the subject's own:
the subject's right side is on the image left, at -x).
"""

from __future__ import annotations

import numpy as np

from .layout import PARSE_CLASSES

__all__ = [
    "JAW", "RIGHT_BROW", "LEFT_BROW", "NOSE_BRIDGE", "NOSE_BASE", "RIGHT_EYE", "LEFT_EYE",
    "OUTER_LIP", "INNER_LIP", "NOSE_TIP", "points_in_polygon", "landmark_polygons",
    "parts_from_landmarks", "boundary_vertices", "ring_distance", "front_region_mask",
    "skin_mask_from_parts",
]

JAW = np.arange(0, 17)
RIGHT_BROW = np.arange(17, 22)
LEFT_BROW = np.arange(22, 27)
NOSE_BRIDGE = np.arange(27, 31)
NOSE_BASE = np.arange(31, 36)
RIGHT_EYE = np.arange(36, 42)
LEFT_EYE = np.arange(42, 48)
OUTER_LIP = np.arange(48, 60)
INNER_LIP = np.arange(60, 68)
NOSE_TIP = 30

_CLASS = {name: i for i, name in enumerate(PARSE_CLASSES)}
# Later entries win where polygons overlap (a lip polygon may graze the nose base, etc.).
_PAINT_ORDER = ("nose", "right_brow", "left_brow", "right_eye", "left_eye", "upper_lip", "lower_lip", "mouth")


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd test. points [P, 2], polygon [K, 2] (closed implicitly) -> inside [P] bool."""
    x, y = points[:, 0:1], points[:, 1:2]                   # [P, 1]
    x0, y0 = polygon[:, 0], polygon[:, 1]                    # [K]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    crosses = (y0 > y) != (y1 > y)                           # edge straddles the horizontal ray
    with np.errstate(divide="ignore", invalid="ignore"):
        x_at = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    hits = crosses & (x < x_at)
    return (hits.sum(axis=1) % 2) == 1


def _face_frame(lm: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Origin, 2x2 rotation into a frame with x from the right eye to the left eye, and the outer
    inter-ocular distance (36-45), from frontal landmarks [68, 2]."""
    axis = lm[45] - lm[36]
    iod = float(np.linalg.norm(axis))
    ex = axis / max(iod, 1e-12)
    rot = np.stack([ex, np.array([-ex[1], ex[0]])])         # rows: frame x, frame y (up)
    origin = lm[36:48].mean(axis=0)
    return origin, rot, iod


def landmark_polygons(landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """Frontal 2D landmarks [68, 2] (x right, y up, any units) -> polygons [K, 2] per parse class.

    Brows are iBUG polylines along the brow; they are thickened into a band (a little above, more
    below, thinning at the tail). The nose polygon runs from the bridge top (27) around the alae to
    the nostril base (31-35). Thicknesses scale with the outer inter-ocular distance.
    """
    lm = np.asarray(landmarks, np.float64)
    origin, rot, iod = _face_frame(lm)
    local = (lm - origin) @ rot.T                             # frame coordinates
    up = np.array([0.0, 1.0])

    def back(p):
        return np.asarray(p) @ rot + origin

    def brow(idx, outer_first):
        line = local[idx]
        taper = np.linspace(0.55, 1.0, len(idx)) if outer_first else np.linspace(1.0, 0.55, len(idx))
        top = line + up * 0.03 * iod
        bottom = line - up[None] * (0.10 * iod * taper)[:, None]
        return back(np.concatenate([top, bottom[::-1]]))

    def nose():
        bridge_top, tip = local[27], local[30]
        base = local[31:36]
        half_top = 0.07 * iod
        half_ala = max(0.5 * (base[4, 0] - base[0, 0]) + 0.05 * iod, half_top)
        cx = tip[0]
        ala_y = base[:, 1].min() + 0.35 * (tip[1] - base[:, 1].min())
        left_side = [[bridge_top[0] - half_top, bridge_top[1]], [cx - half_ala, ala_y]]
        right_side = [[cx + half_ala, ala_y], [bridge_top[0] + half_top, bridge_top[1]]]
        poly = np.concatenate([[bridge_top + up * 0.02 * iod], left_side, base, right_side])
        return back(poly)

    return {
        "right_brow": brow(RIGHT_BROW, outer_first=True),
        "left_brow": brow(LEFT_BROW, outer_first=False),
        "right_eye": lm[RIGHT_EYE],
        "left_eye": lm[LEFT_EYE],
        "nose": nose(),
        "upper_lip": lm[[48, 49, 50, 51, 52, 53, 54, 64, 63, 62, 61, 60]],
        "lower_lip": lm[[54, 55, 56, 57, 58, 59, 48, 60, 67, 66, 65, 64]],
        "mouth": lm[INNER_LIP],
    }


def parts_from_landmarks(mean_shape: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """Parse class per vertex [N] uint8 (``layout.PARSE_CLASSES``) from the frontal mean shape.

    mean_shape [N, 3] (face looking down +z), keypoints [68] 0-based vertex ids. Vertices inside no
    landmark polygon are skin (1); no vertex is background.
    """
    xy = np.asarray(mean_shape, np.float64)[:, :2]
    polygons = landmark_polygons(xy[np.asarray(keypoints)])
    parts = np.full(len(xy), _CLASS["skin"], np.uint8)
    for name in _PAINT_ORDER:
        parts[points_in_polygon(xy, polygons[name])] = _CLASS[name]
    return parts


def boundary_vertices(triangles: np.ndarray, num_vertices: int) -> np.ndarray:
    """Vertices on the mesh rim [N] bool: ends of edges used by exactly one triangle."""
    tri = np.asarray(triangles, np.int64)
    edges = np.sort(np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]]), axis=1)
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    rim = np.zeros(num_vertices, bool)
    rim[unique[counts == 1].ravel()] = True
    return rim


def ring_distance(triangles: np.ndarray, num_vertices: int, seeds: np.ndarray, max_rings: int) -> np.ndarray:
    """Edge-hop distance [N] int from the ``seeds`` [N] bool vertices, capped at ``max_rings`` + 1."""
    tri = np.asarray(triangles, np.int64)
    a = np.concatenate([tri[:, 0], tri[:, 1], tri[:, 2]])
    b = np.concatenate([tri[:, 1], tri[:, 2], tri[:, 0]])
    dist = np.full(num_vertices, max_rings + 1, np.int64)
    reached = np.asarray(seeds, bool).copy()
    dist[reached] = 0
    for ring in range(1, max_rings + 1):
        grow = np.zeros(num_vertices, bool)
        grow[b[reached[a]]] = True
        grow[a[reached[b]]] = True
        new = grow & ~reached
        dist[new] = ring
        reached |= new
    return dist


def front_region_mask(mean_shape: np.ndarray, keypoints: np.ndarray, triangles: np.ndarray,
                      radius: float = 0.95, rim_rings: int = 2) -> np.ndarray:
    """The evaluation region [N] bool: vertices within ``radius`` (model units; 0.95 dm = 95 mm, the
    NoW crop) of the nose tip (keypoint 30), minus the ``rim_rings`` outermost rings of the mesh."""
    mean_shape = np.asarray(mean_shape, np.float64)
    tip = mean_shape[int(np.asarray(keypoints)[NOSE_TIP])]
    near = np.linalg.norm(mean_shape - tip, axis=1) <= radius
    rim = ring_distance(triangles, len(mean_shape), boundary_vertices(triangles, len(mean_shape)), rim_rings)
    return near & (rim > rim_rings)


def skin_mask_from_parts(parts: np.ndarray, triangles: np.ndarray, rim_rings: int = 3) -> np.ndarray:
    """Skin-statistics mask [N] bool (Deep3D's skinmask role): skin and nose vertices away from the rim."""
    parts = np.asarray(parts)
    rim = ring_distance(triangles, len(parts), boundary_vertices(triangles, len(parts)), rim_rings)
    return np.isin(parts, [_CLASS["skin"], _CLASS["nose"]]) & (rim > rim_rings)
