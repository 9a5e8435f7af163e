"""Face detection and 68 landmarks, offline: dlib (HOG detector + 68-point predictor) by default,
face-alignment when installed.

dlib's model files come from the ``face_recognition_models`` package (the ``detect`` extra); we find
its folder without importing it, because its ``__init__`` needs ``pkg_resources``. Every detector
returns landmarks in the project pixel convention (continuous, corner origin: centres at +0.5).

The dlib detector does not give up on the first miss (HOG is weak on profile views near 45-60 degrees).
Per photo it tries, in order, and records which one found the face (``Detection.path``):

- ``hog``            dlib's HOG detector on the (downscaled) photo, no upsampling;
- ``hog-upsampled``  the same with pyramid upsampling (smaller faces, ~4x the cost);
- ``cnn``            dlib's CNN face detector (MMOD), when its model file ``mmod_human_face_detector.dat``
                     is installed (``face_recognition_models`` ships it); seconds per photo on a CPU.

``detect_triplet`` then covers a view where all of these failed from the other views of the same
triplet (same person, same camera set-up): ``other-views`` places a box of their mean size at their mean
position (relative to the photo) and runs the 68-point predictor in it. A triplet with no face in any
view is still an error.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..errors import InputError, MissingExtraError, require

__all__ = ["DETECTORS", "DETECTION_PATHS", "Detection", "Detector", "DlibDetector", "FaceAlignmentDetector",
           "make_detector", "dlib_model_path", "detect_triplet", "box_from_other_views", "check_photo_size",
           "MIN_PHOTO_SIDE"]

DETECTORS = ("dlib", "face-alignment")
# How a view's face was found (Detection.path), in the order the dlib detector tries them.
DETECTION_PATHS = ("hog", "hog-upsampled", "cnn", "other-views", "face-alignment")
CNN_MODEL_FILE = "mmod_human_face_detector.dat"
# Photos are searched at most this large (longest side, pixels; HOG cost grows with the area, and
# portrait faces are large); landmarks are then placed on the full-size photo.
DETECT_MAX_SIDE = 480
# A photo narrower than this on either side cannot show a face any path finds (HOG finds faces of ~80 px,
# ~40 px upsampled), and dlib's CNN detector raises on images smaller than its filter window.
MIN_PHOTO_SIDE = 40


def check_photo_size(image: np.ndarray, source=None) -> None:
    """An InputError naming ``source`` when the photo is too small to hold a findable face
    (either side under ``MIN_PHOTO_SIDE`` pixels)."""
    h, w = image.shape[:2]
    if min(h, w) < MIN_PHOTO_SIDE:
        raise InputError(source, f"photo is {w}x{h} px: too small to hold a face the detector can find "
                         f"(at least {MIN_PHOTO_SIDE} px a side; faces of ~80 px or more are found reliably)",
                         "use the full-size photo, or pass crops aligned to 224x224 with --aligned")


def dlib_model_path(name: str) -> Path:
    """Path of a model file shipped by ``face_recognition_models`` (e.g. shape_predictor_68_face_landmarks.dat)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError("face_recognition_models", "detect", "face detection with dlib")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / name
    if not path.is_file():
        raise MissingExtraError("face_recognition_models", "detect", f"dlib's model file {name}")
    return path


@dataclass
class Detection:
    """One photo's face: landmarks [68, 2] float32 (photo pixels, project convention), the face box
    (left, top, right, bottom) in photo pixels, and how it was found (``path``, one of
    ``DETECTION_PATHS``); score: the detector's confidence where it gives one."""

    landmarks: np.ndarray
    box: tuple
    path: str
    detector: str
    score: float | None = None

    def to_dict(self) -> dict:
        return {"detector": self.detector, "path": self.path, "box": [round(float(v), 2) for v in self.box],
                "score": None if self.score is None else round(float(self.score), 4)}


def _landmark_box(points: np.ndarray) -> tuple:
    lo, hi = points.min(axis=0), points.max(axis=0)
    return (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))


