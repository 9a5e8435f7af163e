"""Which triangle each pixel shows: scanline coverage in numpy, the last triangle in draw order wins.

The overlay painter used to fill triangles one OpenCV call at a time, far to near (~4,500 calls per
panel, bound by the per-call overhead). Here the same picture is computed with a handful of array
operations per image instead of per triangle:

1. every (triangle, pixel row) pair whose row centre lies inside the triangle's vertical extent;
2. the exact span of pixel centres inside the closed triangle on that row (where its edges cross it);
3. the spans expanded to pixel indices, and each pixel keeps the largest draw rank covering it
   (``np.maximum.at``: defined for repeated indices, unlike fancy assignment).

Coverage rule: a pixel is covered when its centre lies inside or on the triangle, so triangles that
share an edge leave no gap between them. OpenCV's fillConvexPoly also paints the boundary pixels its
edge lines touch, so its silhouettes are up to a pixel wider and, along an edge two triangles share,
the later one takes a pixel more.
"""

from __future__ import annotations

import numpy as np

__all__ = ["nearest_triangle_image", "covered_pixels_reference", "nearest_triangle_image_opencv"]

# Pixels expanded per pass: bounds the temporary arrays (a few 8-byte arrays of this length) when
# triangles are huge, e.g. a mesh almost touching the camera. Faces at overlay size use ~100k.
_PIXELS_PER_PASS = 1 << 22


