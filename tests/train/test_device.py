"""``resolve_torch_device``: the command-line device names torch cannot use become dfmvr's errors."""

from __future__ import annotations

import pytest
import torch

from dfmvr.errors import InputError, UnavailableError
from dfmvr.train.device import resolve_torch_device
from dfmvr.train.refine import RefineConfig, Refiner


def test_cpu_is_returned_as_a_torch_device():
    assert resolve_torch_device("cpu", "--x") == torch.device("cpu")


@pytest.mark.parametrize("name", ["foo", "cpu:x", ""])
def test_a_name_that_is_no_device_is_a_usage_error(name):
    with pytest.raises(InputError, match="--x .* is not a torch device") as err:
        resolve_torch_device(name, "--x")
    assert err.value.exit_code == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:3"])
def test_cuda_without_cuda_is_a_missing_capability(name):
    with pytest.raises(UnavailableError, match=f"--x {name}: .* -- use --x cpu") as err:
        resolve_torch_device(name, "--x")
    assert err.value.exit_code == 3


def test_the_refiner_checks_its_device_when_built():
    from dfmvr.face.camera import Camera
    from dfmvr.face.synthetic import synthetic_face_model

    with pytest.raises(InputError, match="--refine-device 'nope'"):
        Refiner(synthetic_face_model(seed=0, num_vertices=500), Camera(), RefineConfig(device="nope"))
