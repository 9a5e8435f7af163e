"""``dfmvr data prepare`` on real rendered photos with the real dlib: the training layout, landmarks in
crop pixels, bad triplets reported while the rest go on, nothing half-written, --aligned, --resume."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from dfmvr.cli.data_prepare import SUMMARY_FILE, command as prepare_command
from dfmvr.face.align import estimate_similarity, five_points_from_68, TEMPLATE_224
from dfmvr.face.layout import VIEWS
from dfmvr.runtime.detect import DlibDetector

from tests.conftest import run_cli
from .conftest import write_triplet


def _photo_triplet(folder, photos, ext=".jpg"):
    folder.mkdir(parents=True)
    for view, img in zip(VIEWS, photos):
        assert cv2.imwrite(str(folder / f"{view}{ext}"), img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    return folder


def _read_rgb(path):
    return cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1]


def test_photos_become_training_triplets_and_a_bad_one_is_reported(rendered_faces, tmp_path, capsys):
    photos, true68 = rendered_faces
    _photo_triplet(tmp_path / "photos" / "anna", photos)
    bad = _photo_triplet(tmp_path / "photos" / "bert", photos)
    (bad / "right.jpg").write_bytes(b"\xff\xd8 truncated")
    out = tmp_path / "data"
    code, output = run_cli(prepare_command, [tmp_path / "photos", "--out", out, "--quiet"], capsys)
    assert code == 2 and "bert" in output and "right.jpg" in output
    assert sorted(p.name for p in out.iterdir()) == ["anna", SUMMARY_FILE]       # nothing of bert, no temporaries
    assert sorted(p.name for p in (out / "anna").iterdir()) == ["front.png", "landmarks.npz", "left.png",
                                                                "prepare.json", "right.png"]
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert [d["triplet"] for d in summary["done"]] == ["anna"]
    assert summary["failed"][0]["triplet"] == "bert" and summary["failed"][0]["file"].endswith("right.jpg")
    with np.load(out / "anna" / "landmarks.npz") as z:
        landmarks, visible = z["landmarks"], z["landmarks_visible"]
    assert landmarks.shape == (3, 68, 2) and landmarks.dtype == np.float32 and visible.shape == (3, 68) and visible.all()
    record = json.loads((out / "anna" / "prepare.json").read_text())
    assert record["sources"]["left"].endswith("left.jpg") and record["detector"]["front"]["detector"] == "dlib"
    for v, view in enumerate(VIEWS):
        crop = _read_rgb(out / "anna" / f"{view}.png")
        assert crop.shape == (224, 224, 3)
        # the landmarks are in crop pixels: the true photo landmarks, carried into the crop by the
        # similarity that puts dlib's five points (found here, separately) on the template
        found = DlibDetector().landmarks(_read_rgb(tmp_path / "photos" / "anna" / f"{view}.jpg"))
        to_crop = estimate_similarity(five_points_from_68(found), TEMPLATE_224)
        truth_in_crop = to_crop.apply(true68[v].astype(np.float64))
        error = np.linalg.norm(landmarks[v] - truth_in_crop, axis=1)
        eyes = np.linalg.norm(np.subtract(*five_points_from_68(truth_in_crop)[:2]))
        assert np.median(error) < 0.25 * eyes, (view, np.median(error), eyes)
    # --resume leaves the finished triplet alone and tries the bad one again
    stamp = (out / "anna" / "landmarks.npz").stat().st_mtime_ns
    code, output = run_cli(prepare_command, [tmp_path / "photos", "--out", out, "--resume", "--quiet"], capsys)
    assert code == 2 and (out / "anna" / "landmarks.npz").stat().st_mtime_ns == stamp
    assert json.loads((out / SUMMARY_FILE).read_text())["skipped"] == ["anna"]


def test_aligned_crops_are_kept_and_the_detector_runs_on_them(rendered_faces, tmp_path, capsys):
    photos, _ = rendered_faces
    crops = np.stack([cv2.resize(p[60:340, 60:340], (224, 224), interpolation=cv2.INTER_AREA) for p in photos])
    write_triplet(tmp_path / "crops" / "c", crops)
    out = tmp_path / "data"
    code, output = run_cli(prepare_command, [tmp_path / "crops" / "c", "--out", out, "--aligned", "--quiet"], capsys)
    assert code == 0, output
    for v, view in enumerate(VIEWS):
        np.testing.assert_array_equal(_read_rgb(out / "c" / f"{view}.png"), crops[v])     # the crop as it was
    with np.load(out / "c" / "landmarks.npz") as z:
        landmarks = z["landmarks"]
    front = DlibDetector().landmarks(crops[1])
    np.testing.assert_allclose(landmarks[1], front, atol=1e-4)                            # the crop's own pixels
    assert json.loads((out / "c" / "prepare.json").read_text())["aligned_input"] is True


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_prepare_never_replaces_the_photos_own_folder(rendered_faces, tmp_path, capsys, ext):
    """`dfmvr data prepare photos --out photos`: each triplet's training folder was its photos' folder, replaced
    whole (the original photos deleted), also when the photos bear the names prepare writes (left.png...), and
    --resume skipped them as done. Refused now; a rerun over an earlier prepared folder still replaces it."""
    photos, _ = rendered_faces
    folder = _photo_triplet(tmp_path / "photos" / "anna", photos, ext)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    for resume in ([], ["--resume"]):
        code, output = run_cli(prepare_command, [tmp_path / "photos", "--out", tmp_path / "photos", "--quiet",
                                                 *resume], capsys)
        assert code == 2 and "would delete the photos" in output and "anna" in output
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    out = tmp_path / "data"
    for _ in range(2):
        code, output = run_cli(prepare_command, [tmp_path / "photos", "--out", out, "--quiet"], capsys)
        assert code == 0, output


@pytest.mark.parametrize("problem", ["wrong size", "no face"])
def test_a_single_bad_triplet_exits_2_naming_the_file(problem, tmp_path, capsys):
    grey = np.full((3, 224, 224, 3), 128, np.uint8)
    folder = write_triplet(tmp_path / "t", grey)
    args = [folder, "--out", tmp_path / "data", "--quiet"]
    if problem == "wrong size":
        cv2.imwrite(str(folder / "front.png"), np.zeros((100, 120, 3), np.uint8))
        args.append("--aligned")
    code, output = run_cli(prepare_command, args, capsys)
    assert code == 2
    assert ("front.png" in output and "120x100" in output) if problem == "wrong size" else "no face" in output
    assert not (tmp_path / "data" / "t").exists() and not any((tmp_path / "data").glob(".t*"))
