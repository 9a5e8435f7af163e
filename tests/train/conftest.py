"""Fixtures shared by the training tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def synth4(tmp_path_factory):
    """Four synthetic triplets (shared by the trainer, DDP and evaluation tests of this session)."""
    root = tmp_path_factory.getbasetemp() / "dfmvr-train-synth4"
    if not (root / "000003").is_dir():
        from dfmvr.train.synth import write_dataset
        write_dataset(root, 4, seed=11, progress=False)
    return root


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module (shared 2-core machine: avoid OpenMP oversubscription)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
