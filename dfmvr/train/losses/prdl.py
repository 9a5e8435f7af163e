"""PRDL — Part Re-projection Distance Loss (3DDFA-V3), see ``design/PRDL.md``.

For each facial part the parser's pixels (target set) and the projected mesh vertices of that part
(predicted set) are each summarised by distance fields on a grid of anchors: the nearest, farthest
and average distance from every anchor to the set. The loss is the squared difference of the two
descriptors, averaged over anchors. Sets need no correspondence and gradients exist everywhere.

Choices the paper leaves open (all parameters of ``PRDLConfig``, recorded in the model card):
- anchors: a ``grid`` x ``grid`` lattice of cell centres over the image (default 16 x 16);
- parts: the 10 parse classes minus background; the inner mouth (class 7) is left out by default
  because a closed mouth has almost no inner-mouth pixels while the mesh always has the vertices;
- target pixels: every ``target_stride``-th pixel centre of the label map, then at most
  ``max_points`` of them drawn at random (the paper reduces skin by farthest-point sampling; a
  random draw from a regular lattice is cheaper and nearly as even);
- predicted points: the part's vertices facing the camera (the caller's ``vertex_visible``), at
  most ``max_points`` of them chosen once by farthest-point sampling on the mean shape.
Coordinates are pixels (u right, v down) in the ``dfmvr.face.camera.project`` convention.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

__all__ = ["PRDLConfig", "farthest_point_indices", "anchor_grid", "distance_descriptor", "PRDL"]


@dataclass(frozen=True)
class PRDLConfig:
    grid: int = 16                   # anchors per side
    parts: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 9)   # parse classes used (7 = inner mouth: off)
    max_points: int = 512            # cap on each point set (both sides)
    target_stride: int = 2           # label-map pixel stride for target points
    image_size: int = 224

    def to_dict(self) -> dict:
        d = asdict(self)
        d["parts"] = list(self.parts)
        return d


def farthest_point_indices(points: np.ndarray, k: int) -> np.ndarray:
    """Greedy farthest-point sampling: indices [min(k, P)] int64 of ``points`` [P, D], starting
    from the point nearest the centroid (deterministic)."""
    points = np.asarray(points, np.float64)
    p = points.shape[0]
    if k >= p:
        return np.arange(p, dtype=np.int64)
    first = int(np.argmin(((points - points.mean(0)) ** 2).sum(1)))
    chosen = [first]
    dist = ((points - points[first]) ** 2).sum(1)
    for _ in range(k - 1):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, ((points - points[nxt]) ** 2).sum(1))
    return np.asarray(chosen, np.int64)


def anchor_grid(grid: int, image_size: int) -> torch.Tensor:
    """Anchor positions [grid*grid, 2] float32 (u, v) pixels: centres of a grid x grid tiling."""
    c = (torch.arange(grid, dtype=torch.float32) + 0.5) * (image_size / grid)
    vv, uu = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([uu.reshape(-1), vv.reshape(-1)], -1)


def distance_descriptor(anchors: torch.Tensor, points: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Γ(S): nearest, farthest and mean distance from each anchor to each point set.

    anchors [A, 2]; points [S, P, 2]; valid [S, P] bool (padding excluded). Returns [S, A, 3]
    (pixels). Sets with no valid point give zeros (their samples must get weight 0).
    """
    d = torch.sqrt(((anchors[None, :, None, :] - points[:, None, :, :]) ** 2).sum(-1) + 1e-6)  # [S, A, P]
    m = valid[:, None, :]
    big = torch.finfo(d.dtype).max
    nearest = torch.where(m, d, torch.full_like(d, big)).amin(-1)
    farthest = torch.where(m, d, torch.zeros_like(d)).amax(-1)
    count = m.sum(-1).clamp_min(1).to(d.dtype)
    mean = (d * m).sum(-1) / count
    out = torch.stack([nearest, farthest, mean], -1)
    return torch.where(valid.any(-1)[:, None, None], out, torch.zeros_like(out))


