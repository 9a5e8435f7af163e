"""Fixtures for the kernel tests: a small random morphable model, compiled artefacts, device probes."""

from __future__ import annotations

import pytest
from kernel_fixtures import grid_model

from dfmvr.face.model import MorphableModel


@pytest.fixture(scope="session")
def small_model() -> MorphableModel:
    return grid_model()


@pytest.fixture(scope="session")
def register_report():
    """The full matrix: both sources x sm_80/86/89/90 x nvcc/NVRTC, compiled to cubin once per
    source digest (cached on disk by dfmvr.kernels.build), with ptxas resources."""
    from dfmvr.kernels import build

    if build.find_nvcc() is None:
        pytest.skip("nvcc not installed")
    pytest.importorskip("cuda.bindings.nvrtc")
    return build.register_report()


@pytest.fixture(scope="session")
def cuda_context():
    """A CUDA context on device 0, or a skip where there is no cuda-python, driver or GPU."""
    from dfmvr.errors import DfmvrError
    from dfmvr.kernels.cuda_driver import CudaContext

    try:
        ctx = CudaContext(0)
    except (DfmvrError, ImportError) as exc:
        pytest.skip(f"no usable CUDA device: {exc}")
    yield ctx
    ctx.close()
