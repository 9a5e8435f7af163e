"""Per-triplet refinement (``--refine N``): analysis-by-synthesis with the weak losses only.

After the network, each triplet's coefficients are fitted to its own three photos for N Adam steps
with the project's ``TrainingLoss`` (no second loss): the photometric term, the 2D landmarks and the
regularisers (optionally PRDL); never the mask term (it needs the torch parse net) and never a term
that reads ground truth. The batch handed to the loss is built here from the weak inputs alone
(photos, parse labels and the photometric weight map made from them, 2D landmarks): ground-truth
keys (``gt_coefficients``, ``landmarks_3d``, vertices) are not in it at all, whatever the weights
say (``weak_batch``), and the ground-truth weights are forced to 0 (``weak_weights``).

Coarse to fine: the first ``coarse_fraction`` of the steps render at half size (same problem, about
1.9x cheaper per step). Measured error and time: ``docs/refine.md``.

Schedule: the first ``pose_fraction`` of the steps move only the per-view rotation and translation
(the network's pose is its least accurate output) and the lighting; the rest move everything; each
phase runs its own Adam with a cosine-decayed learning rate. Why the lighting moves with the pose: held
at a network's poor guess (a demo trained without the render, lighting R² 0.10), the photometric term
turned some heads by 7-11 degrees to explain the shading, and the later phase never brought them back
(docs/refine.md, "The demo of 2026-12-07"). Coefficients are moved as x = x0 + step_scale * z with z
optimised by Adam at learning rate ``lr``: ``step_scale`` sets the size of a step per block in the
block's own units (basis sigmas, radians, decimetres), so one ``lr`` serves every block.

torch lives here (the training side); the torch-free runtime and evaluation call ``refine`` through a
lazy import only when ``--refine`` is given (``dfmvr.runtime.refine``, ``dfmvr.cli.eval``).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..face.camera import Camera
from ..face.layout import COEFFS, NUM_VIEWS, VIEWS
from ..face.model import MorphableModel
from ..synth.face_torch import FaceModelTorch
from .device import resolve_torch_device
from .losses.photo import downscale_photos_labels, downscaled_dilation, photo_weight_map
from .losses.total import LossWeights, TrainingLoss

__all__ = ["RUN_LANDMARK_WEIGHT", "RefineConfig", "RefineResult", "Refiner", "refine", "landmark_factor", "weak_batch",
           "weak_weights", "WEAK_BATCH_KEYS", "GROUND_TRUTH_WEIGHTS"]

# The only batch keys a refinement may hand to the loss (see TrainingLoss.forward).
WEAK_BATCH_KEYS = ("photos", "labels", "landmarks", "landmark_visible", "photo_weights")
# Loss weights that read ground truth or a torch parse net: always 0 in a refinement.
GROUND_TRUTH_WEIGHTS = ("landmark_3d", "supervised", "supervised_shape", "supervised_shape_aligned",
                        "supervised_expression", "keypoint_2d", "mask")


# The 2D landmark weight of ``dfmvr-run --refine`` and ``dfmvr eval --refine`` (``--refine-landmark-weight``):
# 20x below the training recipe's 0.02, which over-trusts a detector. Held out (64 synthetic triplets, refine
# 200, the network's parse labels; docs/refine.md, "How much to trust the landmarks"): landmarks with 2 px of
# error per coordinate 0.341 -> 0.225 mm, with 8 px 2.035 (worse than the network) -> 0.314 mm. The API's
# RefineConfig keeps the recipe's weight (the landmark fits of --targets landmark-fit were tuned against it).
RUN_LANDMARK_WEIGHT = 1e-3


def weak_weights(prdl: float = 0.0, **overrides) -> LossWeights:
    """The default recipe's weak terms (photo, 2D landmarks, regularisers), PRDL at ``prdl``, and
    every ground-truth term (and the mask term) at 0, whatever ``overrides`` asks."""
    w = LossWeights(prdl=prdl, **overrides)
    for name in GROUND_TRUTH_WEIGHTS:
        setattr(w, name, 0.0)
    return w


def weak_batch(batch: dict) -> dict:
    """``batch`` with only the weak keys (``WEAK_BATCH_KEYS``): ground truth is dropped, not zero-weighted."""
    return {k: v for k, v in batch.items() if k in WEAK_BATCH_KEYS}


# Per block, the size of one unit step of the fit (``RefineConfig.step_scale``).
DEFAULT_STEP_SCALE = {"identity": 0.05, "expression": 0.05, "texture": 0.05, "lighting": 0.01,
                      "rotation": 0.005, "translation": 0.005}


@dataclass
class RefineConfig:
    """How to refine. steps: Adam steps in all; pose_fraction: share of them on the pose (and, with
    pose_phase_lighting, the lighting) alone;
    lr: Adam's initial learning rate on the scaled variables; final_lr: the cosine's end, as a
    fraction of lr; step_scale: per block, the size of one unit step (identity/expression/texture in
    basis sigmas, lighting in SH units, rotation in radians, translation in decimetres)."""

    steps: int = 50
    pose_fraction: float = 0.25
    pose_phase_lighting: bool = True    # the lighting moves in the pose phase too (False: the pose alone)
    lr: float = 4.0
    final_lr: float = 0.05
    step_scale: dict = field(default_factory=lambda: dict(DEFAULT_STEP_SCALE))
    # Coarse to fine: the first ``coarse_fraction`` of the steps render at 1/``coarse_factor`` of the
    # image size (camera focal and size divided, photos box-averaged, labels subsampled, landmarks
    # scaled; the landmark weight multiplied by coarse_factor² so that its pixel² loss weighs the
    # same against the photometric term), about 3x cheaper per step.
    coarse_fraction: float = 0.75
    coarse_factor: int = 2
    prdl: float = 0.0                   # PRDL weight (0: off; 3DDFA-V3 used 8e-4)
    # A Gaussian prior toward the start (the network's prediction), per shape block: weight x the
    # squared distance from the start in basis sigmas, summed over the block's coefficients (the
    # regulariser's form, centred on the start instead of the mean face). {} : off.
    start_prior: dict = field(default_factory=dict)
    # The landmark weight starts at this multiple of its value and falls geometrically to it by the last
    # step (1: constant, the default). Why: at the run's weak landmark weight (1e-3) the photometric term can
    # pull a fit into an expression whose weak loss is higher than the truth's; landmarks trusted more early
    # keep it in the right basin when they are precise, and mislead it when they are not (docs/refine.md, "A
    # landmark weight that falls": better at 2 px of error, worse at 8, so off by default).
    landmark_anneal: float = 1.0
    # Other LossWeights fields to change from the default recipe (e.g. {"landmark_2d": 0.01}); the
    # ground-truth weights stay 0 whatever this says.
    loss_weights: dict = field(default_factory=dict)
    device: str = "cpu"                 # a torch device: "cpu", "cuda", "cuda:1"
    threads: int | None = None          # torch CPU threads during the fit (None: leave torch's setting)
    progress: bool = False              # a tqdm bar over the steps

    def __post_init__(self):
        if int(self.steps) < 0:         # -5 ran as 0 without a word
            raise ValueError(f"steps must be 0 or more, got {self.steps}")
        unknown = set(self.step_scale) - set(DEFAULT_STEP_SCALE)
        if unknown:
            raise ValueError(f"step_scale has unknown blocks {sorted(unknown)}; they are {sorted(DEFAULT_STEP_SCALE)}")
        # {"identity": 0.1} changes that block and keeps the others (it raised KeyError 'expression')
        self.step_scale = {**DEFAULT_STEP_SCALE, **self.step_scale}

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RefineResult:
    """coefficients [B, 269] float32 (COEFFS layout), refined; initial [B, 269] the starting point;
    loss_before / loss_after [B] float: each triplet's weighted weak loss (alone in its batch) at the
    start and at the end; terms_before / terms_after: per triplet, {term: unweighted value};
    seconds: wall time of the whole refinement (the B triplets together, loss evaluations included);
    kept_initial [B] bool: triplets whose fit ended with a higher weak loss than it started from,
    returned unrefined (their coefficients, loss and terms are the starting point's)."""

    coefficients: np.ndarray
    initial: np.ndarray
    loss_before: np.ndarray
    loss_after: np.ndarray
    terms_before: list
    terms_after: list
    seconds: float
    steps: int
    device: str
    kept_initial: np.ndarray

    @property
    def seconds_per_triplet(self) -> float:
        return self.seconds / max(len(self.coefficients), 1)

    def record(self, index: int) -> dict:
        """One triplet's JSON-ready record (result.json's ``refine``)."""
        return {"steps": self.steps, "device": self.device,
                "loss_before": float(self.loss_before[index]), "loss_after": float(self.loss_after[index]),
                "kept_initial": bool(self.kept_initial[index]),
                "terms_before": self.terms_before[index], "terms_after": self.terms_after[index],
                "seconds": round(self.seconds_per_triplet, 4),
                "coefficients": [float(v) for v in self.coefficients[index]],
                "network_coefficients": [float(v) for v in self.initial[index]]}


def _scale_vector(step_scale: dict, device) -> torch.Tensor:
    s = torch.empty(COEFFS.size, dtype=torch.float32)
    for name, sl in COEFFS.shared_slices().items():
        s[sl] = float(step_scale[name])
    pose = torch.tensor([float(step_scale["rotation"])] * COEFFS.rotation
                        + [float(step_scale["translation"])] * COEFFS.translation)
    s[COEFFS.shared:] = pose.repeat(COEFFS.views)
    return s.to(device)


def _start_prior(weights: dict, device):
    """``RefineConfig.start_prior`` as a function of the step from the start [B, 269] -> scalar
    (the batch mean of each triplet's weighted sum of squares), or None when every weight is 0."""
    blocks = COEFFS.shared_slices()
    unknown = set(weights) - {"identity", "expression", "texture"}
    if unknown:
        raise ValueError(f"start_prior: no prior for {sorted(unknown)}; it takes identity, expression, texture")
    if any(float(v) < 0 for v in weights.values()):
        raise ValueError(f"start_prior: weights must be >= 0, got {weights}")
    w = torch.zeros(COEFFS.size, dtype=torch.float32)
    for name, weight in weights.items():
        w[blocks[name]] = float(weight)
    if not bool((w > 0).any()):
        return None
    w = w.to(device)
    return lambda step: (w * step * step).sum(-1).mean()


def landmark_factor(step: int, steps: int, anneal: float) -> float:
    """The landmark weight's multiplier at ``step`` of ``steps`` (``RefineConfig.landmark_anneal``): ``anneal``
    at the first step, falling geometrically to exactly 1 at the last."""
    if anneal == 1.0 or steps <= 1:
        return 1.0
    return float(anneal) ** (1.0 - min(step, steps - 1) / (steps - 1))


def _cosine(step: int, total: int, lr: float, final: float) -> float:
    if total <= 1:
        return lr
    t = step / (total - 1)
    return lr * (final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * t)))


