"""Fixtures for the network tests: small random inputs (the official key list: tests/conftest.py)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def paper_model():
    from dfmvr.models.variants import build_model

    torch.manual_seed(0)
    return build_model("paper")


@pytest.fixture(scope="module")
def tiny_model():
    from dfmvr.models.variants import build_model

    torch.manual_seed(0)
    return build_model("tiny").eval()


def assert_export_parity(checkpoint, out_dir) -> dict:
    """The real export of ``checkpoint`` into ``out_dir``: its parity gate (ONNX Runtime against PyTorch,
    coefficients and mesh mm) must pass. Returns the parity report."""
    import json

    from dfmvr.export.pipeline import export_all

    export_all(str(checkpoint), out_dir, echo=lambda line: None)
    report = json.loads((out_dir / "model.parity.json").read_text())
    assert report["passed"], report
    return report


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # On a shared 2-core machine, 2 OpenMP threads per process oversubscribe the cores and small
    # convolutions run ~4x slower than with one thread; the results do not depend on it.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
