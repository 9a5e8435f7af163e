"""BFM loaders on small files written in exactly the users' formats (MATLAB v5 via scipy, v7.3 via
h5py with MATLAB's transposed layout, Exp_Pca.bin, std_exp.txt), made from a small synthetic model."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.io import savemat

from dfmvr.errors import InputError
from dfmvr.face.bfm import convert_bfm2009, load_bfm_front, read_exp_pca
from dfmvr.face.synthetic import synthetic_face_model

SHIFT = np.array([0.11, -0.23, 0.37])      # BFM's mean shape is not centred; the loaders recentre it


@pytest.fixture(scope="module")
def small():
    return synthetic_face_model(seed=3, num_vertices=400)


def write_v73(path, arrays):
    """A MATLAB v7.3 file: HDF5 with a 512-byte MATLAB header, each array stored transposed."""
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w", userblock_size=512) as f:
        for key, value in arrays.items():
            value = np.asarray(value)
            ds = f.create_dataset(key, data=value.T)
            ds.attrs["MATLAB_class"] = np.bytes_({"f": "double" if value.itemsize == 8 else "single",
                                                  "i": "int32", "u": "uint8", "b": "logical"}[value.dtype.kind])
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created by dfmvr tests HDF5 schema 1.00 ."
    with open(path, "r+b") as f:
        f.write(header.ljust(116, b" ") + bytes(8) + b"\x00\x02" + b"IM")
    return path


def front_arrays(m, index_dtype=np.float64):
    n = m.num_vertices
    return {
        "meanshape": (m.mean_shape + SHIFT).reshape(1, -1),
        "meantex": (m.mean_albedo * 255.0).reshape(1, -1),
        "idBase": m.id_basis.reshape(3 * n, -1),
        "exBase": m.exp_basis.reshape(3 * n, -1),
        "texBase": m.albedo_basis.reshape(3 * n, -1) * 255.0,
        "tri": (m.triangles + 1).astype(index_dtype),
        "point_buf": (m.vertex_triangles + 1).astype(index_dtype),
        "skinmask": m.skin_mask.reshape(1, -1).astype(np.float64),
        "keypoints": (m.keypoints + 1).reshape(1, -1).astype(index_dtype),
    }


def assert_same_model(got, want, atol=2e-5):
    np.testing.assert_allclose(got.mean_shape, want.mean_shape - want.mean_shape.mean(0), atol=atol)
    for key in ("id_basis", "exp_basis", "mean_albedo", "albedo_basis"):
        np.testing.assert_allclose(getattr(got, key), getattr(want, key), atol=atol, rtol=1e-5, err_msg=key)
    for key in ("triangles", "vertex_triangles", "keypoints", "skin_mask"):
        np.testing.assert_array_equal(getattr(got, key), getattr(want, key), err_msg=key)
    # Parts and region are re-derived from the keypoints with the same functions: same answer.
    assert (got.parts == want.parts).mean() > 0.98
    assert (got.front_region == want.front_region).mean() > 0.99


@pytest.mark.parametrize("version", ["v5", "v7.3"])
def test_load_bfm_front(tmp_path, small, version):
    path = tmp_path / "BFM_model_front.mat"
    if version == "v5":
        savemat(path, front_arrays(small))
    else:
        write_v73(path, front_arrays(small, np.int32))
    model = load_bfm_front(path)
    assert_same_model(model, small)
    assert np.abs(model.mean_shape.mean(axis=0)).max() < 1e-5
    assert model.name == "bfm09-front"


def test_load_bfm_front_truncates_larger_bases(tmp_path, small):
    arrays = front_arrays(small)
    arrays["idBase"] = np.concatenate([arrays["idBase"], np.ones((len(arrays["idBase"]), 20))], axis=1)
    savemat(tmp_path / "f.mat", arrays)
    assert load_bfm_front(tmp_path / "f.mat").id_basis.shape[2] == 80


@pytest.mark.parametrize("break_it, words", [
    (lambda a: a.pop("tri"), "'tri'"),
    (lambda a: a.update(idBase=a["idBase"][:, :70]), "idBase"),
    (lambda a: a.update(meantex=a["meantex"][:, :-3]), "meantex"),
    (lambda a: a.update(tri=a["tri"] - 1), "tri"),                   # 0-based by mistake
    (lambda a: a.update(keypoints=a["keypoints"][:, :60]), "keypoints"),
    (lambda a: a.update(point_buf=a["point_buf"] + 5000), "point_buf"),
    (lambda a: a.update(meanshape="a string"), "'meanshape' holds <U8 values, expected numbers"),
])
def test_bad_bfm_front_names_file_and_problem(tmp_path, small, break_it, words):
    arrays = front_arrays(small)
    break_it(arrays)
    path = tmp_path / "broken.mat"
    savemat(path, arrays)
    with pytest.raises(InputError) as err:
        load_bfm_front(path)
    assert str(path) in str(err.value) and words in str(err.value)


@pytest.mark.parametrize("content", ["truncated-v5", "truncated-v73", "text", "empty", "missing"])
def test_unreadable_files(tmp_path, small, content):
    path = tmp_path / "BFM_model_front.mat"
    if content.startswith("truncated"):
        full = tmp_path / "full.mat"
        savemat(full, front_arrays(small)) if content.endswith("v5") else write_v73(full, front_arrays(small))
        data = full.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif content == "text":
        path.write_text("this is not a MATLAB file\n" * 20)
    elif content == "empty":
        path.write_bytes(b"")
    with pytest.raises(InputError) as err:
        load_bfm_front(path)
    assert str(path) in str(err.value)


def test_v73_missing_key(tmp_path, small):
    arrays = front_arrays(small)
    del arrays["keypoints"]
    path = write_v73(tmp_path / "f.mat", arrays)
    with pytest.raises(InputError, match="keypoints"):
        load_bfm_front(path)


# --- BFM2009 conversion ---------------------------------------------------------------------------
def write_bfm2009(folder, m, rng, bfm_writer=savemat):
    """BFM2009-style files whose front crop, after Deep3D's conversion, is exactly model ``m``."""
    n = m.num_vertices
    e, full = n + 13, n + 37                                     # expression mesh, full BFM mesh
    exp_to_full = rng.choice(full, e, replace=False)             # trimIndex (0-based here)
    front_to_exp = rng.choice(e, n, replace=False)               # idx (0-based here)
    front_full = exp_to_full[front_to_exp]
    shape_ev = np.linspace(9000.0, 50.0, 199)
    tex_ev = np.linspace(120.0, 2.0, 199)
    exp_std = np.linspace(40000.0, 300.0, 79)

    shape_mu = rng.normal(size=(full, 3)) * 1e4
    shape_mu[front_full] = (m.mean_shape + SHIFT) * 1e5
    shape_pc = rng.normal(size=(full, 3, 199))
    shape_pc[front_full, :, :80] = m.id_basis * 1e5 / shape_ev[:80]
    tex_mu = rng.uniform(0, 255, (full, 3))
    tex_mu[front_full] = m.mean_albedo * 255.0
    tex_pc = rng.normal(size=(full, 3, 199))
    tex_pc[front_full, :, :80] = m.albedo_basis * 255.0 / tex_ev[:80]
    bfm_writer(folder / "01_MorphableModel.mat", {
        "shapeMU": shape_mu.reshape(-1, 1).astype(np.float32),
        "shapePC": shape_pc.reshape(3 * full, 199).astype(np.float32),
        "shapeEV": shape_ev.reshape(-1, 1).astype(np.float32),
        "texMU": tex_mu.reshape(-1, 1).astype(np.float32),
        "texPC": tex_pc.reshape(3 * full, 199).astype(np.float32),
        "texEV": tex_ev.reshape(-1, 1).astype(np.float32),
        "tl": rng.integers(1, full + 1, (2 * full, 3)).astype(np.float64),
    })
    exp_pc = rng.normal(size=(e, 3, 79))
    exp_pc[front_to_exp, :, :64] = m.exp_basis * 1e5 / exp_std[:64]
    exp_mu = rng.normal(size=(e, 3))
    with open(folder / "Exp_Pca.bin", "wb") as f:
        f.write(np.int32(79).tobytes())
        f.write(exp_mu.reshape(-1).astype("<f4").tobytes())
        f.write(exp_pc.transpose(2, 0, 1).reshape(79, 3 * e).astype("<f4").tobytes())
    np.savetxt(folder / "std_exp.txt", exp_std)
    savemat(folder / "BFM_exp_idx.mat", {"trimIndex": (exp_to_full + 1).reshape(-1, 1).astype(np.float64)})
    savemat(folder / "BFM_front_idx.mat", {"idx": (front_to_exp + 1).reshape(-1, 1).astype(np.float64)})
    savemat(folder / "facemodel_info.mat", {
        "tri": (m.triangles + 1).astype(np.float64), "point_buf": (m.vertex_triangles + 1).astype(np.float64),
        "keypoints": (m.keypoints + 1).reshape(1, -1).astype(np.float64),
        "skinmask": m.skin_mask.reshape(1, -1).astype(np.float64)})
    return folder / "01_MorphableModel.mat", folder / "Exp_Pca.bin"


