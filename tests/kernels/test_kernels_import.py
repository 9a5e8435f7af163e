"""Importing dfmvr.kernels needs neither torch, cuda-python nor TensorRT."""

from __future__ import annotations

import pkgutil
from pathlib import Path

import dfmvr.kernels
from tests.conftest import run_python

MODULES = sorted(f"dfmvr.kernels.{m.name}" for m in pkgutil.iter_modules([str(Path(dfmvr.kernels.__file__).parent)]))


def test_every_kernels_module_imports_without_torch_cuda_or_tensorrt():
    assert {"dfmvr.kernels.mesh_gpu", "dfmvr.kernels.trt_plugin", "dfmvr.kernels.trt_plugin_defs"} <= set(MODULES)
    code = f"""
    import importlib.abc, sys
    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("cuda", "tensorrt"):
                raise ImportError("blocked by test: " + name)
    sys.meta_path.insert(0, _Block())
    for m in {MODULES!r}:
        __import__(m)
    loaded = [m for m in sys.modules if m.split(".")[0] in ("torch", "cuda", "tensorrt")]
    print("LOADED", loaded)
    """
    proc = run_python(code, block_torch=True)
    assert proc.returncode == 0, proc.stderr
    assert "LOADED []" in proc.stdout
