"""Loaders for the Basel Face Model in the forms users bring: Deep3D's ``BFM_model_front.mat`` and
the original BFM2009 files that Deep3DFaceRecon converts into it.

Facts these loaders rely on (Deep3DFaceRecon's BFM folder; no code is taken from it):

- ``BFM_model_front.mat``: ``meanshape`` [1, 3N] and ``meantex`` [1, 3N] (0-255), bases ``idBase``
  [3N, 80], ``exBase`` [3N, 64], ``texBase`` [3N, 80] (0-255 units) already multiplied by their
  standard deviations, ``tri`` [T, 3] and ``keypoints`` [1, 68] 1-based, ``point_buf`` [N, 8]
  1-based adjacent triangles with 0 for none, ``skinmask`` [1, N]. Shapes are interleaved xyz
  (x0 y0 z0 x1 ...), in decimetres (BFM micrometre values / 1e5).
- BFM2009 ``01_MorphableModel.mat``: ``shapeMU`` [3M, 1] (micrometres), ``shapePC`` [3M, 199],
  ``shapeEV`` [199, 1], ``texMU`` [3M, 1] (0-255), ``texPC`` [3M, 199], ``texEV`` [199, 1], ``tl``
  [F, 3] 1-based triangles; M = 53,490 vertices.
- ``Exp_Pca.bin`` (Guo et al.): int32 K (79), float32 mean [3E], float32 components [K, 3E]
  (component-major), for the E = 53,215 vertices of a trimmed BFM; ``std_exp.txt`` holds the K
  standard deviations.
- ``BFM_exp_idx.mat`` key ``trimIndex`` [E]: 1-based BFM2009 vertex of each expression vertex;
  ``BFM_front_idx.mat`` key ``idx`` [N]: 1-based expression vertex of each front vertex (N = 35,709).
  So front vertex i is BFM vertex trimIndex[idx[i]] and expression vertex idx[i].
- ``facemodel_info.mat``: ``tri``, ``point_buf``, ``keypoints``, ``skinmask`` of the front crop.
- Conversion: id = shapePC * shapeEV / 1e5 (first 80), exp = expPC * std_exp / 1e5 (first 64),
  tex = texPC * texEV (first 80), mean shape / 1e5, all cropped to the front vertices.

MATLAB v7.3 files are HDF5 (read with h5py); HDF5 stores MATLAB's column-major arrays transposed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from . import parts as P
from .geometry import build_vertex_triangles
from .layout import COEFFS
from .model import MAX_ADJACENT, MorphableModel

__all__ = ["read_mat", "load_bfm_front", "read_exp_pca", "convert_bfm2009", "DEEP3D_FILES"]

# File names in Deep3DFaceRecon's BFM folder, used when the caller does not name them.
DEEP3D_FILES = {"std_exp": "std_exp.txt", "front_idx": "BFM_front_idx.mat",
                "exp_idx": "BFM_exp_idx.mat", "info": "facemodel_info.mat"}
_FIX_FRONT = "pass Deep3DFaceRecon's BFM/BFM_model_front.mat (or convert BFM2009 with --bfm2009)"


def read_mat(path, keys) -> dict[str, np.ndarray]:
    """Read numeric arrays ``keys`` from a MATLAB file (v5/v7 via scipy, v7.3/HDF5 via h5py).

    Returns arrays as MATLAB shows them (v7.3 datasets are transposed back). Raises InputError if
    the file is missing, unreadable, or lacks a key.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found", "pass the path of the MATLAB file")
    with open(path, "rb") as f:
        head = f.read(1024)
    if len(head) < 128:
        raise InputError(path, f"not a MATLAB .mat file (only {len(head)} bytes)", "the file is truncated or empty")
    import h5py  # a base dependency; imported here to keep "import dfmvr.face.bfm" light
    try:
        if h5py.is_hdf5(str(path)):
            with h5py.File(path, "r") as f:
                missing = [k for k in keys if k not in f]
                if missing:
                    raise InputError(path, f"MATLAB v7.3 file has no {missing} (it has {sorted(f.keys())})")
                return _numeric(path, {k: np.asarray(f[k][()]).T for k in keys})
        from scipy.io import loadmat
        data = loadmat(str(path), variable_names=list(keys))
    except InputError:
        raise
    except Exception as exc:  # scipy/h5py raise many types for corrupt input; all mean "bad file"
        raise InputError(path, f"cannot read as a MATLAB .mat file ({type(exc).__name__}: {exc})",
                         "the file is truncated or of another format") from exc
    missing = [k for k in keys if k not in data]
    if missing:
        raise InputError(path, f"MATLAB file has no {missing}")
    return _numeric(path, {k: np.asarray(data[k]) for k in keys})


