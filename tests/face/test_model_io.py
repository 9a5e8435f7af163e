"""The project's face-model .npz (MorphableModel.save/load) and the ``dfmvr data face-model`` command."""

from __future__ import annotations

import json
import zipfile

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from scipy.io import savemat

from dfmvr.cli import _group as dfmvr_group
from dfmvr.errors import InputError
from dfmvr.face.model import MorphableModel
from dfmvr.face.synthetic import synthetic_face_model



@pytest.fixture(scope="module")
def small():
    return synthetic_face_model(seed=1, num_vertices=400)


def test_round_trip_is_exact_and_hash_stable(tmp_path, small):
    path = small.save(tmp_path / "fm.npz")
    loaded = MorphableModel.load(path)
    for key in small.array_names():
        got, want = getattr(loaded, key), getattr(small, key)
        assert got.dtype == want.dtype and np.array_equal(got, want), key
    assert loaded.content_hash() == small.content_hash()
    assert loaded.name == small.name and loaded.source == small.source
    # Saving the loaded model again gives the same content (and hash) again.
    again = MorphableModel.load(loaded.save(tmp_path / "again.npz"))
    assert again.content_hash() == small.content_hash()


def test_float16_storage_only_when_lossless(tmp_path, small):
    """Synthetic bases are float16-representable, so they are stored as float16; arbitrary float32
    data must stay float32 in the file so that loading gives back the same bits."""
    path = small.save(tmp_path / "fm.npz")
    with np.load(path) as z:
        assert z["id_basis"].dtype == np.float16
    fields = {k: getattr(small, k).copy() for k in small.array_names()}
    fields["id_basis"][0, 0, 0] = np.float32(0.1234567)          # not representable in float16
    exact = MorphableModel(**fields, name="exact")
    path = exact.save(tmp_path / "exact.npz")
    with np.load(path) as z:
        assert z["id_basis"].dtype == np.float32
    assert MorphableModel.load(path).content_hash() == exact.content_hash()
    assert exact.content_hash() != small.content_hash()


def test_hash_changes_with_content(small):
    fields = {k: getattr(small, k).copy() for k in small.array_names()}
    fields["keypoints"][5] += 1
    assert MorphableModel(**fields).content_hash() != small.content_hash()


def _rewrite(src, dst, drop=(), replace=None):
    with np.load(src) as z:
        data = {k: z[k] for k in z.files if k not in drop}
    data.update(replace or {})
    np.savez(dst, **data)
    return dst


def test_truncated_file(tmp_path, small):
    data = small.save(tmp_path / "fm.npz").read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.npz"):
        MorphableModel.load(cut)


def test_missing_array(tmp_path, small):
    path = _rewrite(small.save(tmp_path / "fm.npz"), tmp_path / "bad.npz", drop=("parts",))
    with pytest.raises(InputError, match="parts"):
        MorphableModel.load(path)


def test_wrong_shape(tmp_path, small):
    """Each shape or index error names the file it came from (the constructor's own check knew no path)."""
    src = small.save(tmp_path / "fm.npz")
    path = _rewrite(src, tmp_path / "bad.npz", replace={"exp_basis": small.exp_basis[:, :, :50]})
    with pytest.raises(InputError, match="basis sizes") as err:
        MorphableModel.load(path)
    assert err.value.path == str(path)
    path = _rewrite(src, tmp_path / "bad2.npz", replace={"triangles": small.triangles[:, :2]})
    with pytest.raises(InputError, match="triangles") as err:
        MorphableModel.load(path)
    assert err.value.path == str(path)
    bad_index = small.triangles.copy()
    bad_index[0, 0] = small.num_vertices + 5
    path = _rewrite(src, tmp_path / "bad3.npz", replace={"triangles": bad_index})
    with pytest.raises(InputError, match="out of range") as err:
        MorphableModel.load(path)
    assert err.value.path == str(path) and "dfmvr data face-model" in str(err.value)


def test_corrupt_content_fails_hash(tmp_path, small):
    src = small.save(tmp_path / "fm.npz")
    path = _rewrite(src, tmp_path / "bad.npz", replace={"mean_albedo": small.mean_albedo * 0.5})
    with pytest.raises(InputError, match="hash"):
        MorphableModel.load(path)


def test_not_a_face_model(tmp_path):
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(InputError, match="meta"):
        MorphableModel.load(tmp_path / "other.npz")
    with pytest.raises(InputError, match="not found"):
        MorphableModel.load(tmp_path / "absent.npz")


