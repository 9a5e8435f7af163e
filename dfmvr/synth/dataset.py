"""The synthetic multi-view dataset: rendered (left, front, right) triplets with exact ground truth.

Each triplet is drawn from its own random stream ``numpy.random.default_rng([seed, index])``, so any
triplet can be regenerated alone: generation is deterministic, resumable and order-free.

Alignment (how the renders match what the real pipeline feeds the network). Real photos are warped by
the similarity that maps their five points onto ``align.TEMPLATE_224``. Here the same similarity is
applied in 3D instead of on pixels, so the ground-truth poses stay exact and no image warp blurs the
render: its rotation becomes a rotation of the posed head about the optical axis (exact under
perspective), its scale a change of the head's distance and its shift a change of x/y translation
(both exact up to perspective). A few fixed-point iterations make the five projected points the
least-squares fit to the template, as ``align.estimate_similarity`` would find on the photo.

Folder layout written by ``write_dataset`` (``DIR/``):
  meta.json          {"format", "generator_version", "seed", "triplets", "face_model": identity,
                      "camera", "config"}
  face_model.npz     the MorphableModel used (``MorphableModel.load``)
  000000/            left.png, front.png, right.png (224x224 RGB) and gt.npz:
      coefficients      [269] float32, COEFFS layout (poses included)
      rotation          [3, 3] float32 per-view Euler angles (rad), translation [3, 3] (dm)
      landmarks         [3, 68, 2] float32 pixels (u right, v down, pixel centres at +0.5)
      landmarks_visible [3, 68] bool (not hidden by a nearer surface, inside the image)
      landmarks3d       [68, 3] float32 unposed keypoints (dm)
      labels            [3, 224, 224] uint8 parse classes
      vertices          [N, 3] float32 unposed ground-truth shape (dm)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ..atomic import atomic_write_text
from ..errors import InputError
from ..face import geometry
from ..face.align import TEMPLATE_224, estimate_similarity, five_points_from_68
from ..face.camera import Camera, project
from ..face.layout import COEFFS, VIEW_YAW_DEG, VIEWS, Coefficients
from ..face.model import MorphableModel
from .render import render_mesh

__all__ = ["GENERATOR_VERSION", "SynthConfig", "SyntheticTriplet", "TripletGenerator",
           "write_dataset", "triplet_name", "SynthReport", "load_meta", "aligned_mean_face_pose"]

GENERATOR_VERSION = 1
META_FORMAT = "dfmvr-synthetic-dataset"
_VISIBILITY_TOLERANCE = 0.03   # dm (3 mm): a keypoint this far behind the visible surface is hidden


@dataclass(frozen=True)
class SynthConfig:
    """Sampling ranges. Coefficients are N(0, sigma) clipped to +-clip (bases carry the PCA sigma)."""

    identity_sigma: float = 1.0
    expression_sigma: float = 0.8
    texture_sigma: float = 1.0
    clip: float = 2.5
    yaw_jitter_deg: float = 8.0
    pitch_jitter_deg: float = 10.0
    roll_jitter_deg: float = 6.0
    light_dc: float = 0.2          # +- range of the DC term around SH_DC_OFFSET
    light_band1: float = 0.3       # +- range of the directional (band-1) terms
    light_band2: float = 0.08      # +- range of the band-2 terms
    light_tint: float = 0.08       # +- relative per-channel tint
    blur_sigma_max: float = 1.0    # pixels; sigma ~ U(0, max), none below 0.3
    noise_sigma_max: float = 0.02  # in [0, 1] intensity units
    align_iterations: int = 4


def triplet_name(index: int) -> str:
    return f"{index:06d}"


@dataclass
class SyntheticTriplet:
    """One rendered triplet. images [3, 224, 224, 3] uint8 RGB (VIEWS order); gt: the gt.npz arrays."""

    images: np.ndarray
    gt: dict[str, np.ndarray]


@contextlib.contextmanager
def _single_thread():
    """Run torch on one thread: a 224x224 render is many small tensor ops, which intra-op threads
    slow down (measured 3x slower with 2 threads on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _rotation_z(angle: float) -> np.ndarray:
    return geometry.rotation_matrix(np.array([0.0, 0.0, angle], np.float32)).astype(np.float64)


class TripletGenerator:
    """Renders triplet ``index`` of the dataset defined by (model, camera, config, seed)."""

    def __init__(self, model: MorphableModel, camera: Camera | None = None,
                 config: SynthConfig | None = None, seed: int = 0):
        self.model, self.camera = model, camera or Camera()
        self.config, self.seed = config or SynthConfig(), int(seed)
        self._triangles = torch.from_numpy(model.triangles.astype(np.int64))
        self._parts = torch.from_numpy(model.parts.astype(np.int64))

    # --- sampling ------------------------------------------------------------------------
    def _coefficients(self, rng: np.random.Generator) -> tuple[Coefficients, np.ndarray]:
        cfg, v = self.config, len(VIEWS)
        normal = lambda n, s: np.clip(rng.normal(0.0, s, (1, n)), -cfg.clip, cfg.clip)  # noqa: E731
        gamma = np.zeros((3, 9))
        gamma[:, 0] = rng.uniform(-cfg.light_dc, cfg.light_dc)
        gamma[:, 1:4] = rng.uniform(-cfg.light_band1, cfg.light_band1, 3)
        gamma[:, 4:] = rng.uniform(-cfg.light_band2, cfg.light_band2, 5)
        gamma *= 1.0 + rng.uniform(-cfg.light_tint, cfg.light_tint, (3, 1))
        jitter = np.stack([rng.uniform(-cfg.pitch_jitter_deg, cfg.pitch_jitter_deg, v),
                           rng.uniform(-cfg.yaw_jitter_deg, cfg.yaw_jitter_deg, v),
                           rng.uniform(-cfg.roll_jitter_deg, cfg.roll_jitter_deg, v)], axis=-1)
        angles = np.radians(jitter + np.stack([np.zeros(v), VIEW_YAW_DEG, np.zeros(v)], -1))
        coeffs = Coefficients(
            identity=normal(COEFFS.identity, cfg.identity_sigma),
            expression=normal(COEFFS.expression, cfg.expression_sigma),
            texture=normal(COEFFS.texture, cfg.texture_sigma),
            lighting=gamma.reshape(1, 27), rotation=angles[None], translation=np.zeros((1, v, 3)))
        return coeffs, geometry.rotation_matrix(angles).astype(np.float64)

    def align_poses(self, shape: np.ndarray, rotations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-view (Euler angles [V, 3], translation [V, 3]) that put the five points of the posed
        keypoints onto TEMPLATE_224 (see the module docstring). shape [N, 3]; rotations [V, 3, 3]."""
        keypoints = shape[self.model.keypoints].astype(np.float64)           # [68, 3]
        cam = self.camera
        out_r, out_t = [], []
        for rot in rotations:
            rot, t = rot.copy(), np.zeros(3)
            for _ in range(self.config.align_iterations):
                posed = keypoints @ rot.T + t
                sim = estimate_similarity(five_points_from_68(project(posed, cam)), TEMPLATE_224)
                # An image rotation by +angle (u right, v down) is a rotation by -angle about z.
                rz = _rotation_z(-sim.angle)
                rot, t = rz @ rot, rz @ t
                depth = cam.distance - (keypoints @ rot.T + t)[:, 2].mean()
                t[2] += depth - depth / sim.scale                             # nearer = larger
                posed = keypoints @ rot.T + t
                residual = (TEMPLATE_224 - five_points_from_68(project(posed, cam))).mean(axis=0)
                depth = cam.distance - posed[:, 2].mean()
                t[0] += residual[0] * depth / cam.focal
                t[1] -= residual[1] * depth / cam.focal
            out_r.append(geometry.euler_from_matrix(rot))
            out_t.append(t)
        return np.stack(out_r).astype(np.float32), np.stack(out_t).astype(np.float32)

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        """A textured random background [S, S, 3] float32 in [0, 1]: a smooth colour field, an
        oriented stripe texture and fine grain."""
        size = self.camera.image_size
        coarse = rng.uniform(0.0, 1.0, (rng.integers(2, 6), rng.integers(2, 6), 3)).astype(np.float32)
        field = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        theta, freq = rng.uniform(0, np.pi), rng.uniform(0.02, 0.3)
        stripes = np.sin(freq * (np.cos(theta) * xx + np.sin(theta) * yy) + rng.uniform(0, 6.3))
        colour = rng.uniform(-0.25, 0.25, 3).astype(np.float32)
        grain = rng.normal(0.0, rng.uniform(0.0, 0.06), (size, size, 1)).astype(np.float32)
        return np.clip(field + stripes[..., None] * colour + grain, 0.0, 1.0)

    # --- rendering -----------------------------------------------------------------------
    def sample(self, index: int) -> SyntheticTriplet:
        """Render triplet ``index`` (deterministic for (seed, index))."""
        with _single_thread():
            return self._sample(index)

    def _sample(self, index: int) -> SyntheticTriplet:
        rng = np.random.default_rng([self.seed, int(index)])
        coeffs, rotations = self._coefficients(rng)
        shape = geometry.face_shape(self.model, coeffs.identity, coeffs.expression)[0]
        coeffs.rotation[0], coeffs.translation[0] = self.align_poses(shape, rotations)
        coeffs = Coefficients(**{k: np.asarray(v, np.float32) for k, v in coeffs.as_dict().items()})
        mesh = geometry.assemble_mesh(self.model, coeffs, self.camera)
        with torch.no_grad():
            out = render_mesh(torch.from_numpy(mesh.vertices[0]), self._triangles, self.camera,
                              colors=torch.from_numpy(mesh.colors[0]), parts=self._parts)
        mask = out.mask.numpy()
        face = np.clip(out.image.numpy(), 0.0, 1.0)
        images = []
        for view in range(len(VIEWS)):
            img = np.where(mask[view][..., None], face[view], self._background(rng))
            sigma = rng.uniform(0.0, self.config.blur_sigma_max)
            if sigma >= 0.3:
                img = cv2.GaussianBlur(img, (0, 0), sigma)
            img = img + rng.normal(0.0, rng.uniform(0.0, self.config.noise_sigma_max), img.shape)
            images.append(np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8))
        landmarks = mesh.landmarks[0]                                            # [V, 68, 2]
        kp_depth = self.camera.distance - mesh.vertices[0][:, self.model.keypoints, 2]
        visible = self._landmark_visibility(landmarks, kp_depth, out.depth.numpy(), mask)
        gt = {
            "coefficients": COEFFS.join(coeffs)[0],
            "rotation": coeffs.rotation[0], "translation": coeffs.translation[0],
            "landmarks": landmarks.astype(np.float32), "landmarks_visible": visible,
            "landmarks3d": mesh.shape[0][self.model.keypoints].astype(np.float32),
            "labels": out.labels.numpy().astype(np.uint8),
            "vertices": mesh.shape[0].astype(np.float32),
        }
        return SyntheticTriplet(images=np.stack(images), gt=gt)

    def _landmark_visibility(self, landmarks, kp_depth, depth, mask) -> np.ndarray:
        """[V, 68] bool: inside the image and not behind the rendered surface at its pixel."""
        size = self.camera.image_size
        col = np.floor(landmarks[..., 0]).astype(np.int64)
        row = np.floor(landmarks[..., 1]).astype(np.int64)
        inside = (col >= 0) & (col < size) & (row >= 0) & (row < size)
        c, r = np.clip(col, 0, size - 1), np.clip(row, 0, size - 1)
        view = np.arange(landmarks.shape[0])[:, None]
        surface = np.where(mask[view, r, c], depth[view, r, c], np.inf)
        return inside & (kp_depth <= surface + _VISIBILITY_TOLERANCE)

    def write(self, index: int, root) -> Path:
        """Render triplet ``index`` into ``root/<name>/`` atomically (temp folder, then rename)."""
        root = Path(root)
        final = root / triplet_name(index)
        tmp = root / f".tmp-{triplet_name(index)}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            triplet = self.sample(index)
            for view, image in zip(VIEWS, triplet.images):
                if not cv2.imwrite(str(tmp / f"{view}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
                    raise OSError(f"could not write {tmp / (view + '.png')}")
            np.savez_compressed(tmp / "gt.npz", **triplet.gt)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final


def aligned_mean_face_pose(model: MorphableModel, camera: Camera | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Where the crop alignment puts an average head: per view (``VIEWS`` order) the Euler angles
    [V, 3] and translation [V, 3] (dm) that place the mean face, turned to its slot's nominal yaw,
    with its five points on ``align.TEMPLATE_224``. Reads no ground truth (the face model, the camera
    and the template only), so a weak loss may use it as a prior: a real photo aligned to the same
    template shows its face at this size. For the bundled synthetic model the depth comes out at
    -0.76 dm (front) and -0.86 dm (sides), not 0: its faces are larger than the template's."""
    angles = np.radians(np.stack([np.zeros(len(VIEWS)), VIEW_YAW_DEG, np.zeros(len(VIEWS))], -1))
    shape = model.mean_shape.reshape(-1, 3).astype(np.float64)
    return TripletGenerator(model, camera).align_poses(shape, geometry.rotation_matrix(angles).astype(np.float64))


@dataclass
class SynthReport:
    written: int
    skipped: int
    seconds: float

    @property
    def rate(self) -> float:
        """Triplets written per second."""
        return self.written / self.seconds if self.seconds > 0 else float("nan")


def _check_meta(path: Path, meta: dict) -> None:
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(path, f"unreadable dataset metadata ({exc})", "delete it or choose another --out") from exc
    keys = ("format", "generator_version", "seed", "face_model", "camera", "config")
    diff = [k for k in keys if old.get(k) != meta.get(k)]
    if diff:
        raise InputError(path, f"the folder holds a different synthetic dataset (differs in {diff})",
                         "choose another --out, or the same --seed/--face-model to resume")


_WORKER: TripletGenerator | None = None


def _init_worker(model, camera, config, seed) -> None:
    global _WORKER
    torch.set_num_threads(1)
    _WORKER = TripletGenerator(model, camera, config, seed)


def _write_in_worker(job: tuple[int, str]) -> int:
    _WORKER.write(job[0], job[1])
    return job[0]


def write_dataset(out, triplets: int, seed: int = 0, model: MorphableModel | None = None,
                  camera: Camera | None = None, config: SynthConfig | None = None,
                  progress: bool = True, workers: int = 1) -> SynthReport:
    """Write (or resume) a synthetic dataset of ``triplets`` triplets under ``out``.

    Finished triplet folders are skipped (each appears by an atomic rename, so existing = complete);
    leftover temporary folders of an interrupted run are removed. ``model`` defaults to
    ``dfmvr.face.synthetic.default_face_model()``. ``workers`` > 1 renders in that many spawned
    processes (one torch thread each); the output does not depend on it.
    """
    if triplets < 0:
        raise ValueError("triplets must be >= 0")
    if model is None:
        from ..face.synthetic import default_face_model
        model = default_face_model()
    out = Path(out)
    generator = TripletGenerator(model, camera, config, seed)
    meta = {"format": META_FORMAT, "generator_version": GENERATOR_VERSION, "seed": int(seed),
            "face_model": model.identity(), "camera": generator.camera.to_dict(),
            "config": asdict(generator.config), "views": list(VIEWS)}
    meta_path = out / "meta.json"
    if meta_path.exists():
        _check_meta(meta_path, meta)
        triplets_total = max(triplets, json.loads(meta_path.read_text()).get("triplets", 0))
    else:
        triplets_total = triplets
        # without meta.json nothing says how these were made: "resuming" would adopt them under this seed
        foreign = [p.name for p in sorted(out.glob("[0-9]" * 6)) if p.is_dir()] if out.is_dir() else []
        if foreign:
            raise InputError(out, f"holds triplet folders ({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}) "
                             "but no meta.json: they are not a dataset this command can resume",
                             "pass an empty or new --out")
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    model_path = out / "face_model.npz"
    if not model_path.exists():
        model.save(model_path)
    else:
        from ..face.model import MorphableModel, identity_matches

        if not identity_matches(model.identity(), MorphableModel.load(model_path)):
            raise InputError(model_path, f"is not the face model '{model.name}' these triplets are made with",
                             "pass an empty or new --out, or the face model of the triplets already there")
    atomic_write_text(meta_path, json.dumps({**meta, "triplets": triplets_total}, indent=2))
    todo = [i for i in range(triplets) if not (out / triplet_name(i)).is_dir()]
    start = time.perf_counter()
    from tqdm import tqdm
    if workers > 1 and len(todo) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: a forked child of a process whose torch thread pool has started can hang.
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_init_worker,
                                 initargs=(model, generator.camera, generator.config, seed)) as pool:
            jobs = pool.map(_write_in_worker, [(i, str(out)) for i in todo], chunksize=4)
            for _ in tqdm(jobs, total=len(todo), desc="synth", unit="triplet", disable=not progress):
                pass
    else:
        for index in tqdm(todo, desc="synth", unit="triplet", disable=not progress):
            generator.write(index, out)
    return SynthReport(written=len(todo), skipped=triplets - len(todo), seconds=time.perf_counter() - start)


def load_meta(root) -> dict:
    """The dataset's meta.json as a dict (InputError if missing or unreadable)."""
    path = Path(root) / "meta.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise InputError(path, "no meta.json: not a synthetic dataset folder",
                         "create one with 'dfmvr data synth --out DIR'") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(path, f"unreadable dataset metadata ({exc})") from exc

