"""Compile dfmvr's CUDA sources with nvcc or NVRTC: PTX / cubin per architecture, register reports.

No GPU is needed: nvcc and NVRTC only compile. ``-Xptxas -v`` (nvcc) and ``--ptxas-options=-v``
(NVRTC, cubin targets) make ptxas report registers per thread, stack frame and spills per kernel;
``parse_ptxas_log`` turns that text into ``KernelResources``. Results are cached on disk, keyed by the
sources' content, the compiler, the architecture and the options, so a test session or a runtime
start compiles each combination once.

    python -m dfmvr.kernels.build --report benchmarks/results/kernels_registers.json

nvcc is found through ``$DFMVR_NVCC``, ``PATH`` or ``/usr/local/cuda/bin``; NVRTC through
cuda-python (``pip install 'dfmvr[gpu]'``). Neither is imported or run at module import.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..atomic import atomic_write_bytes, atomic_write_text
from ..errors import UnavailableError, require

__all__ = [
    "CUDA_DIR", "ARCHS", "SOURCES", "ENTRY_POINTS", "KernelResources", "CompiledKernel",
    "cache_dir", "source_digest", "find_nvcc", "nvcc_compile", "nvrtc_compile", "kernel_image", "parse_ptxas_log",
    "ptx_entry_params",
    "register_report", "write_register_report",
]

CUDA_DIR = Path(__file__).resolve().parent / "cuda"
ARCHS: tuple[int, ...] = (80, 86, 89, 90)  # A100, RTX 30xx, RTX 40xx / L4, H100
SOURCES: dict[str, str] = {"involution": "involution.cu", "mesh_assembly": "mesh_assembly.cu"}
ENTRY_POINTS: dict[str, tuple[str, ...]] = {
    "involution": tuple(f"dfmvr_involution_k{k}_{t}" for k in (3, 7) for t in ("f32", "f16")),
    "mesh_assembly": ("dfmvr_mesh_shape_albedo_f32", "dfmvr_mesh_shape_albedo_f16",
                      "dfmvr_mesh_triangle_normals", "dfmvr_mesh_vertices", "dfmvr_mesh_landmarks"),
}
_COMMON_FLAGS = ("-std=c++17",)


@dataclass(frozen=True)
class KernelResources:
    """What ptxas reported for one kernel on one architecture (bytes per thread for stack/spills)."""

    registers: int
    stack_bytes: int = 0
    spill_store_bytes: int = 0
    spill_load_bytes: int = 0

    @property
    def spills(self) -> bool:
        return self.spill_store_bytes > 0 or self.spill_load_bytes > 0


@dataclass
class CompiledKernel:
    """One compiled source: ``image`` is PTX text (bytes) or a cubin; ``resources`` per entry point."""

    source: str
    arch: int
    compiler: str            # "nvcc" or "nvrtc"
    target: str              # "ptx" or "cubin"
    image: bytes
    resources: dict[str, KernelResources] = field(default_factory=dict)
    log: str = ""


def cache_dir() -> Path:
    """``$DFMVR_CACHE_DIR/kernels`` or ``~/.cache/dfmvr/kernels`` (created)."""
    root = Path(os.environ.get("DFMVR_CACHE_DIR", Path.home() / ".cache" / "dfmvr"))
    path = root / "kernels"
    path.mkdir(parents=True, exist_ok=True)
    return path


def source_digest() -> str:
    """sha256 over every file in ``cuda/`` (a header change invalidates every cached build)."""
    h = hashlib.sha256()
    for p in sorted(CUDA_DIR.iterdir()):
        if p.is_file():
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def find_nvcc() -> Path | None:
    """The nvcc executable, or None."""
    for cand in (os.environ.get("DFMVR_NVCC"), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return Path(cand)
    return None


# "ptxas info    : Function properties for NAME" then "N bytes stack frame, S bytes spill stores,
# L bytes spill loads" then "Used R registers". nvcc and NVRTC print the same lines (NVRTC adds a
# "ptxas         ." prefix to the middle one).
_FUNC = re.compile(r"Function properties for (\S+)")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_REGS = re.compile(r"Used (\d+) registers")


def parse_ptxas_log(text: str) -> dict[str, KernelResources]:
    """ptxas ``-v`` output -> {kernel name: KernelResources}. Lines of other functions are ignored."""
    out: dict[str, KernelResources] = {}
    name, frame = None, (0, 0, 0)
    for line in text.splitlines():
        if m := _FUNC.search(line):
            name, frame = m.group(1), (0, 0, 0)
        elif (m := _FRAME.search(line)) and name:
            frame = tuple(int(g) for g in m.groups())
        elif (m := _REGS.search(line)) and name:
            out[name] = KernelResources(int(m.group(1)), *frame)
            name = None
    return out


_PTX_PARAM_KIND = {".u64": "ptr", ".b64": "ptr", ".u32": "i32", ".s32": "i32", ".b32": "i32", ".f32": "f32"}


def ptx_entry_params(ptx: bytes | str, name: str) -> tuple[str, ...]:
    """Parameter kinds ("ptr" / "i32" / "f32") of ``.entry name(...)`` in PTX text, in order; the
    launchers' argument lists are checked against this. Raises KeyError if the entry is absent."""
    text = ptx.decode() if isinstance(ptx, bytes) else ptx
    m = re.search(r"\.entry\s+" + re.escape(name) + r"\s*\((.*?)\)", text, re.S)
    if not m:
        raise KeyError(f"no .entry {name} in the PTX")
    kinds = re.findall(r"\.param\s+(\.\w+)", m.group(1))
    return tuple(_PTX_PARAM_KIND.get(k, k) for k in kinds)