@pytest.mark.parametrize("kind", ["npy", "npy named .npz", "meta not JSON", "meta a list", "a png"])
def test_other_files_given_as_a_face_model_are_input_errors(tmp_path, kind):
    """A .npy array (any name) raised TypeError from the context manager and a non-JSON meta JSONDecodeError:
    tracebacks, exit 1, from dfmvr-run --face-model; a PNG got numpy's advice to load it unsafely."""
    import shutil

    path = tmp_path / ("fm.npy" if kind == "npy" else "fm.npz")
    if kind.startswith("npy"):
        np.save(tmp_path / "a.npy", np.zeros(3))
        shutil.move(tmp_path / "a.npy", path)
    elif kind.startswith("meta"):
        np.savez(path, meta=np.array("not json" if kind == "meta not JSON" else "[1, 2]"))
    else:
        cv2.imwrite(str(tmp_path / "x.png"), np.zeros((8, 8, 3), np.uint8))
        shutil.move(tmp_path / "x.png", path)
    with pytest.raises(InputError) as err:
        MorphableModel.load(path)
    assert str(path) in str(err.value) and "allow_pickle" not in str(err.value)


# --- CLI ------------------------------------------------------------------------------------------
def _invoke(*args):
    return CliRunner().invoke(dfmvr_group, ["data", "face-model", *map(str, args)], catch_exceptions=True)


def test_cli_synthetic_writes_model_and_preview(tmp_path):
    out, sheet = tmp_path / "fm.npz", tmp_path / "sheet.png"
    result = _invoke("--synthetic", "--seed", 0, "--out", out, "--preview", sheet)
    assert result.exit_code == 0, result.output
    model = MorphableModel.load(out)
    assert model.content_hash() in result.output and model.name == "synthetic-seed0"
    assert out.stat().st_size <= 4 * 1024 * 1024
    with zipfile.ZipFile(out) as z:
        meta = json.loads(np.load(out)["meta"].item())
        assert meta["hash"] == model.content_hash() and "meta.npy" in z.namelist()
    image = cv2.imread(str(sheet))
    assert image is not None and image.shape[0] > 200 and image.std() > 10
    assert not list(tmp_path.glob(".*"))                      # no temporary files left behind


def test_cli_refuses_options_its_source_does_not_read(tmp_path):
    """--seed with --model and --exp / --info with --synthetic were ignored without a word."""
    fm = tmp_path / "fm.npz"
    assert _invoke("--synthetic", "--out", fm).exit_code == 0
    for args, words in ((("--model", fm, "--seed", 9), "--seed: not read with --model"),
                        (("--synthetic", "--exp", fm, "--info", fm), "--exp, --info: not read with --synthetic")):
        result = _invoke(*args, "--out", tmp_path / "x.npz")
        assert result.exit_code == 2 and words in result.output, result.output
        assert not (tmp_path / "x.npz").exists()


def test_cli_bfm_front(tmp_path, small):
    n = small.num_vertices
    mat = tmp_path / "BFM_model_front.mat"
    savemat(mat, {"meanshape": small.mean_shape.reshape(1, -1), "meantex": small.mean_albedo.reshape(1, -1) * 255,
                  "idBase": small.id_basis.reshape(3 * n, -1), "exBase": small.exp_basis.reshape(3 * n, -1),
                  "texBase": small.albedo_basis.reshape(3 * n, -1) * 255, "tri": small.triangles + 1.0,
                  "point_buf": small.vertex_triangles + 1.0, "skinmask": small.skin_mask[None] * 1.0,
                  "keypoints": small.keypoints[None] + 1.0})
    result = _invoke("--bfm", mat, "--out", tmp_path / "bfm.npz")
    assert result.exit_code == 0, result.output
    assert MorphableModel.load(tmp_path / "bfm.npz").name == "bfm09-front"


def test_cli_bad_input_and_usage(tmp_path):
    bad = tmp_path / "BFM_model_front.mat"
    bad.write_text("not a mat file\n" * 20)
    result = _invoke("--bfm", bad, "--out", tmp_path / "x.npz")
    assert isinstance(result.exception, InputError) and str(bad) in str(result.exception)
    assert not (tmp_path / "x.npz").exists()
    assert _invoke("--out", tmp_path / "x.npz").exit_code == 2                  # no source
    assert _invoke("--synthetic", "--bfm", bad, "--out", tmp_path / "x.npz").exit_code == 2
    assert _invoke("--bfm2009", bad, "--out", tmp_path / "x.npz").exit_code == 2  # no --exp
    assert _invoke("--synthetic").exit_code == 2                                # nothing to do