def _numeric(path, arrays: dict) -> dict:
    """``arrays`` when every one holds numbers; an InputError naming the first that does not (strings,
    cells or structs under a BFM variable's name)."""
    for name, arr in arrays.items():
        if arr.dtype.kind not in "biuf":
            raise InputError(path, f"'{name}' holds {arr.dtype} values, expected numbers",
                             "is this the face model's own .mat file (BFM_model_front.mat / 01_MorphableModel.mat)?")
    return arrays


def _vector(path, name, arr, length=None) -> np.ndarray:
    """A MATLAB row or column vector -> 1D array, checking its length."""
    if arr.ndim > 2 or (arr.ndim == 2 and min(arr.shape) != 1):
        raise InputError(path, f"'{name}' has shape {arr.shape}, expected a vector")
    v = arr.reshape(-1)
    if length is not None and len(v) != length:
        raise InputError(path, f"'{name}' has {len(v)} entries, expected {length}")
    return v


def _matrix(path, name, arr, rows, min_cols) -> np.ndarray:
    if arr.ndim != 2 or arr.shape[0] != rows or arr.shape[1] < min_cols:
        raise InputError(path, f"'{name}' has shape {arr.shape}, expected [{rows}, >= {min_cols}]")
    return arr


def _index(path, name, arr, count, one_based=True, allow_zero=False) -> np.ndarray:
    """1-based MATLAB indices -> 0-based int64, all within [0, count) (0 -> -1 if allowed)."""
    a = np.asarray(arr)
    if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
        raise InputError(path, f"'{name}' holds non-integer indices")
    a = a.astype(np.int64) - (1 if one_based else 0)
    low = -1 if allow_zero else 0
    if a.size and (a.min() < low or a.max() >= count):
        raise InputError(path, f"'{name}' indexes [{a.min() + 1}, {a.max() + 1}] outside 1..{count}",
                         "is it 0-based, or from another model?")
    return a


def _xyz(flat: np.ndarray) -> np.ndarray:
    """Interleaved [3N] or [3N, K] -> [N, 3] or [N, 3, K]."""
    return flat.reshape(-1, 3) if flat.ndim == 1 else flat.reshape(-1, 3, flat.shape[-1])


def _finish(path, name, mean_shape, id_basis, exp_basis, mean_tex, tex_basis, tri, point_buf,
            keypoints, skin, source) -> MorphableModel:
    """Common tail: recentre, derive parts and evaluation region, build the record."""
    n = len(mean_shape)
    vertex_triangles = point_buf if point_buf is not None else build_vertex_triangles(tri, n, MAX_ADJACENT)
    ref = mean_shape - mean_shape.mean(axis=0)
    parts = P.parts_from_landmarks(ref, keypoints)
    if skin is None:
        skin = P.skin_mask_from_parts(parts, tri)
    model = MorphableModel(
        mean_shape=ref, id_basis=id_basis, exp_basis=exp_basis, mean_albedo=mean_tex / 255.0,
        albedo_basis=tex_basis / 255.0, triangles=tri, vertex_triangles=vertex_triangles,
        keypoints=keypoints, skin_mask=skin, parts=parts,
        front_region=P.front_region_mask(ref, keypoints, tri), name=name, source=source)
    model.validate(path)
    return model


