"""The nvdiffrast rasterizer backend: its clip-space bridge on the CPU; the rasterization itself only
where nvdiffrast and an NVIDIA GPU exist (skipped here: never run on this project's machines)."""

from __future__ import annotations

import pytest
import torch

from dfmvr.face.synthetic import default_face_model
from dfmvr.synth import render_nvdiffrast as nv
from dfmvr.synth.render import rasterize


def test_clip_positions_put_pixel_centres_on_nvdiffrast_pixel_centres_and_order_depth():
    h, w = 4, 8
    j, i = torch.meshgrid(torch.arange(w), torch.arange(h), indexing="xy")
    depth = torch.linspace(0.5, 50.0, h * w)
    pd = torch.stack([j.reshape(-1) + 0.5, i.reshape(-1) + 0.5, depth], dim=-1)[None].double()
    clip = nv.clip_positions(pd, h, w)
    ndc = clip[..., :3] / clip[..., 3:]
    # nvdiffrast samples pixel (i, j) at x_ndc = -1 + (2j + 1) / W, y_ndc = -1 + (2i + 1) / H
    torch.testing.assert_close(ndc[0, :, 0], -1 + (2 * j.reshape(-1).double() + 1) / w)
    torch.testing.assert_close(ndc[0, :, 1], -1 + (2 * i.reshape(-1).double() + 1) / h)
    assert torch.equal(clip[..., 3], pd[..., 2])                   # w = depth: perspective-correct
    z = ndc[0, :, 2]
    assert (z[1:] > z[:-1]).all() and z.min() > -1 and z.max() < 1   # nearer = smaller z, inside the range


def test_cpu_tensors_use_the_torch_rasterizer_and_refuse_a_forced_nvdiffrast():
    pd = torch.tensor([[[2.0, 2.0, 5.0], [14.0, 3.0, 5.0], [3.0, 14.0, 5.0]]])
    tri = torch.tensor([[0, 1, 2]])
    auto, plain = rasterize(pd, tri, 16), rasterize(pd, tri, 16, backend="torch")
    assert torch.equal(auto.triangle_id, plain.triangle_id) and torch.equal(auto.bary, plain.bary)
    with pytest.raises(RuntimeError, match="nvdiffrast"):
        rasterize(pd, tri, 16, backend="nvdiffrast")
    with pytest.raises(ValueError, match="unknown rasterizer backend"):
        rasterize(pd, tri, 16, backend="opengl")


@pytest.mark.gpu
@pytest.mark.skipif(not nv.available(torch.device("cuda")), reason="needs nvdiffrast and an NVIDIA GPU")
def test_nvdiffrast_matches_the_torch_rasterizer_on_a_face():   # pragma: no cover - no GPU here
    from dfmvr.face.camera import DEEP3D_CAMERA
    from dfmvr.synth.face_torch import project_with_depth

    fm = default_face_model()
    verts = torch.as_tensor(fm.mean_shape, dtype=torch.float32)[None].cuda().requires_grad_(True)
    tri = torch.as_tensor(fm.triangles).cuda()
    pd = project_with_depth(verts, DEEP3D_CAMERA)
    ref = rasterize(pd, tri, 224, backend="torch")
    got = rasterize(pd, tri, 224, backend="nvdiffrast")
    same = got.triangle_id == ref.triangle_id
    assert same.float().mean() > 0.99
    torch.testing.assert_close(got.bary[same], ref.bary[same], atol=1e-3, rtol=0)
    got.depth.sum().backward()
    assert verts.grad is not None and torch.isfinite(verts.grad).all() and verts.grad.abs().sum() > 0
