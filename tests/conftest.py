"""Shared test fixtures. Markers: slow, gpu, tensorrt (see pyproject.toml)."""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The official checkpoint's key -> shape -> dtype list (a copy of ../shared/data/, so that no test
# needs ../shared beside the checkout).
OFFICIAL_KEYS_TSV = REPO / "tests" / "data" / "official_dfmvr_state_dict.tsv"


def _share_the_cores_between_xdist_workers() -> None:
    """Under pytest-xdist (the README test command runs ``-n auto``) each worker process gets its share of
    the cores for torch's OpenMP pool, unless the caller set one: two workers each spinning every core of a
    2-core machine oversubscribe it. Runs when this file is imported, before any test imports torch."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(name, str(max(1, cores // workers)))


_share_the_cores_between_xdist_workers()


def run_cli(command, args, capsys, prog_name=None) -> tuple[int, str]:
    """Run a click ``command`` as its console script does (``dfmvr.cli.invoke``: errors become their exit
    codes and messages) -> (exit code, stdout + stderr)."""
    from dfmvr.cli import invoke

    with pytest.raises(SystemExit) as exc:
        invoke(command, [str(a) for a in args], prog_name=prog_name)
    captured = capsys.readouterr()
    return exc.value.code, captured.out + captured.err


def load_script(name: str):
    """scripts/<name>.py as a module (the scripts are run as files, not installed as a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

# Prepended to a child interpreter's code: any attempt to import torch raises ImportError.
BLOCK_TORCH = textwrap.dedent(
    """
    import sys, importlib.abc
    class _BlockTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch.") or name.startswith(("dfmvr.train", "dfmvr.models", "dfmvr.synth")):
                raise ImportError("blocked by test: " + name)
            return None
    sys.meta_path.insert(0, _BlockTorch())
    """
)


def run_python(code: str, block_torch: bool = False, cwd=None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (optionally with torch blocked) and return the result."""
    src = (BLOCK_TORCH if block_torch else "") + textwrap.dedent(code)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=env)


def read_official_keys(path=OFFICIAL_KEYS_TSV) -> dict[str, tuple[tuple[int, ...], str]]:
    """The official checkpoint's key -> (shape, dtype) table."""
    out = {}
    for line in open(path, encoding="utf-8"):
        if line.startswith("#") or not line.strip():
            continue
        key, shape, dtype = line.rstrip("\n").split("\t")
        out[key] = (tuple(ast.literal_eval(shape)), dtype)
    return out


@pytest.fixture(scope="session")
def official_keys() -> dict[str, tuple[tuple[int, ...], str]]:
    return read_official_keys()


@pytest.fixture(scope="session")
def synth4(tmp_path_factory):
    """Four synthetic triplets (seed 11), made once a session and shared by the training, evaluation and
    script tests (``dfmvr data synth`` renders them with torch; the evaluation itself needs none)."""
    root = tmp_path_factory.getbasetemp() / "dfmvr-train-synth4"
    if not (root / "000003").is_dir():
        from dfmvr.synth.dataset import write_dataset
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


@pytest.fixture(scope="module")
def lite_checkpoint(synth4, tmp_path_factory, one_torch_thread):
    """A freshly initialised ``lite`` network (seed 0) for synth4's face model, saved as a checkpoint:
    what the heads refit and the probe scripts read, without training one."""
    torch = pytest.importorskip("torch")
    from dfmvr.face.model import MorphableModel
    from dfmvr.models.checkpoint import save_checkpoint
    from dfmvr.models.variants import build_model, make_card

    torch.manual_seed(0)
    model = build_model(make_card("lite", face_model=MorphableModel.load(synth4 / "face_model.npz").identity()))
    path = tmp_path_factory.mktemp("lite") / "lite.safetensors"
    save_checkpoint(path, model.eval(), model.card)
    return path
