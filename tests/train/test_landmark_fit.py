"""Per-triplet landmark fits (dfmvr/train/landmark_fit.py): targets for the heads without ground truth."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dfmvr.face.geometry import face_shape  # noqa: E402
from dfmvr.face.layout import COEFFS  # noqa: E402
from dfmvr.face.model import MorphableModel  # noqa: E402
from dfmvr.models.variants import make_card  # noqa: E402
from dfmvr.train.data import TripletDataset  # noqa: E402
from dfmvr.train.landmark_fit import READS, landmark_fit_config, landmark_fits, mean_face_start  # noqa: E402


class _Watched(dict):
    """An item that records which keys are read."""

    def __init__(self, item, seen):
        super().__init__(item)
        self.seen = seen

    def __getitem__(self, key):
        self.seen.add(key)
        return super().__getitem__(key)


class _WatchedDataset:
    def __init__(self, dataset):
        self.dataset, self.seen, self.folders = dataset, set(), dataset.folders

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return _Watched(self.dataset[index], self.seen)


@pytest.fixture(scope="module")
def face_and_camera(synth4):
    fm = MorphableModel.load(synth4 / "face_model.npz")
    return fm, make_card("lite", face_model=fm.identity()).camera_obj()


def _shape_error(fm, coefficients, truth):
    """Per triplet: root mean square vertex distance of the unposed shapes (identity and expression)."""
    c, t = COEFFS.split(coefficients), COEFFS.split(truth)
    diff = face_shape(fm, c.identity, c.expression) - face_shape(fm, t.identity, t.expression)
    return np.sqrt((diff.astype(np.float64) ** 2).sum(-1).mean(-1))


def test_the_fit_reads_only_photos_and_landmarks_and_finds_the_shape(synth4, face_and_camera, one_torch_thread):
    fm, camera = face_and_camera
    watched = _WatchedDataset(TripletDataset(synth4))
    fits = landmark_fits(watched, fm, camera, batch=2, config=landmark_fit_config(steps=100))
    assert watched.seen and watched.seen <= set(READS), watched.seen      # no gt.npz coefficient, vertex or 3D point
    assert fits.shape == (4, COEFFS.size) and np.isfinite(fits).all()
    truth = np.stack([TripletDataset(synth4)[i]["coefficients"].numpy() for i in range(4)])
    start = mean_face_start(fm, camera, 4)
    before, after = _shape_error(fm, start, truth), _shape_error(fm, fits, truth)
    # exact landmarks: the fit lands nearer the true shape than the mean face on every triplet
    assert (after < before).all() and after.mean() < 0.8 * before.mean(), (before, after)


def test_more_regularisation_keeps_the_fit_nearer_the_mean(synth4, face_and_camera, one_torch_thread):
    fm, camera = face_and_camera
    data = TripletDataset(synth4).subset(0, 2)
    loose = landmark_fits(data, fm, camera, config=landmark_fit_config(steps=60, coefficient_reg=1e-4))
    tight = landmark_fits(data, fm, camera, config=landmark_fit_config(steps=60, coefficient_reg=1e-1))
    ident = COEFFS.shared_slices()["identity"]
    assert np.abs(tight[:, ident]).mean() < 0.5 * np.abs(loose[:, ident]).mean()


def test_a_triplet_without_landmarks_is_named(synth4, face_and_camera, tmp_path):
    fm, camera = face_and_camera
    bare = tmp_path / "bare" / "000000"
    bare.mkdir(parents=True)
    for view in ("left", "front", "right"):
        shutil.copy(synth4 / "000000" / f"{view}.png", bare / f"{view}.png")
    with pytest.raises(ValueError, match="000000.*no 2D landmarks"):
        landmark_fits(TripletDataset(tmp_path / "bare"), fm, camera)
