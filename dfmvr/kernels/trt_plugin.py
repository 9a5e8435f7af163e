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
             aot: int 1 or 0                       (always present: 1 selects the ahead-of-time
                                                    implementation, whose PTX is embedded in the engine,
                                                    which then runs without Python, e.g. under trtexec;
                                                    0 the JIT one. Without the attribute the parser
                                                    asks for neither, and a plugin that defines both is
                                                    refused at creation)
    and NO FunctionProto for ("dfmvr", "Involution") attached when building engines (PLATFORM.md:
    whether the parser would inline it instead is unverified). ``onnx_node_attributes()`` returns
    exactly these attributes.

Implementations registered: the AOT one (``trtp.aot_impl``: PTX of ``cuda/involution.cu`` compiled by
NVRTC for compute_80, which the driver JIT-compiles for sm_80/86/89/90 and newer; kernel arguments
X, W, then the int32 scalars B, C, H, W, groups, stride, then Y) and a JIT one (``trtp.impl``:
the same PTX launched through cuda-python on TensorRT's stream) for graphs with ``aot=0``.
Plugin attributes are not serialised with AOT implementations, so everything the kernel needs goes
in the kernel name (K, dtype) and the scalar arguments.

Integer attributes reach the plugin as one-element int32 arrays (the ONNX parser fills an INT32 plugin
field from an ONNX INT attribute; TensorRT 10.x then calls ``int(array)``, which NumPy >= 2.4 refuses).
So the decorated functions annotate them ``numpy.typing.NDArray[numpy.int32]`` (TensorRT then passes the
array through, 10.x and 11.x alike) and ``attr_int`` turns scalars and one-element arrays into ints.

The PTX is compiled lazily, the first time an implementation needs it (``involution_ptx`` on the first
``aot_impl``/``impl`` call): registering the plugin to deserialize an AOT engine compiles nothing.

The shape, dtype and format logic lives in plain functions below, tested without TensorRT.
tensorrt is imported only inside ``register_involution_plugin``.
"""

from __future__ import annotations

from .launch import INVOLUTION_KERNEL_SIZES
from .op import INVOLUTION

__all__ = ["PLUGIN_ID", "PLUGIN_VERSION", "PLUGIN_BLOCK", "PTX_ARCH", "TYPE_COMBINATION", "TENSOR_FORMAT",
           "INVOLUTION_PARAMS",
           "onnx_node_attributes", "attr_int", "validate_attributes", "check_weight_exprs", "output_size",
           "output_shape", "weight_shape",
           "check_shapes", "dtype_from_trt", "aot_scalar_args", "aot_grid_items", "involution_ptx",
           "LazyPtx", "register_involution_plugin"]

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
    """The attributes an ONNX Involution node needs for the TensorRT parser to pick this plugin.

    ``aot`` is always emitted (1 or 0): the parser only asks for the JIT implementation when told so,
    and refuses a plugin with both implementations when the node says neither."""
    kernel_size, stride, groups = (attr_int(kernel_size, "kernel_size"), attr_int(stride, "stride"),
                                   attr_int(groups, "groups"))
    validate_attributes(kernel_size, stride, groups)
    return {"kernel_size": kernel_size, "stride": stride, "groups": groups,
            "plugin_namespace": INVOLUTION.plugin_namespace, "plugin_version": PLUGIN_VERSION,
            "aot": 1 if aot else 0}


def attr_int(value, name: str = "attribute") -> int:
    """An integer plugin attribute as a Python int: accepts an int, a NumPy integer scalar, or a 0-d or
    one-element integer array (how TensorRT hands INT32 plugin fields over); refuses anything else."""
    import numpy as np

    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"Involution {name} must be an integer, got a bool ({value!r})")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, np.ndarray):
        if not np.issubdtype(value.dtype, np.integer):
            raise TypeError(f"Involution {name} must be an integer array, got dtype {value.dtype}")
        if value.size != 1:
            raise ValueError(f"Involution {name} must hold exactly one integer, got shape {value.shape}")
        return int(value.reshape(-1)[0])
    raise TypeError(f"Involution {name} must be an integer or a one-element integer array, "
                    f"got {type(value).__name__}")


def validate_attributes(kernel_size: int, stride: int, groups: int, channels: int | None = None) -> None:
    """Raise ValueError for attribute values the kernels do not implement."""
    kernel_size, stride, groups = (attr_int(kernel_size, "kernel_size"), attr_int(stride, "stride"),
                                   attr_int(groups, "groups"))
    if kernel_size not in INVOLUTION_KERNEL_SIZES:
        raise ValueError(f"Involution kernel_size {kernel_size} has no CUDA kernel; supported: {INVOLUTION_KERNEL_SIZES}")
    if stride < 1:
        raise ValueError(f"Involution stride must be >= 1, got {stride}")
    if groups < 1:
        raise ValueError(f"Involution groups must be >= 1, got {groups}")
    if channels is not None and int(channels) % groups:
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


def _known(expr):
    """An int, or None where a TensorRT shape expression is fake (no shape context) or not a build-time
    constant (e.g. the dynamic batch)."""
    if isinstance(expr, int):
        return int(expr)
    if getattr(expr, "is_fake", False):
        return None
    try:
        return int(expr.constant_value()) if expr.is_constant else None
    except (AttributeError, RuntimeError):
        return None


def check_weight_exprs(x_exprs, w_exprs, kernel_size: int, stride: int, groups: int) -> None:
    """The W input checked against X and the attributes wherever TensorRT knows the dimensions at
    build time (ints, or shape expressions that are constants); ValueError on a mismatch. The AOT
    kernel reads W as [B, G*K*K, Ho, Wo]: a W of another shape would be read out of bounds."""
    if len(w_exprs) != 4 or len(x_exprs) != 4:
        raise ValueError(f"Involution X and W must be 4-D, got ranks {len(x_exprs)} and {len(w_exprs)}")
    want = weight_shape(tuple(x_exprs), kernel_size, stride, groups)
    for axis, (got, exp) in enumerate(zip(w_exprs, want)):
        g, e = _known(got), _known(exp)
        if g is not None and e is not None and g != e:
            raise ValueError(f"Involution W dimension {axis} is {g}, expected {e} "
                             f"([B, groups*K*K, Ho, Wo] with K={kernel_size}, stride={stride}, groups={groups})")


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
    """PTX of cuda/involution.cu for compute_<arch> (NVRTC, else nvcc), cached on disk.

    NVRTC's major version must match the CUDA major of the installed TensorRT (``trt_version``):
    checked here, at the one place PTX is made for the plugin."""
    from . import build
    from .trt_version import check_nvrtc_matches, nvrtc_major, tensorrt_cuda_major

    try:
        major = nvrtc_major()
    except ImportError:
        return build.nvcc_compile("involution", arch, "ptx").image
    check_nvrtc_matches(major, tensorrt_cuda_major())
    return build.nvrtc_compile("involution", arch, "ptx").image


class LazyPtx:
    """Calls ``compile`` on first use and keeps the bytes: registering the plugin compiles nothing."""

    def __init__(self, compile=involution_ptx):
        self._compile, self._image = compile, None

    def __call__(self) -> bytes:
        if self._image is None:
            self._image = self._compile()
        return self._image


def register_involution_plugin(ptx=None) -> str:
    """Register ``dfmvr::Involution`` (version 1) with TensorRT's plugin registry; idempotent.

    ``ptx``: a callable returning the PTX (default: ``LazyPtx()``, compiled on first use, so that
    registering compiles nothing). Returns the plugin id. Raises UnavailableError (exit 3) without a
    supported TensorRT (``trt_version``: 10.8 to 11.x) and its ``tensorrt.plugin`` module.
    See the module docstring for the ONNX node it serves.
    """
    global _REGISTERED
    if _REGISTERED:
        return PLUGIN_ID
    import importlib

    from ..errors import UnavailableError
    from .trt_version import import_tensorrt

    import_tensorrt("the Involution TensorRT plugin")
    try:
        trtp = importlib.import_module("tensorrt.plugin")
    except ImportError as exc:
        raise UnavailableError(
            f"the Involution TensorRT plugin needs TensorRT's Python plugin API (tensorrt.plugin), which "
            f"could not be imported ({exc}) -- pip install 'dfmvr[tensorrt-cu12]' or 'dfmvr[tensorrt-cu13]' "
            f"on a machine with an NVIDIA GPU, or use the ONNX Runtime path") from exc
    from . import trt_plugin_defs  # defines and registers the decorated functions (needs tensorrt)

    trt_plugin_defs.define(trtp, ptx if ptx is not None else LazyPtx())
    _REGISTERED = True
    return PLUGIN_ID
