"""The morphable model: one in-memory record for BFM, converted BFM2009 and the synthetic model.

Loaders for foreign formats live in ``bfm.py`` and ``synthetic.py``; this module owns the record, its
validation, its content hash and the project's own ``.npz`` format.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..errors import InputError
from .layout import COEFFS, NUM_PARSE_CLASSES

__all__ = ["MorphableModel", "FORMAT_VERSION", "HASH_SCHEME", "identity_matches"]

FORMAT_VERSION = 1
# Content-hash scheme. 1 (no "hash_scheme" key in a stored identity): sha256 over raw array bytes, so
# the sign of a zero leaked in, and that sign depends on the CPU's BLAS kernel (the same synthetic
# model hashed ffee2bbec947a49d on one machine and a5ccc5cef5a9dc5f on another). 2: canonical bytes
# (see _canonical_bytes), equal for equal content on every machine.
HASH_SCHEME = 2
# Scheme-1 hashes of models whose content is known, mapped to their scheme-2 hash, so that a card or
# file stamped before scheme 2 on any machine still matches its equal content. Both entries are the
# default synthetic model (seed 0), as hashed with Sandybridge and Haswell/Zen OpenBLAS kernels.
LEGACY_HASH_ALIASES = {
    "ffee2bbec947a49d": "be35f68e48500f9c",
    "a5ccc5cef5a9dc5f": "be35f68e48500f9c",
}
MAX_ADJACENT = 8  # BFM's point_buf width: up to 8 triangles around a vertex

# name -> (dtype, shape pattern); "N" vertices, "T" triangles, ints are fixed sizes.
_ARRAYS = {
    "mean_shape": (np.float32, ("N", 3)),
    "id_basis": (np.float32, ("N", 3, None)),
    "exp_basis": (np.float32, ("N", 3, None)),
    "mean_albedo": (np.float32, ("N", 3)),
    "albedo_basis": (np.float32, ("N", 3, None)),
    "triangles": (np.int32, ("T", 3)),
    "vertex_triangles": (np.int32, ("N", MAX_ADJACENT)),
    "keypoints": (np.int32, (68,)),
    "skin_mask": (np.bool_, ("N",)),
    "parts": (np.uint8, ("N",)),
    "front_region": (np.bool_, ("N",)),
}


def _canonical_bytes(arr: np.ndarray) -> bytes:
    """The bytes that stand for an array's content on every machine: little-endian, C order, every
    zero positive (-0.0 + 0.0 = +0.0) and one NaN pattern. Equal values give equal bytes."""
    arr = np.asarray(arr)
    if arr.dtype.kind == "f":
        arr = np.where(np.isnan(arr), arr.dtype.type(np.nan), arr + arr.dtype.type(0))
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


def identity_matches(want: dict, model: "MorphableModel") -> bool:
    """Whether ``model`` is the face model that the stored identity ``want`` (a card's or a file's
    ``{"hash", "hash_scheme"?}``) names. Scheme-1 hashes match through ``LEGACY_HASH_ALIASES`` or, on
    the machine that wrote them, through the raw-byte hash: equal content is never refused for
    predating the scheme."""
    stored = want.get("hash")
    if not stored:
        return True
    if want.get("hash_scheme", 1) == HASH_SCHEME:
        return stored == model.content_hash()
    return LEGACY_HASH_ALIASES.get(stored) == model.content_hash() or stored == model.legacy_hash()


def _compact(arr: np.ndarray) -> np.ndarray:
    """Store a float32 array as float16 when that is lossless (loading casts back to float32, so the
    content hash is unchanged); the synthetic model is built float16-representable to stay small."""
    if arr.dtype == np.float32:
        half = arr.astype(np.float16)
        if np.array_equal(half.astype(np.float32), arr):
            return half
    return arr


REBUILD_HINT = "rebuild the face model with 'dfmvr data face-model'"     # the fix for a malformed face-model file


@dataclass
class MorphableModel:
    """A linear 3D morphable model in BFM/Deep3D conventions (numpy, float32).

    mean_shape       [N, 3]      mean vertex positions, decimetres, centred on their centroid
    id_basis         [N, 3, Ki]  identity basis, already scaled by the PCA standard deviations
    exp_basis        [N, 3, Ke]  expression basis, same scaling
    mean_albedo      [N, 3]      mean RGB albedo in [0, 1] (BFM meantex / 255)
    albedo_basis     [N, 3, Kt]  albedo basis in the same [0, 1] units
    triangles        [T, 3]      0-based vertex ids, counter-clockwise seen from outside the face,
                                 so cross(v1 - v0, v2 - v0) points outwards
    vertex_triangles [N, 8]      0-based ids of the triangles around each vertex, -1 = none
    keypoints        [68]        0-based vertex ids of the 68 iBUG landmarks
    skin_mask        [N] bool    vertices used by skin statistics (Deep3D's skinmask)
    parts            [N] uint8   parse class of each vertex (``layout.PARSE_CLASSES``)
    front_region     [N] bool    the front-face region used for evaluation
    name             str         e.g. "bfm09-front", "synthetic-seed0"
    units            str         always "decimetre" (BFM values / 1e5)
    """

    mean_shape: np.ndarray
    id_basis: np.ndarray
    exp_basis: np.ndarray
    mean_albedo: np.ndarray
    albedo_basis: np.ndarray
    triangles: np.ndarray
    vertex_triangles: np.ndarray
    keypoints: np.ndarray
    skin_mask: np.ndarray
    parts: np.ndarray
    front_region: np.ndarray
    name: str = "unnamed"
    units: str = "decimetre"
    source: dict = field(default_factory=dict)

    def __post_init__(self):
        for key, (dtype, _) in _ARRAYS.items():
            setattr(self, key, np.ascontiguousarray(getattr(self, key), dtype=dtype))
        self.validate()

    # --- sizes -----------------------------------------------------------------------------
    @property
    def num_vertices(self) -> int:
        return int(self.mean_shape.shape[0])

    @property
    def num_triangles(self) -> int:
        return int(self.triangles.shape[0])

    @property
    def dims(self) -> dict[str, int]:
        return {"identity": self.id_basis.shape[2], "expression": self.exp_basis.shape[2],
                "texture": self.albedo_basis.shape[2]}

    def validate(self, path=None) -> None:
        """Check shapes, index ranges and dimensions; raise InputError naming the problem."""
        n = self.mean_shape.shape[0] if self.mean_shape.ndim == 2 else -1
        t = self.triangles.shape[0] if self.triangles.ndim == 2 else -1
        sizes = {"N": n, "T": t}
        for key, (_, pattern) in _ARRAYS.items():
            arr = getattr(self, key)
            ok = arr.ndim == len(pattern) and all(
                want is None or arr.shape[i] == (sizes[want] if isinstance(want, str) else want)
                for i, want in enumerate(pattern)
            )
            if not ok:
                raise InputError(path, f"face model array '{key}' has shape {arr.shape}, expected {pattern} "
                                 f"with N={n} vertices and T={t} triangles",
                                 REBUILD_HINT)
        if self.triangles.size and (self.triangles.min() < 0 or self.triangles.max() >= n):
            raise InputError(path, "face model triangles index vertices out of range (are they 1-based?)",
                             REBUILD_HINT)
        if self.vertex_triangles.max() >= t or self.vertex_triangles.min() < -1:
            raise InputError(path, "face model vertex_triangles index triangles out of range",
                             REBUILD_HINT)
        if self.keypoints.min() < 0 or self.keypoints.max() >= n:
            raise InputError(path, "face model keypoints index vertices out of range",
                             REBUILD_HINT)
        if self.parts.max(initial=0) >= NUM_PARSE_CLASSES:
            raise InputError(path, f"face model parts use labels >= {NUM_PARSE_CLASSES}",
                             REBUILD_HINT)
        want = {"identity": COEFFS.identity, "expression": COEFFS.expression, "texture": COEFFS.texture}
        if self.dims != want:
            raise InputError(path, f"face model has basis sizes {self.dims}, the network emits {want}",
                             "use a BFM-compatible face model (80 identity, 64 expression, 80 texture)")

    # --- identity --------------------------------------------------------------------------
    def content_hash(self) -> str:
        """sha256 (scheme ``HASH_SCHEME``) over every array's name, dtype, shape and canonical bytes
        (name/source excluded): 16 hex chars, the same on every machine for equal content."""
        h = hashlib.sha256(f"dfmvr-face-model-hash:{HASH_SCHEME}".encode())
        for key in _ARRAYS:
            arr = getattr(self, key)
            h.update(f"{key}:{arr.dtype.name}:{tuple(int(n) for n in arr.shape)}".encode())
            h.update(_canonical_bytes(arr))
        return h.hexdigest()[:16]

    def legacy_hash(self) -> str:
        """The scheme-1 hash (raw bytes, machine-dependent signed zeros): only to recognise identities
        stamped before scheme 2."""
        h = hashlib.sha256()
        for key in _ARRAYS:
            arr = getattr(self, key)
            h.update(f"{key}:{arr.dtype.str}:{arr.shape}".encode())
            h.update(arr.tobytes())
        return h.hexdigest()[:16]

    def identity(self) -> dict:
        """The record a model card stores to recognise this face model later."""
        return {"name": self.name, "hash": self.content_hash(), "hash_scheme": HASH_SCHEME,
                "num_vertices": self.num_vertices, "num_triangles": self.num_triangles}

    # --- project .npz format ---------------------------------------------------------------
    def save(self, path) -> Path:
        path = Path(path)
        meta = {"format": "dfmvr-face-model", "version": FORMAT_VERSION, "name": self.name,
                "units": self.units, "source": self.source, "hash": self.content_hash(),
                "hash_scheme": HASH_SCHEME}
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez_compressed(tmp, meta=np.array(json.dumps(meta)),
                                **{k: _compact(getattr(self, k)) for k in _ARRAYS})
        return path

    @classmethod
    def load(cls, path) -> "MorphableModel":
        path = Path(path)
        if not path.is_file():
            raise InputError(path, "face model file not found",
                             "create one with 'dfmvr data face-model' or pass the right path")
        try:
            loaded = np.load(path, allow_pickle=False)
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
            # numpy reads an unknown file as a pickle and advises loading it unsafely: not the way here
            what = "another kind of file" if "pickle" in str(exc) else str(exc)
            raise InputError(path, f"not a readable dfmvr face model .npz ({what})",
                             "the file is truncated or of another format; rebuild it with 'dfmvr data face-model'") from exc
        if not isinstance(loaded, np.lib.npyio.NpzFile):        # a bare .npy array (whatever its name)
            raise InputError(path, "is a single numpy array (.npy), not a dfmvr face model .npz",
                             "convert BFM files with 'dfmvr data face-model --bfm ...'")
        try:
            with loaded as z:
                data = {k: z[k] for k in z.files}
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
            raise InputError(path, f"not a readable dfmvr face model .npz ({exc})",
                             "the file is truncated or of another format; rebuild it with 'dfmvr data face-model'") from exc
        if "meta" not in data:
            raise InputError(path, "not a dfmvr face model (no 'meta' entry)",
                             "convert BFM files with 'dfmvr data face-model --bfm ...'")
        try:
            meta = json.loads(str(data.pop("meta")))
        except json.JSONDecodeError as exc:
            raise InputError(path, f"its 'meta' entry is not the JSON dfmvr writes ({exc})", REBUILD_HINT) from exc
        if not isinstance(meta, dict):
            raise InputError(path, "its 'meta' entry is not the JSON object dfmvr writes", REBUILD_HINT)
        if meta.get("format") != "dfmvr-face-model" or meta.get("version") != FORMAT_VERSION:
            raise InputError(path, f"unsupported face model format {meta.get('format')} v{meta.get('version')}")
        missing = [k for k in _ARRAYS if k not in data]
        if missing:
            raise InputError(path, f"face model is missing arrays {missing}",
                             REBUILD_HINT)
        try:        # the constructor validates without knowing the file: name it here
            model = cls(**{k: data[k] for k in _ARRAYS}, name=meta.get("name", path.stem),
                        units=meta.get("units", "decimetre"), source=meta.get("source", {}))
        except InputError as exc:
            raise InputError(path, exc.problem, exc.fix) from exc
        if not identity_matches(meta, model):
            raise InputError(path, "face model content does not match its stored hash (corrupt file)")
        return model

    def array_names(self) -> list[str]:
        return [f.name for f in fields(self) if f.name in _ARRAYS]