@pytest.mark.parametrize("writer", ["v5", "v7.3"])
def test_convert_bfm2009(tmp_path, small, writer):
    bfm, exp = write_bfm2009(tmp_path, small, np.random.default_rng(0),
                             savemat if writer == "v5" else write_v73)
    model = convert_bfm2009(bfm, exp)                            # index files found beside Exp_Pca.bin
    assert_same_model(model, small, atol=5e-5)


def test_convert_bfm2009_explicit_paths(tmp_path, small):
    src = tmp_path / "elsewhere"
    src.mkdir()
    bfm, exp = write_bfm2009(src, small, np.random.default_rng(1))
    moved = tmp_path / "exp_only"
    moved.mkdir()
    (moved / "Exp_Pca.bin").write_bytes(exp.read_bytes())
    with pytest.raises(InputError, match="std_exp"):
        convert_bfm2009(bfm, moved / "Exp_Pca.bin")
    model = convert_bfm2009(bfm, moved / "Exp_Pca.bin", std_exp=src / "std_exp.txt",
                            front_idx=src / "BFM_front_idx.mat", exp_idx=src / "BFM_exp_idx.mat",
                            info=src / "facemodel_info.mat")
    assert_same_model(model, small, atol=5e-5)


def test_exp_pca_layout_and_truncation(tmp_path, small):
    _, exp = write_bfm2009(tmp_path, small, np.random.default_rng(2))
    mean, comps = read_exp_pca(exp)
    e = small.num_vertices + 13
    assert mean.shape == (e, 3) and comps.shape == (e, 3, 79) and comps.dtype == np.float32
    raw = exp.read_bytes()
    (tmp_path / "cut.bin").write_bytes(raw[:-6])
    with pytest.raises(InputError, match="cut.bin"):
        read_exp_pca(tmp_path / "cut.bin")


def test_convert_bfm2009_mismatched_index(tmp_path, small):
    bfm, exp = write_bfm2009(tmp_path, small, np.random.default_rng(4))
    savemat(tmp_path / "BFM_exp_idx.mat", {"trimIndex": np.arange(1, 11, dtype=np.float64).reshape(-1, 1)})
    with pytest.raises(InputError, match="trimIndex"):
        convert_bfm2009(bfm, exp)
