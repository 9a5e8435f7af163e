"""TensorRT's real pure-Python ``tensorrt.plugin`` layer, run on a STAND-IN for TensorRT's compiled core.

What is real: the ``tensorrt/plugin/*.py`` files shipped in NVIDIA's ``tensorrt-cu12-bindings`` wheels
(10.x and 11.x), unchanged: plugin registration and signature validation, the plugin creator's
attribute conversion (``create_plugin``), the AOT/JIT choice from the creation request, the
shape/launch-parameter plumbing of the plugin classes.

What stands in (``StandinCore``, this file): the compiled ``tensorrt.so`` those files import as
``tensorrt`` -- enums, ``PluginField``, the plugin registry, and a dimension-expression builder that
computes with ints (a dimension is a constant, or a named symbol such as the dynamic batch).
Nothing here compiles, loads or runs a kernel, and no GPU is involved.

Where the plugin layers come from (none found: the tests that need them skip, saying how to get them):
``$DFMVR_TRT_BINDINGS`` (a folder of ``tensorrt*-bindings-*.whl`` files or unpacked wheels), else
``$DFMVR_CACHE_DIR/trt-bindings`` / ``~/.cache/dfmvr/trt-bindings``, and an installed
``tensorrt-cu12-bindings`` / ``tensorrt-cu13-bindings`` distribution (its ``tensorrt_bindings`` package is
read from disk, never imported: its ``__init__`` needs the native libraries). Fetch them with
``pip download --no-deps --only-binary=:all: 'tensorrt-cu12-bindings==10.16.*' 'tensorrt-cu12-bindings==11.4.*'
-d ~/.cache/dfmvr/trt-bindings`` (the bindings wheels are real; only their native libraries are not there).
"""

from __future__ import annotations

import enum
import importlib.util
import os
import re
import sys
import tempfile
import types
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["find_plugin_layers", "StandinCore", "load_plugin_layer", "unload", "Dim", "ExprBuilder",
           "onnx_parser_fields", "onnx_parser_creation_request"]


# --- where the real plugin layers are ------------------------------------------------------------------
def _search_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("DFMVR_TRT_BINDINGS"):
        dirs.append(Path(os.environ["DFMVR_TRT_BINDINGS"]))
    root = Path(os.environ.get("DFMVR_CACHE_DIR", Path.home() / ".cache" / "dfmvr"))
    dirs.append(root / "trt-bindings")
    return dirs


def find_plugin_layers() -> dict[str, Path]:
    """{TensorRT version: folder holding that version's ``plugin/`` package}, wheels unpacked on demand."""
    found: dict[str, Path] = {}
    for d in _search_dirs():
        if not d.is_dir():
            continue
        for whl in sorted(d.glob("tensorrt*bindings-*.whl")):
            m = re.search(r"bindings-(\d+(?:\.\d+)+)", whl.name)
            if not m:
                continue
            out = d / f"unpacked-{m.group(1)}"
            if not os.access(d, os.W_OK):
                out = Path(tempfile.gettempdir()) / "dfmvr-trt-bindings" / f"unpacked-{m.group(1)}"
            if not (out / "plugin" / "_lib.py").is_file():
                with zipfile.ZipFile(whl) as z:
                    for name in z.namelist():
                        if "/plugin/" in name and name.endswith(".py"):
                            target = out / "plugin" / Path(name).name
                            target.parent.mkdir(parents=True, exist_ok=True)
                            target.write_bytes(z.read(name))
            found.setdefault(m.group(1), out)
        for plugin_dir in sorted(d.glob("unpacked-*/plugin")):
            found.setdefault(plugin_dir.parent.name.removeprefix("unpacked-"), plugin_dir.parent)
    from importlib import metadata

    for dist in metadata.distributions():
        name = (dist.metadata.get("Name") or "").lower().replace("_", "-")
        if re.fullmatch(r"tensorrt-cu\d+-bindings", name):
            folder = Path(dist.locate_file("tensorrt_bindings"))
            if (folder / "plugin" / "_lib.py").is_file():
                found.setdefault(dist.version, folder)
    return found