def _check_weak_inputs(images: np.ndarray, landmarks, landmark_visible, labels, size: int) -> None:
    """ValueError for arrays that would broadcast or clamp into a wrong fit without one (``make_batch``'s shapes)."""
    if images.ndim != 5 or images.shape[1:] != (NUM_VIEWS, size, size, 3):
        raise ValueError(f"images have shape {images.shape}; expected [B, {NUM_VIEWS}, {size}, {size}, 3] (aligned RGB crops, "
                         f"views {', '.join(VIEWS)})")
    if images.dtype != np.uint8 and images.size and not (np.nanmin(images) >= 0 and np.nanmax(images) <= 1):
        raise ValueError(f"float images must be in [0, 1] (these span {np.nanmin(images):g} to "
                         f"{np.nanmax(images):g}); pass uint8 0-255 as read from the files")
    b = images.shape[0]
    for name, array, shape in (("landmarks", landmarks, (b, NUM_VIEWS, 68, 2)), ("landmark_visible", landmark_visible,
                                                                        (b, NUM_VIEWS, 68)), ("labels", labels, (b, NUM_VIEWS, size, size))):
        if array is not None and np.shape(array) != shape:
            raise ValueError(f"{name} have shape {np.shape(array)}; expected {list(shape)} (one row per triplet of images)")


