"""``dfmvr-run --refine N``: the refine record in result.json, landmarks mapped into the crop, and a
clear exit 2 without torch."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dfmvr.errors import InputError
from dfmvr.face.align import Similarity
from dfmvr.face.layout import COEFFS
from dfmvr.runtime.artifacts import DEFAULT_ONNX
from dfmvr.runtime.detect import Detection
from dfmvr.runtime.refine import crop_landmarks
from dfmvr.runtime.pipeline import Prepared

from tests.conftest import REPO, run_python

from .conftest import make_crops, write_triplet

EXAMPLE = REPO / "examples" / "triplet"


@pytest.mark.skipif(not DEFAULT_ONNX.is_file(), reason="no bundled model in dfmvr/assets/default/")
def test_run_refine_writes_the_record_into_result_json(tmp_path, capsys):
    from dfmvr.cli import run_entry

    with pytest.raises(SystemExit) as exc:
        # 10 steps, not fewer: from the demo's start the first Adam steps overshoot (measured on this
        # triplet with the demo of 2026-12-04: weak loss 2.11 -> 2.88 after 3 steps, 1.05 after 10)
        run_entry([str(EXAMPLE), "--aligned", "--refine", "10", "--out", str(tmp_path / "out"),
                   "--format", "json,npz", "--threads", "1", "--quiet", "--refine-landmark-weight", "0.005",
                   "--refine-landmark-anneal", "3"])
    assert exc.value.code == 0, capsys.readouterr().err[-2000:]
    doc = json.loads((tmp_path / "out" / "triplet" / "result.json").read_text())
    r = doc["refine"]
    assert r["steps"] == 10 and r["device"] == "cpu" and r["seconds"] > 0
    assert r["loss_after"] < r["loss_before"] and r["kept_initial"] is False
    assert len(r["coefficients"]) == len(r["network_coefficients"]) == COEFFS.size
    assert r["coefficients"] != r["network_coefficients"]
    # --aligned: no detector; the bundled graph's keypoints output is what the landmark term fitted
    assert r["landmarks"].startswith("network") and r["labels"].startswith("parse net")
    assert r["loss_weights"] == {"landmark_2d": 0.005}           # --refine-landmark-weight reached the fit
    assert r["landmark_anneal"] == 3.0                             # and --refine-landmark-anneal, recorded
    # the written coefficients and poses are the refined ones
    with np.load(tmp_path / "out" / "triplet" / "coeffs.npz") as z:
        np.testing.assert_allclose(z["coefficients"], r["coefficients"], rtol=1e-6, atol=1e-6)
        keypoints = z["keypoints_crop"]
    # they are landmarks of this face: near the renderer's exact ones (the demo: ~2.5 px RMS held out)
    with np.load(EXAMPLE / "gt.npz") as gt:
        visible = gt["landmarks_visible"]
        rms = np.sqrt(np.mean(np.sum((keypoints - gt["landmarks"]) ** 2, axis=-1)[visible]))
    assert keypoints.shape == (3, 68, 2) and rms < 6.0, rms
    np.testing.assert_allclose(doc["views"]["front"]["rotation_rad"],
                               COEFFS.split(np.array([r["coefficients"]])).rotation[0, 1], atol=1e-6)


def test_detector_landmarks_are_mapped_into_the_crop():
    lm = np.random.default_rng(0).uniform(50, 400, (68, 2)).astype(np.float32)
    sim = Similarity.from_params(0.5, 0.1, (-10.0, 5.0))
    det = Detection(landmarks=lm, box=(0, 0, 1, 1), path="hog", detector="dlib")
    prepared = Prepared(triplet=None, crops=np.zeros((3, 4, 4, 3), np.uint8), photos=None,
                        similarities=[sim] * 3, detections=[det] * 3)
    out, source = crop_landmarks(prepared)
    assert source == "detector" and out.shape == (3, 68, 2)
    np.testing.assert_allclose(out[0], sim.apply(lm), atol=1e-4)
    aligned = Prepared(triplet=None, crops=prepared.crops, photos=None, similarities=[None] * 3)
    assert crop_landmarks(aligned) == (None, "none (--aligned: no detector ran)")


def test_run_refine_without_torch_exits_2_naming_the_extra(tmp_path):
    code = f"""
    from dfmvr.cli import run_entry
    run_entry([r"{EXAMPLE}", "--aligned", "--refine", "3", "--out", r"{tmp_path / 'out'}", "--quiet"])
    """
    r = run_python(code, block_torch=True)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "--refine" in r.stderr and "pip install 'dfmvr[train]'" in r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not DEFAULT_ONNX.is_file(), reason="no bundled model in dfmvr/assets/default/")
def test_refine_fits_the_graphs_keypoints_by_default_and_the_detectors_when_asked(monkeypatch):
    """The landmarks handed to the refiner are the graph's keypoints output for each triplet."""
    from dfmvr.runtime.inputs import discover_triplets
    from dfmvr.runtime.refine import RefiningPipeline

    seen = {}

    class Recorder:              # stands in for the torch Refiner: records its inputs, changes nothing
        def __call__(self, coefficients, crops, landmarks, visible, labels):
            seen.update(landmarks=landmarks, visible=visible, labels=labels)
            raise StopIteration

    triplets, _ = discover_triplets([EXAMPLE])
    with RefiningPipeline.from_options(onnx=DEFAULT_ONNX, aligned=True, threads=1) as pipe:
        assert pipe.graph_has_keypoints() and pipe.check_landmark_source() == "network"
        pipe.refiner = Recorder()
        prepared = [pipe.prepare(t) for t in triplets]
        _, _, keypoints = pipe.infer(pipe.normalise(np.stack([p.crops for p in prepared])))
        with pytest.raises(StopIteration):
            pipe.reconstruct(prepared)
        np.testing.assert_allclose(seen["landmarks"], keypoints, atol=1e-4)     # the same graph call's output
        assert seen["visible"].all() and seen["labels"].shape == (1, 3, 224, 224)
        pipe.landmark_source = "detector"           # --aligned: no detector ran
        with pytest.raises(InputError, match="--aligned runs no detector"):
            pipe.check_landmark_source()


