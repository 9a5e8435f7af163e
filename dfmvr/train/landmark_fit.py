"""Per-triplet fits to the 2D landmarks alone: training targets that need no ground truth.

What a user with unlabelled multi-view photos has is the photos and a detector's landmarks. Fitted
per triplet, the weak landmark term with the coefficient regulariser determines much of a face: on 64
held-out synthetic triplets with 2 px of detector-like error, a 200-step fit from the mean face reads
identity R² 0.40 (0.56 with the size projected out), expression 0.73 and the rotation to 2.7° (median;
docs/training.md, "Targets from the landmarks alone"), where a network trained on the same weak losses
reads identity 0.02. So these fits can stand in for the truth when the heads are refitted
(``dfmvr-train --stage heads --targets landmark-fit``).

The fit is ``refine.Refiner`` with the photometric term off (no render: about 0.5 s per triplet on one
CPU thread) and a stronger coefficient regulariser (``COEFFICIENT_REG``, chosen on the selection set:
the landmarks do not pin the face's fine shape, and the default 3e-4 lets noise into it). It starts from
the mean face at the pose the crop alignment gives an average head (``synth.dataset.aligned_mean_face_pose``)
and reads from each item only its photos and landmarks, never a ground-truth key.
"""

from __future__ import annotations

import numpy as np
import torch

from ..face.camera import Camera
from ..face.layout import COEFFS, Coefficients
from ..face.model import MorphableModel
from ..synth.dataset import aligned_mean_face_pose
from .data import INPUT_MEAN, INPUT_STD
from .refine import Refiner, RefineConfig

__all__ = ["FIT_STEPS", "COEFFICIENT_REG", "READS", "FITS_FILE", "landmark_fit_config", "landmark_fits",
           "mean_face_start", "fit_settings", "save_fits", "load_fits"]

FIT_STEPS = 200
COEFFICIENT_REG = 1e-3        # on 32 selection triplets (2 px noise): 3e-4 / 1e-3 / 3e-3 / 1e-2 gave size-free
                              # identity R² 0.51 / 0.56 / 0.53 / 0.43, expression 0.65 / 0.75 / 0.78 / 0.77
                              # (scripts/landmark_fit_probe.py)
READS = ("images", "landmarks", "landmarks_visible", "has_landmarks")   # the only item keys read
FITS_FILE = "landmark_fits.npz"   # what --stage heads --targets landmark-fit writes beside its checkpoint


def landmark_fit_config(steps: int = FIT_STEPS, coefficient_reg: float = COEFFICIENT_REG, threads=None) -> RefineConfig:
    """The refinement settings of a landmark fit: photometric term off, so no coarse phase either."""
    return RefineConfig(steps=steps, coarse_fraction=0.0, threads=threads,
                        loss_weights={"photo": 0.0, "coefficient_reg": coefficient_reg})


def mean_face_start(face_model: MorphableModel, camera: Camera, count: int) -> np.ndarray:
    """[count, COEFFS.size]: the mean face (identity, expression, texture, light zero) at the aligned
    mean-face pose of each slot."""
    angles, translation = aligned_mean_face_pose(face_model, camera)
    zeros = COEFFS.split(np.zeros((count, COEFFS.size), np.float32))
    start = Coefficients(zeros.identity, zeros.expression, zeros.texture, zeros.lighting,
                         np.broadcast_to(angles, zeros.rotation.shape).astype(np.float32),
                         np.broadcast_to(translation, zeros.translation.shape).astype(np.float32))
    return COEFFS.join(start)


