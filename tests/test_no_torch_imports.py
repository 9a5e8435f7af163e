"""The torch-free side of dfmvr imports, `dfmvr run --help` works and `dfmvr eval --onnx` scores a
triplet, with torch blocked.

Modules are discovered from the source tree (pkgutil over the package folders), so modules added
later are covered without editing this test.
"""

from __future__ import annotations

import importlib.util
import json
import pkgutil
from pathlib import Path


def _shared_helpers():
    """tests/conftest.py loaded by path: ``from conftest import`` may find another folder's conftest
    (pytest swaps sys.modules["conftest"] as it collects tests/kernels, tests/export, ...)."""
    path = Path(__file__).with_name("conftest.py")
    spec = importlib.util.spec_from_file_location("_dfmvr_tests_root_conftest", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_helpers = _shared_helpers()
REPO, run_python = _helpers.REPO, _helpers.run_python

TORCH_FREE_PACKAGES = ("dfmvr.face", "dfmvr.runtime", "dfmvr.kernels", "dfmvr.eval")
TORCH_FREE_MODULES = ("dfmvr.card", "dfmvr.errors", "dfmvr.atomic")
TORCH_ROOMS = ("dfmvr.train", "dfmvr.models", "dfmvr.synth")   # must not load on the torch-free side


def torch_free_modules() -> list[str]:
    """Every module under the torch-free packages, found from the files (nothing is imported)."""
    names = []
    for package in TORCH_FREE_PACKAGES:
        root = REPO.joinpath(*package.split("."))
        for init in sorted(root.rglob("__init__.py")) if root.is_dir() else []:
            folder = init.parent
            if any(not (parent / "__init__.py").is_file() for parent in _parents_up_to(folder, root)):
                continue                                    # a data folder inside a package
            prefix = ".".join(folder.relative_to(REPO).parts)
            names.append(prefix)
            names.extend(info.name for info in pkgutil.iter_modules([str(folder)], prefix=prefix + "."))
    names.extend(m for m in TORCH_FREE_MODULES if REPO.joinpath(*m.split(".")).with_suffix(".py").is_file())
    return sorted(set(names))


def _parents_up_to(folder: Path, root: Path) -> list[Path]:
    out = []
    while folder != root:
        out.append(folder)
        folder = folder.parent
    return out


def test_discovery_finds_the_face_modules():
    found = torch_free_modules()
    for expected in ("dfmvr.face.layout", "dfmvr.face.geometry", "dfmvr.face.align", "dfmvr.card",
                     "dfmvr.eval", "dfmvr.eval.dataset"):
        assert expected in found


def test_torch_free_modules_import_with_torch_blocked():
    modules = torch_free_modules()
    code = f"""
        import importlib, json, sys, traceback
        failures = {{}}
        for name in {modules!r}:
            try:
                importlib.import_module(name)
            except BaseException as exc:
                failures[name] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        leaked = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")
                        or m.startswith({TORCH_ROOMS!r}))
        print(json.dumps({{"failures": failures, "leaked": leaked}}))
    """
    result = run_python(code, block_torch=True, cwd=REPO, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["failures"] == {}, (
        "these modules must import without torch (import optional dependencies such as cuda-python "
        "lazily, inside the functions that need them):\n"
        + "\n".join(f"  {k}: {v}" for k, v in report["failures"].items()))
    assert report["leaked"] == []


def _cli_with_torch_blocked(args: list[str]):
    """Run ``dfmvr ARGS`` in a fresh interpreter where importing torch fails; it prints its exit code and
    every torch or ``TORCH_ROOMS`` module that got imported anyway."""
    code = f"""
        import sys
        from dfmvr.cli import main
        try:
            main({args!r})
        except SystemExit as exc:
            code = exc.code
        else:
            code = 0
        leaked = [m for m in sys.modules if m == "torch" or m.startswith("torch.") or m.startswith({TORCH_ROOMS!r})]
        print("EXIT", code, "LEAKED", leaked)
    """
    return run_python(code, block_torch=True, cwd=REPO, timeout=240)


def test_run_help_works_with_torch_blocked():
    result = _cli_with_torch_blocked(["run", "--help"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Usage" in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]
    assert "EXIT 0 LEAKED []" in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]


def test_eval_onnx_runs_with_torch_blocked(tmp_path):
    """``dfmvr eval --onnx`` (the bundled graph on the example triplet) imports neither torch nor
    ``TORCH_ROOMS``: the evaluation lives in ``dfmvr.eval``, below them in the layering."""
    report = tmp_path / "report.json"
    result = _cli_with_torch_blocked(["eval", "--onnx", "default", "--data", str(REPO / "examples" / "triplet"),
                                      "--json", str(report), "--icp-iterations", "0", "--quiet"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "EXIT 0 LEAKED []" in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]
    doc = json.loads(report.read_text())
    assert doc["num_triplets"] == 1 and doc["model"]["mean_mm"] > 0


def test_data_prepare_runs_with_torch_blocked(tmp_path):
    """``dfmvr data prepare`` (a user's photos -> training triplets) is torch-free: it runs where
    ``dfmvr-run`` runs, before any training machine is involved."""
    result = _cli_with_torch_blocked(["data", "prepare", str(REPO / "examples" / "triplet"), "--aligned",
                                      "--out", str(tmp_path / "data"), "--quiet"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "EXIT 0 LEAKED []" in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]
    assert (tmp_path / "data" / "triplet" / "landmarks.npz").is_file()
