"""The TensorRT plugin for ``dfmvr::Involution`` (TensorRT 10.x Python plugin API, ``tensorrt.plugin``).

Call ``register_involution_plugin()`` once per process before parsing an ONNX graph or building an
engine. The ONNX node the TensorRT ONNX parser maps onto this plugin must look like this:

    op_type  "Involution"                        (== INVOLUTION.name; the plugin name)
    domain   "dfmvr"                             (model.opset_import has ("dfmvr", 1))
    inputs   X [B, C, H, W], W [B, G*K*K, Ho, Wo]   both float32 or both float16, NCHW contiguous
    output   Y [B, C, Ho, Wo]                     same dtype; Ho = (H + 2p - K) // S + 1, p = (K - 1) // 2
    attrs    kernel_size: int (3 or 7), stride: int (>= 1), groups: int (C % groups == 0)
             plugin_namespace: string "dfmvr"      (selects the plugin's namespace; required)
             plugin_version: string "1"            (optional; INVOLUTION.version)
             aot: int 1                            (use the ahead-of-time implementation: the kernel's
                                                    PTX is embedded in the engine, which then runs
                                                    without Python, e.g. under trtexec)
    and NO FunctionProto for ("dfmvr", "Involution") attached when building engines (PLATFORM.md:
    whether the parser would inline it instead is unverified). ``onnx_node_attributes()`` returns
    exactly these attributes.

Implementations registered: the AOT one (``trtp.aot_impl``: PTX of ``cuda/involution.cu`` compiled by
NVRTC for compute_80, which the driver JIT-compiles for sm_80/86/89/90 and newer; kernel arguments
X, W, then the int32 scalars B, C, H, W, groups, stride, then Y) and a JIT one (``trtp.impl``:
the same PTX launched through cuda-python on TensorRT's stream) for graphs without ``aot``.
Plugin attributes are not serialised with AOT implementations, so everything the kernel needs goes
in the kernel name (K, dtype) and the scalar arguments.

The shape, dtype and format logic lives in plain functions below, tested without TensorRT.
tensorrt is imported only inside ``register_involution_plugin``.
"""

from __future__ import annotations

from .launch import INVOLUTION_KERNEL_SIZES
from .op import INVOLUTION

__all__ = ["PLUGIN_ID", "PLUGIN_VERSION", "PLUGIN_BLOCK", "PTX_ARCH", "TYPE_COMBINATION", "TENSOR_FORMAT",
           "INVOLUTION_PARAMS",
           "onnx_node_attributes", "validate_attributes", "output_size", "output_shape", "weight_shape",
           "check_shapes", "dtype_from_trt", "aot_scalar_args", "aot_grid_items", "involution_ptx",
           "register_involution_plugin"]

PLUGIN_ID = f"{INVOLUTION.plugin_namespace}::{INVOLUTION.name}"   # "dfmvr::Involution"
PLUGIN_VERSION = str(INVOLUTION.version)
PLUGIN_BLOCK = 128          # threads per block of the AOT launch (<= the kernels' launch bounds)
PTX_ARCH = 80               # PTX target: the oldest supported GPU; newer ones JIT it forward
# X, W, Y all FP32 or all FP16 (positions zip across the '|' alternatives), linear NCHW.
TYPE_COMBINATION = "FP32|FP16, FP32|FP16, FP32|FP16"
TENSOR_FORMAT = "LINEAR"
# Kernel parameter kinds of dfmvr_involution_k*_*, in order: X, W, B, C, H, W, groups, stride, Y.
INVOLUTION_PARAMS = ("ptr", "ptr", "i32", "i32", "i32", "i32", "i32", "i32", "ptr")
_TRT_DTYPES = {"FLOAT": "float32", "HALF": "float16"}
_REGISTERED = False


def onnx_node_attributes(kernel_size: int, stride: int, groups: int, aot: bool = True) -> dict:
    """The attributes an ONNX Involution node needs for the TensorRT parser to pick this plugin."""
    validate_attributes(kernel_size, stride, groups)
    attrs = {"kernel_size": int(kernel_size), "stride": int(stride), "groups": int(groups),
             "plugin_namespace": INVOLUTION.plugin_namespace, "plugin_version": PLUGIN_VERSION}
    if aot:
        attrs["aot"] = 1
    return attrs


