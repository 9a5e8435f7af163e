"""The total training loss: weights (defaults from the official recipe) and their combination.

One render pass per view: the posed, SH-lit mesh of every view is rasterized once at the image size
(or 1/k of it, ``LossWeights.photo_render_factor``);
the photometric and mask losses read that render, PRDL reads its z-buffer (or rasterises when
there is no render), the landmark losses use projected vertices and need no render. Each view is lit
with its own rotation (``FaceModelTorch`` rotates the normals per view before shading; the official
code used the right view's rotation for all three).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ...face.layout import COEFFS
from ...face.metrics import uniform_scale_direction
from ...face.meshio import MM_PER_MODEL_UNIT
from ...synth.face_torch import FaceModelTorch
from ...synth.render import render_mesh
from .landmarks import landmark_2d_loss, landmark_3d_loss, landmark_weights
from .mask import mask_loss
from .photo import downscale_photos_labels, downscaled_dilation, photo_weight_map, photometric_loss
from .prdl import PRDL, PRDLConfig
from .regularizers import coefficient_regularizer, gamma_regularizer, reflectance_regularizer

__all__ = ["LossWeights", "TrainingLoss"]


def mean_over_present_views(per_view: torch.Tensor, view_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of a [B, V] per-view error over the views present (``view_mask`` 1), or over all without a
    mask. A dropped view is fed as zeros, so its error says nothing and must not pull the mean."""
    if view_mask is None:
        return per_view.mean()
    m = view_mask.to(per_view.dtype)
    return (per_view * m).sum() / m.sum().clamp(min=1.0)


@dataclass
class LossWeights:
    """Loss weights and switches. Defaults: DF-MVR's released recipe (REFERENCE.md), with its
    defects fixed. Saved in the model card's ``loss_weights``."""

    landmark_2d: float = 0.02
    coefficient_reg: float = 3e-4
    reflectance: float = 5.0
    photo: float = 24.0
    gamma: float = 10.0
    # Off (the official recipe: 1). The 68 true 3D keypoints exist only with ground truth (synthetic
    # data, scans): a supervised term, which must never reach a fit scored against that truth. At 1
    # (model units², 1 mm² = 1e-4) its gradient is 350-1600x below the 2D term's (docs/losses.md).
    landmark_3d: float = 0.0
    # The official code adds the mask loss after epoch 100 of 280 with weight 1; the weight is not
    # in the paper. ``mask_start`` is the fraction of training after which it is on.
    mask: float = 1.0
    mask_start: float = 100.0 / 280.0
    prdl: float = 0.0                     # off by default; 3DDFA-V3 used 0.8e-3 (pixels here)
    supervised: float = 0.0               # synthetic data only: MSE to the true coefficients
    # Synthetic data only: mean squared vertex distance (mm^2) of the unposed shape (identity +
    # expression) to the true one. Unlike the coefficient MSE it weighs each component by how far it
    # moves the surface, i.e. by what the evaluation metric sees.
    supervised_shape: float = 0.0
    # Synthetic data only: the same after the best per-sample scale and translation of the predicted
    # shape onto the true one (closed form). Face size and camera distance trade off almost exactly in
    # the image, and the NoW-style metric ignores scale; this term asks only for the rest.
    supervised_shape_aligned: float = 0.0
    # Synthetic data only: the expression part of that vertex error alone, |E (beta - beta_true)|^2
    # (mm^2, mean over vertices). Identity is ~78 % of ``supervised_shape``, so adding this term is how
    # a recipe weighs expression up without touching the identity gradient.
    supervised_expression: float = 0.0
    # Synthetic data only: each present view's head-pose error, rotation in degrees (squared, summed
    # over the three Euler angles) plus translation in centimetres (squared, summed over x, y, z). In
    # the coefficient MSE of ``supervised`` the pose is ~0.03 % of the total (angles vary by ~0.08 rad,
    # identity coefficients by ~1), so a network trained on it reads the pose from the view slot
    # (docs/training.md, "The lite design").
    supervised_pose: float = 0.0
    # Models with a keypoint readout (architecture rednet.keypoints) only: mean squared distance (px^2)
    # of the soft-argmax keypoints to the 2D landmarks of each present view (gt.npz or a detector).
    keypoint_2d: float = 0.0
    # Weak (needs no ground truth): each present view's translation z minus where the crop alignment
    # puts the mean face (TrainingLoss.depth_centre), squared (cm^2). Aligned crops show every face at
    # about one size, which the mean face at that depth explains; the image alone cannot tell a larger
    # face from a farther one, and a weak-only run from scratch drifted ~19 cm too far
    # (docs/training.md, "Weak supervision alone"). A prior on where the head is, not on its shape.
    depth_prior: float = 0.0
    # Weak (needs no ground truth): the identity's uniform-scale component, the mean squared vertex
    # displacement (mm²) of its projection on a uniform scaling of the mean shape. The size is what
    # the photos cannot show (docs/refine.md, "Size and distance"), and weak-only runs predict sizes
    # that cost more identity R² than the mean size would; every other identity direction stays free.
    # Measured: held while training, it also costs the rest of the identity (docs/training.md, "A
    # prior on the size"); off by default.
    size_prior: float = 0.0
    landmark_emphasis: float = 20.0       # weight of nose 28-30 and inner mouth 60-67
    landmark_eyes: bool = False           # also emphasise the eyes 36-47 (the official code)
    photo_dilation: int = 10              # the features' dilation (pixels, square) in the weight map
    # The photometric term's render at 1/k of the image size per side (the camera's focal and size
    # divided, the photos box-averaged, the labels subsampled, the weight map's dilation divided by k;
    # ``downscale_photos_labels``): the render is half of a lite training step on a CPU at k = 1
    # (docs/training.md, "What the render costs"). 1: the official full-size render. The mask loss
    # runs the parser on the full-size render, so k > 1 needs it off.
    photo_render_factor: int = 1
    coefficient_reg_weights: tuple = (1.0, 0.8, 0.017)
    prdl_config: dict = field(default_factory=lambda: PRDLConfig().to_dict())

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """Raise ValueError for weights no loss can compute (the CLI turns it into a usage error, exit 2)."""
        k = int(self.photo_render_factor)
        if k < 1:
            raise ValueError(f"photo_render_factor {k}: the render is 1/k of the image size per side, k >= 1")
        if k > 1 and self.mask > 0:
            raise ValueError(f"photo_render_factor {k} renders below the image size, where the mask loss's "
                             f"parser cannot run: set the mask weight to 0 (--mask-weight 0) or the factor to 1")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["coefficient_reg_weights"] = list(self.coefficient_reg_weights)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LossWeights":
        known = set(cls.__dataclass_fields__)
        out = cls(**{k: v for k, v in d.items() if k in known})
        out.coefficient_reg_weights = tuple(out.coefficient_reg_weights)
        return out


