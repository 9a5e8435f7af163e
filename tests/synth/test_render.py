"""The pure-torch rasterizer: coverage, barycentrics, depth order, silhouettes, gradients."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from scipy.spatial import Delaunay

from dfmvr.face import geometry
from dfmvr.face.camera import Camera, project
from dfmvr.face.layout import COEFFS
from dfmvr.face.synthetic import default_face_model
from dfmvr.synth.face_torch import project_with_depth, rotation_matrix
from dfmvr.synth.render import interpolate, rasterize, render_mesh


def _centres(h, w):
    v, u = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    return u, v


def _inside_margin(u, v, tri_uv):
    """Signed distance-like edge margins (pixels) of points to a triangle's edges: [H, W, 3]."""
    out = []
    for i in range(3):
        a, b = tri_uv[(i + 1) % 3], tri_uv[(i + 2) % 3]
        edge = b - a
        cross = edge[0] * (v - a[1]) - edge[1] * (u - a[0])
        out.append(cross / np.linalg.norm(edge))
    m = np.stack(out, -1)
    return m if (m.sum() >= 0) else -m


def test_triangle_coverage_and_barycentrics():
    tri_uv = np.array([[10.3, 7.9], [52.6, 14.2], [21.1, 45.7]])
    pd = torch.tensor(np.concatenate([tri_uv, np.full((3, 1), 4.0)], 1)[None], dtype=torch.float32)
    raster = rasterize(pd, torch.tensor([[0, 2, 1]]), (48, 64))   # clockwise winding on purpose
    u, v = _centres(48, 64)
    margin = _inside_margin(u, v, tri_uv)
    inside, outside = (margin > 1e-3).all(-1), (margin < -1e-3).any(-1)
    mask = raster.mask[0].numpy()
    assert mask[inside].all() and not mask[outside].any()
    assert (raster.triangle_id[0][raster.mask[0]] == 0).all() and (raster.triangle_id[0][~raster.mask[0]] == -1).all()
    bary = raster.bary[0].numpy()[mask]
    corners = tri_uv[[0, 2, 1]]
    np.testing.assert_allclose(bary.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(bary @ corners, np.stack([u[mask], v[mask]], -1), atol=1e-3)
    np.testing.assert_allclose(raster.depth[0].numpy()[mask], 4.0, rtol=1e-6)


def test_barycentrics_are_perspective_correct():
    cam = Camera(image_size=64, focal=200.0)
    pts = torch.tensor([[[-0.8, -0.6, 3.0], [0.9, -0.5, -2.0], [0.1, 0.9, 0.5]]], dtype=torch.float64)
    pd = project_with_depth(pts, cam)
    tris = torch.tensor([[0, 1, 2]])
    raster = rasterize(pd, tris, 64)
    xyz = interpolate(pts, raster, tris)[raster.mask]                 # 3D point under each pixel
    uv = project(xyz.numpy(), cam)
    u, v = _centres(64, 64)
    m = raster.mask[0].numpy()
    assert m.sum() > 200
    np.testing.assert_allclose(uv, np.stack([u[m], v[m]], -1), atol=1e-3)
    np.testing.assert_allclose(raster.depth[raster.mask].numpy(), cam.distance - xyz[:, 2].numpy(), atol=1e-9)


@pytest.mark.parametrize("near_first", [True, False])
def test_depth_order_of_overlapping_triangles(near_first):
    near = [[5.0, 5.0, 2.0], [40.0, 5.0, 2.0], [5.0, 40.0, 2.0]]
    far = [[10.0, 10.0, 3.0], [60.0, 10.0, 3.0], [10.0, 60.0, 3.0]]
    pd = torch.tensor([near + far if near_first else far + near])
    tris = torch.tensor([[0, 1, 2], [3, 4, 5]])
    near_id = 0 if near_first else 1
    raster = rasterize(pd, tris, 64)
    u, v = _centres(64, 64)
    in_near = (_inside_margin(u, v, np.array(near)[:, :2]) > 1e-3).all(-1)
    in_far = (_inside_margin(u, v, np.array(far)[:, :2]) > 1e-3).all(-1)
    tid, depth = raster.triangle_id[0].numpy(), raster.depth[0].numpy()
    assert (in_near & in_far).sum() > 100
    assert (tid[in_near] == near_id).all() and (depth[in_near] == pytest.approx(2.0))
    assert (tid[in_far & ~in_near & ~((_inside_margin(u, v, np.array(near)[:, :2]) > -1e-3).all(-1))]
            == 1 - near_id).all()


def _cube():
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], np.float64)
    faces = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    tris = [[a, b, c] for a, b, c, d in faces] + [[a, c, d] for a, b, c, d in faces]
    return corners, np.array(tris)


