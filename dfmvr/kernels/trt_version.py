"""Which TensorRT and which NVRTC dfmvr supports, checked with a clear message (no import of either here).

TensorRT: 10.8 (the first release whose ``tensorrt.plugin`` has AOT implementations) up to and
including 11.x. The two majors differ where dfmvr cares: 10.x converts integer plugin attributes with
``int(field.data)`` (which NumPy >= 2.4 refuses for one-element arrays) and 11.x reads element 0;
``BuilderFlag.FP16`` is deprecated from 10.12 and gone in 11, so fp16 engines are built as strongly typed
networks from the fp16 ONNX graph (``dfmvr.export.tensorrt_build``).

NVRTC: its PTX carries the ISA version of its CUDA release, and a driver (or a TensorRT build) of an
older CUDA major cannot load it (NVRTC 13 emits PTX ISA 9.x; a CUDA 12 build cannot JIT it). So NVRTC's
major version must equal the CUDA major TensorRT was built for (the ``-cu12`` / ``-cu13`` in its package
name). The extras install matching pairs: ``dfmvr[tensorrt-cu12]`` / ``dfmvr[tensorrt-cu13]``.
"""

from __future__ import annotations

import re

from ..errors import UnavailableError

__all__ = ["TENSORRT_MIN", "TENSORRT_MAX_MAJOR", "parse_version", "check_tensorrt_version", "import_tensorrt",
           "tensorrt_cuda_major", "nvrtc_major", "check_nvrtc_matches"]

TENSORRT_MIN = (10, 8)        # tensorrt.plugin with aot_impl
TENSORRT_MAX_MAJOR = 11       # newest major whose API dfmvr's code was read against
_INSTALL_HINT = ("install a supported TensorRT with the CUDA major of this machine's driver: "
                 "pip install 'dfmvr[tensorrt-cu12]' (CUDA 12 driver) or 'dfmvr[tensorrt-cu13]' (CUDA 13)")


def parse_version(text) -> tuple[int, ...]:
    """ "10.16.1.11" -> (10, 16, 1, 11); leading digits of each dot-separated part."""
    parts = []
    for piece in str(text).split("."):
        m = re.match(r"\d+", piece)
        if not m:
            break
        parts.append(int(m.group()))
    if not parts:
        raise ValueError(f"not a version: {text!r}")
    return tuple(parts)


def check_tensorrt_version(version) -> tuple[int, ...]:
    """Raise UnavailableError (exit 3) for a TensorRT outside [10.8, 12); return the parsed version."""
    try:
        v = parse_version(version)
    except ValueError:
        raise UnavailableError(f"TensorRT reports an unreadable version {version!r}; dfmvr supports "
                               f"{TENSORRT_MIN[0]}.{TENSORRT_MIN[1]} to {TENSORRT_MAX_MAJOR}.x -- {_INSTALL_HINT}") from None
    if v[:2] < TENSORRT_MIN or v[0] > TENSORRT_MAX_MAJOR:
        raise UnavailableError(f"TensorRT {version} is not supported: dfmvr needs {TENSORRT_MIN[0]}.{TENSORRT_MIN[1]} "
                               f"to {TENSORRT_MAX_MAJOR}.x (tensorrt.plugin with AOT implementations; API read "
                               f"against 10.x and 11.x) -- {_INSTALL_HINT}")
    return v


def import_tensorrt(purpose: str):
    """``import tensorrt`` with its version checked; UnavailableError (exit 3) naming ``purpose`` otherwise."""
    try:
        import tensorrt as trt
    except Exception as exc:   # ImportError, or OSError from a bindings wheel without libnvinfer
        raise UnavailableError(f"{purpose} needs TensorRT, which is not importable here ({type(exc).__name__}: "
                               f"{exc}) -- {_INSTALL_HINT}, or use the ONNX Runtime path") from exc
    check_tensorrt_version(getattr(trt, "__version__", "unknown"))
    return trt


def tensorrt_cuda_major(distributions=None) -> int | None:
    """The CUDA major TensorRT was built for, from its installed package names (``tensorrt-cu12``,
    ``tensorrt_cu13_libs``, ...); None when no such package is installed (e.g. a tar-file install)."""
    if distributions is None:
        from importlib import metadata

        distributions = [d.metadata.get("Name", "") or "" for d in metadata.distributions()]
    majors = set()
    for name in distributions:
        m = re.fullmatch(r"tensorrt[-_](?:lean[-_]|dispatch[-_])?cu(\d+)(?:[-_](?:libs|bindings))?", str(name).lower())
        if m:
            majors.add(int(m.group(1)))
    if len(majors) > 1:
        raise UnavailableError(f"TensorRT packages for several CUDA majors are installed ({sorted(majors)}); "
                               f"keep one -- {_INSTALL_HINT}")
    return majors.pop() if majors else None


def nvrtc_major(nvrtc=None) -> int:
    """The major version of the NVRTC that cuda-python loads (``nvrtcVersion()``)."""
    if nvrtc is None:
        from ..errors import require

        nvrtc = require("cuda.bindings.nvrtc", "gpu", "Compiling the Involution plugin's PTX with NVRTC")
    result = nvrtc.nvrtcVersion()
    return int(result[1])


def check_nvrtc_matches(nvrtc_version_major: int, cuda_major: int | None) -> None:
    """Raise UnavailableError when NVRTC's major differs from TensorRT's CUDA major (None: not known, pass)."""
    if cuda_major is None or int(nvrtc_version_major) == int(cuda_major):
        return
    raise UnavailableError(
        f"NVRTC {nvrtc_version_major}.x would compile the Involution plugin's PTX for a TensorRT built for "
        f"CUDA {cuda_major}: PTX from a newer NVRTC cannot be loaded by an older CUDA stack, and an older one "
        f"may miss the GPU -- install the matching pair: pip install 'dfmvr[tensorrt-cu{cuda_major}]'")
