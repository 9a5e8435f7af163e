"""``TripletDataset``: (left, front, right) image triplets for training and validation.

One folder per triplet under ``root`` (synthetic datasets from ``dfmvr data synth`` and real data use
the same layout):

  <triplet>/left.png front.png right.png   aligned 224x224 RGB (.png, .jpg or .jpeg)
  <triplet>/gt.npz          optional, synthetic ground truth (see ``dfmvr.synth.dataset``)
  <triplet>/landmarks.npz   optional: landmarks [3, 68, 2] pixels, landmarks_visible [3, 68] bool,
                            landmarks3d [68, 3] (dm)
  <triplet>/labels.npz      optional: labels [3, 224, 224] uint8 parse classes

Arrays in gt.npz serve when the optional files are absent. A folder is a triplet when it holds a
``front`` image; a missing or unreadable file raises ``InputError`` naming it.
"""

from __future__ import annotations

import copy
import zipfile
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..card import IMAGE_SIZE, INPUT_MEAN, INPUT_STD    # the model card's normalisation and crop size
from ..errors import InputError
from ..face.detector_noise import draw_landmark_noise
from ..face.layout import COEFFS, NUM_PARSE_CLASSES, VIEWS

__all__ = ["TripletDataset", "IMAGE_SUFFIXES", "find_triplets", "read_rgb", "color_jitter", "gaussian_blur",
           "augment_views"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
BLUR_PROBABILITY = 0.3               # the paper's augmentation


def find_triplets(root) -> list[Path]:
    """Sorted triplet folders under ``root`` (itself, if it is one). InputError if there are none."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "dataset folder not found", "pass a folder of triplet folders")

    def has_front(d: Path) -> bool:
        return any((d / f"front{s}").is_file() for s in IMAGE_SUFFIXES)

    if has_front(root):
        return [root]
    found = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and has_front(d))
    if not found:
        raise InputError(root, "no triplet folders (folders holding left/front/right images) found",
                         "create a dataset with 'dfmvr data synth --out DIR' or lay out real data the same way")
    return found


def _image_path(folder: Path, view: str) -> Path:
    for suffix in IMAGE_SUFFIXES:
        if (folder / f"{view}{suffix}").is_file():
            return folder / f"{view}{suffix}"
    raise InputError(folder / f"{view}.png", f"the {view} view image is missing",
                     f"add {view}.png (or .jpg) to the triplet folder, or remove the folder")


def read_rgb(path: Path, size: int = IMAGE_SIZE) -> np.ndarray:
    """Image file -> [size, size, 3] uint8 RGB; InputError when unreadable or of another size."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(path, "cannot decode the image (missing, truncated or not an image)",
                         "replace the file with a valid PNG/JPEG")
    if image.shape[:2] != (size, size):
        raise InputError(path, f"image is {image.shape[1]}x{image.shape[0]}, expected aligned {size}x{size}",
                         "align the photos first (five-point alignment to the 224 template)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise InputError(path, f"cannot read the .npz file ({exc})", "regenerate or replace it") from exc


def _checked(path: Path, arrays: dict, key: str, shape: tuple) -> np.ndarray | None:
    if key not in arrays:
        return None
    value = arrays[key]
    if value.shape != shape:
        raise InputError(path, f"'{key}' has shape {value.shape}, expected {shape}")
    if value.dtype.kind == "f" and not np.isfinite(value).all():   # else a NaN loss, then NaN weights
        raise InputError(path, f"'{key}' holds NaN or infinite values", "regenerate or replace the file")
    return value


def color_jitter(images: torch.Tensor, rng: np.random.Generator, brightness=0.3, contrast=0.3,
                 saturation=0.3, hue=0.05) -> torch.Tensor:
    """One random colour jitter applied identically to every view: images [V, 3, H, W] in [0, 1]."""
    b = rng.uniform(1 - brightness, 1 + brightness)
    c = rng.uniform(1 - contrast, 1 + contrast)
    s = rng.uniform(1 - saturation, 1 + saturation)
    h = rng.uniform(-hue, hue)
    out = images * b
    grey = (0.299 * out[:, 0] + 0.587 * out[:, 1] + 0.114 * out[:, 2])[:, None]
    out = (out - grey.mean(dim=(2, 3), keepdim=True)) * c + grey.mean(dim=(2, 3), keepdim=True)
    grey = (0.299 * out[:, 0] + 0.587 * out[:, 1] + 0.114 * out[:, 2])[:, None]
    out = (out - grey) * s + grey
    if h:
        # Hue shift as a rotation of the chroma plane about the grey axis (YIQ rotation).
        angle = 2 * np.pi * h
        cos, sin = np.cos(angle), np.sin(angle)
        to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
        rot = torch.tensor([[1, 0, 0], [0, cos, -sin], [0, sin, cos]], dtype=torch.float32)
        m = torch.linalg.inv(to_yiq) @ rot @ to_yiq
        out = torch.einsum("ij,vjhw->vihw", m, out)
    return out.clamp(0.0, 1.0)


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of one image [C, H, W] float32 (reflect-101 borders), sigma in pixels.

    OpenCV rather than a torch conv: on a busy machine torch's threaded conv2d was ~60x slower here.
    """
    hwc = np.ascontiguousarray(image.detach().cpu().numpy().transpose(1, 2, 0))
    out = cv2.GaussianBlur(hwc, (0, 0), sigmaX=float(sigma), borderType=cv2.BORDER_REFLECT_101)
    out = out.reshape(hwc.shape)                                      # cv2 drops a channel axis of 1
    return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1))).to(image.device)


def augment_views(images: torch.Tensor, rng: np.random.Generator,
                  blur_probability: float = BLUR_PROBABILITY) -> torch.Tensor:
    """The paper's augmentation of one triplet, images [V, 3, H, W] in [0, 1]: one colour jitter
    shared by the views (``color_jitter``), then each view blurred (sigma U(0.1, 2) px) with
    probability ``blur_probability``. Draws the jitter first, then per view the blur decision."""
    images = color_jitter(images, rng)
    return torch.stack([gaussian_blur(im, rng.uniform(0.1, 2.0)) if rng.uniform() < blur_probability
                        else im for im in images])


class TripletDataset(Dataset):
    """Triplets as tensors. ``augment`` (off by default, for validation) applies the paper's
    augmentation: one colour jitter shared by the three views, and a Gaussian blur (sigma 0.1-2 px)
    of each view with probability 0.3. Augmentation draws from torch's RNG, so ``torch.manual_seed``
    and DataLoader worker seeding make it reproducible.

    Each item is a dict:
      images            [3, 3, 224, 224] float32, RGB normalised to [-1, 1], views in VIEWS order
      labels            [3, 224, 224] int64 parse classes (zeros if absent; see has_labels)
      landmarks         [3, 68, 2] float32 pixels (zeros if absent; + landmark_noise_px of error if set);
                        landmarks_visible [3, 68] bool
      has_labels, has_landmarks   bool tensors
      landmarks3d       [68, 3] float32 (dm), when present
      coefficients      [269] float32 COEFFS layout, vertices [N, 3] float32 (dm), when gt.npz exists
      index             int
    """

    def __init__(self, root, augment: bool = False, landmark_noise_px: float = 0.0, noise_seed: int = 0):
        self.root = Path(root)
        self.synthetic = (self.root / "meta.json").is_file()     # written by dfmvr data synth: gt.npz everywhere
        self.folders = find_triplets(self.root)
        self.augment = augment
        # Weak supervision as a user with real photos has it: their landmarks come from a detector,
        # not from the renderer. Gaussian error of this many pixels per coordinate, drawn once per
        # triplet (a detector errs the same way on the same photo in every epoch).
        self.landmark_noise_px = float(landmark_noise_px)
        self.noise_seed = int(noise_seed)

    def __len__(self) -> int:
        return len(self.folders)

    def subset(self, start: int, stop: int | None = None) -> "TripletDataset":
        """The same dataset over ``folders[start:stop]`` (same settings; indices restart at 0)."""
        part = copy.copy(self)
        part.folders = self.folders[start:stop]
        return part

    def _annotations(self, folder: Path) -> tuple[dict, dict[str, Path]]:
        """Merge gt.npz, landmarks.npz and labels.npz (the dedicated files win); key -> array."""
        arrays, sources = {}, {}
        for name in ("gt.npz", "landmarks.npz", "labels.npz"):
            path = folder / name
            if path.exists():
                for key, value in _load_npz(path).items():
                    arrays[key], sources[key] = value, path
        return arrays, sources

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        folder = self.folders[index]
        rgb = np.stack([read_rgb(_image_path(folder, view)) for view in VIEWS])     # [V, H, W, 3]
        images = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255.0
        if self.augment:
            images = augment_views(images, np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item())))
        item: dict[str, torch.Tensor] = {
            "images": (images - INPUT_MEAN) / INPUT_STD,
            "index": torch.tensor(index),
        }
        arrays, sources = self._annotations(folder)
        v = len(VIEWS)
        where = lambda key: sources.get(key, folder)  # noqa: E731
        labels = _checked(where("labels"), arrays, "labels", (v, IMAGE_SIZE, IMAGE_SIZE))
        if labels is not None and labels.max(initial=0) >= NUM_PARSE_CLASSES:
            raise InputError(where("labels"), f"labels hold values >= {NUM_PARSE_CLASSES}",
                             "label maps must use the 10 parse classes 0-9")
        item["has_labels"] = torch.tensor(labels is not None)
        item["labels"] = (torch.from_numpy(labels.astype(np.int64)) if labels is not None
                          else torch.zeros(v, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.int64))
        landmarks = _checked(where("landmarks"), arrays, "landmarks", (v, 68, 2))
        visible = _checked(where("landmarks_visible"), arrays, "landmarks_visible", (v, 68))
        item["has_landmarks"] = torch.tensor(landmarks is not None)
        if landmarks is not None and self.landmark_noise_px > 0:
            landmarks = landmarks + draw_landmark_noise(landmarks.shape, self.landmark_noise_px, self.noise_seed, index)
        item["landmarks"] = (torch.from_numpy(landmarks.astype(np.float32)) if landmarks is not None
                             else torch.zeros(v, 68, 2))
        item["landmarks_visible"] = (torch.from_numpy(visible.astype(bool)) if visible is not None
                                     else torch.full((v, 68), landmarks is not None))
        lm3d = _checked(where("landmarks3d"), arrays, "landmarks3d", (68, 3))
        if lm3d is not None:
            item["landmarks3d"] = torch.from_numpy(lm3d.astype(np.float32))
        coeffs = _checked(where("coefficients"), arrays, "coefficients", (COEFFS.size,))
        if coeffs is not None:
            item["coefficients"] = torch.from_numpy(coeffs.astype(np.float32))
        if "vertices" in arrays:
            vertices = arrays["vertices"]
            if not np.isfinite(vertices).all():
                raise InputError(where("vertices"), "'vertices' holds NaN or infinite values", "regenerate the triplet")
            item["vertices"] = torch.from_numpy(vertices.astype(np.float32))
        elif self.synthetic and "coefficients" not in arrays:
            # one triplet of a synthetic set without its ground truth would train unsupervised, unnoticed
            raise InputError(folder, "this triplet of a synthetic dataset (meta.json) has no gt.npz",
                             "regenerate it: rerun 'dfmvr data synth' with the same --out, --seed and --triplets")
        return item