def test_cube_silhouette_is_the_convex_hull_of_its_projection():
    corners, tris = _cube()
    cam = Camera(image_size=96, focal=250.0)
    rot = geometry.rotation_matrix(np.radians([25.0, 35.0, 10.0])).astype(np.float64)
    posed = corners @ rot.T
    pd = project_with_depth(torch.from_numpy(posed)[None], cam)
    raster = rasterize(pd, torch.from_numpy(tris), 96)
    uv = project(posed, cam).astype(np.float64)
    hull = Delaunay(uv)
    u, v = _centres(96, 96)
    pts = np.stack([u, v], -1).reshape(-1, 2)
    inside = (hull.find_simplex(pts) >= 0).reshape(96, 96)
    # Exclude pixels whose centre is within 1e-3 px of the hull boundary.
    near_edge = np.zeros_like(inside)
    for off in ([1e-3, 0], [-1e-3, 0], [0, 1e-3], [0, -1e-3]):
        near_edge |= (hull.find_simplex(pts + off) >= 0).reshape(96, 96) != inside
    mask = raster.mask[0].numpy()
    assert inside.sum() > 3000
    assert (mask == inside)[~near_edge].all()
    # The visible surface is the nearest: depth never exceeds the cube's far half.
    assert raster.depth[0][raster.mask[0]].max() < cam.distance + 1.0


def test_nothing_behind_the_camera_or_off_screen_is_drawn():
    pd = torch.tensor([[[10.0, 10.0, -1.0], [30.0, 10.0, 2.0], [10.0, 30.0, 2.0],
                        [-50.0, -50.0, 2.0], [-20.0, -50.0, 2.0], [-50.0, -20.0, 2.0]]])
    raster = rasterize(pd, torch.tensor([[0, 1, 2], [3, 4, 5]]), 32)
    assert not raster.mask.any() and (raster.triangle_id == -1).all()


def test_gradcheck_through_barycentrics_and_attributes():
    # A small two-triangle mesh on an 8x8 image; no pixel centre sits near an edge, so visibility is
    # constant under the finite-difference steps.
    pd = torch.tensor([[[0.7, 0.9, 2.0], [7.2, 1.3, 2.5], [1.1, 7.4, 3.0], [7.6, 6.8, 2.2]]],
                      dtype=torch.float64, requires_grad=True)
    colors = torch.rand(1, 4, 2, dtype=torch.float64, requires_grad=True)
    tris = torch.tensor([[0, 1, 2], [1, 3, 2]])

    def render(p, c):
        r = rasterize(p, tris, 8)
        return interpolate(c, r, tris), r.depth

    assert torch.autograd.gradcheck(render, (pd, colors), eps=1e-6, atol=1e-6)
    image, _ = render(pd, colors)
    image.sum().backward()
    assert pd.grad.abs().sum() > 0 and colors.grad.abs().sum() > 0


