"""Supported TensorRT range and the NVRTC/CUDA major match (issue 20, defects 2 and 5).

Real: dfmvr.kernels.trt_version, the installed NVRTC (cuda-python) where present. Stand-ins: version
strings and package-name lists in place of installed TensorRT packages (none can be installed here),
and a fake nvrtc module returning a chosen version.
"""

from __future__ import annotations

import pytest

from dfmvr.errors import UnavailableError
from dfmvr.kernels import trt_version as tv


@pytest.mark.parametrize("version", ["10.8.0.43", "10.16.1.11", "11.0.0", "11.4.0.106"])
def test_supported_versions(version):
    assert tv.check_tensorrt_version(version)[:2] == tv.parse_version(version)[:2]


@pytest.mark.parametrize("version", ["8.6.1", "10.7.0.23", "12.0.0", "garbage"])
def test_unsupported_versions_say_what_to_install(version):
    with pytest.raises(UnavailableError, match=r"10\.8 to 11\.x.*dfmvr\[tensorrt-cu12\]"):
        tv.check_tensorrt_version(version)


def test_tensorrt_cuda_major_from_package_names():
    assert tv.tensorrt_cuda_major(["numpy", "tensorrt-cu12", "tensorrt_cu12_libs", "tensorrt-cu12-bindings"]) == 12
    assert tv.tensorrt_cuda_major(["tensorrt-cu13", "tensorrt_lean_cu13"]) == 13
    assert tv.tensorrt_cuda_major(["tensorrt", "numpy", "nvidia-cuda-nvrtc"]) is None
    with pytest.raises(UnavailableError, match="several CUDA majors"):
        tv.tensorrt_cuda_major(["tensorrt-cu12", "tensorrt-cu13-libs"])
    assert tv.tensorrt_cuda_major() in (None, 12, 13)      # this machine's real package list


def test_nvrtc_must_match_tensorrt_cuda_major():
    tv.check_nvrtc_matches(13, 13)
    tv.check_nvrtc_matches(13, None)                         # TensorRT's CUDA major unknown: not refused
    with pytest.raises(UnavailableError, match=r"NVRTC 13\.x .* CUDA 12.*dfmvr\[tensorrt-cu12\]"):
        tv.check_nvrtc_matches(13, 12)


def test_nvrtc_major_reads_nvrtc_version():
    class FakeNvrtc:
        @staticmethod
        def nvrtcVersion():
            return (0, 12, 9)

    assert tv.nvrtc_major(FakeNvrtc) == 12
    pytest.importorskip("cuda.bindings.nvrtc")
    assert tv.nvrtc_major() >= 12                              # the real NVRTC installed here


def test_involution_ptx_refuses_a_mismatched_nvrtc(monkeypatch):
    """The check sits where PTX is made for the plugin: a CUDA 12 TensorRT with NVRTC 13 stops there."""
    from dfmvr.kernels import build, trt_plugin

    monkeypatch.setattr(tv, "nvrtc_major", lambda nvrtc=None: 13)
    monkeypatch.setattr(tv, "tensorrt_cuda_major", lambda distributions=None: 12)
    monkeypatch.setattr(build, "nvrtc_compile", lambda *a, **k: pytest.fail("compiled despite the mismatch"))
    with pytest.raises(UnavailableError, match="tensorrt-cu12"):
        trt_plugin.involution_ptx()


def test_import_tensorrt_without_tensorrt_is_unavailable():
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("a tensorrt package is installed here")
    with pytest.raises(UnavailableError, match="not importable.*dfmvr\\[tensorrt-cu"):
        tv.import_tensorrt("a test")
