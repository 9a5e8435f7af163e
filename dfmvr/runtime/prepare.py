"""``dfmvr data prepare``: a user's own multi-view photos -> a training set for the weak losses.

What weak supervision needs of a triplet is what a photo gives: the three aligned crops and each view's
68 landmarks (``dfmvr-train`` reads parse labels from a parse net with ``--parser-labels``, and
``dfmvr-train --stage heads --targets landmark-fit`` fits each triplet to its landmarks). This module
writes exactly the layout ``dfmvr.train.data.TripletDataset`` reads, one folder per triplet:

  <out>/<name>/left.png front.png right.png   the aligned crops (card.IMAGE_SIZE square, RGB)
  <out>/<name>/landmarks.npz                  landmarks [3, 68, 2] float32 crop pixels,
                                              landmarks_visible [3, 68] bool
  <out>/<name>/prepare.json                   where each view came from and how its face was found

Photos are found, decoded and aligned exactly as ``dfmvr-run`` does (``runtime.inputs``,
``pipeline.prepare_triplet``: the same crops the network sees at run time), and the landmarks are the
detector's, mapped into the crop. With ``aligned`` the inputs are already crops: the detector runs on
the crop itself and the crop is kept as it is.

Every landmark is marked visible: dlib's 68-point model places all 68 points in every view (on a turned
face the far cheek's contour points lie on the visible outline), and says nothing about occlusion.
Each triplet folder is written whole or not at all (``outputs.staged_folder``); a triplet that fails
(unreadable photo, no face in any view) is reported and the rest go on.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import cv2
import numpy as np

from ..card import IMAGE_SIZE
from ..errors import InputError
from ..face.layout import VIEWS
from .inputs import Triplet, TripletProblem
from .outputs import already_written, output_folder, staged_folder
from .pipeline import prepare_triplet
from .refine import crop_landmarks

__all__ = ["LANDMARKS_FILE", "PREPARE_RECORD", "PrepareSummary", "prepare_training_triplet", "prepare_dataset"]

LANDMARKS_FILE = "landmarks.npz"
PREPARE_RECORD = "prepare.json"
PREPARED_FILES = frozenset({*(f"{view}.png" for view in VIEWS), LANDMARKS_FILE, PREPARE_RECORD})
VISIBILITY_NOTE = ("every point marked visible: the detector places all 68 points in every view and reports "
                   "no occlusion")


@dataclass
class PrepareSummary:
    done: list = field(default_factory=list)        # (name, folder)
    failed: list = field(default_factory=list)      # TripletProblem
    skipped: list = field(default_factory=list)     # names already prepared (resume)
    fallbacks: dict = field(default_factory=dict)   # name -> {view: detection path} other than the first try
    seconds: float = 0.0


def _crops_and_landmarks(triplet: Triplet, detector, size: int, aligned: bool):
    """-> (crops [V, S, S, 3] uint8, landmarks [V, 68, 2] float32 crop pixels, detections)."""
    if aligned:
        from .detect import detect_triplet

        prepared = prepare_triplet(triplet, size, None)               # checks every view is S x S
        try:
            detections = detect_triplet(detector, list(prepared.crops), [triplet.paths[v] for v in VIEWS])
        except InputError as exc:   # the detector's own advice is "use --aligned", which this run did
            raise InputError(exc.path, exc.problem, "check that these are face crops (with --aligned the "
                             "detector still places the landmarks), or drop --aligned for full photos") from exc
        landmarks = np.stack([np.asarray(d.landmarks, np.float32) for d in detections])
        return prepared.crops, landmarks, detections
    prepared = prepare_triplet(triplet, size, detector)
    landmarks, _ = crop_landmarks(prepared)
    return prepared.crops, landmarks, prepared.detections


def prepare_training_triplet(triplet: Triplet, out_root, detector, size: int = IMAGE_SIZE,
                             aligned: bool = False) -> tuple[Path, dict]:
    """Write one triplet's training folder ``out_root/<name>`` (whole or not at all).

    Returns (the folder, {view: detection path} for views found by a fallback). Raises ``InputError``
    naming the file for an unreadable photo, a crop of the wrong size (``aligned``) or no face."""
    crops, landmarks, detections = _crops_and_landmarks(triplet, detector, size, aligned)
    record = {"sources": {v: str(triplet.paths[v]) for v in VIEWS},
              "aligned_input": bool(aligned), "size": int(size),
              "detector": {v: {"detector": d.detector, "path": d.path} for v, d in zip(VIEWS, detections)},
              "landmarks": "68 iBUG points per view in crop pixels (the detector's, mapped into the crop); "
                           + VISIBILITY_NOTE}
    target = output_folder(out_root, triplet.name)
    with staged_folder(target, PREPARED_FILES, triplet.paths.values()) as tmp:
        for view, crop in zip(VIEWS, crops):
            if not cv2.imwrite(str(tmp / f"{view}.png"), np.ascontiguousarray(crop[:, :, ::-1])):
                raise OSError(f"could not write {target / f'{view}.png'}")
        np.savez(tmp / LANDMARKS_FILE, landmarks=landmarks.astype(np.float32),
                 landmarks_visible=np.ones(landmarks.shape[:2], bool))
        (tmp / PREPARE_RECORD).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    fallbacks = {v: d.path for v, d in zip(VIEWS, detections) if d.path not in ("hog", "face-alignment")}
    return target, fallbacks


def prepare_dataset(triplets: Iterable[Triplet], out_root, detector, *, size: int = IMAGE_SIZE,
                    aligned: bool = False, resume: bool = False, problems: Iterable[TripletProblem] = (),
                    progress: Callable | None = None) -> PrepareSummary:
    """Prepare every triplet; a bad one is recorded in the summary (``failed``) and the rest go on.
    ``resume``: a triplet whose folder already exists is skipped (folders are only ever written whole).
    ``progress(name, ok)`` is called once per triplet."""
    summary = PrepareSummary(failed=list(problems))
    start = time.perf_counter()
    for triplet in triplets:
        if resume and already_written(out_root, triplet):
            summary.skipped.append(triplet.name)
            continue
        try:
            folder, fallbacks = prepare_training_triplet(triplet, out_root, detector, size, aligned)
        except InputError as exc:
            summary.failed.append(TripletProblem(triplet.name, exc))
            ok = False
        else:
            summary.done.append((triplet.name, folder))
            if fallbacks:
                summary.fallbacks[triplet.name] = fallbacks
            ok = True
        if progress is not None:
            progress(triplet.name, ok)
    summary.seconds = time.perf_counter() - start
    return summary