def test_degenerate_and_behind_camera_triangles_keep_gradients_finite():
    pd = torch.tensor([[[2.0, 2.0, 2.0], [14.0, 3.0, 2.0], [3.0, 14.0, 2.0],
                        [5.0, 5.0, 2.0], [9.0, 9.0, 2.0], [13.0, 13.0, 2.0],      # zero area
                        [4.0, 4.0, 0.0], [12.0, 4.0, 1.0], [4.0, 12.0, 1.0]]],    # touches the camera plane
                      requires_grad=True)
    tris = torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    raster = rasterize(pd, tris, 16)
    assert set(raster.triangle_id.unique().tolist()) == {-1, 0}
    interpolate(pd, raster, tris).sum().backward()
    assert torch.isfinite(pd.grad).all() and pd.grad[0, :3].abs().sum() > 0


@functools.lru_cache(maxsize=1)
def _face():
    model = default_face_model()
    c = COEFFS.zeros(1)
    c.rotation[0, :, 1] = np.radians([-40.0, 0.0, 40.0])
    c.translation[0, :, 2] = -1.5
    mesh = geometry.assemble_mesh(model, c, Camera())
    out = render_mesh(torch.from_numpy(mesh.vertices[0]), torch.from_numpy(model.triangles.astype(np.int64)),
                      Camera(), colors=torch.from_numpy(mesh.vertices[0]),
                      parts=torch.from_numpy(model.parts.astype(np.int64)))
    return model, mesh, out


def test_rendered_landmarks_land_where_face_projects_them():
    model, mesh, out = _face()
    checked = 0
    for view in range(3):
        kp3d = mesh.vertices[0, view, model.keypoints]                    # [68, 3]
        for k, (u, v) in enumerate(mesh.landmarks[0, view]):
            i, j = int(v), int(u)
            if not out.mask[view, i, j]:
                continue
            # The rendered surface point under the landmark's pixel (colour = posed position).
            xyz = out.image[view, i, j].numpy()
            if abs(xyz[2] - kp3d[k, 2]) > 0.02:                           # hidden by a nearer surface
                continue
            checked += 1
            uv = project(xyz, Camera())
            assert np.abs(uv - np.array([j + 0.5, i + 0.5])).max() < 1e-3
            assert np.abs(uv - mesh.landmarks[0, view, k]).max() <= 0.75   # same pixel, up to its centre
    assert checked > 150


def test_rendered_labels_agree_with_vertex_parts():
    model, _, out = _face()
    tris = model.triangles
    for view in range(3):
        mask = out.mask[view].numpy()
        tid = out.raster.triangle_id[view].numpy()[mask]
        labels = out.labels[view].numpy()[mask]
        corner_parts = model.parts[tris[tid]]                              # [P, 3]
        assert (corner_parts == labels[:, None]).any(-1).all()
        uniform = (corner_parts == corner_parts[:, :1]).all(-1)
        assert (labels[uniform] == corner_parts[uniform, 0]).all()
        assert (out.labels[view].numpy()[~mask] == 0).all()
        assert {1, 6} <= set(np.unique(labels))                            # skin and nose everywhere
    front = set(np.unique(out.labels[1].numpy()))
    assert {2, 3, 4, 5, 8, 9} <= front


def test_batch_and_views_render_independently():
    model, mesh, out = _face()
    single = render_mesh(torch.from_numpy(mesh.vertices[0, 1:2]), torch.from_numpy(model.triangles.astype(np.int64)),
                         Camera(), parts=torch.from_numpy(model.parts.astype(np.int64)))
    assert torch.equal(single.raster.triangle_id[0], out.raster.triangle_id[1])
    assert torch.equal(single.labels[0], out.labels[1])


def test_rotation_mirror_is_used_for_posing():
    # render_mesh takes posed vertices; posing with the torch rotation equals the numpy pose.
    model, mesh, _ = _face()
    angles = torch.tensor(np.radians([0.0, -40.0, 0.0]), dtype=torch.float32)
    posed = torch.from_numpy(mesh.shape[0]) @ rotation_matrix(angles).T
    posed[..., 2] -= 1.5
    np.testing.assert_allclose(posed.numpy(), mesh.vertices[0, 0], atol=1e-5)
