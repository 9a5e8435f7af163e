"""Benchmark inputs: aligned synthetic triplets painted from the face model, written as PNG files.

No torch: the faces are painted with ``dfmvr.face.paint`` (numpy/OpenCV), so the onnxruntime backend
is benchmarked with the base install. The crops are already aligned (S x S), so the decode + align
stage times decoding and the crop check, not face detection (the detector is a separate dependency).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..face.camera import Camera, project
from ..face.geometry import assemble_mesh
from ..face.layout import COEFFS, VIEW_YAW_DEG, VIEWS
from ..face.model import MorphableModel
from ..runtime.inputs import Triplet

__all__ = ["painted_crops", "write_triplets"]


def painted_crops(model: MorphableModel, camera: Camera, seed: int = 0) -> np.ndarray:
    """One synthetic face (random identity/expression/texture, views at VIEW_YAW_DEG) painted over grey.

    Returns crops [V, S, S, 3] uint8 RGB, S = camera.image_size.
    """
    from ..face.paint import paint_mesh

    rng = np.random.default_rng(seed)
    c = COEFFS.zeros(1)
    c.identity[:] = rng.normal(0, 0.7, c.identity.shape)
    c.expression[:] = rng.normal(0, 0.5, c.expression.shape)
    c.texture[:] = rng.normal(0, 0.7, c.texture.shape)
    c.lighting[0, [0, 9, 18]] = 0.3
    c.rotation[0, :, 1] = np.radians(VIEW_YAW_DEG)
    mesh = assemble_mesh(model, c, camera)
    size = int(camera.image_size)
    crops = []
    for v in range(len(VIEWS)):
        verts = mesh.vertices[0, v]
        background = np.full((size, size, 3), 90 + 10 * v, np.uint8)
        crops.append(paint_mesh(background, project(verts, camera), camera.distance - verts[:, 2],
                                model.triangles, np.clip(mesh.albedo[0], 0, 1), vertices=verts))
    return np.stack(crops)


def write_triplets(folder, model: MorphableModel, camera: Camera, count: int, distinct: int = 4) -> list[Triplet]:
    """``count`` triplet folders ``folder/tNNN/{left,front,right}.png`` (``distinct`` different faces, reused).

    Returns the Triplets in order.
    """
    import cv2

    folder = Path(folder)
    faces = [painted_crops(model, camera, seed=i) for i in range(max(1, min(distinct, count)))]
    triplets = []
    for i in range(count):
        sub = folder / f"t{i:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        paths = {}
        for view, crop in zip(VIEWS, faces[i % len(faces)]):
            paths[view] = sub / f"{view}.png"
            if not cv2.imwrite(str(paths[view]), np.ascontiguousarray(crop[:, :, ::-1])):
                raise OSError(f"cannot write {paths[view]}")
        triplets.append(Triplet(f"t{i:03d}", paths))
    return triplets