def _cache_key(*parts) -> str:
    return hashlib.sha256(json.dumps([source_digest(), *map(str, parts)]).encode()).hexdigest()[:24]


def _cached(key: str) -> CompiledKernel | None:
    meta, image = cache_dir() / f"{key}.json", cache_dir() / f"{key}.bin"
    if not (meta.is_file() and image.is_file()):
        return None
    d = json.loads(meta.read_text())
    d["resources"] = {k: KernelResources(**v) for k, v in d["resources"].items()}
    return CompiledKernel(image=image.read_bytes(), **d)


def _store(key: str, ck: CompiledKernel) -> CompiledKernel:
    atomic_write_bytes(cache_dir() / f"{key}.bin", ck.image)
    d = asdict(ck)
    d.pop("image")
    atomic_write_text(cache_dir() / f"{key}.json", json.dumps(d))
    return ck


def _check(source: str, arch: int, target: str) -> Path:
    if source not in SOURCES:
        raise ValueError(f"unknown CUDA source {source!r}; expected one of {sorted(SOURCES)}")
    if target not in ("ptx", "cubin"):
        raise ValueError(f"target must be 'ptx' or 'cubin', got {target!r}")
    if int(arch) < 75:
        raise ValueError(f"sm_{arch} is not supported by CUDA 13 (sm_75 or newer)")
    return CUDA_DIR / SOURCES[source]


