"""The synthetic multi-view generator and ``dfmvr data synth``."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
from click.testing import CliRunner

from dfmvr.errors import InputError
from dfmvr.face import geometry
from dfmvr.face.align import TEMPLATE_224, estimate_similarity, five_points_from_68
from dfmvr.face.camera import Camera
from dfmvr.face.layout import COEFFS, VIEW_YAW_DEG
from dfmvr.face.model import MorphableModel
from dfmvr.face.synthetic import default_face_model
from dfmvr.synth import dataset as synth
from dfmvr.synth.dataset import TripletGenerator, write_dataset


@functools.lru_cache(maxsize=1)
def _model():
    return default_face_model()


@functools.lru_cache(maxsize=4)
def _sample(seed: int, index: int):
    return TripletGenerator(_model(), seed=seed).sample(index)


def test_deterministic_per_seed_and_index():
    a = _sample(7, 3)
    b = TripletGenerator(_model(), seed=7).sample(3)       # a fresh generator, same stream
    assert np.array_equal(a.images, b.images)
    for key in a.gt:
        assert np.array_equal(a.gt[key], b.gt[key]), key
    c = _sample(7, 4)
    assert not np.array_equal(a.gt["coefficients"], c.gt["coefficients"])
    assert not np.array_equal(a.images, c.images)


def test_ground_truth_is_consistent_with_the_face_maths():
    t = _sample(7, 3)
    gt = t.gt
    coeffs = COEFFS.split(gt["coefficients"][None])
    np.testing.assert_array_equal(coeffs.rotation[0], gt["rotation"])
    np.testing.assert_array_equal(coeffs.translation[0], gt["translation"])
    mesh = geometry.assemble_mesh(_model(), coeffs, Camera())
    np.testing.assert_allclose(mesh.landmarks[0], gt["landmarks"], atol=1e-4)
    np.testing.assert_allclose(mesh.shape[0], gt["vertices"], atol=1e-6)
    np.testing.assert_allclose(mesh.shape[0][_model().keypoints], gt["landmarks3d"], atol=1e-6)
    shared = np.concatenate([coeffs.identity, coeffs.expression, coeffs.texture], -1)
    assert np.abs(shared).max() <= 2.5
    assert t.images.shape == (3, 224, 224, 3) and t.images.dtype == np.uint8
    assert gt["labels"].shape == (3, 224, 224) and gt["labels"].max() <= 9
    assert gt["landmarks_visible"].shape == (3, 68) and gt["landmarks_visible"][1].all()
    # The side views hide part of the far jaw line.
    assert not gt["landmarks_visible"][0].all() or not gt["landmarks_visible"][2].all()


def test_views_are_aligned_like_the_real_pipeline():
    gt = _sample(7, 3).gt
    yaw = np.degrees(gt["rotation"][:, 1])
    assert np.all(np.abs(yaw - np.array(VIEW_YAW_DEG)) < 15.0)
    for view in range(3):
        # The similarity that align_image would apply to this render is the identity.
        sim = estimate_similarity(five_points_from_68(gt["landmarks"][view]), TEMPLATE_224)
        assert sim.scale == pytest.approx(1.0, abs=2e-3)
        assert abs(sim.angle) < 2e-3
        assert np.abs(sim.apply(TEMPLATE_224) - TEMPLATE_224).max() < 0.5


def test_aligned_mean_face_pose_puts_the_mean_face_on_the_template_at_the_slot_yaws():
    """The depth prior's centre: the mean face at each slot's nominal yaw, posed there, projects its five
    points onto the alignment template (scale 1, no turn), and sits between the depths the generator
    gives random faces (their mean, on 16 triplets, is within 4 cm of it)."""
    angles, translation = synth.aligned_mean_face_pose(_model())
    assert angles.shape == translation.shape == (3, 3)
    np.testing.assert_allclose(np.degrees(angles[:, 1]), VIEW_YAW_DEG, atol=1e-3)
    coeffs = COEFFS.split(np.zeros((1, COEFFS.size), np.float32))
    coeffs.rotation[0], coeffs.translation[0] = angles, translation
    landmarks = geometry.assemble_mesh(_model(), coeffs, Camera()).landmarks[0]
    for view in range(3):
        sim = estimate_similarity(five_points_from_68(landmarks[view]), TEMPLATE_224)
        assert sim.scale == pytest.approx(1.0, abs=2e-3) and abs(sim.angle) < 2e-3
    assert np.all(np.abs(translation[:, 2]) > 0.3)        # not the Deep3D z = 0 for this face model
    drawn = np.stack([TripletGenerator(_model(), seed=11).sample(i).gt["translation"] for i in range(16)])
    assert np.all(np.abs(drawn[..., 2].mean(0) - translation[:, 2]) < 0.4)


def test_rendered_labels_and_image_match_the_geometry():
    t = _sample(7, 3)
    for view in range(3):
        labels = t.gt["labels"][view]
        face = labels > 0
        assert 0.15 < face.mean() < 0.8
        # The nose tip is labelled nose (in the side views it sits on the silhouette: look nearby).
        u, v = t.gt["landmarks"][view, 30].astype(int)
        assert 6 in labels[v - 1:v + 2, u - 1:u + 2]
        assert labels[v, u] == 6 or view != 1
    assert {4, 5} <= set(np.unique(t.gt["labels"][1]))                     # both eyes in the front view


def test_write_dataset_resumes_and_writes_atomically(tmp_path, monkeypatch):
    out = tmp_path / "ds"
    report = write_dataset(out, 2, seed=7, model=_model(), progress=False)
    assert (report.written, report.skipped) == (2, 0)
    for name in ("000000", "000001"):
        assert {p.name for p in (out / name).iterdir()} == {"left.png", "front.png", "right.png", "gt.npz"}
    meta = json.loads((out / "meta.json").read_text())
    assert meta["seed"] == 7 and meta["generator_version"] == synth.GENERATOR_VERSION
    assert meta["face_model"]["hash"] == _model().content_hash()
    assert MorphableModel.load(out / "face_model.npz").content_hash() == _model().content_hash()
    before = (out / "000001" / "gt.npz").stat().st_mtime_ns
    # An interrupted triplet leaves neither its folder nor a temporary one behind.
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(synth.np, "savez_compressed", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(out, 3, seed=7, model=_model(), progress=False)
    monkeypatch.undo()
    assert not (out / "000002").exists() and not list(out.glob(".tmp-*"))
    report = write_dataset(out, 3, seed=7, model=_model(), progress=False)
    assert (report.written, report.skipped) == (1, 2)
    assert (out / "000001" / "gt.npz").stat().st_mtime_ns == before
    with pytest.raises(InputError, match="different synthetic dataset"):
        write_dataset(out, 3, seed=8, model=_model(), progress=False)


def test_triplets_without_meta_json_or_beside_another_face_model_are_not_adopted(tmp_path):
    """With meta.json gone, a rerun "resumed" the folder: its old triplets kept, a new meta.json claiming the new
    seed and face model over them, the old face_model.npz kept. Both are refused now, naming the folder / file."""
    import shutil

    from dfmvr.face.synthetic import synthetic_face_model

    out = tmp_path / "ds"
    write_dataset(out, 2, seed=7, model=_model(), progress=False)
    (out / "meta.json").unlink()
    with pytest.raises(InputError, match="no meta.json") as err:
        write_dataset(out, 3, seed=7, model=_model(), progress=False)
    assert str(out) in str(err.value) and not (out / "000002").exists()
    for triplet in ("000000", "000001"):
        shutil.rmtree(out / triplet)
    with pytest.raises(InputError, match="is not the face model") as err:
        write_dataset(out, 2, seed=7, model=synthetic_face_model(seed=5, num_vertices=600), progress=False)
    assert "face_model.npz" in str(err.value)


def test_written_triplet_equals_the_sample(tmp_path):
    import cv2

    TripletGenerator(_model(), seed=7).write(3, tmp_path)
    t = _sample(7, 3)
    for view, name in enumerate(("left", "front", "right")):
        img = cv2.cvtColor(cv2.imread(str(tmp_path / "000003" / f"{name}.png")), cv2.COLOR_BGR2RGB)
        assert np.array_equal(img, t.images[view])
    with np.load(tmp_path / "000003" / "gt.npz") as z:
        assert set(z.files) == set(t.gt)
        for key in z.files:
            assert np.array_equal(z[key], t.gt[key]), key


def test_cli_writes_with_a_face_model_file(tmp_path):
    from dfmvr.cli.data import command

    fm = _model().save(tmp_path / "fm.npz")
    result = CliRunner().invoke(command, ["synth", "--out", str(tmp_path / "ds"), "--triplets", "1",
                                          "--seed", "2", "--face-model", str(fm), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "wrote 1 triplets" in result.output
    assert (tmp_path / "ds" / "000000" / "gt.npz").is_file()


def test_cli_bad_face_model_exits_2_naming_the_file(tmp_path, capsys):
    from dfmvr.cli import main

    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "synth", "--out", str(tmp_path / "ds"), "--triplets", "1", "--face-model", str(bad)])
    assert exit_info.value.code == 2
    assert "broken.npz" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


def test_cli_refuses_zero_triplets_and_writes_nothing(tmp_path, capsys):
    from dfmvr.cli import main

    with pytest.raises(SystemExit) as exit_info:      # it wrote an empty dataset folder, exit 0
        main(["data", "synth", "--out", str(tmp_path / "ds"), "--triplets", "0"])
    assert exit_info.value.code == 2
    assert "--triplets" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


@pytest.mark.slow
def test_workers_write_the_same_dataset(tmp_path):
    write_dataset(tmp_path / "one", 2, seed=5, model=_model(), progress=False)
    report = write_dataset(tmp_path / "two", 2, seed=5, model=_model(), progress=False, workers=2)
    assert report.written == 2
    for name in ("000000/front.png", "000001/left.png", "000001/gt.npz"):
        a, b = (tmp_path / "one" / name), (tmp_path / "two" / name)
        if name.endswith(".npz"):
            with np.load(a) as za, np.load(b) as zb:
                assert all(np.array_equal(za[k], zb[k]) for k in za.files)
        else:
            assert a.read_bytes() == b.read_bytes()


def test_example_triplet_matches_the_default_face_model():
    """examples/triplet must be reconstructible with the base install's default face model."""
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "triplet"
    meta = json.loads((example / "meta.json").read_text())
    assert meta["face_model"]["hash"] == _model().content_hash(), (
        "the default face model changed: regenerate examples/triplet (see its README.md)")
    with np.load(example / "gt.npz") as gt:
        mesh = geometry.assemble_mesh(_model(), COEFFS.split(gt["coefficients"][None]), Camera())
        np.testing.assert_allclose(mesh.landmarks[0], gt["landmarks"], atol=1e-4)
    assert sum(p.stat().st_size for p in example.iterdir()) < 1_000_000