def landmark_fits(dataset, face_model: MorphableModel, camera: Camera, batch: int = 64,
                  config: RefineConfig | None = None, progress=None) -> np.ndarray:
    """[len(dataset), COEFFS.size] float32: each triplet of ``dataset`` (a ``TripletDataset``; its
    ``landmark_noise_px`` applies) fitted to its own landmarks. Raises ValueError naming the first
    triplet without landmarks."""
    refiner = Refiner(face_model, camera, config or landmark_fit_config())
    fits = []
    for start in range(0, len(dataset), batch):
        items = [dataset[i] for i in range(start, min(start + batch, len(dataset)))]
        missing = [start + k for k, it in enumerate(items) if not bool(it["has_landmarks"])]
        if missing:
            raise ValueError(f"triplet {dataset.folders[missing[0]]} has no 2D landmarks (landmarks.npz or gt.npz)")
        photos = torch.stack([it["images"] for it in items]) * INPUT_STD + INPUT_MEAN         # [B, V, 3, H, W] in [0, 1]
        result = refiner(mean_face_start(face_model, camera, len(items)),
                         photos.permute(0, 1, 3, 4, 2).clamp(0, 1).numpy(),
                         torch.stack([it["landmarks"] for it in items]).numpy(),
                         torch.stack([it["landmarks_visible"] for it in items]).numpy())
        fits.append(result.coefficients)
        if progress is not None:
            progress(start + len(items), len(dataset))
    return np.concatenate(fits).astype(np.float32)


def fit_settings(face_model: MorphableModel, camera: Camera, landmark_noise_px: float, noise_seed: int,
                 config: RefineConfig | None = None) -> dict:
    """Everything a triplet's landmark fit depends on besides its photos and landmarks: two fits with the
    same settings of the same triplet folder are the same fit (``load_fits`` checks it)."""
    config = config or landmark_fit_config()
    return {"face_model": face_model.identity(), "camera": camera.to_dict(),
            "landmark_noise_px": float(landmark_noise_px), "noise_seed": int(noise_seed),
            **{k: v for k, v in config.to_dict().items() if k in ("steps", "pose_fraction", "pose_phase_lighting", "lr", "loss_weights")}}


def save_fits(path, sets: dict, settings: dict) -> None:
    """Write ``sets`` {name: (triplet folder names, fits [N, COEFFS.size])} and ``settings`` to ``path``
    (.npz, atomically)."""
    import json

    from ..atomic import atomic_path

    arrays = {}
    for name, (folders, fits) in sets.items():
        arrays[f"{name}_folders"] = np.asarray([str(f) for f in folders])
        arrays[f"{name}_fits"] = np.asarray(fits, np.float32)
    with atomic_path(path) as tmp:
        np.savez(tmp, settings=np.asarray(json.dumps(settings, sort_keys=True)), **arrays)


def load_fits(path, name: str, folders, settings: dict) -> np.ndarray:
    """The fits of set ``name`` stored in ``path`` by ``save_fits``, [len(folders), COEFFS.size] float32.
    Raises InputError (exit 2) naming the file when it cannot be read, holds no such set, was fitted
    with other ``settings`` or to other triplet folders (names, in order)."""
    import json

    from ..errors import InputError

    fix = "drop --fits to fit the triplets again"
    try:
        with np.load(path, allow_pickle=False) as z:
            stored = json.loads(str(z["settings"]))
            names, fits = [str(f) for f in z[f"{name}_folders"]], z[f"{name}_fits"]
    except KeyError as exc:
        raise InputError(path, f"holds no landmark fits of the {name} set ({exc})", fix) from exc
    except Exception as exc:
        raise InputError(path, f"is not a landmark-fits file ({exc})", fix) from exc
    want = json.loads(json.dumps(settings, sort_keys=True))
    if stored != want:
        differ = sorted(k for k in set(stored) | set(want) if stored.get(k) != want.get(k))
        raise InputError(path, f"was fitted with other settings ({', '.join(differ)} differ)", fix)
    folders = [str(f) for f in folders]
    if names != folders or fits.shape != (len(folders), COEFFS.size):
        raise InputError(path, f"holds the fits of {len(names)} other triplet folders for the {name} set, "
                         f"not these {len(folders)}", fix)
    return fits.astype(np.float32)
