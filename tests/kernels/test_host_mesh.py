"""The mesh-assembly kernels' __host__ __device__ arithmetic (g++ build) against dfmvr.face.geometry."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from kernel_fixtures import random_coefficients

from dfmvr.face.camera import DEEP3D_CAMERA, OFFICIAL_CAMERA
from dfmvr.face.geometry import assemble_mesh, rotation_matrix, sh_basis
from dfmvr.kernels import host

FIELDS = ("shape", "albedo", "vertices", "normals", "colors", "landmarks")


def rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.mark.parametrize("batch,camera", [(1, DEEP3D_CAMERA), (3, OFFICIAL_CAMERA)])
def test_fp32_matches_assemble_mesh(small_model, batch, camera):
    coeffs = random_coefficients(batch, seed=batch)
    if camera is OFFICIAL_CAMERA:  # the official weights' learned z offset keeps depth positive
        coeffs.translation[..., 2] -= 9.0
    ref = assemble_mesh(small_model, coeffs, camera)
    got = host.assemble_mesh_host(small_model, coeffs, camera)
    for name in FIELDS:
        a, b = getattr(got, name), getattr(ref, name)
        assert a.shape == b.shape and a.dtype == np.float32, name
        assert rel_err(a, b) <= 1e-5, name


def test_fp16_bases_match_reference_on_rounded_bases(small_model):
    """fp16 bases change only the stored basis values: with the reference given the same
    fp16-rounded bases, everything agrees to fp32 accuracy."""
    rounded = replace(small_model, **{k: getattr(small_model, k).astype(np.float16).astype(np.float32)
                                      for k in ("id_basis", "exp_basis", "albedo_basis")})
    coeffs = random_coefficients(2, seed=5)
    ref = assemble_mesh(rounded, coeffs, DEEP3D_CAMERA)
    got = host.assemble_mesh_host(small_model, coeffs, DEEP3D_CAMERA, basis_dtype="float16")
    for name in FIELDS:
        assert rel_err(getattr(got, name), getattr(ref, name)) <= 1e-5, name
    # and it really used fp16 bases: against the unrounded model the error is visibly larger
    exact = assemble_mesh(small_model, coeffs, DEEP3D_CAMERA)
    assert rel_err(got.shape, exact.shape) > 1e-6


def test_normals_are_unit_and_rotate_with_the_view(small_model):
    coeffs = random_coefficients(1, seed=9)
    got = host.assemble_mesh_host(small_model, coeffs, DEEP3D_CAMERA)
    np.testing.assert_allclose(np.linalg.norm(got.normals, axis=-1), 1.0, atol=1e-6)
    r = rotation_matrix(coeffs.rotation)[0]                     # [V, 3, 3]
    unposed = np.einsum("vji,vnj->vni", r, got.normals[0])      # R^T n: the same normal in every view
    np.testing.assert_allclose(unposed[0], unposed[2], atol=1e-5)


def test_sh_basis_matches_reference():
    rng = np.random.default_rng(2)
    n = rng.normal(size=(500, 3)).astype(np.float32)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    assert rel_err(host.sh_basis_host(n), sh_basis(n)) <= 1e-6


def test_rotation_matches_reference():
    angles = np.random.default_rng(4).uniform(-3.0, 3.0, (500, 3)).astype(np.float32)
    np.testing.assert_allclose(host.rotation_host(angles), rotation_matrix(angles), atol=2e-7)


def test_rejects_unknown_basis_dtype(small_model):
    with pytest.raises(ValueError, match="basis_dtype"):
        host.assemble_mesh_host(small_model, random_coefficients(1), DEEP3D_CAMERA, basis_dtype="bfloat16")
