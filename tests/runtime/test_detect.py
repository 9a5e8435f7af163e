"""The dlib detector's fallback chain on real rendered faces, with the real dlib and its real model files
(the ``detect`` extra): HOG, HOG upsampled, the CNN detector, then a box placed from the other views."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from dfmvr.errors import InputError
from dfmvr.face.align import five_points_from_68
from dfmvr.face.layout import VIEWS
from dfmvr.runtime.detect import (CNN_MODEL_FILE, MIN_PHOTO_SIDE, DlibDetector, _dlib_cnn_detector,
                                  box_from_other_views, detect_triplet)

from tests.conftest import REPO

from .conftest import render_views

# the left view turned to 60 degrees: dlib's HOG finds no face there, with or without upsampling
PROFILE_YAWS = (-60.0, 0.0, 35.0)


@pytest.fixture(scope="module")
def profile_triplet():
    """(photos [3, 400, 400, 3] uint8, true landmarks [3, 68, 2]) with a 60-degree left view."""
    from dfmvr.face.synthetic import synthetic_face_model

    return render_views(synthetic_face_model(seed=0, num_vertices=1500), yaws=PROFILE_YAWS)


def _needs_cnn():
    if _dlib_cnn_detector() is None:
        pytest.skip(f"dlib's CNN model file {CNN_MODEL_FILE} is not installed (face_recognition_models)")


def _off_by(found68, true68) -> float:
    """Largest five-point error as a fraction of the true face's width (landmark box)."""
    width = np.ptp(true68[:, 0])
    return float(np.linalg.norm(five_points_from_68(found68) - five_points_from_68(true68), axis=1).max() / width)


def test_hog_misses_the_profile_view_and_the_cnn_detector_finds_it(profile_triplet):
    _needs_cnn()
    photos, true68 = profile_triplet
    with pytest.raises(InputError, match="no face found") as err:
        DlibDetector(cnn=False).detect(photos[0], source="left.png")
    assert "HOG" in str(err.value) and "left.png" in str(err.value)
    found = DlibDetector().detect(photos[0])
    assert found.path == "cnn" and found.detector == "dlib" and found.score > 0
    left, top, right, bottom = found.box            # the box covers the true face's centre
    centre = true68[0].mean(axis=0)
    assert left < centre[0] < right and top < centre[1] < bottom
    assert found.landmarks.shape == (68, 2) and _off_by(found.landmarks, true68[0]) < 0.6   # measured 0.49
    # the frontal view still takes the first path
    assert DlibDetector().detect(photos[1]).path == "hog"


def test_a_view_no_detector_finds_is_placed_from_the_other_views(profile_triplet):
    photos, true68 = profile_triplet
    found = detect_triplet(DlibDetector(cnn=False), photos, [f"{v}.png" for v in VIEWS])
    assert [d.path for d in found] == ["other-views", "hog", "hog"]
    want = box_from_other_views([(d.box, p.shape[:2]) for d, p in zip(found[1:], photos[1:])], photos[0].shape)
    assert found[0].box == pytest.approx(want)
    # same person, same set-up: the placed box holds the face, and the fitted landmarks are near it
    centre = true68[0].mean(axis=0)
    assert want[0] < centre[0] < want[2] and want[1] < centre[1] < want[3]
    assert _off_by(found[0].landmarks, true68[0]) < 0.3           # measured 0.19 (the cnn box: 0.49)
    for v in (1, 2):
        assert _off_by(found[v].landmarks, true68[v]) < 0.35
    assert found[0].to_dict()["path"] == "other-views" and found[0].to_dict()["score"] is None


def test_a_blank_view_is_covered_and_a_faceless_triplet_is_still_an_error(profile_triplet):
    photos, _ = profile_triplet
    det = DlibDetector(cnn=False)
    blank = photos.copy()
    blank[2] = 90
    found = detect_triplet(det, blank)
    assert [d.path for d in found] == ["other-views", "hog", "other-views"]
    with pytest.raises(InputError, match="no face found") as err:
        detect_triplet(det, np.full((3, 240, 320, 3), 128, np.uint8), ["l.png", "f.png", "r.png"])
    assert "l.png" in str(err.value)          # the first view's error, as before the fallback


@pytest.mark.parametrize("shape", [(1, 1), (8, 8), (20, 3000), (MIN_PHOTO_SIDE - 1, 400)])
def test_a_photo_too_small_for_a_face_is_refused_by_name_not_covered(profile_triplet, shape):
    """dlib's CNN detector raises (a RuntimeError, not 'no face') on images smaller than its filter window;
    a photo that small is refused before any detector runs, naming it, and the other views' box is not
    placed in it (the two good views would otherwise 'cover' a 1-px photo)."""
    photos, _ = profile_triplet
    det = DlibDetector(cnn=_dlib_cnn_detector() is not None)
    tiny = np.full((*shape, 3), 128, np.uint8)
    with pytest.raises(InputError, match=rf"{shape[1]}x{shape[0]} px: too small") as err:
        detect_triplet(det, [photos[0], photos[1], tiny], ["l.png", "f.png", "r.png"])
    assert "r.png" in str(err.value)
    with pytest.raises(InputError, match="too small"):
        det.detect(tiny, source="r.png")
    assert det.detect(photos[1]).path == "hog"     # a full-size photo is unaffected


