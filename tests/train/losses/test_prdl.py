"""PRDL on constructed meshes and label maps, in the dfmvr.face camera convention."""

import numpy as np
import pytest
import torch

from dfmvr.face.camera import Camera
from dfmvr.synth.face_torch import project_with_depth
from dfmvr.train.losses.prdl import PRDL, PRDLConfig, anchor_grid, distance_descriptor, lattice_centres
from dfmvr.synth.render import rasterize, render_mesh


def test_descriptor_statistics_by_hand():
    anchors = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    pts = torch.tensor([[[3.0, 4.0], [6.0, 8.0], [99.0, 99.0]]])
    valid = torch.tensor([[True, True, False]])                     # the third point is padding
    d = distance_descriptor(anchors, pts, valid)[0]
    assert d[0].tolist() == pytest.approx([5.0, 10.0, 7.5], abs=1e-3)
    far = np.hypot(7, 4), np.hypot(4, 8)
    assert d[1].tolist() == pytest.approx([min(far), max(far), np.mean(far)], abs=1e-3)
    assert distance_descriptor(anchors, pts, torch.zeros_like(valid)).abs().sum() == 0


def test_anchor_grid():
    a = anchor_grid(4, 224)
    assert a.shape == (16, 2) and a[0].tolist() == [28.0, 28.0] and a[1].tolist() == [84.0, 28.0]


@pytest.mark.parametrize("stride", [1, 2, 3, 4])
def test_lattice_pixels_sit_at_their_centres(stride):
    """Pixel (row i, col j) spans [j, j+1) x [i, i+1): its centre is (j + 0.5, i + 0.5), for odd and
    even strides alike (the old code put even-stride targets half a pixel up-left)."""
    flat, uv = lattice_centres(stride, 224)
    rows, cols = flat // 224, flat % 224
    assert torch.equal(uv[:, 0], cols.float() + 0.5) and torch.equal(uv[:, 1], rows.float() + 0.5)
    assert rows.min() == stride // 2 and torch.all(rows % stride == stride // 2)


def test_label_pixel_11_11_stride_2_is_the_target_11_5():
    """One label pixel at (row 11, col 11): the target set is the single point (11.5, 11.5)."""
    loss = PRDL(np.array([6, 6, 6]), np.array([[0, 1, 2]]), PRDLConfig(target_stride=2))
    labels = torch.zeros(1, 224, 224, dtype=torch.int64)
    labels[0, 11, 11] = 6
    target = labels.reshape(1, -1).index_select(1, loss.lattice_index)
    idx, valid = loss._select(target == 6, torch.rand(target.shape))
    assert valid.sum() == 1
    assert loss.pixel_uv[idx[valid]].tolist() == [[11.5, 11.5]]


def _plane(size=1.0, steps=40, z=0.0, offset=(0.03, 0.05)):
    """A triangulated square on the plane z: vertices [N, 3] and triangles [T, 3]. The vertices
    crowd towards one corner (quadratic spacing): vertex density must not matter."""
    t = size * (np.linspace(0.0, 1.0, steps) ** 2 - 0.5)
    xx, yy = np.meshgrid(t + offset[0], t + offset[1])
    verts = np.stack([xx.ravel(), yy.ravel(), np.full(xx.size, z)], 1).astype(np.float32)
    k = np.arange(steps * steps).reshape(steps, steps)
    a, b, c, d = k[:-1, :-1].ravel(), k[:-1, 1:].ravel(), k[1:, :-1].ravel(), k[1:, 1:].ravel()
    return verts, np.concatenate([np.stack([a, b, c], 1), np.stack([b, d, c], 1)])


def _scene(shift_v=0.0, flip=False):
    """A 'face' on a plane: nose (6) a disc inside skin (1). Returns parts [N], triangles [T], pixels_depth
    [1, 1, N, 3] (shifted/flipped as asked) and the label map rendered from the unshifted truth."""
    verts, tris = _plane()
    r = np.hypot(verts[:, 0] - 0.03, verts[:, 1] - 0.05)
    parts = np.where(r < 0.15, 6, 1).astype(np.int64)
    pd = project_with_depth(torch.from_numpy(verts)[None], Camera())
    labels = render_mesh(torch.from_numpy(verts)[None], torch.from_numpy(tris), Camera(),
                         parts=torch.from_numpy(parts)).labels
    moved = pd.clone()
    moved[..., 1] += shift_v
    if flip:
        moved[..., 1] = 224 - moved[..., 1]                         # the y-up convention mistake
    return parts, tris, moved[None], labels[None]


