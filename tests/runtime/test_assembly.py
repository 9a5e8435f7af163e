"""The runtime's fast CPU mesh assembly equals the numpy reference."""

from __future__ import annotations

import numpy as np

from dfmvr.face.camera import Camera
from dfmvr.face.geometry import MeshResult, assemble_mesh
from dfmvr.face.layout import COEFFS
from dfmvr.runtime.assembly import CpuMeshAssembler


def test_matches_the_reference_for_a_batch(face_model):
    rng = np.random.default_rng(3)
    flat = rng.standard_normal((3, COEFFS.size)).astype(np.float32) * 0.5
    c = COEFFS.split(flat)
    c.rotation[:] = np.radians(rng.uniform(-50, 50, c.rotation.shape)).astype(np.float32)
    c.translation[:] = rng.uniform(-0.3, 0.3, c.translation.shape).astype(np.float32)
    cam = Camera(distance=10.0)
    want = assemble_mesh(face_model, c, cam)
    got = CpuMeshAssembler(face_model, cam).assemble(c)
    for name in MeshResult.__dataclass_fields__:
        a, b = getattr(got, name), getattr(want, name)
        assert a.shape == b.shape and a.dtype == np.float32, name
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-4 if name == "landmarks" else 2e-5, err_msg=name)


def test_matches_the_pytorch_face_model_within_0_01_mm(face_model):
    """The runtime's mesh equals the training side's torch mesh (FaceModelTorch) to 0.01 mm."""
    import pytest

    torch = pytest.importorskip("torch")
    face_torch = pytest.importorskip("dfmvr.synth.face_torch")
    rng = np.random.default_rng(11)
    flat = (rng.standard_normal((2, COEFFS.size)) * 0.5).astype(np.float32)
    c = COEFFS.split(flat)
    c.rotation[:] = np.radians(rng.uniform(-45, 45, c.rotation.shape)).astype(np.float32)
    cam = Camera(distance=10.0)
    ours = CpuMeshAssembler(face_model, cam).assemble(c)
    with torch.no_grad():
        theirs = face_torch.FaceModelTorch(face_model, cam)(torch.from_numpy(COEFFS.join(c)))
    mm = 100.0                                                     # model units are decimetres
    assert np.abs(ours.vertices - theirs.vertices.numpy()).max() * mm < 0.01
    np.testing.assert_allclose(ours.colors, theirs.colors.numpy(), rtol=1e-4, atol=5e-5)
    np.testing.assert_allclose(ours.landmarks, theirs.landmarks.numpy(), atol=1e-3)
