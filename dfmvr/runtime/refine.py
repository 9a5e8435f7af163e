"""``dfmvr-run --refine N``: the pipeline with a refinement stage after the network (no torch here).

``RefiningPipeline`` is a ``Pipeline`` whose ``reconstruct`` hands each batch's network coefficients,
crops, landmarks and parse labels to a refiner (``dfmvr.train.refine.Refiner``, which needs torch: the
CLI builds it lazily, only when ``--refine`` is given) and reassembles the mesh from the refined
coefficients. The weak inputs are the ones a photo gives:

- 2D landmarks: the detector's 68 points of each view mapped into the crop (photo -> crop
  similarity); with ``--aligned`` there is no detector and the landmark term sees no point;
- parse labels: the network's own parse-net output (``Reconstruction.labels``).

Each triplet's ``Reconstruction`` gets ``refine`` (a JSON-ready dict: steps, device, weak loss before
and after, its terms, seconds per triplet, refined and network coefficients), which ``result.json``
records; ``coeffs.npz``, the meshes and the poses are the refined ones.
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np

from ..face.geometry import MeshResult
from .pipeline import Pipeline, Prepared, Reconstruction

__all__ = ["RefiningPipeline", "crop_landmarks"]


def crop_landmarks(prepared: Prepared) -> tuple[np.ndarray | None, str]:
    """The detector's landmarks of each view in crop pixels [V, 68, 2] float32 and where they came
    from ("detector"), or (None, "none (--aligned: no detector ran)")."""
    if not prepared.detections:
        return None, "none (--aligned: no detector ran)"
    out = [np.asarray(d.landmarks, np.float64) if sim is None else sim.apply(np.asarray(d.landmarks, np.float64))
           for d, sim in zip(prepared.detections, prepared.similarities)]
    return np.stack(out).astype(np.float32), "detector"


class RefiningPipeline(Pipeline):
    """A ``Pipeline`` that refines the network's coefficients (``refiner``: set after construction;
    a callable (coefficients [B, K], crops [B, V, S, S, 3] uint8, landmarks [B, V, 68, 2] | None,
    landmark_visible [B, V, 68] | None, labels [B, V, S, S] | None) -> ``RefineResult``).
    Without a refiner it is the plain pipeline."""

    refiner = None

    def reconstruct(self, prepared: list[Prepared]) -> list[Reconstruction]:
        recs = super().reconstruct(prepared)
        if self.refiner is None or not recs:
            return recs
        b = len(recs)
        flat = self.layout.join(self._stack_coeffs(recs))
        crops = np.stack([r.prepared.crops for r in recs])
        found = [crop_landmarks(r.prepared) for r in recs]
        v = crops.shape[1]
        landmarks = np.zeros((b, v, 68, 2), np.float32)
        visible = np.zeros((b, v, 68), bool)
        for i, (lm, _) in enumerate(found):
            if lm is not None:
                landmarks[i], visible[i] = lm, True
        labels = np.stack([r.labels for r in recs])
        result = self.refiner(flat, crops, landmarks if visible.any() else None,
                              visible if visible.any() else None, labels)
        refined = self.layout.split(np.asarray(result.coefficients, np.float32))
        mesh = self.assemble(refined)
        for i, rec in enumerate(recs):
            rec.coeffs = refined.select(i)
            rec.mesh = MeshResult(**{f.name: getattr(mesh, f.name)[i:i + 1] for f in fields(MeshResult)})
            rec.refine = {**result.record(i), "landmarks": found[i][1], "labels": "parse net (network output)",
                          # the weights changed from the recipe's (--refine-landmark-weight), if any
                          "loss_weights": dict(getattr(getattr(self.refiner, "config", None), "loss_weights", {}))}
        return recs

    @staticmethod
    def _stack_coeffs(recs):
        from ..face.layout import Coefficients

        first = recs[0].coeffs
        return Coefficients(**{k: np.concatenate([getattr(r.coeffs, k) for r in recs])
                               for k in first.as_dict()})