def test_the_example_triplet_hog_misses_is_found_by_the_cnn_and_the_other_views():
    """examples/triplet (rendered by ``dfmvr data synth``: tight 224 crops on a noisy background): HOG
    finds no face in any view; the CNN detector finds the front and right ones, the left one is placed
    from them, and all five-point sets land near the true landmarks of gt.npz."""
    _needs_cnn()
    folder = REPO / "examples" / "triplet"
    images = [cv2.imread(str(folder / f"{v}.png"))[:, :, ::-1] for v in VIEWS]
    with np.load(folder / "gt.npz") as z:
        true68 = z["landmarks"]
    with pytest.raises(InputError, match="CNN detector was not tried: switched off"):
        detect_triplet(DlibDetector(cnn=False), images)
    found = detect_triplet(DlibDetector(), images)
    assert [d.path for d in found] == ["other-views", "cnn", "cnn"]
    for d, t in zip(found, true68):
        assert _off_by(d.landmarks, t) < 0.35            # measured 0.27 (left), 0.12, 0.23


def test_box_from_other_views_keeps_relative_size_and_position():
    # a 200x100 box centred at (300, 250) in a 600x800 (H x W) photo, placed in a 300x400 photo
    box = box_from_other_views([((200.0, 200.0, 400.0, 300.0), (600, 800))], (300, 400, 3))
    assert box == pytest.approx((100.0, 100.0, 200.0, 150.0))
    two = box_from_other_views([((0.0, 0.0, 100.0, 100.0), (400, 400)), ((100.0, 100.0, 200.0, 200.0), (400, 400))],
                               (400, 400))
    assert two == pytest.approx((50.0, 50.0, 150.0, 150.0))
    assert box_from_other_views([((400.0, 0.0, 500.0, 100.0), (400, 500))], (400, 400))[2] == 399   # 410: clipped
    with pytest.raises(ValueError):
        box_from_other_views([], (10, 10))


def test_run_reports_and_records_the_path_taken(profile_triplet, stats_onnx, face_model_path, tmp_path, capsys):
    """dfmvr-run on the profile triplet: every view reconstructed, the fallback said on stderr and
    recorded per view in result.json (and in summary.json for a batch)."""
    _needs_cnn()
    from .test_cli_run import dfmvr_run

    photos, _ = profile_triplet
    for name in ("person", "blanked"):
        folder = tmp_path / "in" / name
        folder.mkdir(parents=True)
        for view, img in zip(VIEWS, photos):
            if name == "blanked" and view == "right":
                img = np.full_like(img, 90)
            cv2.imwrite(str(folder / f"{view}.png"), img[:, :, ::-1])
    base = ["--onnx", stats_onnx, "--face-model", face_model_path, "--threads", "1", "--format", "json"]
    code, out, err = dfmvr_run([tmp_path / "in" / "person", *base, "--out", tmp_path / "one"], capsys)
    assert code == 0, err
    doc = json.loads((tmp_path / "one" / "person" / "result.json").read_text())
    assert {v: doc["views"][v]["detection"]["path"] for v in VIEWS} == {"left": "cnn", "front": "hog",
                                                                        "right": "hog"}
    assert "person: the face in the left view was found only by dlib's CNN face detector" in err
    assert "front view" not in err

    code, out, err = dfmvr_run([tmp_path / "in", *base, "--out", tmp_path / "batch"], capsys)
    assert code == 0, err
    doc = json.loads((tmp_path / "batch" / "blanked" / "result.json").read_text())
    assert doc["views"]["right"]["detection"]["path"] == "other-views"
    assert len(doc["views"]["right"]["detection"]["box"]) == 4
    assert "blanked: the face in the right view was found by no detector" in err
    summary = json.loads((tmp_path / "batch" / "summary.json").read_text())
    fallbacks = {d["triplet"]: d.get("detection_fallbacks") for d in summary["done"]}
    assert fallbacks == {"blanked": {"left": "cnn", "right": "other-views"}, "person": {"left": "cnn"}}
    # a tiny photo in one triplet of a batch: that triplet is listed, the others are written (exit 2)
    cv2.imwrite(str(tmp_path / "in" / "blanked" / "front.png"), np.zeros((1, 1, 3), np.uint8))
    code, out, err = dfmvr_run([tmp_path / "in", *base, "--out", tmp_path / "tiny"], capsys)
    assert code == 2, err
    assert "front.png" in err and "too small" in err and "Traceback" not in err
    assert (tmp_path / "tiny" / "person" / "result.json").is_file()
    assert not (tmp_path / "tiny" / "blanked").exists()
    assert [d["triplet"] for d in json.loads((tmp_path / "tiny" / "summary.json").read_text())["done"]] == ["person"]
    # the placed box comes from the HOG box of the front view alone (the CNN box of the left view sits differently)
    front = json.loads((tmp_path / "batch" / "blanked" / "result.json").read_text())["views"]["front"]["detection"]
    assert doc["views"]["right"]["detection"]["box"] == pytest.approx(front["box"], abs=0.02)
