"""The environment stamp written into every benchmark report."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform

__all__ = ["environment_stamp"]

_PACKAGES = ("numpy", "onnxruntime", "onnx", "torch", "openvino", "tensorrt", "cuda-python", "opencv-python-headless",
             "dfmvr")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _gpu() -> str | None:
    """Name of the first NVIDIA GPU through the driver API, or None (no driver / no cuda-python)."""
    try:
        from cuda.bindings import driver
    except ImportError:
        return None
    try:
        (err,) = driver.cuInit(0)
        if int(err) != 0:
            return None
        err, dev = driver.cuDeviceGet(0)
        err, name = driver.cuDeviceGetName(128, dev)
        return name.split(b"\0", 1)[0].decode()
    except Exception:  # any driver-level failure means "no usable GPU"
        return None


def environment_stamp(threads: int | None = None) -> dict:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu": _cpu_model(), "logical_cpus": os.cpu_count(), "threads": threads,
        "machine": platform.machine(), "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}", "gpu": _gpu(), "versions": versions,
    }
