"""PRDL — Part Re-projection Distance Loss (3DDFA-V3), see ``design/PRDL.md`` and ``docs/losses.md``.

For each facial part the parser's pixels (target set) and the reconstruction's pixels of that part
(predicted set) are each summarised by distance fields on a grid of anchors: the nearest, farthest
and average distance from every anchor to the set. The loss is the squared difference of the two
descriptors, averaged over anchors. Sets need no correspondence and gradients exist everywhere.

Choices the paper leaves open (parameters of ``PRDLConfig``, recorded in the model card), each made
so that the loss is exactly zero when the reconstruction is the truth and the labels are its render:
- anchors: a ``grid`` x ``grid`` lattice of cell centres over the image (default 16 x 16);
- parts: the 10 parse classes minus background; the inner mouth (class 7) is left out by default,
  as in the paper's 8 parts;
- both point sets live on the same pixel lattice: pixels (row i, col j) with i, j = s//2 + k*s for
  ``s = target_stride``, at their centres (j + 0.5, i + 0.5) (the ``dfmvr.face.camera`` convention);
- target set: the lattice pixels the parser labels p;
- predicted set: the lattice pixels where the z-buffered reconstruction shows part p (a pixel takes
  the part of its triangle's nearest corner, as ``render_mesh`` labels pixels). Each point sits at its
  pixel centre but is glued to the surface: it is the screen-space barycentric blend of its
  triangle's projected corners, weights held fixed, so moving vertices moves it. The paper projects
  the part's vertices instead; their density on screen follows the mesh (dense where the surface
  turns away, sparse where it faces the camera) and so biases the mean and farthest statistics,
  and they need a visibility rule: a z-buffered pixel sampling has neither problem;
- at most ``max_points`` points per set: one random score per lattice pixel, shared by both sets,
  keeps each set's top-scoring pixels, so identical sets keep identical subsets (the paper uses
  farthest-point sampling; a shared random draw is cheaper and keeps the zero at the truth).
Coordinates are pixels (u right, v down).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from ...synth.render import Raster, rasterize

__all__ = ["PRDLConfig", "anchor_grid", "lattice_centres", "distance_descriptor", "PRDL"]


@dataclass(frozen=True)
class PRDLConfig:
    grid: int = 16                   # anchors per side
    parts: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 9)   # parse classes used (7 = inner mouth: off)
    max_points: int = 512            # cap on each point set (both sides)
    target_stride: int = 2           # pixel lattice stride for both point sets
    image_size: int = 224

    def to_dict(self) -> dict:
        d = asdict(self)
        d["parts"] = list(self.parts)
        return d


def anchor_grid(grid: int, image_size: int) -> torch.Tensor:
    """Anchor positions [grid*grid, 2] float32 (u, v) pixels: centres of a grid x grid tiling."""
    c = (torch.arange(grid, dtype=torch.float32) + 0.5) * (image_size / grid)
    vv, uu = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([uu.reshape(-1), vv.reshape(-1)], -1)


def lattice_centres(stride: int, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The point-set lattice: rows/columns i = stride//2 + k*stride. Returns (flat pixel index
    i*size + j [L] int64, centre (u, v) = (j + 0.5, i + 0.5) [L, 2] float32), row-major."""
    idx = torch.arange(stride // 2, image_size, stride)
    ii, jj = torch.meshgrid(idx, idx, indexing="ij")
    ii, jj = ii.reshape(-1), jj.reshape(-1)
    uv = torch.stack([jj, ii], -1).to(torch.float32) + 0.5       # pixel j spans [j, j+1)
    return ii * image_size + jj, uv


def distance_descriptor(anchors: torch.Tensor, points: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Γ(S): nearest, farthest and mean distance from each anchor to each point set.

    anchors [A, 2]; points [S, P, 2]; valid [S, P] bool (padding excluded). Returns [S, A, 3]
    (pixels). Sets with no valid point give zeros (their samples must get weight 0).
    """
    # Padding takes the place of the set's first valid point: a duplicate changes neither the
    # nearest nor the farthest distance, so no [S, A, P] masking is needed for them.
    first = valid.to(torch.uint8).argmax(1)                                           # [S]
    fill = points.gather(1, first[:, None, None].expand(-1, 1, 2))
    points = torch.where(valid[..., None], points, fill)
    # cdist without the matrix-product shortcut: exact (no cancellation) and 3x faster than
    # broadcasting; its gradient at a zero distance is 0.
    d = torch.cdist(anchors[None].expand(points.shape[0], -1, -1), points,
                    compute_mode="donot_use_mm_for_euclid_dist")                       # [S, A, P]
    nearest, farthest = d.amin(-1), d.amax(-1)
    m = valid[:, None, :].to(d.dtype)
    mean = (d * m).sum(-1) / m.sum(-1).clamp_min(1)
    out = torch.stack([nearest, farthest, mean], -1)
    return torch.where(valid.any(-1)[:, None, None], out, torch.zeros_like(out))


class PRDL(nn.Module):
    """The PRDL loss for one face model: ``vertex_parts`` [N] int parse class per vertex,
    ``triangles`` [T, 3] int (the mesh the predicted part pixels are rasterised from)."""

    def __init__(self, vertex_parts, triangles, config: PRDLConfig = PRDLConfig()):
        super().__init__()
        self.config = config
        size = config.image_size
        self.register_buffer("anchors", anchor_grid(config.grid, size), persistent=False)
        self.register_buffer("parts", torch.as_tensor(np.asarray(vertex_parts), dtype=torch.int64), persistent=False)
        self.register_buffer("triangles", torch.as_tensor(np.asarray(triangles), dtype=torch.int64), persistent=False)
        present = set(self.parts.unique().tolist())
        self.part_ids = [p for p in config.parts if p in present]     # parts the face model has
        flat, uv = lattice_centres(config.target_stride, size)
        self.register_buffer("lattice_index", flat, persistent=False)
        self.register_buffer("pixel_uv", uv, persistent=False)
        slot = torch.full((size * size,), -1, dtype=torch.int64)        # pixel -> lattice slot or -1
        slot[flat] = torch.arange(flat.numel())
        self.register_buffer("lattice_slot", slot, persistent=False)

    def surface_points(self, pixels_depth: torch.Tensor, raster: Raster) -> tuple[torch.Tensor, torch.Tensor]:
        """The reconstruction sampled on the lattice. pixels_depth [S, N, 3] (u, v, depth) of the
        posed vertices; raster: their ``rasterize`` at ``image_size``. Returns points [S, L, 2]
        (pixels, differentiable w.r.t. pixels_depth; 0 where empty) and parts [S, L] int64 (0 =
        background where no triangle covers the lattice pixel)."""
        s, n = pixels_depth.shape[:2]
        hw = self.config.image_size ** 2
        lat = self.lattice_index.numel()
        slot = self.lattice_slot[raster.covered % hw]
        keep = (slot >= 0).nonzero().squeeze(1)
        sample = raster.covered.index_select(0, keep) // hw
        corners = self.triangles.index_select(0, raster.covered_triangle.index_select(0, keep))   # [Q, 3]
        bary = raster.covered_bary.index_select(0, keep).detach()      # perspective-correct
        c = pixels_depth.reshape(-1, 3).index_select(0, (sample[:, None] * n + corners).reshape(-1))
        c = c.reshape(-1, 3, 3)
        # Screen-space weights from perspective-correct ones (b_i ∝ w_i / depth_i); with them the
        # blend of the projected corners is the pixel centre itself.
        w = bary * c[..., 2].detach()
        w = w / w.sum(-1, keepdim=True)
        uv = (w[..., None] * c[..., :2]).sum(1)                         # [Q, 2]
        part = self.parts.index_select(0, corners.gather(1, bary.argmax(-1, keepdim=True))[:, 0])
        at = sample * lat + slot.index_select(0, keep)
        points = pixels_depth.new_zeros(s * lat, 2).index_copy(0, at, uv).reshape(s, lat, 2)
        parts = torch.zeros(s * lat, dtype=torch.int64, device=part.device).index_copy_(0, at, part)
        return points, parts.reshape(s, lat)

    def _select(self, hit: torch.Tensor, score: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """hit [S, L] bool, score [S, L] in [0, 1) -> the top-scoring hits: indices [S, K], valid [S, K]."""
        k = min(self.config.max_points, hit.shape[1])
        top, idx = torch.where(hit, score, torch.full_like(score, -1.0)).topk(k, dim=1)
        return idx, top >= 0

    def forward(self, pixels_depth: torch.Tensor, labels: torch.Tensor, view_mask: torch.Tensor | None = None,
                part_weights: dict[int, float] | None = None, generator: torch.Generator | None = None,
                raster: Raster | None = None) -> torch.Tensor:
        """pixels_depth [B, V, N, 3] posed vertices as (u, v, depth) (``TorchMesh.pixels_depth``);
        labels [B, V, H, W] int at ``image_size``; view_mask [B, V] bool, optional; raster: the
        z-buffer of the same vertices (batch B*V) when the caller already has one, else it is made
        here. Scalar: Σ_p w_p · mean over anchors of ‖Γ(V_p) − Γ(C_p)‖², averaged over the used
        (sample, view)s.
        """
        b, v, n, _ = pixels_depth.shape
        size = self.config.image_size
        if tuple(labels.shape[-2:]) != (size, size):
            raise ValueError(f"PRDL expects label maps of {size}x{size} (its image_size), got "
                             f"{tuple(labels.shape[-2:])}; resize the labels (nearest) or set PRDLConfig.image_size")
        pd = pixels_depth.reshape(b * v, n, 3)
        if raster is None:
            raster = rasterize(pd, self.triangles, size)
        pred_uv, pred_lab = self.surface_points(pd, raster)
        tgt_lab = labels.reshape(b * v, -1).index_select(1, self.lattice_index)       # [S, L]
        score = torch.rand(tgt_lab.shape, generator=generator, device="cpu").to(pd.device)
        used = torch.ones(b * v, dtype=torch.bool, device=pd.device) if view_mask is None \
            else view_mask.reshape(-1).bool()
        total = pd.new_zeros(())
        for p in self.part_ids:
            idx, pred_valid = self._select(pred_lab == p, score)
            pred = pred_uv.gather(1, idx[..., None].expand(-1, -1, 2))
            idx, tgt_valid = self._select(tgt_lab == p, score)
            g_pred = distance_descriptor(self.anchors, pred, pred_valid)
            with torch.no_grad():
                g_tgt = distance_descriptor(self.anchors, self.pixel_uv[idx], tgt_valid)
            per = ((g_pred - g_tgt) ** 2).sum(-1).mean(-1)                         # [S]
            ok = used & pred_valid.any(1) & tgt_valid.any(1)    # a part absent on either side: weight 0
            w = 1.0 if part_weights is None else float(part_weights.get(p, 1.0))
            total = total + w * (per * ok).sum()
        return total / used.sum().clamp_min(1)