def load_bfm_front(path) -> MorphableModel:
    """Deep3D's ``BFM_model_front.mat`` (MATLAB v5 or v7.3) -> MorphableModel (recentred, 0-based).

    Bases are truncated to the network's sizes (80/64/80) if the file has more.
    """
    path = Path(path)
    keys = ["meanshape", "meantex", "idBase", "exBase", "texBase", "tri", "point_buf", "skinmask", "keypoints"]
    m = read_mat(path, keys)
    mean = _vector(path, "meanshape", m["meanshape"]).astype(np.float64)
    if len(mean) % 3:
        raise InputError(path, f"'meanshape' has {len(mean)} values, not a multiple of 3 (x, y, z)", _FIX_FRONT)
    n = len(mean) // 3
    meantex = _vector(path, "meantex", m["meantex"], 3 * n).astype(np.float64)
    id_b = _matrix(path, "idBase", m["idBase"], 3 * n, COEFFS.identity)[:, :COEFFS.identity]
    ex_b = _matrix(path, "exBase", m["exBase"], 3 * n, COEFFS.expression)[:, :COEFFS.expression]
    tex_b = _matrix(path, "texBase", m["texBase"], 3 * n, COEFFS.texture)[:, :COEFFS.texture]
    tri = np.asarray(m["tri"])
    if tri.ndim != 2 or tri.shape[1] != 3:
        raise InputError(path, f"'tri' has shape {tri.shape}, expected [T, 3]", _FIX_FRONT)
    tri = _index(path, "tri", tri, n)
    pb = np.asarray(m["point_buf"])
    if pb.ndim != 2 or pb.shape[0] != n or pb.shape[1] > MAX_ADJACENT:
        raise InputError(path, f"'point_buf' has shape {pb.shape}, expected [{n}, {MAX_ADJACENT}]", _FIX_FRONT)
    pb = _index(path, "point_buf", pb, len(tri), allow_zero=True)
    pb = np.pad(pb, ((0, 0), (0, MAX_ADJACENT - pb.shape[1])), constant_values=-1)
    keypoints = _index(path, "keypoints", _vector(path, "keypoints", m["keypoints"], 68), n)
    skin = _vector(path, "skinmask", m["skinmask"], n) > 0
    return _finish(path, "bfm09-front", _xyz(mean), _xyz(id_b), _xyz(ex_b), _xyz(meantex), _xyz(tex_b),
                   tri, pb, keypoints, skin, {"loader": "bfm_model_front", "file": path.name})


