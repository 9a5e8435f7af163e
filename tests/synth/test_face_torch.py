"""The torch face mirror against the numpy reference (dfmvr.face.geometry)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from dfmvr.face import geometry
from dfmvr.face.camera import Camera, project
from dfmvr.face.layout import COEFFS
from dfmvr.face.synthetic import default_face_model
from dfmvr.synth import face_torch as ft


@functools.lru_cache(maxsize=1)
def _model():
    return default_face_model()


def _random_flat(batch: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = COEFFS.split(rng.normal(0.0, 1.0, (batch, COEFFS.size)).astype(np.float32))
    c.lighting[:] *= 0.2
    c.rotation[:] = rng.uniform(-0.8, 0.8, c.rotation.shape)
    c.translation[:] = rng.uniform(-0.5, 0.5, c.translation.shape)
    return COEFFS.join(c)


def test_rotation_matches_numpy():
    angles = np.random.default_rng(0).uniform(-np.pi, np.pi, (5, 3, 3)).astype(np.float32)
    got = ft.rotation_matrix(torch.from_numpy(angles)).numpy()
    np.testing.assert_allclose(got, geometry.rotation_matrix(angles), atol=1e-6)


def test_projection_matches_numpy():
    cam = Camera()
    pts = np.random.default_rng(1).uniform(-1, 1, (4, 10, 3)).astype(np.float32)
    got = ft.project_with_depth(torch.from_numpy(pts), cam).numpy()
    np.testing.assert_allclose(got[..., :2], project(pts, cam), rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(got[..., 2], cam.distance - pts[..., 2], atol=1e-6)


def test_sh_shade_matches_numpy():
    rng = np.random.default_rng(2)
    normals = rng.normal(size=(2, 3, 50, 3)).astype(np.float32)
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    albedo = rng.uniform(0, 1, (2, 1, 50, 3)).astype(np.float32)
    light = rng.normal(0, 0.3, (2, 27)).astype(np.float32)
    got = ft.sh_shade(torch.from_numpy(albedo), torch.from_numpy(normals), torch.from_numpy(light)).numpy()
    np.testing.assert_allclose(got, geometry.sh_shade(albedo, normals, light), rtol=1e-5, atol=1e-5)


def test_assemble_matches_numpy_reference():
    model = _model()
    flat = _random_flat(2, seed=3)
    ref = geometry.assemble_mesh(model, COEFFS.split(flat), Camera())
    mesh = ft.FaceModelTorch(model)(torch.from_numpy(flat))
    for name in ("shape", "albedo", "vertices"):
        np.testing.assert_allclose(getattr(mesh, name).numpy(), getattr(ref, name), rtol=1e-5, atol=1e-5,
                                   err_msg=name)
    # Normals of small triangles amplify the last-bit differences of the two float32 shapes (matmul
    # order), so end to end they agree to 1e-3; from the same shape they agree to 1e-5 (below).
    for name in ("normals", "colors"):
        np.testing.assert_allclose(getattr(mesh, name).numpy(), getattr(ref, name), atol=1e-3, err_msg=name)
    module = ft.FaceModelTorch(model)
    normals = module.normals(torch.from_numpy(ref.shape))
    rot = ft.rotation_matrix(torch.from_numpy(COEFFS.split(flat).rotation))
    posed_normals = torch.einsum("bvij,bnj->bvni", rot, normals)
    np.testing.assert_allclose(posed_normals.numpy(), ref.normals, atol=1e-5)
    colors = ft.sh_shade(torch.from_numpy(ref.albedo)[:, None], torch.from_numpy(ref.normals),
                         torch.from_numpy(COEFFS.split(flat).lighting))
    np.testing.assert_allclose(colors.numpy(), ref.colors, rtol=1e-5, atol=1e-5)
    # Pixels are ~100x the model units: compare at float32 resolution of a 224-pixel coordinate.
    np.testing.assert_allclose(mesh.landmarks.numpy(), ref.landmarks, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(mesh.pixels_depth[..., 2].numpy(), 10.0 - ref.vertices[..., 2], atol=1e-5)


def test_vertex_normals_match_numpy_with_padding():
    model = _model()
    assert (model.vertex_triangles < 0).any()   # the -1 padding path is exercised
    shape = geometry.face_shape(model, np.zeros((1, 80), np.float32), np.zeros((1, 64), np.float32))
    got = ft.FaceModelTorch(model).normals(torch.from_numpy(shape)).numpy()
    np.testing.assert_allclose(got, geometry.vertex_normals(shape, model.triangles, model.vertex_triangles),
                               atol=1e-5)


def test_gradients_reach_every_coefficient_block():
    module = ft.FaceModelTorch(_model())
    flat = torch.from_numpy(_random_flat(1, seed=4)).requires_grad_(True)
    mesh = module(flat)
    (mesh.colors.sum() + mesh.landmarks.sum()).backward()
    grad = COEFFS.split(flat.grad)
    for name, block in grad.as_dict().items():
        assert torch.isfinite(block).all(), name
        assert block.abs().sum() > 0, name


@pytest.mark.parametrize("dtype", [torch.float64])
def test_module_follows_dtype(dtype):
    module = ft.FaceModelTorch(_model()).to(dtype)
    mesh = module(torch.from_numpy(_random_flat(1, seed=5)).to(dtype))
    assert mesh.vertices.dtype == dtype