# --- the stand-in for the compiled core -----------------------------------------------------------------
class Dim:
    """A dimension expression: an int constant, or a symbol (``name``) with no build-time value."""

    def __init__(self, value: int | None = None, name: str | None = None):
        self.value, self.name = value, name

    def is_constant(self) -> bool:
        return self.value is not None

    def get_constant_value(self) -> int:
        assert self.value is not None, f"{self.name} is not a constant"
        return self.value

    def is_size_tensor(self) -> bool:
        return False

    def __repr__(self):
        return f"Dim({self.value if self.value is not None else self.name})"


class ExprBuilder:
    """Stand-in for trt.IExprBuilder: folds constants, keeps anything with a symbol symbolic."""

    def constant(self, value: int) -> Dim:
        return Dim(int(value))

    def operation(self, op, a: Dim, b: Dim) -> Dim:
        if a.is_constant() and b.is_constant():
            x, y = a.value, b.value
            fn = {"SUM": x + y, "SUB": x - y, "PROD": x * y, "MAX": max(x, y), "MIN": min(x, y),
                  "FLOOR_DIV": x // y if y else 0, "CEIL_DIV": -(-x // y) if y else 0,
                  "EQUAL": int(x == y), "LESS": int(x < y)}
            return Dim(fn[op.name])
        return Dim(None, f"({a.name or a.value} {op.name} {b.name or b.value})")


class _Base:
    def __init__(self, *args, **kwargs):
        pass


class PluginField:
    """Stand-in for trt.PluginField: name, data (a NumPy array, as the real binding exposes it), type."""

    def __init__(self, name, data=None, type=None):
        self.name = name
        self.type = type
        if isinstance(data, (bytes, bytearray)):
            data = np.frombuffer(bytes(data), np.int8)
        self.data = np.asarray(data) if data is not None else np.array([])
        self.size = self.data.size


class PluginFieldCollection(list):
    pass


class Registry:
    def __init__(self):
        self.creators: dict[tuple[str, str, str], object] = {}

    def register_creator(self, creator, namespace):
        self.creators[(creator.name, str(creator.plugin_version), namespace)] = creator
        return True

    def get_creator(self, name, version, namespace=""):
        return self.creators.get((name, str(version), namespace))


class StandinCore(types.ModuleType):
    """A module object standing in for ``tensorrt`` (the compiled bindings) under ``tensorrt.plugin``."""

    def __init__(self, version: str):
        super().__init__("tensorrt")
        self.__version__ = version
        self.__path__ = []                        # a package, so that ``tensorrt.plugin`` can live below it
        E = lambda name, members: enum.Enum(name, members)   # noqa: E731
        self.DataType = E("DataType", "FLOAT HALF INT8 INT32 BOOL UINT8 FP8 BF16 INT64 INT4 FP4 E8M0")
        self.float32, self.float16, self.int32 = self.DataType.FLOAT, self.DataType.HALF, self.DataType.INT32
        self.TensorFormat = E("TensorFormat", "LINEAR CHW2 HWC8 CHW4 CHW16 CHW32 DHWC8 CDHW32 HWC DLA_LINEAR "
                                              "DLA_HWC4 HWC16 DHWC")
        self.DimensionOperation = E("DimensionOperation", "SUM PROD MAX MIN SUB EQUAL LESS FLOOR_DIV CEIL_DIV")
        self.PluginFieldType = E("PluginFieldType", "FLOAT16 FLOAT32 FLOAT64 INT8 INT16 INT32 CHAR DIMS UNKNOWN "
                                                    "BF16 INT64 FP8 INT4 FP4")
        self.PluginArgType = E("PluginArgType", "INT")
        self.PluginArgDataType = E("PluginArgDataType", "INT8 INT16 INT32")
        self.TensorRTPhase = E("TensorRTPhase", "BUILD RUNTIME")
        self.QuickPluginCreationRequest = E("QuickPluginCreationRequest",
                                            "UNKNOWN PREFER_JIT PREFER_AOT STRICT_JIT STRICT_AOT")
        for cls in ("IPluginV3", "IPluginV3QuickCore", "IPluginV3QuickBuild", "IPluginV3QuickRuntime",
                    "IPluginV3QuickAOTBuild", "IPluginCreatorV3Quick", "ISymExpr", "ITensor", "IExprBuilder",
                    "DynamicPluginTensorDesc", "TensorDesc"):
            setattr(self, cls, type(cls, (_Base,), {}))
        self.IDimensionExpr = Dim
        self.PluginField, self.PluginFieldCollection = PluginField, PluginFieldCollection

        class PluginTensorDesc:
            def __init__(self, type=None, format=None, dims=(), scale=1.0):
                self.type, self.format, self.dims, self.scale = type, format, tuple(dims), scale
        self.PluginTensorDesc = PluginTensorDesc

        class Dims(tuple):
            MAX_DIMS = 8

            def __new__(cls, shape=0):
                return super().__new__(cls, () if isinstance(shape, int) else tuple(shape))
        self.Dims = Dims

        class DimsExprs(list):
            def __init__(self, n):
                super().__init__([None] * n)
        self.DimsExprs = DimsExprs

        class Logger:
            INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

            def __init__(self, severity=2):
                self.messages = []

            def log(self, severity, message):
                self.messages.append((severity, message))
        self.Logger = Logger
        self.registry = Registry()
        self.get_plugin_registry = lambda: self.registry
        self.nptype = lambda dt: {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32}[dt.name]


