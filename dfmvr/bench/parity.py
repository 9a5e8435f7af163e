"""Parity of every benchmarked backend in mesh millimetres, on the bench's own inputs (``dfmvr bench``).

For each batch size, the normalised images of the run's synthetic triplets go through a reference
runner and through every candidate; both coefficient sets are assembled into posed meshes with the
run's face model and the card's camera (``dfmvr.face.geometry.assemble_mesh``, the runtime's mesh
maths), and the per-vertex distance is reported in mm (max, mean), with the raw coefficient error, the
fraction of equal label pixels and, where both have them, the keypoints' largest distance in pixels. The reference is PyTorch eager when torch and torch weights are
there, else ONNX Runtime on the fp32 graph; the report names it. Torch-free and onnx-free (the same
numbers as ``dfmvr.export.parity.compare``, without its gates).
"""

from __future__ import annotations

import numpy as np

from ..card import GRAPH_INPUT, GRAPH_KEYPOINTS, GRAPH_OUTPUTS
from ..face.geometry import assemble_mesh
from ..face.meshio import MM_PER_MODEL_UNIT

__all__ = ["parity_row"]


def parity_row(reference: dict, candidate: dict, face_model, card) -> dict:
    """Mesh distance (mm), coefficient error and label agreement of ``candidate`` against ``reference``
    (both a runner's output dict)."""
    layout, camera = card.layout_obj(), card.camera_obj()
    ref_c = np.asarray(reference[GRAPH_OUTPUTS[0]], np.float32)
    cand_c = np.asarray(candidate[GRAPH_OUTPUTS[0]], np.float32)
    if ref_c.shape != cand_c.shape:
        return {"error": f"coefficients shape {cand_c.shape} differs from the reference's {ref_c.shape}"}
    va = assemble_mesh(face_model, layout.split(ref_c), camera).vertices
    vb = assemble_mesh(face_model, layout.split(cand_c), camera).vertices
    dist = np.linalg.norm(va.astype(np.float64) - vb, axis=-1) * MM_PER_MODEL_UNIT      # [B, V, N]
    diff = np.abs(ref_c.astype(np.float64) - cand_c)
    out = {"mesh_max_mm": float(dist.max()), "mesh_mean_mm": float(dist.mean()),
           "coefficients_max_abs": float(diff.max()), "coefficients_mean_abs": float(diff.mean())}
    ref_l, cand_l = reference.get(GRAPH_OUTPUTS[1]), candidate.get(GRAPH_OUTPUTS[1])
    if ref_l is not None and cand_l is not None and np.shape(ref_l) == np.shape(cand_l):
        out["labels_agreement"] = float(np.mean(np.asarray(ref_l) == np.asarray(cand_l)))
    else:
        out["labels_agreement"] = None
    ref_k, cand_k = reference.get(GRAPH_KEYPOINTS), candidate.get(GRAPH_KEYPOINTS)
    out["keypoints_max_px"] = (float(np.linalg.norm(np.asarray(cand_k, np.float64) - ref_k, axis=-1).max())
                               if ref_k is not None and cand_k is not None and np.shape(ref_k) == np.shape(cand_k)
                               else None)
    if not np.isfinite(out["mesh_max_mm"]):
        out["error"] = "non-finite coefficients"
    return out


def infer_images(runner, images: np.ndarray) -> dict:
    """One (untimed) call of an active runner on ``images`` [B, 3, 3, S, S] float32."""
    return runner.infer({GRAPH_INPUT: np.ascontiguousarray(images, np.float32)})