def read_exp_pca(path) -> tuple[np.ndarray, np.ndarray]:
    """``Exp_Pca.bin`` -> (mean [E, 3], components [E, 3, K]) float32, in BFM micrometres.

    Layout: int32 K, float32 mean [3E], float32 components [K, 3E]; E follows from the file size.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found", "pass Exp_Pca.bin (from Guo et al.'s 3DFace release)")
    raw = path.read_bytes()
    if len(raw) < 4:
        raise InputError(path, "Exp_Pca.bin is empty or truncated")
    k = int(np.frombuffer(raw[:4], "<i4")[0])
    floats = (len(raw) - 4) // 4
    if not 0 < k < 10000 or (len(raw) - 4) % 4 or floats % (3 * (k + 1)):
        raise InputError(path, f"Exp_Pca.bin has {len(raw)} bytes, which does not fit its header "
                         f"(K = {k} components: 4 + 4 * 3E * (K + 1) bytes)", "the file is truncated or not Exp_Pca.bin")
    e = floats // (3 * (k + 1))
    data = np.frombuffer(raw[4:], "<f4")
    mean = data[: 3 * e].reshape(e, 3)
    comps = data[3 * e:].reshape(k, e, 3).transpose(1, 2, 0)
    return np.ascontiguousarray(mean), np.ascontiguousarray(comps)


def _beside(anchor: Path, given, key: str) -> Path:
    return Path(given) if given is not None else anchor.parent / DEEP3D_FILES[key]


def convert_bfm2009(morphable_model_mat, exp_pca_bin, *, std_exp=None, front_idx=None, exp_idx=None,
                    info=None) -> MorphableModel:
    """Build the front face model from the user's BFM2009 files, as Deep3DFaceRecon does.

    morphable_model_mat  ``01_MorphableModel.mat`` (shapeMU/PC/EV, texMU/PC/EV, tl)
    exp_pca_bin          ``Exp_Pca.bin``
    std_exp, front_idx, exp_idx, info
        ``std_exp.txt``, ``BFM_front_idx.mat`` (idx), ``BFM_exp_idx.mat`` (trimIndex) and
        ``facemodel_info.mat`` (tri, point_buf, keypoints, skinmask); default: those names beside
        ``exp_pca_bin`` (Deep3DFaceRecon's BFM folder).
    """
    bfm_path, exp_path = Path(morphable_model_mat), Path(exp_pca_bin)
    std_path = _beside(exp_path, std_exp, "std_exp")
    front_path = _beside(exp_path, front_idx, "front_idx")
    trim_path = _beside(exp_path, exp_idx, "exp_idx")
    info_path = _beside(exp_path, info, "info")

    b = read_mat(bfm_path, ["shapeMU", "shapePC", "shapeEV", "texMU", "texPC", "texEV"])
    shape_mu = _vector(bfm_path, "shapeMU", b["shapeMU"]).astype(np.float64)
    m3 = len(shape_mu)
    if m3 % 3:
        raise InputError(bfm_path, f"'shapeMU' has {m3} values, not a multiple of 3")
    shape_pc = _matrix(bfm_path, "shapePC", b["shapePC"], m3, COEFFS.identity)
    shape_ev = _vector(bfm_path, "shapeEV", b["shapeEV"], shape_pc.shape[1]).astype(np.float64)
    tex_mu = _vector(bfm_path, "texMU", b["texMU"], m3).astype(np.float64)
    tex_pc = _matrix(bfm_path, "texPC", b["texPC"], m3, COEFFS.texture)
    tex_ev = _vector(bfm_path, "texEV", b["texEV"], tex_pc.shape[1]).astype(np.float64)

    _, exp_pc = read_exp_pca(exp_path)                                  # [E, 3, K]
    if exp_pc.shape[2] < COEFFS.expression:
        raise InputError(exp_path, f"Exp_Pca.bin has {exp_pc.shape[2]} components, need {COEFFS.expression}")
    if not std_path.is_file():
        raise InputError(std_path, "std_exp.txt not found", "pass --std-exp (it is in Deep3DFaceRecon's BFM folder)")
    try:
        exp_std = np.loadtxt(std_path, dtype=np.float64).reshape(-1)
    except ValueError as exc:
        raise InputError(std_path, f"not a list of numbers ({exc})") from exc
    if len(exp_std) != exp_pc.shape[2]:
        raise InputError(std_path, f"has {len(exp_std)} values, Exp_Pca.bin has {exp_pc.shape[2]} components")

    e = exp_pc.shape[0]
    trim = _index(trim_path, "trimIndex", _vector(trim_path, "trimIndex",
                                                  read_mat(trim_path, ["trimIndex"])["trimIndex"], e), m3 // 3)
    front = _index(front_path, "idx", _vector(front_path, "idx", read_mat(front_path, ["idx"])["idx"]), e)
    shape_ids = trim[front]                                             # BFM2009 vertex of each front vertex
    n = len(front)

    inf = read_mat(info_path, ["tri", "point_buf", "keypoints", "skinmask"])
    tri = inf["tri"]
    if tri.ndim != 2 or tri.shape[1] != 3:
        raise InputError(info_path, f"'tri' has shape {tri.shape}, expected [T, 3]")
    tri = _index(info_path, "tri", tri, n)
    pb = _index(info_path, "point_buf", _matrix(info_path, "point_buf", inf["point_buf"], n, 1), len(tri),
                allow_zero=True)
    if pb.shape[1] > MAX_ADJACENT:
        raise InputError(info_path, f"'point_buf' has {pb.shape[1]} columns, expected {MAX_ADJACENT}")
    pb = np.pad(pb, ((0, 0), (0, MAX_ADJACENT - pb.shape[1])), constant_values=-1)
    keypoints = _index(info_path, "keypoints", _vector(info_path, "keypoints", inf["keypoints"], 68), n)
    skin = _vector(info_path, "skinmask", inf["skinmask"], n) > 0

    ki, ke, kt = COEFFS.identity, COEFFS.expression, COEFFS.texture
    id_basis = _xyz(shape_pc[:, :ki] * shape_ev[None, :ki] / 1e5)[shape_ids]
    tex_basis = _xyz(tex_pc[:, :kt] * tex_ev[None, :kt])[shape_ids]
    exp_basis = exp_pc[front, :, :ke] * exp_std[None, None, :ke] / 1e5
    mean_shape = _xyz(shape_mu / 1e5)[shape_ids]
    mean_tex = _xyz(tex_mu)[shape_ids]
    source = {"loader": "convert_bfm2009", "files": [p.name for p in (bfm_path, exp_path, std_path,
                                                                        front_path, trim_path, info_path)]}
    return _finish(bfm_path, "bfm09-front", mean_shape, id_basis, exp_basis, mean_tex, tex_basis, tri, pb,
                   keypoints, skin, source)