def load_plugin_layer(folder: Path, version: str):
    """Import ``folder/plugin`` as ``tensorrt.plugin`` over a fresh StandinCore; returns (trtp, core).
    Call ``unload()`` afterwards (the real layer keeps module-level registries)."""
    unload()
    core = StandinCore(version)
    sys.modules["tensorrt"] = core
    init = Path(folder) / "plugin" / "__init__.py"
    spec = importlib.util.spec_from_file_location("tensorrt.plugin", init,
                                                  submodule_search_locations=[str(init.parent)])
    trtp = importlib.util.module_from_spec(spec)
    sys.modules["tensorrt.plugin"] = trtp
    spec.loader.exec_module(trtp)
    core.plugin = trtp
    return trtp, core


def unload() -> None:
    for name in [n for n in sys.modules if n == "tensorrt" or n.startswith("tensorrt.")]:
        del sys.modules[name]


# --- the ONNX parser's side, mirrored from its documented behaviour -------------------------------------
def onnx_parser_fields(core: StandinCore, creator, node) -> list:
    """The plugin fields TensorRT's ONNX parser builds for a custom node: for each field the creator
    declares, in the creator's order, the node attribute of that name (missing ones are left out, the
    parser's ``plugin_namespace`` / ``plugin_version`` / ``aot`` are not fields), converted to the declared
    type; an ONNX INT attribute for an INT32 field becomes a ONE-ELEMENT int32 array.
    (Mirrored from the parser's documented behaviour; the parser itself is native code, not run here.)"""
    import onnx

    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    T = core.PluginFieldType
    as_np = {T.INT32: np.int32, T.INT64: np.int64, T.INT16: np.int16, T.INT8: np.int8, T.FLOAT32: np.float32,
             T.FLOAT64: np.float64}
    fields = []
    for declared in creator.field_names:
        if declared.name not in attrs:
            continue
        value = attrs[declared.name]
        if isinstance(value, bytes):
            fields.append(core.PluginField(declared.name, value, T.CHAR))
        else:
            fields.append(core.PluginField(declared.name, np.atleast_1d(np.asarray(value, as_np[declared.type])),
                                           declared.type))
    return fields


def onnx_parser_creation_request(core: StandinCore, node):
    """The creation request the parser passes for a Python plugin: ``aot`` true -> PREFER_AOT, false ->
    PREFER_JIT, absent -> UNKNOWN (which the plugin layer refuses for a plugin with both implementations)."""
    import onnx

    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    Q = core.QuickPluginCreationRequest
    if "aot" not in attrs:
        return Q.UNKNOWN
    return Q.PREFER_AOT if int(attrs["aot"]) else Q.PREFER_JIT