class TrainingLoss(nn.Module):
    """Computes every loss term from the network's coefficients and a batch.

    face: ``FaceModelTorch``; parse_net: the frozen parser (needed only when the mask loss is on).
    """

    def __init__(self, face: FaceModelTorch, weights: LossWeights | None = None,
                 parse_net: nn.Module | None = None, depth_centre=None):
        super().__init__()
        self.face = face
        self.weights = weights or LossWeights()
        self.parse_net = parse_net
        # The depth prior's centre, per view [V] (model units): translation z of the mean face aligned
        # to the crop template (``synth.dataset.aligned_mean_face_pose``; the trainer passes it). 0 if
        # not given: the Deep3D convention (its camera at distance 10 expects translation z near 0).
        centre = torch.zeros(COEFFS.views) if depth_centre is None else torch.as_tensor(depth_centre, dtype=torch.float32)
        self.register_buffer("depth_centre", centre.reshape(COEFFS.views), persistent=False)
        # The identity's uniform-scale component is identity @ size_row (model units along a unit
        # vertex-space direction): the basis is linear, so one row does it.
        direction = torch.from_numpy(uniform_scale_direction(face.mean_shape.detach().cpu().numpy())).to(face.id_basis)
        self.register_buffer("size_row", face.id_basis.T @ direction, persistent=False)
        self.register_buffer("lm_weights", landmark_weights(self.weights.landmark_emphasis,
                                                            self.weights.landmark_eyes), persistent=False)
        self.weights.check()                  # its fields may have changed since it was made
        self.photo_camera = face.camera.downscaled(int(self.weights.photo_render_factor))
        self.prdl = None
        if self.weights.prdl > 0:
            cfg = dict(self.weights.prdl_config)
            cfg["parts"] = tuple(cfg["parts"])
            self.prdl = PRDL(face.parts.cpu().numpy(), face.triangles.cpu().numpy(), PRDLConfig(**cfg))

    def forward(self, coefficients: torch.Tensor, batch: dict, view_mask: torch.Tensor | None = None,
                progress: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """coefficients [B, 269] (COEFFS layout); batch (tensors on the same device):
          photos     [B, V, 3, H, W] float in [0, 1]  the input photos
          labels     [B, V, H, W] int64                parse labels of the photos
          landmarks  [B, V, 68, 2] float pixels        2D landmarks (u right, v down)
          landmark_visible [B, V, 68] bool (optional)
          photo_weights    [B, V, H, W] (optional)     photo_weight_map(labels, photo_dilation), when
                                                      the caller computed it once (per-triplet fits)
          landmarks_3d     [B, 68, 3] (optional)        ground-truth 3D keypoints, unposed (dm)
          gt_coefficients  [B, 269] (optional)          for the supervised term
        view_mask [B, V] bool: views fed to the network (others take no part in per-view losses);
        progress: fraction of training done (switches the mask loss on).
        Returns (total scalar, {term name: unweighted scalar}).
        """
        w = self.weights
        mesh = self.face(coefficients)
        c = COEFFS.split(coefficients)
        b, v = mesh.vertices.shape[:2]
        terms: dict[str, torch.Tensor] = {}
        photos, labels = batch["photos"], batch["labels"]
        h, wd = labels.shape[-2:]

        need_render = w.photo > 0 or (w.mask > 0 and progress >= w.mask_start and self.parse_net is not None)
        rendered = None
        if need_render:
            n = mesh.vertices.shape[2]
            k = int(w.photo_render_factor)
            rendered = render_mesh(mesh.vertices.reshape(b * v, n, 3), self.face.triangles,
                                   self.photo_camera, colors=mesh.colors.reshape(b * v, n, 3))
            image = rendered.image.reshape(b, v, h // k, wd // k, 3).permute(0, 1, 4, 2, 3)   # [B, V, 3, H, W]
            coverage = rendered.mask.reshape(b, v, h // k, wd // k).to(image.dtype)
            if w.photo > 0:
                wmap = batch.get("photo_weights")      # precomputed from the labels (a fit's fixed batch)
                target = photos
                if k > 1:                              # (a precomputed map is full-size: made anew here)
                    target, small_labels = downscale_photos_labels(photos, labels, k)
                    wmap = photo_weight_map(small_labels, downscaled_dilation(w.photo_dilation, k))
                elif wmap is None:
                    wmap = photo_weight_map(labels, w.photo_dilation)
                terms["photo"] = photometric_loss(image, target, coverage, wmap, view_mask)
            if w.mask > 0 and progress >= w.mask_start and self.parse_net is not None:
                terms["mask"] = mask_loss(self.parse_net, image.clamp(0, 1), coverage, photos, labels, view_mask)
        if w.landmark_2d > 0:
            terms["landmark_2d"] = landmark_2d_loss(mesh.landmarks, batch["landmarks"], self.lm_weights,
                                                    batch.get("landmark_visible"), view_mask)
        if w.landmark_3d > 0 and batch.get("landmarks_3d") is not None:
            pred3d = mesh.shape[:, self.face.keypoints]
            terms["landmark_3d"] = landmark_3d_loss(pred3d, batch["landmarks_3d"])
        if w.coefficient_reg > 0:
            terms["coefficient_reg"] = coefficient_regularizer(c.identity, c.expression, c.texture,
                                                               w.coefficient_reg_weights)
        if w.gamma > 0:
            terms["gamma"] = gamma_regularizer(c.lighting)
        if w.reflectance > 0:
            terms["reflectance"] = reflectance_regularizer(mesh.albedo, self.face.skin_mask)
        if self.prdl is not None:
            # PRDL samples the z-buffered surface on a pixel lattice: it reuses the render's raster.
            # (A render below the image size does not match the labels' lattice: PRDL rasterises anew.)
            reuse = rendered is not None and int(w.photo_render_factor) == 1
            terms["prdl"] = self.prdl(mesh.pixels_depth, labels, view_mask, raster=rendered.raster if reuse else None)
        if w.depth_prior > 0:
            terms["depth_prior"] = self.depth_prior_term(coefficients, view_mask, self.depth_centre)
        if w.size_prior > 0:
            terms["size_prior"] = self.size_prior_term(c.identity, self.size_row, self.face.mean_shape.shape[0])
        if w.supervised > 0 and batch.get("gt_coefficients") is not None:
            terms["supervised"] = self.supervised_term(coefficients, batch["gt_coefficients"], view_mask)
        if w.supervised_pose > 0 and batch.get("gt_coefficients") is not None:
            terms["supervised_pose"] = self.supervised_pose_term(coefficients, batch["gt_coefficients"], view_mask)
        if w.supervised_expression > 0 and batch.get("gt_coefficients") is not None:
            terms["supervised_expression"] = self.expression_vertex_error(
                c.expression, COEFFS.split(batch["gt_coefficients"]).expression)
        shape_terms = w.supervised_shape > 0 or w.supervised_shape_aligned > 0
        if shape_terms and batch.get("gt_coefficients") is not None:
            g = COEFFS.split(batch["gt_coefficients"])
            true_shape = self.face.shape(g.identity, g.expression)
            if w.supervised_shape > 0:
                terms["supervised_shape"] = (((mesh.shape - true_shape) * MM_PER_MODEL_UNIT) ** 2).sum(-1).mean()
            if w.supervised_shape_aligned > 0:
                terms["supervised_shape_aligned"] = self.scale_aligned_shape_error(mesh.shape, true_shape)

        total = coefficients.new_zeros(())
        for name, value in terms.items():
            total = total + getattr(w, name) * value
        return total, terms

    def expression_vertex_error(self, pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        """Mean squared vertex distance (mm^2) between the expression offsets of ``pred`` and ``true``
        [B, Ke]: the basis is linear, so that is the offset of their difference."""
        offset = (pred - true) @ self.face.exp_basis.T                                  # [B, 3N] (dm)
        return ((offset.reshape(offset.shape[0], -1, 3) * MM_PER_MODEL_UNIT) ** 2).sum(-1).mean()

    @staticmethod
    def scale_aligned_shape_error(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        """Mean squared vertex distance (mm^2) between ``true`` and ``pred`` [B, N, 3] moved by its
        best scale s and translation: centre both, s = <p, t> / <p, p> (least squares)."""
        p = pred - pred.mean(dim=1, keepdim=True)
        t = true - true.mean(dim=1, keepdim=True)
        scale = (p * t).sum(dim=(1, 2)) / (p * p).sum(dim=(1, 2)).clamp_min(1e-12)
        return (((scale[:, None, None] * p - t) * MM_PER_MODEL_UNIT) ** 2).sum(-1).mean()

    @staticmethod
    def depth_prior_term(pred: torch.Tensor, view_mask: torch.Tensor | None, centre: torch.Tensor) -> torch.Tensor:
        """Mean over the present views of (translation z - centre[view])² in cm²."""
        offset = COEFFS.split(pred).translation[..., 2] - centre.to(pred.dtype)
        depth = (offset * (MM_PER_MODEL_UNIT / 10.0)).pow(2)                                       # [B, V]
        return mean_over_present_views(depth, view_mask)

    @staticmethod
    def size_prior_term(identity: torch.Tensor, size_row: torch.Tensor, vertices: int) -> torch.Tensor:
        """Mean over the batch of the identity's uniform-scale component as a mean squared vertex
        displacement (mm²): |c d|² / V for its component c along the unit direction d."""
        component = (identity @ size_row) * MM_PER_MODEL_UNIT                                      # [B]
        return component.pow(2).mean() / vertices

    @staticmethod
    def supervised_pose_term(pred: torch.Tensor, gt: torch.Tensor, view_mask: torch.Tensor | None) -> torch.Tensor:
        """Mean over the present views of |Δ angles|² (degrees²) + |Δ translation|² (cm²)."""
        p, g = COEFFS.split(pred), COEFFS.split(gt)
        rotation = torch.rad2deg(p.rotation - g.rotation).pow(2).sum(-1)                     # [B, V]
        translation = ((p.translation - g.translation) * (MM_PER_MODEL_UNIT / 10.0)).pow(2).sum(-1)
        return mean_over_present_views(rotation + translation, view_mask)

    @staticmethod
    def supervised_term(pred: torch.Tensor, gt: torch.Tensor, view_mask: torch.Tensor | None) -> torch.Tensor:
        """Mean squared coefficient error; a dropped view's pose is unknowable and left out."""
        p, g = COEFFS.split(pred), COEFFS.split(gt)
        shared = sum(((getattr(p, k) - getattr(g, k)) ** 2).sum(-1)
                     for k in ("identity", "expression", "texture", "lighting"))
        pose = ((p.rotation - g.rotation) ** 2).sum(-1) + ((p.translation - g.translation) ** 2).sum(-1)  # [B, V]
        if view_mask is not None:
            pose = pose * view_mask.to(pose.dtype)
        return (shared + pose.sum(-1)).mean() / COEFFS.size
