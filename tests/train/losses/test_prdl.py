"""PRDL on constructed point sets and label maps, in the dfmvr.face camera convention."""

import cv2
import numpy as np
import pytest
import torch

from dfmvr.face.camera import Camera, project
from dfmvr.train.losses.prdl import PRDL, PRDLConfig, anchor_grid, distance_descriptor, farthest_point_indices


def test_descriptor_statistics_by_hand():
    anchors = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    pts = torch.tensor([[[3.0, 4.0], [6.0, 8.0], [99.0, 99.0]]])
    valid = torch.tensor([[True, True, False]])                     # the third point is padding
    d = distance_descriptor(anchors, pts, valid)[0]
    assert d[0].tolist() == pytest.approx([5.0, 10.0, 7.5], abs=1e-3)
    far = np.hypot(7, 4), np.hypot(4, 8)
    assert d[1].tolist() == pytest.approx([min(far), max(far), np.mean(far)], abs=1e-3)
    assert distance_descriptor(anchors, pts, torch.zeros_like(valid)).abs().sum() == 0


def test_anchor_grid_and_fps():
    a = anchor_grid(4, 224)
    assert a.shape == (16, 2) and a[0].tolist() == [28.0, 28.0] and a[1].tolist() == [84.0, 28.0]
    pts = np.array([[0, 0], [1, 0], [10, 0], [0, 10], [0.5, 0.2]], float)
    idx = farthest_point_indices(pts, 3)
    assert len(set(idx.tolist())) == 3 and {2, 3} <= set(idx.tolist())


def _scene(shift_v=0.0, flip=False):
    """A 'face' of two parts on a plane z = 0: nose (6) a small disc, skin (1) a larger ring.
    Returns vertex parts [N], mean shape [N, 3], projected vertices [1, 1, N, 2] and a label map
    painted from the projection (pixel (i, j) labelled when its centre is near a projected point)."""
    cam = Camera()
    r = np.sqrt(np.random.default_rng(0).random(3000)) * 0.12
    t = np.random.default_rng(1).random(3000) * 2 * np.pi
    pts = np.stack([r * np.cos(t) + 0.03, r * np.sin(t) + 0.05, np.zeros_like(r)], 1).astype(np.float32)
    parts = np.where(r < 0.04, 6, 1).astype(np.uint8)
    uv = project(pts, cam)
    labels = np.zeros((224, 224), np.int64)
    for p in (1, 6):                                                # nose painted over skin
        ij = np.floor(uv[parts == p]).astype(int)
        hit = np.zeros((224, 224), np.uint8)
        hit[ij[:, 1], ij[:, 0]] = 1                                 # row = v, column = u
        labels[cv2.dilate(hit, np.ones((3, 3), np.uint8)) > 0] = p
    proj = uv.copy()
    proj[:, 1] += shift_v
    if flip:
        proj[:, 1] = 224 - proj[:, 1]                              # the y-up convention mistake
    return parts, pts, torch.from_numpy(proj)[None, None], torch.from_numpy(labels)[None, None]


def test_prdl_zero_at_the_truth_and_grows_with_offset():
    parts, shape, proj, labels = _scene()
    loss = PRDL(parts, shape, PRDLConfig(grid=16, max_points=400))
    g = torch.Generator().manual_seed(0)
    at_truth = loss(proj, labels, generator=g).item()
    shifted = loss(_scene(shift_v=6.0)[2], labels, generator=g).item()
    flipped = loss(_scene(flip=True)[2], labels, generator=g).item()
    assert shifted > 10 * at_truth and flipped > 10 * at_truth
    # monotone in the offset; the residual at the truth is pixel quantisation and sampling
    by_shift = [loss(_scene(shift_v=d)[2], labels, generator=torch.Generator().manual_seed(0)).item()
                for d in (0.0, 1.0, 2.0)]
    assert by_shift[0] < by_shift[1] < by_shift[2] < shifted


def test_prdl_gradient_pulls_points_towards_the_part():
    parts, shape, _, labels = _scene()
    proj = _scene(shift_v=8.0)[2].clone().requires_grad_(True)      # predicted 8 px too low
    loss = PRDL(parts, shape, PRDLConfig(grid=16, max_points=400))
    loss(proj, labels, generator=torch.Generator().manual_seed(0)).backward()
    gv = proj.grad[0, 0, :, 1]
    used = gv != 0
    assert used.sum() > 100
    assert gv[used].mean() > 0            # descending the gradient moves v up (towards the labels)


def test_prdl_absent_part_and_dropped_view_weigh_zero():
    parts, shape, proj, labels = _scene()
    loss = PRDL(parts, shape, PRDLConfig(grid=8, max_points=200))
    empty = torch.zeros_like(labels)                                # no part in the image
    assert loss(_scene(shift_v=6.0)[2], empty).item() == 0.0
    two = torch.cat([proj, _scene(shift_v=30.0)[2]], 1)             # [1, 2, N, 2]
    lab2 = labels.expand(1, 2, 224, 224)
    g = lambda: torch.Generator().manual_seed(0)                    # noqa: E731
    masked = loss(two, lab2, view_mask=torch.tensor([[True, False]]), generator=g()).item()
    alone = loss(proj, labels, generator=g()).item()
    assert masked == pytest.approx(alone, rel=1e-4)