class Detector:
    """Finds the main face in an RGB photo: ``detect`` -> Detection, ``landmarks`` -> [68, 2] float32 (pixels).

    A detector that can place landmarks in a given box (``can_use_box``) lets ``detect_triplet`` cover
    a view where it found no face from the triplet's other views.
    """

    name = "detector"
    can_use_box = False

    def detect(self, image: np.ndarray, source=None) -> Detection:  # pragma: no cover - abstract
        raise NotImplementedError

    def landmarks(self, image: np.ndarray, source=None) -> np.ndarray:
        return self.detect(image, source=source).landmarks

    def detect_in_box(self, image: np.ndarray, box, source=None) -> Detection:  # pragma: no cover - abstract
        raise NotImplementedError(f"the {self.name} detector cannot place landmarks in a given box")


@functools.lru_cache(maxsize=1)
def _dlib_models():
    dlib = require("dlib", "detect", "face detection with dlib")
    detector = dlib.get_frontal_face_detector()   # HOG: frontal and ~profile sub-detectors
    predictor = dlib.shape_predictor(str(dlib_model_path("shape_predictor_68_face_landmarks.dat")))
    return dlib, detector, predictor


@functools.lru_cache(maxsize=1)
def _dlib_cnn_detector():
    """dlib's CNN (MMOD) face detector, or None when its model file is not installed."""
    dlib = require("dlib", "detect", "face detection with dlib")
    try:
        path = dlib_model_path(CNN_MODEL_FILE)
    except MissingExtraError:
        return None
    return dlib.cnn_face_detection_model_v1(str(path))


class DlibDetector(Detector):
    """dlib detection on a downscaled copy (HOG, HOG upsampled, then the CNN detector: see the module
    docstring), 68-point shape predictor on the full photo.

    upsample: dlib's pyramid upsampling steps for the second try, when the first (none) finds no face
              (1 finds faces down to ~40 px in the downscaled copy, at ~4x the cost).
    cnn:      try dlib's CNN detector when HOG finds nothing (needs its model file; False: never).
    """

    name = "dlib"
    can_use_box = True

    def __init__(self, upsample: int = 1, cnn: bool = True):
        self.upsample = upsample
        self.dlib, self.detector, self.predictor = _dlib_models()
        self.cnn = _dlib_cnn_detector() if cnn else None
        self._no_cnn = ("" if self.cnn is not None else " (its CNN detector was not tried: "
                        + (f"{CNN_MODEL_FILE} is not installed)" if cnn else "switched off)"))

    def _find(self, small: np.ndarray):
        """(rects, scores, path) on the downscaled copy; empty rects when every path failed."""
        for upsample in dict.fromkeys((0, self.upsample)):
            rects, scores, _ = self.detector.run(small, upsample, 0.0)
            if rects:
                return list(rects), list(scores), "hog" if upsample == 0 else "hog-upsampled"
        if self.cnn is not None:
            found = self.cnn(small, 0)
            if len(found):
                return [d.rect for d in found], [float(d.confidence) for d in found], "cnn"
        return [], [], None

    def detect(self, image, source=None) -> Detection:
        image = np.ascontiguousarray(image, dtype=np.uint8)
        check_photo_size(image, source)
        h, w = image.shape[:2]
        scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
        small = image if scale == 1.0 else cv2.resize(image, (round(w * scale), round(h * scale)),
                                                      interpolation=cv2.INTER_AREA)
        # no upsampling first (fast; finds faces >= ~80 px in the downscaled copy), then upsampled,
        # then the CNN detector
        rects, scores, path = self._find(small)
        if not rects:
            tried = "dlib's HOG detector (also upsampled)" + (self._no_cnn or " and its CNN detector")
            raise InputError(source, f"no face found in this photo by {tried}",
                             "use a photo where the face is visible and at least ~80 px wide, "
                             "or pass crops aligned to 224x224 with --aligned")
        # the main face: the largest, confident one
        best = max(range(len(rects)), key=lambda i: rects[i].area() * (1.0 + max(scores[i], 0.0)))
        r = rects[best]
        inv = 1.0 / scale
        box = (r.left() * inv, r.top() * inv, r.right() * inv, r.bottom() * inv)
        return Detection(self._predict(image, box), box, path, self.name, float(scores[best]))

    def _predict(self, image: np.ndarray, box) -> np.ndarray:
        full = self.dlib.rectangle(*(int(round(v)) for v in box))
        shape = self.predictor(image, full)
        pts = np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], np.float32)
        return pts + np.float32(0.5)   # dlib: integer pixel centres -> corner-origin convention

    def detect_in_box(self, image, box, source=None) -> Detection:
        """The 68-point predictor in a given box (photo pixels): ``path`` "other-views"."""
        image = np.ascontiguousarray(image, dtype=np.uint8)
        return Detection(self._predict(image, box), tuple(float(v) for v in box), "other-views", self.name)


