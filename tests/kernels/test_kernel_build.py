"""Every kernel compiles with nvcc and NVRTC for sm_80/86/89/90 without register spills."""

from __future__ import annotations

import pytest

from dfmvr.kernels import build
from dfmvr.kernels.mesh_gpu import MESH_PARAMS
from dfmvr.kernels.trt_plugin import INVOLUTION_PARAMS

needs_nvcc = pytest.mark.skipif(build.find_nvcc() is None, reason="nvcc not installed")


def test_full_matrix_compiles_without_spills(register_report):
    assert set(register_report) == {"nvcc", "nvrtc"}
    for compiler, per_arch in register_report.items():
        assert set(per_arch) == {f"sm_{a}" for a in build.ARCHS}, compiler
        for arch, kernels in per_arch.items():
            want = {k for names in build.ENTRY_POINTS.values() for k in names}
            assert set(kernels) == want, (compiler, arch)
            for name, r in kernels.items():
                assert 0 < r["registers"] <= 255, (compiler, arch, name)
                assert r["spill_store_bytes"] == 0 and r["spill_load_bytes"] == 0, (compiler, arch, name, r)


@needs_nvcc
def test_nvcc_really_runs_and_the_cache_returns_its_image():
    # uncached PTX (cheap: no ptxas), so that nvcc really runs even when the matrix came from the cache
    ptx = build.nvcc_compile("mesh_assembly", 89, "ptx", use_cache=False)
    text = ptx.image.decode()
    assert ".target sm_89" in text
    for name in build.ENTRY_POINTS["mesh_assembly"]:
        assert f".entry {name}(" in text
    assert build.nvcc_compile("mesh_assembly", 89, "ptx").image == ptx.image
    cubin = build.nvcc_compile("involution", 86, "cubin")       # from the matrix's cache
    assert cubin.image.startswith(b"\x7fELF") and set(cubin.resources) == set(build.ENTRY_POINTS["involution"])


def test_nvrtc_really_runs():
    pytest.importorskip("cuda.bindings.nvrtc")
    ptx = build.nvrtc_compile("involution", 90, "ptx", use_cache=False).image.decode()
    # NVRTC's (empty, 1-byte) log must not land in CPython's shared one-byte b" " (regression)
    assert bytes([0x20])[0] == 0x20
    assert ".target sm_90" in ptx
    for name in build.ENTRY_POINTS["involution"]:
        assert f".entry {name}(" in ptx
    cubin = build.nvrtc_compile("mesh_assembly", 90, "cubin")    # from the matrix's cache
    assert cubin.image.startswith(b"\x7fELF") and set(cubin.resources) == set(build.ENTRY_POINTS["mesh_assembly"])
    assert "sm_90" in cubin.log


def test_launcher_arguments_match_compiled_signatures():
    """The argument kinds the launchers pass (plugin, CudaMeshAssembler) equal the PTX .entry params."""
    pytest.importorskip("cuda.bindings.nvrtc")
    inv = build.nvrtc_compile("involution", 80, "ptx").image
    for name in build.ENTRY_POINTS["involution"]:
        assert build.ptx_entry_params(inv, name) == INVOLUTION_PARAMS
    mesh = build.nvrtc_compile("mesh_assembly", 80, "ptx").image
    for name in build.ENTRY_POINTS["mesh_assembly"]:
        key = name.removesuffix("_f32").removesuffix("_f16")
        assert build.ptx_entry_params(mesh, name) == MESH_PARAMS[key], name
    with pytest.raises(KeyError):
        build.ptx_entry_params(mesh, "dfmvr_no_such_kernel")


def test_kernel_image_picks_cubin_or_forward_ptx():
    nvrtc = pytest.importorskip("cuda.bindings.nvrtc")
    assert build.kernel_image("mesh_assembly", 86).startswith(b"\x7fELF")
    known = nvrtc.nvrtcGetSupportedArchs()[1]
    unknown = next(a for a in range(91, 100) if a not in known)   # a future arch NVRTC does not list
    ptx = build.kernel_image("mesh_assembly", unknown).decode()
    assert f".target sm_{max(a for a in known if a < unknown)}" in ptx


def test_parse_ptxas_log_reads_each_function():
    log = "\n".join([
        "ptxas info    : Compiling entry function 'a' for 'sm_90'",
        "ptxas info    : Function properties for a",
        "ptxas         .     8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads",
        "ptxas info    : Used 37 registers, used 0 barriers",
        "ptxas info    : Function properties for b",
        "    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads",
        "ptxas info    : Used 255 registers, used 1 barriers, 400 bytes cmem[0]",
    ])
    r = build.parse_ptxas_log(log)
    assert r["a"] == build.KernelResources(37, 8, 4, 12) and r["a"].spills
    assert r["b"] == build.KernelResources(255, 0, 0, 0) and not r["b"].spills


def test_rejects_unknown_source_target_and_arch():
    with pytest.raises(ValueError):
        build.nvcc_compile("nope", 80)
    with pytest.raises(ValueError):
        build.nvcc_compile("involution", 80, "fatbin")
    with pytest.raises(ValueError):
        build.nvcc_compile("involution", 70)
