"""The kernels on a real GPU against the numpy references. Skipped without cuda-python, a driver or a GPU."""

from __future__ import annotations

import numpy as np
import pytest
from kernel_fixtures import grid_model, random_coefficients

from dfmvr.face.camera import DEEP3D_CAMERA
from dfmvr.face.geometry import assemble_mesh
from dfmvr.kernels import build, launch
from dfmvr.kernels.op import GROUP_CHANNELS, involution_output_size, involution_reference
from dfmvr.kernels.trt_plugin import INVOLUTION_PARAMS, aot_scalar_args

pytestmark = pytest.mark.gpu
FIELDS = ("shape", "albedo", "vertices", "normals", "colors", "landmarks")


def rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.mark.parametrize("basis_dtype", ["float32", "float16"])
def test_cuda_mesh_assembler_matches_reference(cuda_context, basis_dtype):
    from dataclasses import replace

    from dfmvr.kernels.mesh_gpu import CudaMeshAssembler

    model = grid_model(40, 45, seed=3)   # 1800 vertices: several blocks per pass
    ref_model = model if basis_dtype == "float32" else replace(
        model, **{k: getattr(model, k).astype(np.float16).astype(np.float32)
                  for k in ("id_basis", "exp_basis", "albedo_basis")})
    with CudaMeshAssembler(model, DEEP3D_CAMERA, basis_dtype=basis_dtype) as asm:
        for batch in (2, 1, 3):          # buffers grow and are reused across calls
            coeffs = random_coefficients(batch, seed=batch)
            got = asm.assemble(coeffs)
            ref = assemble_mesh(ref_model, coeffs, DEEP3D_CAMERA)
            for name in FIELDS:
                assert getattr(got, name).shape == getattr(ref, name).shape, name
                assert rel_err(getattr(got, name), getattr(ref, name)) <= 1e-5, (batch, name)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("k,s", [(3, 1), (3, 2), (7, 1), (7, 2)])
def test_involution_kernel_matches_reference(cuda_context, dtype, k, s):
    from dfmvr.kernels.cuda_driver import CudaModule, DeviceBuffer, KernelArg

    rng = np.random.default_rng(10 * k + s)
    np_dtype = np.float32 if dtype == "float32" else np.float16
    b, c, h, w = 2, 64, 29, 30
    g = c // GROUP_CHANNELS
    ho, wo = involution_output_size(h, k, s), involution_output_size(w, k, s)
    x = rng.normal(size=(b, c, h, w)).astype(np_dtype)
    wt = rng.normal(size=(b, g * k * k, ho, wo)).astype(np_dtype)
    module = CudaModule(build.kernel_image("involution", cuda_context.arch))
    bx, bw, by = DeviceBuffer(), DeviceBuffer(), DeviceBuffer(b * c * ho * wo * x.itemsize)
    stream = cuda_context.stream
    cfg = launch.involution_launch(b, c, h, w, k, s, g)
    module.launch(launch.involution_kernel_name(k, dtype), cfg,
                  [bx.upload(x, stream), bw.upload(wt, stream), *aot_scalar_args((b, c, h, w), g, s), int(by.ptr)],
                  KernelArg.kinds(INVOLUTION_PARAMS), stream)
    y = by.download(np.empty((b, c, ho, wo), np_dtype), stream)
    cuda_context.synchronize()
    for buf in (bx, bw, by):
        buf.free()
    ref = involution_reference(x.astype(np.float64), wt.astype(np.float64), k, s, g)
    tol = 1e-5 if dtype == "float32" else 1e-3
    assert rel_err(y, ref) <= tol