def nearest_triangle_image(triangle_pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """[height, width] int32: for each pixel, the index of the last triangle covering its centre, or -1.

    triangle_pixels  [T, 3, 2] float, vertex positions in pixels (u right, v down, pixel centres at
                     +0.5), in draw order: a later triangle hides an earlier one where both cover a
                     pixel. Either winding; triangles with non-finite vertices or zero area cover nothing.
    """
    tri = np.asarray(triangle_pixels, np.float64)
    if tri.ndim != 3 or tri.shape[1:] != (3, 2):
        raise ValueError(f"triangle_pixels must be [T, 3, 2], got {tri.shape}")
    winner = np.full(max(height, 0) * max(width, 0), -1, np.int32)
    usable = _usable(tri)
    if not usable.any():
        return winner.reshape(max(height, 0), max(width, 0))
    index = np.nonzero(usable)[0].astype(np.int32)
    rows, row_of_triangle, left, right = _spans(tri[index] - 0.5, height, width)  # centres at integers
    counts = right - left + 1                                 # 0 where a row misses the triangle
    for chunk in _chunks(counts, _PIXELS_PER_PASS):
        n = counts[chunk]
        starts = np.cumsum(n) - n
        # pixel = row * width + left + (position within the span), expanded with one repeat
        offset = rows[chunk] * width + left[chunk] - starts
        pixels = np.arange(int(n.sum()), dtype=np.int64) + np.repeat(offset, n)
        np.maximum.at(winner, pixels, np.repeat(index[row_of_triangle[chunk]], n))
    return winner.reshape(height, width)


def _usable(tri: np.ndarray) -> np.ndarray:
    """[T] bool: finite vertices and a non-zero area (a segment or a point covers no centre)."""
    (x0, x1, x2), (y0, y1, y2) = tri[:, :, 0].T, tri[:, :, 1].T
    with np.errstate(invalid="ignore", over="ignore"):
        area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
        return np.isfinite(area) & (area != 0)


def _spans(tri: np.ndarray, height: int, width: int):
    """Every (row, triangle) pair with its first and last covered column, rows within the image.

    Each triangle's vertices sorted by y: top, middle, bottom. On a row between top and bottom, one
    side of the span is on the long edge (top-bottom), the other on the short edge above the middle
    vertex (top-middle) or from it down (middle-bottom). A horizontal short edge is never the one
    used except on its own row, where the other short edge starts at its end: that is its span.
    """
    order = np.argsort(tri[:, :, 1], axis=1, kind="stable") + 3 * np.arange(len(tri))[:, None]
    x, y = tri[:, :, 0].ravel()[order], tri[:, :, 1].ravel()[order]          # [T, 3] each, by y
    (xt, xm, xb), (yt, ym, yb) = x.T, y.T
    with np.errstate(divide="ignore", invalid="ignore"):
        slope_long = (xb - xt) / (yb - yt)                     # yb > yt: zero-area triangles are gone
        slope_upper = np.where(ym > yt, (xm - xt) / (ym - yt), 0.0)
        slope_lower = np.where(yb > ym, (xb - xm) / (yb - ym), 0.0)
    top = np.maximum(np.ceil(yt), 0).astype(np.int64)
    bottom = np.minimum(np.floor(yb), height - 1).astype(np.int64)
    rows_per_triangle = np.maximum(bottom - top + 1, 0)
    # Per-triangle values repeated once per row (contiguous per triangle: cheaper than a gather).
    per_triangle = np.stack([xt, yt, xm, ym, slope_long, slope_upper, slope_lower,
                             np.arange(len(tri), dtype=np.float64)], axis=1)
    t_xt, t_yt, t_xm, t_ym, s_long, s_upper, s_lower, t_index = np.repeat(per_triangle, rows_per_triangle, axis=0).T
    starts = np.cumsum(rows_per_triangle) - rows_per_triangle
    rows = np.arange(len(t_xt), dtype=np.int64) - np.repeat(starts - top, rows_per_triangle)
    r = rows.astype(np.float64)
    along_long = t_xt + (r - t_yt) * s_long
    along_short = np.where(r < t_ym, t_xt + (r - t_yt) * s_upper, t_xm + (r - t_ym) * s_lower)
    # Centres exactly on an edge count as inside; a hair of slack absorbs the division's rounding.
    left = np.maximum(np.ceil(np.minimum(along_long, along_short) - 1e-9), 0)
    right = np.minimum(np.floor(np.maximum(along_long, along_short) + 1e-9), width - 1)
    right = np.where(left <= right, right, left - 1)
    return rows, t_index.astype(np.int64), left.astype(np.int64), right.astype(np.int64)


def _chunks(counts: np.ndarray, budget: int):
    """Consecutive slices of ``counts`` whose sums stay within ``budget`` (one item may exceed it)."""
    ends = np.cumsum(counts)
    start = 0
    while start < len(counts):
        done = ends[start - 1] if start else 0
        stop = max(int(np.searchsorted(ends, done + budget, side="right")), start + 1)
        yield slice(start, stop)
        start = stop


def covered_pixels_reference(triangle_pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """The same image by brute force: every pixel centre tested against every triangle's three edges.

    O(T x H x W): for tests on small images only.
    """
    tri = np.asarray(triangle_pixels, np.float64)
    cy, cx = np.mgrid[0:height, 0:width] + 0.5
    winner = np.full((height, width), -1, np.int32)
    for t, ((x0, y0), (x1, y1), (x2, y2)) in enumerate(tri):
        if not _usable(tri[t:t + 1])[0]:
            continue
        e0 = (x1 - x0) * (cy - y0) - (y1 - y0) * (cx - x0)
        e1 = (x2 - x1) * (cy - y1) - (y2 - y1) * (cx - x1)
        e2 = (x0 - x2) * (cy - y2) - (y0 - y2) * (cx - x2)
        inside = ((e0 >= 0) & (e1 >= 0) & (e2 >= 0)) | ((e0 <= 0) & (e1 <= 0) & (e2 <= 0))
        winner[inside] = t
    return winner


def nearest_triangle_image_opencv(triangle_pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """The same image the way the painter drew it before: one ``cv2.fillConvexPoly`` per triangle.

    Kept to compare against (tests: equal except on silhouette pixels; benchmarks: the time per
    overlay). Vertices are rounded to 1/16 pixel (OpenCV's fixed point).
    """
    import cv2

    shift = 4
    tri = np.asarray(triangle_pixels, np.float64)
    winner = np.full((height, width), -1, np.int32)
    finite = np.isfinite(tri).all(axis=(1, 2))
    fixed = np.round((np.where(finite[:, None, None], tri, 0.0) - 0.5) * (1 << shift)).astype(np.int32)
    for t in np.nonzero(finite)[0].tolist():
        cv2.fillConvexPoly(winner, fixed[t], t, cv2.LINE_8, shift)
    return winner