def box_from_other_views(found: Sequence[tuple], shape: tuple) -> tuple:
    """A face box for a photo of ``shape`` (H, W, ...) from the boxes found in the triplet's other views.

    found: [(box (left, top, right, bottom) pixels, (H, W) of that photo), ...], at least one.
    The same person photographed from the same distance: the box keeps the mean size of the others
    (relative to the photo height) and their mean centre (relative to the photo's width and height).
    Returns (left, top, right, bottom) in pixels of this photo, clipped to it.
    """
    if not found:
        raise ValueError("no box from the other views to place")
    h, w = float(shape[0]), float(shape[1])
    cx = np.mean([(b[0] + b[2]) / 2 / s[1] for b, s in found]) * w
    cy = np.mean([(b[1] + b[3]) / 2 / s[0] for b, s in found]) * h
    bw = np.mean([(b[2] - b[0]) / s[0] for b, s in found]) * h
    bh = np.mean([(b[3] - b[1]) / s[0] for b, s in found]) * h
    return (float(max(0.0, cx - bw / 2)), float(max(0.0, cy - bh / 2)),
            float(min(w - 1, cx + bw / 2)), float(min(h - 1, cy + bh / 2)))


def detect_triplet(detector: Detector, images: Sequence[np.ndarray], sources: Sequence = ()) -> list[Detection]:
    """Detect the face in every view of one triplet; a view where the detector finds none is covered
    from the other views (``box_from_other_views``, path "other-views") when the detector can use a
    box. Raises the first failing view's InputError when no view has a face, or when the detector
    cannot use a box.

    images: the views' RGB photos [H, W, 3] uint8 (VIEWS order); sources: their paths (for errors).
    Returns one Detection per view.
    """
    sources = list(sources) or [None] * len(images)
    for image, source in zip(images, sources):     # a photo too small for a face is not covered from the others
        check_photo_size(image, source)
    found, errors = [], []
    for image, source in zip(images, sources):
        try:
            found.append(detector.detect(image, source=source))
            errors.append(None)
        except InputError as exc:
            found.append(None)
            errors.append(exc)
    missing = [i for i, d in enumerate(found) if d is None]
    if not missing:
        return found
    known = [(d.box, images[i].shape[:2], d.path) for i, d in enumerate(found) if d is not None]
    # the 68-point predictor was trained on HOG's boxes (the CNN's sit differently): prefer those
    hog = [k for k in known if k[2] in ("hog", "hog-upsampled")]
    known = [(box, shape) for box, shape, _ in (hog or known)]
    if not known or not detector.can_use_box:
        raise errors[missing[0]]
    for i in missing:
        found[i] = detector.detect_in_box(images[i], box_from_other_views(known, images[i].shape),
                                          source=sources[i])
    return found


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

    def detect(self, image, source=None) -> Detection:
        found = self.model.get_landmarks_from_image(np.ascontiguousarray(image, dtype=np.uint8))
        if not found:
            raise InputError(source, "no face found in this photo (face-alignment)",
                             "use a photo where the face is visible, or pass aligned crops with --aligned")
        best = max(found, key=lambda p: np.ptp(p[:, 0]) * np.ptp(p[:, 1]))
        pts = np.asarray(best[:, :2], np.float32) + np.float32(0.5)
        return Detection(pts, _landmark_box(pts), "face-alignment", self.name)


def make_detector(name: str, device: str = "cpu") -> Detector:
    if name == "dlib":
        return DlibDetector()
    if name == "face-alignment":
        return FaceAlignmentDetector(device=device)
    raise InputError(None, f"unknown detector '{name}'", f"choose one of {', '.join(DETECTORS)}")
