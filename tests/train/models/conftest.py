"""Fixtures for the network tests: the official key list and small random inputs."""

from __future__ import annotations

import ast

import pytest
import torch


def read_official_keys(path) -> dict[str, tuple[tuple[int, ...], str]]:
    """The official checkpoint's key -> (shape, dtype) table (../shared/data/*.tsv)."""
    out = {}
    for line in open(path, encoding="utf-8"):
        if line.startswith("#") or not line.strip():
            continue
        key, shape, dtype = line.rstrip("\n").split("\t")
        out[key] = (tuple(ast.literal_eval(shape)), dtype)
    return out


@pytest.fixture(scope="session")
def official_keys(shared_dir):
    path = shared_dir / "data" / "official_dfmvr_state_dict.tsv"
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return read_official_keys(path)


@pytest.fixture(scope="session")
def paper_model():
    from dfmvr.train.models.variants import build_model

    torch.manual_seed(0)
    return build_model("paper")


@pytest.fixture(scope="module")
def tiny_model():
    from dfmvr.train.models.variants import build_model

    torch.manual_seed(0)
    return build_model("tiny").eval()


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # On a shared 2-core machine, 2 OpenMP threads per process oversubscribe the cores and small
    # convolutions run ~4x slower than with one thread; the results do not depend on it.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