def validate_attributes(kernel_size: int, stride: int, groups: int, channels: int | None = None) -> None:
    """Raise ValueError for attribute values the kernels do not implement."""
    if kernel_size not in INVOLUTION_KERNEL_SIZES:
        raise ValueError(f"Involution kernel_size {kernel_size} has no CUDA kernel; supported: {INVOLUTION_KERNEL_SIZES}")
    if int(stride) < 1:
        raise ValueError(f"Involution stride must be >= 1, got {stride}")
    if int(groups) < 1:
        raise ValueError(f"Involution groups must be >= 1, got {groups}")
    if channels is not None and int(channels) % int(groups):
        raise ValueError(f"Involution channels {channels} not divisible by groups {groups}")


def output_size(size, kernel_size: int, stride: int):
    """Ho from H (an int or a TensorRT symbolic shape expression): (H + 2p - K) // S + 1."""
    pad = (kernel_size - 1) // 2
    return (size + (2 * pad - kernel_size)) // stride + 1


def output_shape(x_shape, kernel_size: int, stride: int) -> tuple:
    """Y's shape from X's [B, C, H, W] (ints or symbolic expressions)."""
    b, c, h, w = x_shape
    return (b, c, output_size(h, kernel_size, stride), output_size(w, kernel_size, stride))


def weight_shape(x_shape, kernel_size: int, stride: int, groups: int) -> tuple:
    """The W input's shape [B, G*K*K, Ho, Wo] for X's shape."""
    b, _, ho, wo = output_shape(x_shape, kernel_size, stride)
    return (b, groups * kernel_size * kernel_size, ho, wo)


def check_shapes(x_shape, w_shape, kernel_size: int, stride: int, groups: int) -> tuple:
    """Validate concrete X/W shapes against the attributes; return Y's shape."""
    if len(x_shape) != 4:
        raise ValueError(f"Involution X must be 4-D [B, C, H, W], got shape {tuple(x_shape)}")
    validate_attributes(kernel_size, stride, groups, x_shape[1])
    want = weight_shape(x_shape, kernel_size, stride, groups)
    if tuple(w_shape) != tuple(want):
        raise ValueError(f"Involution W has shape {tuple(w_shape)}, expected {want} for X {tuple(x_shape)}")
    return output_shape(x_shape, kernel_size, stride)


def dtype_from_trt(dtype) -> str:
    """A TensorRT DataType (or its name, e.g. "DataType.HALF") -> "float32" / "float16"."""
    name = str(getattr(dtype, "name", dtype)).split(".")[-1]
    if name not in _TRT_DTYPES:
        raise TypeError(f"Involution plugin supports FP32 and FP16 tensors, got {name}")
    return _TRT_DTYPES[name]


def aot_scalar_args(x_shape, groups: int, stride: int) -> tuple:
    """The int32 kernel arguments between the input and output pointers, in kernel order:
    (B, C, H, W, groups, stride). Elements may be symbolic."""
    b, c, h, w = x_shape
    return (b, c, h, w, groups, stride)


def aot_grid_items(x_shape, y_shape, groups: int):
    """Work items of one launch: B * G * Ho * Wo (one thread each; symbolic or int)."""
    return x_shape[0] * groups * y_shape[2] * y_shape[3]


def involution_ptx(arch: int = PTX_ARCH) -> bytes:
    """PTX of cuda/involution.cu for compute_<arch> (NVRTC, else nvcc), cached on disk."""
    from . import build

    try:
        return build.nvrtc_compile("involution", arch, "ptx").image
    except ImportError:
        return build.nvcc_compile("involution", arch, "ptx").image


def register_involution_plugin() -> str:
    """Register ``dfmvr::Involution`` (version 1) with TensorRT's plugin registry; idempotent.

    Returns the plugin id. Raises UnavailableError (exit 3) without TensorRT >= 10.8 and its
    ``tensorrt.plugin`` module (AOT support). See the module docstring for the ONNX node it serves.
    """
    global _REGISTERED
    if _REGISTERED:
        return PLUGIN_ID
    import importlib

    from ..errors import UnavailableError

    try:
        trtp = importlib.import_module("tensorrt.plugin")
    except ImportError as exc:
        raise UnavailableError(
            f"the Involution TensorRT plugin needs TensorRT >= 10.8 with its Python plugin API "
            f"(tensorrt.plugin), which could not be imported ({exc}) -- install TensorRT from NVIDIA's "
            f"package index on a machine with an NVIDIA GPU (e.g. pip install tensorrt-cu12), or use "
            f"the ONNX Runtime path") from exc
    from . import trt_plugin_defs  # defines and registers the decorated functions (needs tensorrt)

    trt_plugin_defs.define(trtp, involution_ptx())
    _REGISTERED = True
    return PLUGIN_ID
