"""overlay.png: the three input photos side by side, each with the reconstruction painted over it in
that view's pose, so a person sees at a glance whether the fit is right.

The mesh is projected into the 224 crop by the card's camera, then mapped back onto the photo with
the inverse of the alignment similarity (the crop itself with --aligned), then scaled to the overlay
height. Projected landmarks are drawn as dots.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..atomic import atomic_write_bytes
from ..face.camera import project
from ..face.paint import paint_mesh

__all__ = ["OVERLAY_HEIGHT", "overlay_image", "encode_overlay", "write_overlay"]

OVERLAY_HEIGHT = 512      # pixels; every photo is scaled to this height
MESH_OPACITY = 0.6
LANDMARK_RGB = (40, 255, 80)
PNG_PARAMS = [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]
# overlay.jpg (--format jpg): the same picture, lossy. libpng costs ~29-34 ms for the 512 x 1536 overlay
# whatever its settings (uncompressed included: the per-row work, not zlib); JPEG at quality 92 ~8 ms and
# a seventh of the bytes (benchmarks/results/e2e_overlap_jpg_overlay.json, writers).
JPEG_PARAMS = [cv2.IMWRITE_JPEG_QUALITY, 92]


# The painted mesh is simplified: BFM's 70k triangles to about this many, the bundled synthetic model's
# 5,995 to ~4,500. Side by side on the example triplet at 512 px, 4,000 looks like 8,000 under the 60 %
# blend; 2,500 shows facets. The vectorised painter's cost is mostly per pixel now, but its per-triangle
# work still adds up: one 512 px panel of a BFM-sized mesh (73.7k triangles) takes 35 ms, simplified
# 7 ms; the bundled model's 6.0 ms, simplified 5.2 ms (benchmarks/results/painter.json).
OVERLAY_TRIANGLES = 4000


def overlay_triangles(mean_shape: np.ndarray, triangles: np.ndarray, target: int = OVERLAY_TRIANGLES) -> np.ndarray:
    """A coarser triangle list over the same vertices, for painting previews fast: [T', 3] int32.

    Vertex clustering on a regular grid over the mean shape (decimetres): each vertex is replaced by
    its cell's first vertex, triangles that collapse are dropped and duplicates removed. Winding is
    kept, so back-face culling still works. Meshes with <= ``target`` triangles are returned as they are.
    """
    tris = np.asarray(triangles, np.int64)
    if len(tris) <= target:
        return tris.astype(np.int32)
    lo, hi = mean_shape.min(axis=0), mean_shape.max(axis=0)
    # choose the cell so that the surface (~ two dimensions) keeps ~target/2 clusters
    cell = float(np.sqrt(np.prod(np.sort(hi - lo)[1:]) / (target / 2.0)))
    keys = np.floor((mean_shape - lo) / cell).astype(np.int64)
    _, first, cluster = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    rep = first[cluster.reshape(-1)][tris]                              # [T, 3] representative vertices
    ok = (rep[:, 0] != rep[:, 1]) & (rep[:, 1] != rep[:, 2]) & (rep[:, 0] != rep[:, 2])
    rep = rep[ok]
    # drop duplicates (same vertex set) while keeping each survivor's winding
    _, unique = np.unique(np.sort(rep, axis=1), axis=0, return_index=True)
    return rep[np.sort(unique)].astype(np.int32)


def overlay_image(pipe, rec, height: int = OVERLAY_HEIGHT) -> np.ndarray:
    """[height, sum of widths, 3] uint8 RGB: photos (or crops) with the posed, lit mesh painted over."""
    panels = []
    mesh = rec.mesh
    for v, sim in enumerate(rec.prepared.similarities):
        if rec.prepared.photos is None:      # photos not kept: draw on the crop
            sim = None
        photo = rec.prepared.crops[v] if sim is None else rec.prepared.photos[v]
        scale = height / photo.shape[0]
        width = max(1, round(photo.shape[1] * scale))
        panel = cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        verts = mesh.vertices[0, v]
        crop_px = project(verts, pipe.camera)                         # [N, 2] crop pixels
        lm = mesh.landmarks[0, v]
        if sim is not None:
            back = sim.inverse()
            crop_px, lm = back.apply(crop_px), back.apply(lm)
        # corner-origin pixel coordinates scale about the corner
        px, lm = crop_px * np.float32(scale), lm * np.float32(scale)
        painted = paint_mesh(panel, px, pipe.camera.distance - verts[:, 2], pipe.overlay_triangles,
                             mesh.colors[0, v])
        # blending the whole panel equals blending the covered pixels (elsewhere painted == panel),
        # and paints each triangle once instead of twice (paint_mesh's own alpha path)
        panel = cv2.addWeighted(panel, 1.0 - MESH_OPACITY, painted, MESH_OPACITY, 0.0)
        radius = max(1, height // 200)
        for u, w in lm[np.isfinite(lm).all(axis=1)]:
            cv2.circle(panel, (int(u), int(w)), radius, LANDMARK_RGB, -1, cv2.LINE_AA)
        panels.append(panel)
    return np.concatenate(panels, axis=1)


def encode_overlay(image: np.ndarray, kind: str) -> bytes:
    """An ``overlay_image`` (RGB) as the bytes of a ``png`` or ``jpg`` file."""
    # OpenCV's default compression (1.7x faster to encode than level 1, 13% larger:
    # benchmarks/results/bench_stage_proposals.json) with the "up" row filter only instead of libpng's
    # adaptive choice: the same pixels, a ~9% smaller file on the example triplet, and encoding about
    # as fast (-25% to +6% over five runs on a busy machine; benchmarks/results/e2e_overlap.json:
    # writers.png_encode vs png_encode_opencv_default). Painting, not encoding, is the bigger cost.
    if kind not in ("png", "jpg"):
        raise ValueError(f"overlay kind must be 'png' or 'jpg', got {kind!r}")
    params = PNG_PARAMS if kind == "png" else JPEG_PARAMS
    ok, data = cv2.imencode(f".{kind}", image[:, :, ::-1], params)
    if not ok:  # pragma: no cover - cv2 cannot fail on a uint8 RGB array
        raise OSError(f"could not encode the overlay as {kind}")
    return data.tobytes()


def write_overlay(path: Path, pipe, rec, image: np.ndarray | None = None) -> Path:
    """Paint (or take the already painted ``image``) and write it; the file type follows the suffix."""
    if image is None:
        image = overlay_image(pipe, rec)
    kind = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg"}.get(Path(path).suffix.lower())
    if kind is None:
        raise ValueError(f"{path}: an overlay is written as .png or .jpg")
    return atomic_write_bytes(path, encode_overlay(image, kind))
