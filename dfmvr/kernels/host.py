"""Run the CUDA kernels' shared ``__host__ __device__`` arithmetic on the CPU, for tests.

``cuda/host_shim.cpp`` includes the same headers the kernels include and loops over the kernels'
work items serially. This module builds it with g++ into a shared library in the kernel cache
(``build.cache_dir()``, keyed by the sources' digest) and calls it through ctypes. It is a test
instrument, not a CPU backend: ``dfmvr.face.geometry`` is the CPU path.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from ..errors import UnavailableError
from ..face.camera import Camera
from ..face.geometry import MeshResult
from ..face.layout import Coefficients
from ..face.model import MorphableModel
from .op import involution_output_size
from .build import CUDA_DIR, cache_dir, source_digest
from .mesh_buffers import MeshOutputs, camera_args, pack_coefficients, pack_model

__all__ = ["find_cxx", "build_host_library", "load_host_library", "involution_host", "half_to_float_host",
           "float_to_half_host", "sh_basis_host", "rotation_host", "assemble_mesh_host"]

_LIB: ctypes.CDLL | None = None
_P = ctypes.c_void_p
_I = ctypes.c_int
_LL = ctypes.c_longlong
_F = ctypes.c_float


def find_cxx() -> str | None:
    """The C++ compiler: ``$CXX``, else g++ on PATH."""
    return os.environ.get("CXX") or shutil.which("g++")


def build_host_library(out_dir: Path | None = None) -> Path:
    """Compile ``cuda/host_shim.cpp`` with g++ (-O2, no fast-math, no FMA contraction beyond the
    target's default) into ``libdfmvr_kernels_host_<digest>.so``; reuse it if present."""
    cxx = find_cxx()
    if cxx is None:
        raise UnavailableError("no C++ compiler (g++) found to build the kernels' host shim")
    out_dir = Path(out_dir) if out_dir else cache_dir()
    lib = out_dir / f"libdfmvr_kernels_host_{source_digest()}.so"
    if lib.is_file():
        return lib
    tmp = lib.with_name(f".{lib.name}.{os.getpid()}.tmp")
    cmd = [cxx, "-O2", "-std=c++17", "-shared", "-fPIC", f"-I{CUDA_DIR}", str(CUDA_DIR / "host_shim.cpp"),
           "-o", str(tmp)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"g++ failed building the kernels' host shim:\n{proc.stderr}")
    os.replace(tmp, lib)
    return lib


def load_host_library() -> ctypes.CDLL:
    """Build (once per source digest) and load the host shim; cached per process."""
    global _LIB
    if _LIB is None:
        lib = ctypes.CDLL(str(build_host_library()))
        for name in ("dfmvr_host_involution_f32", "dfmvr_host_involution_f16"):
            getattr(lib, name).argtypes = [_P, _P, _I, _I, _I, _I, _I, _I, _I, _P]
            getattr(lib, name).restype = _I
        for name in ("dfmvr_host_half_to_float", "dfmvr_host_float_to_half", "dfmvr_host_sh_basis",
                     "dfmvr_host_rotation"):
            getattr(lib, name).argtypes = [_P, _LL, _P]
            getattr(lib, name).restype = None
        for name in ("dfmvr_host_mesh_f32", "dfmvr_host_mesh_f16"):
            getattr(lib, name).argtypes = ([_P] * 8 + [_I, _P, _I, _P, _P] + [_I] * 7 + [_F] * 3 + [_P] * 8)
            getattr(lib, name).restype = None
        _LIB = lib
    return _LIB


def _ptr(a: np.ndarray) -> int:
    return a.ctypes.data


def involution_host(x: np.ndarray, w: np.ndarray, kernel_size: int, stride: int, groups: int) -> np.ndarray:
    """The CUDA involution's work items run on the host. x [B, C, H, W] float32 or float16;
    w [B, G*K*K, Ho, Wo] (or [B, G, K*K, Ho, Wo]) of the same dtype -> y [B, C, Ho, Wo], x's dtype."""
    if x.dtype not in (np.float32, np.float16) or w.dtype != x.dtype:
        raise TypeError(f"x and w must both be float32 or both float16, got {x.dtype} and {w.dtype}")
    b, c, h, wd = x.shape
    ho, wo = involution_output_size(h, kernel_size, stride), involution_output_size(wd, kernel_size, stride)
    if c % groups or w.size != b * groups * kernel_size * kernel_size * ho * wo:
        raise ValueError(f"bad involution shapes x {x.shape} w {w.shape} for K={kernel_size} S={stride} G={groups}")
    x = np.ascontiguousarray(x)
    w = np.ascontiguousarray(w)
    y = np.empty((b, c, ho, wo), x.dtype)
    fn = load_host_library().dfmvr_host_involution_f16 if x.dtype == np.float16 else \
        load_host_library().dfmvr_host_involution_f32
    if fn(_ptr(x), _ptr(w), b, c, h, wd, groups, kernel_size, stride, _ptr(y)) != 0:
        raise ValueError(f"kernel size {kernel_size} is not instantiated (3 and 7 are)")
    return y


def half_to_float_host(bits: np.ndarray) -> np.ndarray:
    """uint16 binary16 bits [...] -> float32 [...] through the kernels' converter."""
    bits = np.ascontiguousarray(bits, np.uint16)
    out = np.empty(bits.shape, np.float32)
    load_host_library().dfmvr_host_half_to_float(_ptr(bits), bits.size, _ptr(out))
    return out


def float_to_half_host(values: np.ndarray) -> np.ndarray:
    """float32 [...] -> uint16 binary16 bits [...] (round to nearest even) through the kernels' converter."""
    values = np.ascontiguousarray(values, np.float32)
    out = np.empty(values.shape, np.uint16)
    load_host_library().dfmvr_host_float_to_half(_ptr(values), values.size, _ptr(out))
    return out


def sh_basis_host(normals: np.ndarray) -> np.ndarray:
    """Unit normals [M, 3] float32 -> SH basis [M, 9] through the kernels' sh_basis9."""
    normals = np.ascontiguousarray(normals, np.float32).reshape(-1, 3)
    out = np.empty((normals.shape[0], 9), np.float32)
    load_host_library().dfmvr_host_sh_basis(_ptr(normals), normals.shape[0], _ptr(out))
    return out


def rotation_host(angles: np.ndarray) -> np.ndarray:
    """Euler angles [M, 3] radians -> [M, 3, 3] through the kernels' rotation_from_euler."""
    angles = np.ascontiguousarray(angles, np.float32).reshape(-1, 3)
    out = np.empty((angles.shape[0], 3, 3), np.float32)
    load_host_library().dfmvr_host_rotation(_ptr(angles), angles.shape[0], _ptr(out))
    return out


def assemble_mesh_host(model: MorphableModel, coeffs: Coefficients, camera: Camera,
                       basis_dtype: str = "float32") -> MeshResult:
    """The four mesh-assembly passes' work items run on the host; same result layout as
    ``dfmvr.face.geometry.assemble_mesh``. ``basis_dtype`` "float16" stores the bases as fp16."""
    pm = pack_model(model, basis_dtype)
    pc = pack_coefficients(coeffs)
    out = MeshOutputs.empty(pc.batch, pc.views, pm)
    fn = getattr(load_host_library(), f"dfmvr_host_mesh_{pm.suffix}")
    n_id, n_exp, n_tex = pm.dims
    fn(_ptr(pm.id_basis), _ptr(pm.exp_basis), _ptr(pm.tex_basis), _ptr(pm.mean_shape), _ptr(pm.mean_albedo),
       _ptr(pc.coeffs), _ptr(pm.triangles), _ptr(pm.vertex_triangles), pm.vertex_triangles.shape[1],
       _ptr(pm.keypoints), pm.keypoints.shape[0], _ptr(pc.poses), _ptr(pc.lighting), pc.batch,
       pm.num_vertices, pm.num_triangles, pc.views, n_id, n_exp, n_tex, *camera_args(camera),
       _ptr(out.shape), _ptr(out.albedo), _ptr(out.tri_normals), _ptr(out.rotations), _ptr(out.vertices),
       _ptr(out.normals), _ptr(out.colors), _ptr(out.landmarks))
    return out.result()
