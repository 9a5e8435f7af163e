"""Face detection and 68 landmarks, offline: dlib (HOG detector + 68-point predictor) by default,
face-alignment when installed.

dlib's model files come from the ``face_recognition_models`` package (the ``detect`` extra); we find
its folder without importing it, because its ``__init__`` needs ``pkg_resources``. Every detector
returns landmarks in the project pixel convention (continuous, corner origin: centres at +0.5).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError, MissingExtraError, require

__all__ = ["DETECTORS", "Detector", "DlibDetector", "FaceAlignmentDetector", "make_detector",
           "dlib_model_path"]

DETECTORS = ("dlib", "face-alignment")
# Photos are searched at most this large (longest side, pixels; HOG cost grows with the area, and
# portrait faces are large); landmarks are then placed on the full-size photo.
DETECT_MAX_SIDE = 480


def dlib_model_path(name: str) -> Path:
    """Path of a model file shipped by ``face_recognition_models`` (e.g. shape_predictor_68_face_landmarks.dat)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError("face_recognition_models", "detect", "face detection with dlib")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / name
    if not path.is_file():
        raise MissingExtraError("face_recognition_models", "detect", f"dlib's model file {name}")
    return path


class Detector:
    """Finds the main face in an RGB photo and returns its 68 landmarks [68, 2] float32 (pixels)."""

    name = "detector"

    def landmarks(self, image: np.ndarray, source=None) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


@functools.lru_cache(maxsize=1)
def _dlib_models():
    dlib = require("dlib", "detect", "face detection with dlib")
    detector = dlib.get_frontal_face_detector()   # HOG: frontal and ~profile sub-detectors
    predictor = dlib.shape_predictor(str(dlib_model_path("shape_predictor_68_face_landmarks.dat")))
    return dlib, detector, predictor


class DlibDetector(Detector):
    """dlib HOG detection on a downscaled copy, 68-point shape predictor on the full photo.

    upsample: dlib's pyramid upsampling steps for the second try, when the first (none) finds no face
              (1 finds faces down to ~40 px in the downscaled copy, at ~4x the cost).
    """

    name = "dlib"

    def __init__(self, upsample: int = 1):
        self.upsample = upsample
        self.dlib, self.detector, self.predictor = _dlib_models()

    def landmarks(self, image, source=None):
        image = np.ascontiguousarray(image, dtype=np.uint8)
        h, w = image.shape[:2]
        scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
        small = image if scale == 1.0 else cv2.resize(image, (round(w * scale), round(h * scale)),
                                                      interpolation=cv2.INTER_AREA)
        # no upsampling first (fast; finds faces >= ~80 px in the downscaled copy), then upsampled
        rects, scores = [], []
        for upsample in dict.fromkeys((0, self.upsample)):
            rects, scores, _ = self.detector.run(small, upsample, 0.0)
            if rects:
                break
        if not rects:
            raise InputError(source, "no face found in this photo",
                             "use a photo where the face is visible and at least ~80 px wide, "
                             "or pass crops aligned to 224x224 with --aligned")
        # the main face: the largest, confident one
        best = max(range(len(rects)), key=lambda i: rects[i].area() * (1.0 + max(scores[i], 0.0)))
        r = rects[best]
        inv = 1.0 / scale
        full = self.dlib.rectangle(int(r.left() * inv), int(r.top() * inv), int(r.right() * inv),
                                   int(r.bottom() * inv))
        shape = self.predictor(image, full)
        pts = np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], np.float32)
        return pts + np.float32(0.5)   # dlib: integer pixel centres -> corner-origin convention


class FaceAlignmentDetector(Detector):
    """The ``face-alignment`` package (2D-FAN). It needs torch and its own weights on disk (it
    downloads them at first use, which fails offline)."""

    name = "face-alignment"

    def __init__(self, device: str = "cpu"):
        if importlib.util.find_spec("face_alignment") is None:
            raise MissingExtraError("face_alignment", "face-alignment", "--detector face-alignment")
        import face_alignment

        kind = getattr(face_alignment.LandmarksType, "TWO_D", None) or face_alignment.LandmarksType._2D
        try:
            self.model = face_alignment.FaceAlignment(kind, device=device, flip_input=False)
        except Exception as exc:    # network failure while fetching weights, missing files, ...
            raise InputError(None, f"face-alignment could not load its weights ({exc})",
                             "put its weights in its cache folder, or use --detector dlib") from exc

    def landmarks(self, image, source=None):
        found = self.model.get_landmarks_from_image(np.ascontiguousarray(image, dtype=np.uint8))
        if not found:
            raise InputError(source, "no face found in this photo (face-alignment)",
                             "use a photo where the face is visible, or pass aligned crops with --aligned")
        best = max(found, key=lambda p: np.ptp(p[:, 0]) * np.ptp(p[:, 1]))
        return np.asarray(best[:, :2], np.float32) + np.float32(0.5)


def make_detector(name: str, device: str = "cpu") -> Detector:
    if name == "dlib":
        return DlibDetector()
    if name == "face-alignment":
        return FaceAlignmentDetector(device=device)
    raise InputError(None, f"unknown detector '{name}'", f"choose one of {', '.join(DETECTORS)}")