def test_surface_points_are_the_pixel_centres_and_follow_the_vertices():
    parts, tris, pd, labels = _scene()
    loss = PRDL(parts, tris)
    pd = pd[0].clone().requires_grad_(True)
    points, lab = loss.surface_points(pd, rasterize(pd, torch.from_numpy(tris), 224))
    on = lab[0] > 0
    assert on.sum() > 1000
    assert torch.allclose(points[0, on], loss.pixel_uv[on], atol=1e-3)
    assert torch.equal(lab[0], labels.reshape(1, -1)[0, loss.lattice_index])   # the renderer's labels
    points[0, on, 1].sum().backward()                 # a glued point moves with its triangle's corners
    assert pd.grad[0, :, 1].sum().item() == pytest.approx(on.sum().item(), rel=1e-4)


def test_prdl_zero_at_the_truth_and_grows_with_offset():
    parts, tris, pd, labels = _scene()
    loss = PRDL(parts, tris, PRDLConfig(grid=16, max_points=400))
    g = lambda: torch.Generator().manual_seed(0)                    # noqa: E731
    assert loss(pd, labels, generator=g()).item() < 1e-6
    by_shift = [loss(_scene(shift_v=d)[2], labels, generator=g()).item() for d in (1.0, 2.0, 6.0)]
    flipped = loss(_scene(flip=True)[2], labels, generator=g()).item()
    assert 0 < by_shift[0] < by_shift[1] < by_shift[2] < flipped


def test_visibility_is_the_z_buffer():
    """A skin plane in front of the nose hides it: the nose has no predicted pixels, so its term
    weighs zero, although every nose vertex faces the camera."""
    parts, tris, pd, labels = _scene()
    front, front_tris = _plane(size=0.5, steps=5, z=0.5)
    n = parts.size
    all_parts = np.concatenate([parts, np.ones(len(front), np.int64)])
    all_tris = np.concatenate([tris, front_tris + n])
    all_pd = torch.cat([pd, project_with_depth(torch.from_numpy(front), Camera())[None, None]], 2)
    loss = PRDL(all_parts, all_tris, PRDLConfig(grid=8))
    _, lab = loss.surface_points(all_pd[0], rasterize(all_pd[0], torch.from_numpy(all_tris), 224))
    assert (lab == 6).sum() == 0 and (lab == 1).sum() > 0
    nose_only = loss(all_pd, labels, part_weights={1: 0.0}).item()
    assert nose_only == 0.0


def test_prdl_gradient_pulls_points_towards_the_part():
    parts, tris, _, labels = _scene()
    pd = _scene(shift_v=8.0)[2].clone().requires_grad_(True)      # predicted 8 px too low
    loss = PRDL(parts, tris, PRDLConfig(grid=16, max_points=400))
    loss(pd, labels, generator=torch.Generator().manual_seed(0)).backward()
    gv = pd.grad[0, 0, :, 1]
    used = gv != 0
    assert used.sum() > 100
    assert gv[used].mean() > 0            # descending the gradient moves v up (towards the labels)


def test_prdl_absent_part_and_dropped_view_weigh_zero():
    parts, tris, pd, labels = _scene()
    loss = PRDL(parts, tris, PRDLConfig(grid=8, max_points=200))
    empty = torch.zeros_like(labels)                                # no part in the image
    assert loss(_scene(shift_v=6.0)[2], empty).item() == 0.0
    two = torch.cat([_scene(shift_v=3.0)[2], _scene(shift_v=30.0)[2]], 1)   # [1, 2, N, 3]
    lab2 = labels.expand(1, 2, 224, 224)
    g = lambda: torch.Generator().manual_seed(0)                    # noqa: E731
    masked = loss(two, lab2, view_mask=torch.tensor([[True, False]]), generator=g()).item()
    alone = loss(_scene(shift_v=3.0)[2], labels, generator=g()).item()
    assert masked > 0 and masked == pytest.approx(alone, rel=1e-4)


def test_labels_at_another_size_are_refused():
    parts, tris, pd, _ = _scene()
    with pytest.raises(ValueError, match="224x224"):
        PRDL(parts, tris)(pd, torch.zeros(1, 1, 112, 112, dtype=torch.int64))