class Refiner:
    """A face model, camera and loss set up once; ``__call__`` refines batches of triplets.

    face_model: ``MorphableModel`` (the one the coefficients belong to); camera: the model card's camera.
    """

    def __init__(self, face_model: MorphableModel, camera: Camera, config: RefineConfig | None = None):
        self.config = config or RefineConfig()
        self.device = resolve_torch_device(self.config.device, "--refine-device")
        self.face = FaceModelTorch(face_model, camera).to(self.device)
        self.weights = weak_weights(prdl=self.config.prdl, **self.config.loss_weights)
        self.loss = TrainingLoss(self.face, self.weights).to(self.device)
        self.camera = camera
        self.start_prior = _start_prior(self.config.start_prior, self.device)   # checked here, before any fit
        if not float(self.config.landmark_anneal) >= 1.0:
            raise ValueError(f"landmark_anneal must be >= 1 (the weight falls to its value), got "
                             f"{self.config.landmark_anneal}")
        self.last_batch: dict | None = None      # the batch handed to the loss (for inspection / tests)
        self.coarse_loss = None
        k = int(self.config.coarse_factor)
        if self.config.coarse_fraction > 0 and k > 1:
            small = camera.downscaled(k)
            cw = weak_weights(prdl=self.config.prdl, **{
                **self.config.loss_weights, "landmark_2d": self.weights.landmark_2d * k * k,
                "photo_dilation": downscaled_dilation(self.weights.photo_dilation, k)})
            self.coarse_loss = TrainingLoss(FaceModelTorch(face_model, small).to(self.device), cw).to(self.device)

    def coarse_batch(self, batch: dict) -> dict:
        """The weak batch at 1/coarse_factor of the size (see ``RefineConfig.coarse_fraction``)."""
        k = int(self.config.coarse_factor)
        photos, labels = downscale_photos_labels(batch["photos"], batch["labels"], k)
        return weak_batch({"photos": photos, "labels": labels,
                           "landmarks": batch["landmarks"] / k, "landmark_visible": batch["landmark_visible"],
                           "photo_weights": photo_weight_map(labels, self.coarse_loss.weights.photo_dilation)})

    def make_batch(self, images, landmarks=None, landmark_visible=None, labels=None) -> dict:
        """Weak inputs (numpy) -> the loss batch on the device. images [B, V, H, W, 3] uint8 RGB (or
        float in [0, 1]); landmarks [B, V, 68, 2] pixels or None (the landmark term then sees no
        point); landmark_visible [B, V, 68] bool or None (all visible where landmarks are given);
        labels [B, V, H, W] parse classes or None (all background: a uniform photometric weight)."""
        images = np.asarray(images)
        _check_weak_inputs(images, landmarks, landmark_visible, labels, int(self.camera.image_size))
        photos = torch.from_numpy(np.ascontiguousarray(images)).to(self.device)
        photos = photos.float() / 255.0 if images.dtype == np.uint8 else photos.float().clamp(0, 1)
        photos = photos.permute(0, 1, 4, 2, 3).contiguous()               # [B, V, 3, H, W]
        b, v, _, h, w = photos.shape
        if labels is None:
            labels_t = torch.zeros(b, v, h, w, dtype=torch.int64, device=self.device)
        else:
            labels_t = torch.from_numpy(np.asarray(labels).astype(np.int64)).to(self.device)
        if landmarks is None:
            lm = torch.zeros(b, v, 68, 2, device=self.device)
            visible = torch.zeros(b, v, 68, dtype=torch.bool, device=self.device)
        else:
            lm = torch.from_numpy(np.asarray(landmarks, np.float32)).to(self.device)
            visible = (torch.ones(b, v, 68, dtype=torch.bool, device=self.device) if landmark_visible is None
                       else torch.from_numpy(np.asarray(landmark_visible, bool)).to(self.device))
        # the photometric weight map depends on the labels only: computed once, not at every step
        weights = photo_weight_map(labels_t, self.weights.photo_dilation)
        return weak_batch({"photos": photos, "labels": labels_t, "landmarks": lm, "landmark_visible": visible,
                           "photo_weights": weights})

    def _per_triplet(self, coeffs: torch.Tensor, batch: dict) -> tuple[np.ndarray, list]:
        totals, terms = [], []
        with torch.no_grad():
            for i in range(coeffs.shape[0]):
                one = {k: t[i:i + 1] for k, t in batch.items()}
                total, parts = self.loss(coeffs[i:i + 1], one)
                totals.append(float(total))
                terms.append({k: float(t) for k, t in parts.items()})
        return np.array(totals), terms

    def __call__(self, coefficients, images, landmarks=None, landmark_visible=None, labels=None) -> RefineResult:
        """Refine ``coefficients`` [B, 269] (COEFFS layout, the network's prediction) against the
        triplets' weak inputs (see ``make_batch``). Returns a ``RefineResult``."""
        cfg = self.config
        threads = torch.get_num_threads()
        if cfg.threads and self.device.type == "cpu":
            torch.set_num_threads(int(cfg.threads))
        try:
            start = time.perf_counter()
            batch = self.make_batch(images, landmarks, landmark_visible, labels)
            self.last_batch = batch
            x0 = torch.as_tensor(np.asarray(coefficients, np.float32), device=self.device)
            if x0.ndim != 2 or x0.shape != (len(batch["photos"]), COEFFS.size):
                raise ValueError(f"coefficients have shape {tuple(x0.shape)}; refining {len(batch['photos'])} "
                                 f"triplet(s) needs [{len(batch['photos'])}, {COEFFS.size}] (COEFFS layout; "
                                 "COEFFS.join(reconstruction.coeffs) for a dfmvr-run result)")
            before, terms_before = self._per_triplet(x0, batch)
            x = self._fit(x0, batch)
            after, terms_after = self._per_triplet(x, batch)
            # Keep what the network said where the fit made the weak loss worse (the coarse phase
            # optimises a half-size image, and a large step can overshoot): a refinement must never
            # hand back a triplet further from its own photos than it received.
            worse = ~(after <= before)      # NaN after a diverged fit counts as worse: the network's are kept
            if worse.any():
                rows = torch.from_numpy(worse).to(x.device)
                x[rows] = x0[rows]
                after = np.where(worse, before, after)
                terms_after = [b if w else a for a, b, w in zip(terms_after, terms_before, worse)]
            seconds = time.perf_counter() - start
        finally:
            torch.set_num_threads(threads)
        return RefineResult(x.cpu().numpy().astype(np.float32), x0.cpu().numpy(), before, after,
                            terms_before, terms_after, seconds, int(cfg.steps), str(self.device), worse)

    def objective(self, x: torch.Tensor, x0: torch.Tensor, batch: dict, step: int, steps: int,
                  coarse: bool = False) -> torch.Tensor:
        """What step ``step`` of ``steps`` minimises at ``x`` from the start ``x0``: the weak loss (the coarse
        one on the coarse batch), the landmark term's extra weight while it falls (``landmark_anneal``),
        and the prior toward the start (``start_prior``). The fit's kept-check reads the weak loss alone."""
        loss = self.coarse_loss if coarse else self.loss
        total, terms = loss(x, batch)
        if self.config.landmark_anneal != 1.0 and "landmark_2d" in terms:
            extra = landmark_factor(step, steps, float(self.config.landmark_anneal)) - 1.0
            total = total + extra * loss.weights.landmark_2d * terms["landmark_2d"]
        if self.start_prior is not None:
            total = total + self.start_prior(x - x0)
        return total

    def _fit(self, x0: torch.Tensor, batch: dict) -> torch.Tensor:
        cfg = self.config
        steps = int(cfg.steps)
        if steps <= 0:
            return x0.clone()
        scale = _scale_vector(cfg.step_scale, self.device)
        # the shared block is identity, expression, texture, then lighting (COEFFS order): split off the last
        z_pose = torch.zeros(x0.shape[0], COEFFS.size - COEFFS.shared, device=self.device, requires_grad=True)
        z_shape = torch.zeros(x0.shape[0], COEFFS.shared - COEFFS.lighting, device=self.device, requires_grad=True)
        z_light = torch.zeros(x0.shape[0], COEFFS.lighting, device=self.device, requires_grad=True)
        n_pose = min(steps, int(round(steps * cfg.pose_fraction)))
        n_coarse = int(round(steps * cfg.coarse_fraction)) if self.coarse_loss is not None else 0
        small = self.coarse_batch(batch) if n_coarse else None
        done = 0
        first = [z_light, z_pose] if cfg.pose_phase_lighting else [z_pose]
        phases = [(n_pose, first), (steps - n_pose, [z_shape, z_light, z_pose])]
        bar = None
        if cfg.progress:
            from tqdm import tqdm
            bar = tqdm(total=steps, desc=f"refine {x0.shape[0]} triplet(s)", unit="step", leave=False)
        try:
            for n, params in phases:
                if n == 0:
                    continue
                opt = torch.optim.Adam(params, lr=cfg.lr)
                for k in range(n):
                    for g in opt.param_groups:
                        g["lr"] = _cosine(k, n, cfg.lr, cfg.final_lr)
                    x = x0 + scale * torch.cat([z_shape, z_light, z_pose], dim=1)
                    coarse = done < n_coarse
                    total = self.objective(x, x0, small if coarse else batch, done, steps, coarse)
                    done += 1
                    opt.zero_grad(set_to_none=True)
                    total.backward()
                    opt.step()
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{total.item():.4f}", phase="pose" if params is phases[0][1] else "all")
        finally:
            if bar is not None:
                bar.close()
        with torch.no_grad():
            return x0 + scale * torch.cat([z_shape, z_light, z_pose], dim=1)


def refine(coefficients, images, face_model: MorphableModel, camera: Camera, *, landmarks=None,
           landmark_visible=None, labels=None, steps: int = 50, device: str = "cpu", progress: bool = False,
           config: RefineConfig | None = None) -> RefineResult:
    """Refine network coefficients on their triplets with the weak losses (the Python API).

    coefficients [B, 269] float (COEFFS layout); images [B, 3, H, W, 3] uint8 RGB aligned crops in
    VIEWS order (H = W = camera.image_size); landmarks [B, 3, 68, 2] pixels (crop, u right, v down) or
    None; landmark_visible [B, 3, 68] bool or None; labels [B, 3, H, W] parse classes or None;
    face_model / camera: those the coefficients belong to (the model card's camera). ``config``
    overrides steps / device / progress when given. Returns a ``RefineResult``: refined
    coefficients, each triplet's weak loss before and after, seconds.
    """
    cfg = config or RefineConfig(steps=steps, device=device, progress=progress)
    return Refiner(face_model, camera, cfg)(coefficients, images, landmarks, landmark_visible, labels)
