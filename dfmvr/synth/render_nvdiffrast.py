"""The nvdiffrast backend of ``dfmvr.synth.render.rasterize`` (CUDA tensors, when nvdiffrast imports).

Same inputs and the same ``Raster`` as the pure-torch rasterizer, so ``interpolate`` and
``render_mesh`` work unchanged. NOT RUN HERE: nvdiffrast needs CUDA and this machine has no GPU;
the clip-space conversion below is tested on the CPU, the rasterization itself only where
``tests/synth/test_render_nvdiffrast.py`` finds nvdiffrast and a GPU.

Conventions bridged:
- our screen space is (u, v) pixels with pixel centres at +0.5 and v pointing down, plus a positive
  camera depth; nvdiffrast takes homogeneous clip-space positions and writes image row i where
  y_ndc = -1 + (2 i + 1) / H. Mapping x_ndc = 2 u / W - 1 and y_ndc = 2 v / H - 1 therefore puts our
  row i on nvdiffrast's row i, with no flip. w = depth gives perspective-correct interpolation, and
  z_ndc rises with depth (OpenGL-style near/far) so nvdiffrast's depth test keeps the nearest surface.
- the barycentrics are taken in OUR corner order without relying on the order of nvdiffrast's (u, v)
  channels: every triangle gets three private corner vertices carrying one-hot attributes, and
  ``nvdiffrast.torch.interpolate`` of those through the rasterizer output is the barycentric triple
  (differentiable w.r.t. the positions, as nvdiffrast's rasterize output is).
"""

from __future__ import annotations

import torch

__all__ = ["available", "clip_positions", "rasterize_nvdiffrast", "DEPTH_NEAR", "DEPTH_FAR"]

DEPTH_NEAR = 1e-2     # model units (dm): the range the depth test resolves
DEPTH_FAR = 1e2
_CONTEXT: dict[int, object] = {}


def available(device: torch.device) -> bool:
    """nvdiffrast importable and ``device`` a CUDA device."""
    if device.type != "cuda":
        return False
    try:
        import nvdiffrast.torch  # noqa: F401
    except ImportError:
        return False
    return True


def clip_positions(pixels_depth: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[B, N, 3] (u, v, depth) -> [B, N, 4] clip-space (x, y, z, w) for nvdiffrast."""
    u, v, depth = pixels_depth.unbind(-1)
    n, f = DEPTH_NEAR, DEPTH_FAR
    x_ndc = 2.0 * u / width - 1.0
    y_ndc = 2.0 * v / height - 1.0
    z_clip = depth * (f + n) / (f - n) - 2.0 * f * n / (f - n)      # z / w rises with depth
    return torch.stack([x_ndc * depth, y_ndc * depth, z_clip, depth], dim=-1)


def _context(device: torch.device):
    import nvdiffrast.torch as dr

    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _CONTEXT:
        _CONTEXT[index] = dr.RasterizeCudaContext(device=torch.device("cuda", index))
    return _CONTEXT[index]


def rasterize_nvdiffrast(pixels_depth: torch.Tensor, triangles: torch.Tensor, height: int, width: int):
    """The nvdiffrast version of ``render.rasterize`` (see there for the arguments and the result)."""
    import nvdiffrast.torch as dr

    from .render import Raster

    device = pixels_depth.device
    b = pixels_depth.shape[0]
    tri32 = triangles.to(device=device, dtype=torch.int32).contiguous()
    rast, _ = dr.rasterize(_context(device), clip_positions(pixels_depth, height, width).contiguous(),
                           tri32, resolution=[height, width])
    tid = rast[..., 3].round().long() - 1                                     # -1 where empty
    corners = torch.arange(3 * tri32.shape[0], device=device, dtype=torch.int32).reshape(-1, 3)
    one_hot = torch.eye(3, device=device, dtype=pixels_depth.dtype).repeat(tri32.shape[0], 1)[None]
    bary, _ = dr.interpolate(one_hot.contiguous(), rast, corners)            # [B, H, W, 3], our corner order
    depth_attr = pixels_depth[..., 2:3].contiguous()
    depth, _ = dr.interpolate(depth_attr, rast, tri32)
    mask = tid >= 0
    bary = bary * mask[..., None]
    flat_tid = tid.reshape(-1)
    covered = (flat_tid >= 0).nonzero().squeeze(1)
    return Raster(triangle_id=tid, bary=bary, depth=depth[..., 0] * mask, mask=mask, covered=covered,
                  covered_triangle=flat_tid.index_select(0, covered),
                  covered_bary=bary.reshape(b * height * width, 3).index_select(0, covered))
