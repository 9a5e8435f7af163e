"""A thin layer over cuda-python's driver API: context, module loading, buffers, kernel launches.

The one CUDA layer of dfmvr: used by ``mesh_gpu`` (CudaMeshAssembler), the TensorRT plugin's JIT
implementation and the runtime's ``TensorrtRunner`` (which the export's parity gate runs too). cuda-python
is imported lazily (``pip install 'dfmvr[gpu]'``) instead of failing with a loader traceback: without
cuda-python, every entry point raises ``MissingExtraError`` naming the ``gpu`` extra (exit code 2); with
it but without a usable device (no driver, no GPU), ``check`` raises ``UnavailableError`` (exit code 3);
any other CUDA failure is a ``RuntimeError`` naming the call (exit code 1).
"""

from __future__ import annotations

import numpy as np

from ..errors import UnavailableError, require

__all__ = ["driver", "check", "KernelArg", "pack_kernel_args", "CudaContext", "DeviceBuffer", "CudaModule"]


def driver():
    """cuda.bindings.driver, imported on first use."""
    return require("cuda.bindings.driver", "gpu", "Running CUDA kernels")


def check(result, what: str = "CUDA call"):
    """cuda-python returns (CUresult, *values): raise on error, return the values (one or a tuple)."""
    d = driver()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != d.CUresult.CUDA_SUCCESS:
        try:
            name = d.cuGetErrorName(err)[1].decode()
        except Exception:  # noqa: BLE001 - the name is only decoration for the message
            name = str(err)
        if err in (d.CUresult.CUDA_ERROR_NO_DEVICE, d.CUresult.CUDA_ERROR_NOT_INITIALIZED,
                   d.CUresult.CUDA_ERROR_INVALID_DEVICE):
            raise UnavailableError(f"{what}: no usable CUDA device ({name}) -- use the CPU path (--device cpu)")
        raise RuntimeError(f"{what} failed: {name}")
    return values[0] if len(values) == 1 else tuple(values)


class KernelArg:
    """Argument kinds of dfmvr kernels: device pointers, int32 and float32 scalars."""

    PTR, I32, F32 = np.uint64, np.int32, np.float32
    _BY_NAME = {"ptr": np.uint64, "i32": np.int32, "f32": np.float32}

    @classmethod
    def kinds(cls, names) -> list:
        """("ptr", "i32", "f32", ...) -> the numpy types pack_kernel_args stores them in."""
        return [cls._BY_NAME[n] for n in names]


def pack_kernel_args(values, kinds) -> tuple[np.ndarray, list[np.ndarray]]:
    """Kernel arguments -> (void*[] array for cuLaunchKernel's kernelParams, the storage to keep alive).

    values: ints (device pointers, ints) and floats; kinds: KernelArg.PTR / I32 / F32 per value.
    Each argument is stored in its own numpy scalar of the kernel's C type; kernelParams holds their
    host addresses, which is the layout cuLaunchKernel reads.
    """
    if len(values) != len(kinds):
        raise ValueError(f"{len(values)} kernel arguments but {len(kinds)} kinds")
    storage = [np.array([v], dtype=k) for v, k in zip(values, kinds)]
    addresses = np.array([s.ctypes.data for s in storage], dtype=np.uint64)
    return addresses, storage


class CudaContext:
    """The primary context of one device, made current on this thread, and a stream of its own.

    non_blocking: create the stream with CU_STREAM_NON_BLOCKING, so that it never synchronises with the
    legacy default stream (TensorRT's execution runs on it)."""

    def __init__(self, device: int = 0, non_blocking: bool = False):
        d = driver()
        try:
            check(d.cuInit(0), "cuInit")
        except UnavailableError:
            raise
        except Exception as exc:  # noqa: BLE001 - cuda-python raises its own loader errors
            raise UnavailableError(f"the CUDA driver could not be loaded ({exc}) -- use --device cpu") from exc
        count = check(d.cuDeviceGetCount(), "cuDeviceGetCount")
        if device >= count:
            raise UnavailableError(f"CUDA device {device} requested, {count} present")
        self.device = check(d.cuDeviceGet(device), "cuDeviceGet")
        self.context = check(d.cuDevicePrimaryCtxRetain(self.device), "cuDevicePrimaryCtxRetain")
        check(d.cuCtxSetCurrent(self.context), "cuCtxSetCurrent")
        attr = d.CUdevice_attribute
        major = check(d.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, self.device))
        minor = check(d.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, self.device))
        self.arch = 10 * major + minor
        flags = int(d.CUstream_flags.CU_STREAM_NON_BLOCKING) if non_blocking else 0
        self.stream = check(d.cuStreamCreate(flags), "cuStreamCreate")

    def synchronize(self) -> None:
        check(driver().cuStreamSynchronize(self.stream), "cuStreamSynchronize")

    def close(self) -> None:
        d = driver()
        if getattr(self, "stream", None) is not None:
            d.cuStreamDestroy(self.stream)
            self.stream = None
        if getattr(self, "context", None) is not None:
            d.cuDevicePrimaryCtxRelease(self.device)
            self.context = None


class DeviceBuffer:
    """A device allocation of ``nbytes``, grown (never shrunk) on demand and reused across calls."""

    def __init__(self, nbytes: int = 0):
        self.ptr, self.nbytes = None, 0
        if nbytes:
            self.ensure(nbytes)

    def ensure(self, nbytes: int) -> int:
        if nbytes > self.nbytes:
            self.free()
            self.ptr = check(driver().cuMemAlloc(max(int(nbytes), 1)), "cuMemAlloc")
            self.nbytes = int(nbytes)
        return int(self.ptr)

    def upload(self, array: np.ndarray, stream) -> int:
        a = np.ascontiguousarray(array)
        ptr = self.ensure(a.nbytes)
        check(driver().cuMemcpyHtoDAsync(ptr, a.ctypes.data, a.nbytes, stream), "cuMemcpyHtoDAsync")
        return ptr

    def download(self, out: np.ndarray, stream) -> np.ndarray:
        check(driver().cuMemcpyDtoHAsync(out.ctypes.data, int(self.ptr), out.nbytes, stream), "cuMemcpyDtoHAsync")
        return out

    def free(self) -> None:
        if self.ptr is not None:
            driver().cuMemFree(self.ptr)
            self.ptr, self.nbytes = None, 0


class CudaModule:
    """A loaded PTX or cubin image with its kernels looked up by name."""

    def __init__(self, image: bytes):
        d = driver()
        # PTX is text and must be NUL-terminated; a cubin is an ELF image and goes as it is.
        data = image if image.startswith(b"\x7fELF") or image.endswith(b"\x00") else image + b"\x00"
        self.module = check(d.cuModuleLoadData(data), "cuModuleLoadData")
        self._functions: dict[str, object] = {}

    def function(self, name: str):
        if name not in self._functions:
            self._functions[name] = check(driver().cuModuleGetFunction(self.module, name.encode()),
                                          f"cuModuleGetFunction({name})")
        return self._functions[name]

    def unload(self) -> None:
        if getattr(self, "module", None) is not None:
            driver().cuModuleUnload(self.module)
            self.module, self._functions = None, {}

    def launch(self, name: str, cfg, values, kinds, stream) -> None:
        """Launch kernel ``name`` with LaunchConfig ``cfg``; skipped when the config has no work."""
        if cfg.empty:
            return
        params, _keep = pack_kernel_args(values, kinds)
        check(driver().cuLaunchKernel(self.function(name), *cfg.grid, *cfg.block, cfg.shared_mem, stream,
                                      params.ctypes.data, 0), f"cuLaunchKernel({name})")