def nvcc_compile(source: str, arch: int, target: str = "cubin", use_cache: bool = True) -> CompiledKernel:
    """Compile ``SOURCES[source]`` with nvcc for ``sm_<arch>``.

    target "cubin": SASS for sm_<arch>, ptxas resources parsed; "ptx": PTX for compute_<arch>.
    Raises UnavailableError without nvcc, RuntimeError with the compiler log on a compile error.
    """
    path = _check(source, arch, target)
    nvcc = find_nvcc()
    if nvcc is None:
        raise UnavailableError("nvcc not found (set DFMVR_NVCC or put the CUDA toolkit's bin/ on PATH)")
    key = _cache_key("nvcc", str(nvcc), source, arch, target)
    if use_cache and (hit := _cached(key)):
        return hit
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"{source}.{target}"
        flags = ["-cubin", f"-arch=sm_{arch}", "-Xptxas", "-v"] if target == "cubin" else [
            "-ptx", f"-arch=compute_{arch}"]
        cmd = [str(nvcc), *flags, "-O3", *_COMMON_FLAGS, f"-I{CUDA_DIR}", str(path), "-o", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        log = proc.stdout + proc.stderr
        if proc.returncode != 0:
            raise RuntimeError(f"nvcc failed for {path.name} sm_{arch} ({target}):\n{log}")
        image = out.read_bytes()
    return _store(key, CompiledKernel(source, int(arch), "nvcc", target, image, parse_ptxas_log(log), log))


def nvrtc_compile(source: str, arch: int, target: str = "ptx", use_cache: bool = True) -> CompiledKernel:
    """Compile ``SOURCES[source]`` with NVRTC (cuda-python) for ``sm_<arch>`` (cubin) or
    ``compute_<arch>`` (PTX). cubin targets also report ptxas resources. No GPU needed."""
    path = _check(source, arch, target)
    nvrtc = require("cuda.bindings.nvrtc", "gpu", "Compiling CUDA kernels with NVRTC")
    key = _cache_key("nvrtc", nvrtc.nvrtcVersion(), source, arch, target)
    if use_cache and (hit := _cached(key)):
        return hit
    opts = [f"-arch={'sm' if target == 'cubin' else 'compute'}_{arch}", f"-I{CUDA_DIR}", *_COMMON_FLAGS]
    if target == "cubin":
        opts.append("--ptxas-options=-v")
    err, prog = nvrtc.nvrtcCreateProgram(path.read_bytes(), path.name.encode(), 0, [], [])
    _nvrtc_ok(nvrtc, err, "nvrtcCreateProgram")
    try:
        (status,) = nvrtc.nvrtcCompileProgram(prog, len(opts), [o.encode() for o in opts])
        err, size = nvrtc.nvrtcGetProgramLogSize(prog)
        # NVRTC writes into the buffer: it must be a fresh mutable bytearray. ``b" " * size`` is an
        # immutable bytes object and, for size 1 (an empty log), CPython's shared one-byte singleton:
        # overwriting it corrupted every later b" " in the process (torch.load then failed).
        buf = bytearray(size)
        _nvrtc_ok(nvrtc, nvrtc.nvrtcGetProgramLog(prog, buf)[0], "nvrtcGetProgramLog")
        log = bytes(buf).rstrip(b"\x00 ").decode(errors="replace")
        if status != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise RuntimeError(f"NVRTC failed for {path.name} {opts[0]}:\n{log}")
        get_size, get = ((nvrtc.nvrtcGetCUBINSize, nvrtc.nvrtcGetCUBIN) if target == "cubin"
                         else (nvrtc.nvrtcGetPTXSize, nvrtc.nvrtcGetPTX))
        err, size = get_size(prog)
        _nvrtc_ok(nvrtc, err, get_size.__name__)
        buf = bytearray(size)
        _nvrtc_ok(nvrtc, get(prog, buf)[0], get.__name__)
        image = bytes(buf)
    finally:
        nvrtc.nvrtcDestroyProgram(prog)
    if target == "ptx":
        image = image.rstrip(b"\x00")
    return _store(key, CompiledKernel(source, int(arch), "nvrtc", target, image, parse_ptxas_log(log), log))


def _nvrtc_ok(nvrtc, err, what: str) -> None:
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise RuntimeError(f"{what} failed: {err}")


def kernel_image(source: str, arch: int) -> bytes:
    """A loadable image of ``source`` for a device of compute capability ``arch`` (e.g. 86):
    an NVRTC cubin for that exact arch if NVRTC knows it, else NVRTC PTX for the newest arch it knows
    below (the driver JIT-compiles PTX forward), else an nvcc cubin. Cached on disk."""
    try:
        nvrtc = require("cuda.bindings.nvrtc", "gpu", "Compiling CUDA kernels with NVRTC")
        known = [a for a in nvrtc.nvrtcGetSupportedArchs()[1] if a <= int(arch)]
        if int(arch) in known:
            return nvrtc_compile(source, arch, "cubin").image
        if known:
            return nvrtc_compile(source, max(known), "ptx").image
    except ImportError:
        pass
    if find_nvcc() is not None:
        return nvcc_compile(source, arch, "cubin").image
    raise UnavailableError(f"cannot compile {SOURCES[source]} for sm_{arch}: neither NVRTC (pip install "
                           "'dfmvr[gpu]') nor nvcc is available")


def register_report(archs=ARCHS, compilers=("nvcc", "nvrtc"), workers: int = 2) -> dict:
    """Compile every source to cubin for every arch with every compiler; return
    {compiler: {"sm_XX": {kernel: {registers, stack_bytes, spill_store_bytes, spill_load_bytes}}}}."""
    jobs = [(c, s, a) for c in compilers for s in SOURCES for a in archs]
    fns = {"nvcc": nvcc_compile, "nvrtc": nvrtc_compile}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(lambda j: fns[j[0]](j[1], j[2], "cubin"), jobs))
    report: dict = {}
    for (comp, _, arch), ck in zip(jobs, results):
        per_arch = report.setdefault(comp, {}).setdefault(f"sm_{arch}", {})
        per_arch.update({k: asdict(v) for k, v in sorted(ck.resources.items())})
    return report


def write_register_report(path, report: dict | None = None) -> Path:
    """Write ``register_report()`` (plus the tool versions and source digest) as JSON, atomically."""
    report = register_report() if report is None else report
    nvcc = find_nvcc()
    version = None
    if nvcc:
        lines = subprocess.run([str(nvcc), "--version"], capture_output=True, text=True).stdout.splitlines()
        version = next((ln.strip() for ln in lines if "release" in ln), None)
    try:
        nvrtc_version = ".".join(map(str, require("cuda.bindings.nvrtc", "gpu", "NVRTC").nvrtcVersion()[1:]))
    except ImportError:
        nvrtc_version = None
    doc = {"source_digest": source_digest(), "nvcc": version, "nvrtc": nvrtc_version,
           "units": "registers per thread; stack and spill bytes per thread", "kernels": report}
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    return Path(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--report", type=Path, default=Path("benchmarks/results/kernels_registers.json"))
    args = p.parse_args(argv)
    path = write_register_report(args.report)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