class PRDL(nn.Module):
    """The PRDL loss for one face model. ``vertex_parts`` [N] uint8 parse class per vertex,
    ``mean_shape`` [N, 3] (for the farthest-point choice of each part's vertices)."""

    def __init__(self, vertex_parts: np.ndarray, mean_shape: np.ndarray, config: PRDLConfig = PRDLConfig()):
        super().__init__()
        self.config = config
        self.register_buffer("anchors", anchor_grid(config.grid, config.image_size), persistent=False)
        self.part_ids: list[int] = []
        for p in config.parts:
            idx = np.flatnonzero(np.asarray(vertex_parts) == p)
            if idx.size == 0:
                continue        # the face model has no vertices of this part
            idx = idx[farthest_point_indices(np.asarray(mean_shape)[idx], config.max_points)]
            self.register_buffer(f"vertices_{p}", torch.as_tensor(idx), persistent=False)
            self.part_ids.append(p)
        s = config.target_stride
        centres = torch.arange(s / 2.0, config.image_size, s, dtype=torch.float32)
        vv, uu = torch.meshgrid(centres, centres, indexing="ij")
        self.register_buffer("pixel_uv", torch.stack([uu.reshape(-1), vv.reshape(-1)], -1), persistent=False)

    def _target_points(self, labels: torch.Tensor, part: int, generator) -> tuple[torch.Tensor, torch.Tensor]:
        """labels [S, H, W] -> target points [S, P, 2] and valid [S, P] (random subset per sample)."""
        s = self.config.target_stride
        lab = labels[:, s // 2::s, s // 2::s].reshape(labels.shape[0], -1)          # [S, L]
        hit = lab == part
        k = min(self.config.max_points, hit.shape[1])
        score = torch.rand(hit.shape, generator=generator, device="cpu").to(labels.device)
        score = torch.where(hit, score, torch.full_like(score, -1.0))
        top, idx = score.topk(k, dim=1)
        return self.pixel_uv[idx], top >= 0

    def forward(self, projected: torch.Tensor, labels: torch.Tensor,
                vertex_visible: torch.Tensor | None = None, view_mask: torch.Tensor | None = None,
                part_weights: dict[int, float] | None = None, generator: torch.Generator | None = None
                ) -> torch.Tensor:
        """projected [B, V, N, 2] pixels; labels [B, V, H, W] int (at ``image_size``);
        vertex_visible [B, V, N] bool, optional; view_mask [B, V] bool, optional. Scalar:
        Σ_p w_p · mean over anchors of ‖Γ(V_p) − Γ(C_p)‖², averaged over the used (sample, view)s.
        """
        b, v, n, _ = projected.shape
        proj = projected.reshape(b * v, n, 2)
        lab = labels.reshape(b * v, *labels.shape[-2:])
        vis = None if vertex_visible is None else vertex_visible.reshape(b * v, n)
        used = torch.ones(b * v, dtype=torch.bool, device=proj.device) if view_mask is None \
            else view_mask.reshape(-1).bool()
        total = proj.new_zeros(())
        for p in self.part_ids:
            vid = getattr(self, f"vertices_{p}")
            pred = proj[:, vid]                                                   # [S, P, 2]
            pred_valid = torch.ones(pred.shape[:2], dtype=torch.bool, device=proj.device) if vis is None \
                else vis[:, vid]
            tgt, tgt_valid = self._target_points(lab, p, generator)
            g_pred = distance_descriptor(self.anchors, pred, pred_valid)
            with torch.no_grad():
                g_tgt = distance_descriptor(self.anchors, tgt, tgt_valid)
            per = ((g_pred - g_tgt) ** 2).sum(-1).mean(-1)                         # [S]
            ok = used & pred_valid.any(1) & tgt_valid.any(1)    # a part absent on either side: weight 0
            w = 1.0 if part_weights is None else float(part_weights.get(p, 1.0))
            total = total + w * (per * ok).sum()
        return total / used.sum().clamp_min(1)
