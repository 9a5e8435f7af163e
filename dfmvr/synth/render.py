"""A differentiable triangle rasterizer in pure torch (CPU and CUDA), with nvdiffrast's semantics.

``rasterize`` decides visibility without gradients — a z-buffer over each triangle's pixel bounding
box, vectorised by grouping triangles of similar box size, resolved by one ``scatter_reduce(amin)``
on a packed (depth bits << 32 | triangle id) key — and then recomputes the winning triangle's
barycentrics differentiably from the vertex positions. ``interpolate`` blends vertex attributes with
those barycentrics. Gradients therefore reach vertex positions (through the barycentrics) and
attributes, exactly as with nvdiffrast's rasterize + interpolate; like nvdiffrast without its
``antialias`` op, silhouette edges carry no gradient.

Conventions: pixel (row i, col j) has its centre at (u, v) = (j + 0.5, i + 0.5) — the
``dfmvr.face.camera`` convention; depth is camera-space distance along the optical axis (> 0).
Barycentrics are perspective-correct (screen-space weights divided by depth, renormalised), so an
attribute interpolates as it would on the 3D triangle.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..face.camera import Camera
from .face_torch import project_with_depth

__all__ = ["Raster", "rasterize", "interpolate", "RenderResult", "render_mesh", "NEAR_DEPTH", "BACKENDS"]

NEAR_DEPTH = 1e-4      # triangles with a vertex nearer than this (model units) are dropped
_EMPTY = torch.iinfo(torch.int64).max
_MAX_CANDIDATES = 1 << 22   # pixel candidates evaluated per chunk (bounds peak memory, ~100 MB)


@dataclass
class Raster:
    """Output of ``rasterize``. B batch, H x W pixels.

    triangle_id [B, H, W] int64  index into ``triangles`` of the visible triangle, -1 where empty
    bary        [B, H, W, 3]     perspective-correct barycentrics of the pixel centre (0 where empty);
                                 differentiable w.r.t. the vertex positions
    depth       [B, H, W]        interpolated camera depth (0 where empty), differentiable
    mask        [B, H, W] bool   coverage
    covered     [P] int64        flat indices (b*H*W + i*W + j) of the covered pixels
    covered_triangle [P] int64   their triangle ids; covered_bary [P, 3] their barycentrics (the
                                 tensor ``interpolate`` differentiates through)
    """

    triangle_id: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor
    covered: torch.Tensor
    covered_triangle: torch.Tensor
    covered_bary: torch.Tensor

    @property
    def size(self) -> tuple[int, int]:
        return int(self.mask.shape[1]), int(self.mask.shape[2])


def _pow2_ceil(x: torch.Tensor) -> torch.Tensor:
    return torch.pow(2.0, torch.ceil(torch.log2(x.clamp_min(1).double()))).long()


def _edge_planes(tri_uv: torch.Tensor):
    """Triangles [K, 3, 2] -> (a, b, c) [K, 3] with barycentric w_i(u, v) = a_i*u + b_i*v + c_i
    (edge functions divided by the signed area, so either winding works), and the signed area [K]."""
    x, y = tri_uv[..., 0], tri_uv[..., 1]
    x1, x2 = x.roll(-1, dims=-1), x.roll(-2, dims=-1)    # the edge opposite vertex i runs i+1 -> i+2
    y1, y2 = y.roll(-1, dims=-1), y.roll(-2, dims=-1)
    area = ((x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (x[:, 2] - x[:, 0]) * (y[:, 1] - y[:, 0]))
    # Degenerate triangles are never drawn; a safe divisor keeps their (unused) rows, and hence the
    # backward pass, free of inf/NaN.
    inv = 1.0 / torch.where(area.abs() > 1e-12, area, torch.ones_like(area))[:, None]
    return (y1 - y2) * inv, (x2 - x1) * inv, (x1 * y2 - x2 * y1) * inv, area


@torch.no_grad()
def _visibility(pd: torch.Tensor, triangles: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The z-buffer: packed keys [B*H*W] int64 (depth bits << 32 | triangle id), _EMPTY where empty."""
    b, n, t = pd.shape[0], pd.shape[1], triangles.shape[0]
    device = pd.device
    # Flat [B*T] triangle records; index_select is much faster than advanced indexing on CPU.
    vid = (torch.arange(b, device=device)[:, None, None] * n + triangles[None]).reshape(-1)
    corners = pd.reshape(-1, 3).index_select(0, vid).reshape(b * t, 3, 3)
    uv, depth = corners[..., :2], corners[..., 2]
    # Pixel j is a candidate when its centre j + 0.5 lies inside the triangle's u-range.
    lo = torch.ceil(uv.amin(dim=1) - 0.5).clamp_min(0)
    hi = torch.floor(uv.amax(dim=1) - 0.5)
    hi = torch.minimum(hi, torch.tensor([width - 1.0, height - 1.0], device=device, dtype=hi.dtype))
    # Edge planes in coordinates local to each box corner keep float32 exact enough that adjacent
    # triangles leave no pinholes along their shared edges.
    a, bb, c, area = _edge_planes(uv - lo[:, None, :])
    ok = ((hi >= lo).all(dim=-1) & (depth.amin(dim=-1) > NEAR_DEPTH) & (area.abs() > 1e-10)
          & torch.isfinite(corners).all(dim=-1).all(dim=-1))
    keep = ok.nonzero(as_tuple=True)[0]
    zbuf = torch.full((b * height * width,), _EMPTY, dtype=torch.int64, device=device)
    if keep.numel() == 0:
        return zbuf
    lo, hi = lo.index_select(0, keep).long(), hi.index_select(0, keep).long()
    inv_depth = 1.0 / depth.index_select(0, keep)                   # linear in screen space
    a, bb, c = (x.index_select(0, keep) for x in (a, bb, c))
    # 1/depth as a plane in local (u, v): sum_i w_i / d_i.
    za, zb, zc = (a * inv_depth).sum(-1), (bb * inv_depth).sum(-1), (c * inv_depth).sum(-1)
    tri_id = keep % t
    pix_base = (keep // t) * (height * width) + lo[:, 1] * width + lo[:, 0]
    extent = _pow2_ceil((hi - lo + 1).float())                     # [K, 2] box size class (w, h)
    cls = extent[:, 0] * 4096 + extent[:, 1]
    for key in torch.unique(cls).tolist():
        sel = (cls == key).nonzero(as_tuple=True)[0]
        ew, eh = key // 4096, key % 4096
        oy, ox = torch.meshgrid(torch.arange(eh, device=device), torch.arange(ew, device=device), indexing="ij")
        ox, oy = ox.reshape(-1), oy.reshape(-1)
        u, v = ox.to(a.dtype) + 0.5, oy.to(a.dtype) + 0.5                # local pixel centres [S]
        offset = oy * width + ox
        step = max(1, _MAX_CANDIDATES // (ew * eh))
        for start in range(0, sel.numel(), step):
            s = sel[start:start + step]
            span = hi.index_select(0, s) - lo.index_select(0, s)       # [k, 2] box size - 1
            inside = (ox <= span[:, 0:1]) & (oy <= span[:, 1:2])        # [k, S]
            sa, sb, sc = a.index_select(0, s), bb.index_select(0, s), c.index_select(0, s)
            for i in range(3):
                inside &= (sa[:, i:i + 1] * u + sb[:, i:i + 1] * v + sc[:, i:i + 1]) >= 0
            kk, cc = inside.nonzero(as_tuple=True)
            if kk.numel() == 0:
                continue
            sk = s.index_select(0, kk)
            uk, vk = u.index_select(0, cc), v.index_select(0, cc)
            z = 1.0 / (za.index_select(0, sk) * uk + zb.index_select(0, sk) * vk + zc.index_select(0, sk))
            keys = (z.float().view(torch.int32).long() << 32) | tri_id.index_select(0, sk)
            flat = pix_base.index_select(0, sk) + offset.index_select(0, cc)
            zbuf.scatter_reduce_(0, flat, keys, reduce="amin")
    return zbuf


BACKENDS = ("auto", "torch", "nvdiffrast")


def rasterize(pixels_depth: torch.Tensor, triangles: torch.Tensor, size, backend: str = "auto") -> Raster:
    """Rasterize triangle meshes given in screen space.

    pixels_depth [B, N, 3] float (u, v in pixels with centres at +0.5, depth > 0 in model units)
    triangles    [T, 3] int (0-based vertex ids, shared by the batch; either winding)
    size         int or (height, width)
    backend      "torch" (this file), "nvdiffrast" (``render_nvdiffrast``: CUDA tensors, nvdiffrast
                 installed; never run on this project's GPU-less machines) or "auto" (nvdiffrast when
                 it can run, else torch)
    Returns a ``Raster``. Visibility is the nearest triangle at each pixel centre (ties: lower id).
    """
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if pixels_depth.dim() != 3 or pixels_depth.shape[-1] != 3:
        raise ValueError(f"pixels_depth must be [B, N, 3], got {tuple(pixels_depth.shape)}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown rasterizer backend {backend!r}; known: {BACKENDS}")
    if backend != "torch":
        from . import render_nvdiffrast

        if render_nvdiffrast.available(pixels_depth.device):
            return render_nvdiffrast.rasterize_nvdiffrast(pixels_depth, triangles, height, width)
        if backend == "nvdiffrast":
            raise RuntimeError("the nvdiffrast backend needs CUDA tensors and the nvdiffrast package "
                               "(pip install nvdiffrast on a machine with an NVIDIA GPU)")
    triangles = triangles.to(device=pixels_depth.device, dtype=torch.int64)
    b, n = pixels_depth.shape[0], pixels_depth.shape[1]
    zbuf = _visibility(pixels_depth.detach(), triangles, height, width)
    # index_select / index_copy rather than advanced indexing: several times faster on CPU, forward
    # and backward.
    covered = (zbuf != _EMPTY).nonzero().squeeze(1)
    tri = zbuf.index_select(0, covered) & 0xFFFFFFFF
    batch = torch.div(covered, height * width, rounding_mode="floor")
    pix = covered - batch * (height * width)
    # Per-triangle setup (differentiable, once per triangle rather than per pixel): edge planes
    # relative to corner 0, so float32 keeps its precision far from the image origin.
    vid = (torch.arange(b, device=covered.device)[:, None, None] * n + triangles[None]).reshape(-1)
    corners = pixels_depth.reshape(-1, 3).index_select(0, vid).reshape(-1, 3, 3)   # [B*T, 3, 3]
    origin = corners[:, 0, :2]
    a, bb, c, _ = _edge_planes(corners[..., :2] - origin[:, None, :])
    depth = corners[..., 2]
    inv_depth = 1.0 / torch.where(depth > NEAR_DEPTH, depth, torch.ones_like(depth))
    setup = torch.cat([a, bb, c, inv_depth, origin], dim=-1)                       # [B*T, 14]
    per_pixel = setup.index_select(0, batch * triangles.shape[0] + tri)           # [P, 14]
    du = ((pix % width).to(pixels_depth.dtype) + 0.5 - per_pixel[:, 12])[:, None]
    dv = ((pix // width).to(pixels_depth.dtype) + 0.5 - per_pixel[:, 13])[:, None]
    w = per_pixel[:, 0:3] * du + per_pixel[:, 3:6] * dv + per_pixel[:, 6:9]        # screen-space bary
    persp = w * per_pixel[:, 9:12]
    norm = persp.sum(-1, keepdim=True)
    bary_p = persp / norm
    depth_p = 1.0 / norm[:, 0]
    total = b * height * width
    bary = pixels_depth.new_zeros(total, 3).index_copy(0, covered, bary_p)
    depth = pixels_depth.new_zeros(total).index_copy(0, covered, depth_p)
    tid = torch.full((total,), -1, dtype=torch.int64, device=pixels_depth.device).index_copy_(0, covered, tri)
    return Raster(triangle_id=tid.reshape(b, height, width), bary=bary.reshape(b, height, width, 3),
                  depth=depth.reshape(b, height, width), mask=(tid >= 0).reshape(b, height, width),
                  covered=covered, covered_triangle=tri, covered_bary=bary_p)


def interpolate(attributes: torch.Tensor, raster: Raster, triangles: torch.Tensor) -> torch.Tensor:
    """Per-vertex attributes [B, N, C] (or [N, C], shared) -> per-pixel [B, H, W, C], 0 where empty.

    Differentiable w.r.t. the attributes and (through the barycentrics) the vertex positions.
    """
    b, (h, w) = raster.mask.shape[0], raster.size
    triangles = triangles.to(device=attributes.device, dtype=torch.int64)
    covered, channels = raster.covered, attributes.shape[-1]
    corner_ids = triangles.index_select(0, raster.covered_triangle)               # [P, 3]
    if attributes.dim() == 3:
        corner_ids = corner_ids + (covered // (h * w))[:, None] * attributes.shape[1]
    values = attributes.reshape(-1, channels).index_select(0, corner_ids.reshape(-1))
    out = (values.reshape(-1, 3, channels) * raster.covered_bary[..., None]).sum(dim=1)
    full = attributes.new_zeros(b * h * w, channels).index_copy(0, covered, out)
    return full.reshape(b, h, w, channels)


@dataclass
class RenderResult:
    """Output of ``render_mesh``. image [B, H, W, 3] interpolated colour (0 where empty); labels
    [B, H, W] int64 part of the nearest vertex (0 = background where empty); depth [B, H, W];
    mask [B, H, W] bool; raster the underlying ``Raster``."""

    image: torch.Tensor
    labels: torch.Tensor | None
    depth: torch.Tensor
    mask: torch.Tensor
    raster: Raster


def render_mesh(vertices: torch.Tensor, triangles: torch.Tensor, camera: Camera,
                colors: torch.Tensor | None = None, parts: torch.Tensor | None = None,
                backend: str = "auto") -> RenderResult:
    """Render posed meshes with the project camera.

    vertices [B, N, 3] posed model-space points (dm); triangles [T, 3]; colors [B, N, 3] or None;
    parts [N] int vertex labels (``layout.PARSE_CLASSES``) or None. Labels take the part of the
    triangle corner with the largest barycentric weight (labels are categories, not blendable).
    """
    pd = project_with_depth(vertices, camera)
    raster = rasterize(pd, triangles, camera.image_size, backend)
    image = (interpolate(colors, raster, triangles) if colors is not None
             else raster.mask[..., None].to(vertices.dtype).expand(-1, -1, -1, 3))
    labels = None
    if parts is not None:
        tri = triangles.to(device=vertices.device, dtype=torch.int64)
        corners = tri.index_select(0, raster.covered_triangle)                     # [P, 3]
        nearest = raster.covered_bary.detach().argmax(dim=-1, keepdim=True)
        vid = torch.gather(corners, 1, nearest)[:, 0]
        part = parts.to(vertices.device).long().index_select(0, vid)
        labels = torch.zeros(raster.mask.numel(), dtype=torch.int64, device=vertices.device)
        labels = labels.index_copy_(0, raster.covered, part).reshape(raster.mask.shape)
    return RenderResult(image=image, labels=labels, depth=raster.depth, mask=raster.mask, raster=raster)