def test_refine_without_any_landmarks_exits_2_before_writing(stats_onnx, face_model_path, tmp_path):
    """A graph without keypoints and --aligned (no detector): nothing to fit but the photo, which ruins the
    expression (docs/refine.md) -- refused, naming the graph, before any output."""
    write_triplet(tmp_path / "in" / "t1", make_crops(3))
    for extra, words in (([], "no landmarks to fit"), (["--refine-landmarks", "network"], "no 'keypoints' output")):
        r = run_python(f"""
        from dfmvr.cli import run_entry
        run_entry([r"{tmp_path / 'in'}", "--aligned", "--onnx", r"{stats_onnx}", "--face-model",
                   r"{face_model_path}", "--refine", "2", "--out", r"{tmp_path / 'out'}", "--quiet", *{extra!r}])
        """)
        assert r.returncode == 2, r.stderr[-3000:]
        assert words in r.stderr and stats_onnx.name in r.stderr, r.stderr[-3000:]
        assert not (tmp_path / "out").exists()


def test_a_refine_device_torch_cannot_use_exits_cleanly_before_writing(tmp_path):
    """A misspelt --refine-device is a usage error (exit 2) and a CUDA one on a machine without CUDA a
    missing capability (exit 3): each named, no traceback, nothing written (torch raised a RuntimeError /
    AssertionError here before)."""
    import torch

    cases = [("foo", 2, "--refine-device 'foo' is not a torch device")]
    if not torch.cuda.is_available():
        cases.append(("cuda", 3, "--refine-device cuda: this machine's torch"))
    write_triplet(tmp_path / "in" / "t1", make_crops(3))
    for device, code, words in cases:
        r = run_python(f"""
        from dfmvr.cli import run_entry
        run_entry([r"{tmp_path / 'in' / 't1'}", "--aligned", "--refine", "2", "--refine-device", "{device}",
                   "--out", r"{tmp_path / 'out'}", "--quiet"])
        """)
        assert r.returncode == code, r.stderr[-3000:]
        assert words in r.stderr and "use --refine-device cpu" in r.stderr, r.stderr[-3000:]
        assert "Traceback" not in r.stderr
        assert not (tmp_path / "out" / "t1").exists()
