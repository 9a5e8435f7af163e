"""``dfmvr-run --refine N``: the pipeline with a refinement stage after the network (no torch here).

``RefiningPipeline`` is a ``Pipeline`` whose ``reconstruct`` hands each batch's network coefficients,
crops, landmarks and parse labels to a refiner (``dfmvr.train.refine.Refiner``, which needs torch: the
CLI builds it lazily, only when ``--refine`` is given) and reassembles the mesh from the refined
coefficients. The weak inputs are the ones a photo gives:

- 2D landmarks (``--refine-landmarks``, ``landmark_source``): the network's own keypoints (the graph's
  optional ``keypoints`` output, the bundled demo has it; "auto", the default, takes them when the graph
  has them) or the detector's 68 points of each view mapped into the crop (photo -> crop similarity;
  none with ``--aligned``). With neither the run is refused (``check_landmark_source``): fitting the
  photo alone wrecks the expression (docs/refine.md, "Which landmarks");
- parse labels: the network's own parse-net output (``Reconstruction.labels``).

Each triplet's ``Reconstruction`` gets ``refine`` (a JSON-ready dict: steps, device, weak loss before
and after, its terms, seconds per triplet, refined and network coefficients), which ``result.json``
records; ``coeffs.npz``, the meshes and the poses are the refined ones.
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np

from ..card import GRAPH_KEYPOINTS
from ..errors import InputError
from ..face.geometry import MeshResult
from .pipeline import Pipeline, Prepared, Reconstruction

__all__ = ["RefiningPipeline", "crop_landmarks", "LANDMARK_SOURCES"]

# --refine-landmarks: "auto" = the network's keypoints when the graph outputs them, else the detector's
LANDMARK_SOURCES = ("auto", "network", "detector")
NETWORK_LANDMARKS = "network (the graph's keypoints output)"


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
    Without a refiner it is the plain pipeline. ``landmark_source``: one of ``LANDMARK_SOURCES``."""

    refiner = None
    landmark_source = "auto"

    def graph_has_keypoints(self) -> bool:
        """Whether the active runner's graph has the ``keypoints`` output (runner active)."""
        return GRAPH_KEYPOINTS in getattr(self.runner, "output_names", ())

    def check_landmark_source(self) -> str:
        """The landmark source this run will use, "network" or "detector" (runner active), or an
        InputError (exit 2) naming the model and what to do when the one asked for cannot exist."""
        if self.landmark_source not in LANDMARK_SOURCES:
            raise ValueError(f"landmark_source must be one of {LANDMARK_SOURCES}, not {self.landmark_source!r}")
        has_keypoints, has_detector = self.graph_has_keypoints(), not self.aligned
        if self.landmark_source == "network" or (self.landmark_source == "auto" and has_keypoints):
            if not has_keypoints:
                raise InputError(self.artifact.path, "--refine-landmarks network: this graph has no "
                                 f"'{GRAPH_KEYPOINTS}' output (its network predicts no landmarks)",
                                 "use --refine-landmarks detector without --aligned, or a model with keypoint "
                                 "heads (the bundled demo)")
            return "network"
        if not has_detector and self.landmark_source == "detector":
            raise InputError(self.artifact.path, "--refine-landmarks detector: --aligned runs no detector",
                             "drop --aligned, or fit the graph's own keypoints (--refine-landmarks auto)"
                             if has_keypoints else "drop --aligned")
        if not has_detector:
            raise InputError(self.artifact.path, "--refine has no landmarks to fit: --aligned runs no detector and "
                             f"this graph has no '{GRAPH_KEYPOINTS}' output; the photo alone ruins the expression "
                             "(docs/refine.md, 'Which landmarks')",
                             "drop --aligned so that the detector runs, or use a model with keypoint heads "
                             "(the bundled demo)")
        return "detector"

    def _landmarks(self, rec: Reconstruction, source: str) -> tuple[np.ndarray | None, str]:
        if source == "network":
            if rec.keypoints is None or rec.keypoints.shape[-2] != 68:
                raise InputError(self.artifact.path, f"the graph's '{GRAPH_KEYPOINTS}' are not 68 points per view "
                                 f"({None if rec.keypoints is None else rec.keypoints.shape})",
                                 "use --refine-landmarks detector")
            return rec.keypoints, NETWORK_LANDMARKS
        return crop_landmarks(rec.prepared)

    def reconstruct(self, prepared: list[Prepared]) -> list[Reconstruction]:
        recs = super().reconstruct(prepared)
        if self.refiner is None or not recs:
            return recs
        b = len(recs)
        flat = self.layout.join(self._stack_coeffs(recs))
        crops = np.stack([r.prepared.crops for r in recs])
        source = self.check_landmark_source()
        found = [self._landmarks(r, source) for r in recs]
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
        config = getattr(self.refiner, "config", None)     # a Refiner's RefineConfig (any callable may refine)
        for i, rec in enumerate(recs):
            rec.coeffs = refined.select(i)
            rec.mesh = MeshResult(**{f.name: getattr(mesh, f.name)[i:i + 1] for f in fields(MeshResult)})
            rec.refine = {**result.record(i), "landmarks": found[i][1], "labels": "parse net (network output)",
                          # the weights changed from the recipe's (--refine-landmark-weight), if any
                          "loss_weights": dict(getattr(config, "loss_weights", {})),
                          # the landmark weight's start multiple (--refine-landmark-anneal; 1: constant)
                          "landmark_anneal": float(getattr(config, "landmark_anneal", 1.0))}
        return recs

    @staticmethod
    def _stack_coeffs(recs):
        from ..face.layout import Coefficients

        first = recs[0].coeffs
        return Coefficients(**{k: np.concatenate([getattr(r.coeffs, k) for r in recs])
                               for k in first.as_dict()})
