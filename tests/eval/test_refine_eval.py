"""``dfmvr eval --refine N``: the refined prediction is scored with the same protocol, beside the
network's, and without torch ``--refine`` stops with exit 2 naming the extra."""

import json

import pytest

from dfmvr.runtime.artifacts import DEFAULT_ONNX
from tests.conftest import run_python

needs_default = pytest.mark.skipif(not DEFAULT_ONNX.is_file(), reason="no bundled model in dfmvr/assets/default/")


@needs_default
def test_eval_refine_writes_refined_numbers_beside_the_network(synth4, tmp_path):
    from dfmvr.cli import main

    out = tmp_path / "report.json"
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--onnx", "default", "--data", str(synth4), "--limit", "2", "--batch", "2",
              "--refine", "5", "--icp-iterations", "0", "--json", str(out), "--quiet"])
    assert exc.value.code == 0
    report = json.loads(out.read_text())
    assert report["num_triplets"] == 2
    for row in report["rows"]:
        assert set(row) >= {"model", "refined", "mean_face", "front_only"}
        assert row["refined"]["mean_mm"] != row["model"]["mean_mm"]
    assert set(report["refined"]) >= {"mean_mm", "median_mm", "rmse_mm"}
    r = report["refine"]
    assert r["loss_after_mean"] < r["loss_before_mean"] and r["seconds_per_triplet"] > 0
    assert 0.0 <= r["kept_initial_fraction"] < 1.0
    assert r["config"]["steps"] == 5
    assert set(report["refined_vs"]) == {"model", "mean_face"}
    assert "refined" in report["coefficient_r2"] and "refined" in report["pose"]


def test_eval_refine_without_torch_exits_2_naming_the_extra(synth4):
    code = f"""
    from dfmvr.cli import main
    main(["eval", "--onnx", "default", "--data", r"{synth4}", "--limit", "1", "--refine", "5", "--quiet"])
    """
    r = run_python(code, block_torch=True)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "--refine" in r.stderr and "pip install 'dfmvr[train]'" in r.stderr


@needs_default
def test_refine_fits_noisy_landmarks_and_the_network_labels_when_asked(synth4, tmp_path, capsys):
    """--landmark-noise / --refine-labels network: the refiner is handed the data's landmarks plus the
    same per-triplet error training draws (--landmark-noise there), and the network's own parse labels."""
    import numpy as np

    from dfmvr.cli.eval import command as eval_command
    from dfmvr.eval import OnnxPredictor, evaluate_dataset
    from dfmvr.eval.dataset import find_eval_folders, load_eval_sample
    from dfmvr.face.model import MorphableModel
    from dfmvr.train.data import TripletDataset
    from dfmvr.train.refine import RefineConfig, Refiner
    from tests.conftest import run_cli

    face_model = MorphableModel.load(synth4 / "face_model.npz")
    predictor = OnnxPredictor(DEFAULT_ONNX, threads=1)
    real = Refiner(face_model, predictor.card.camera_obj(), RefineConfig(steps=1, progress=False))
    seen = []

    def refiner(coeffs, images, landmarks, visible, labels):       # the real refiner, its inputs recorded
        seen.append((landmarks.copy(), labels.copy()))
        return real(coeffs, images, landmarks, visible, labels)

    report = evaluate_dataset(predictor, synth4, face_model, limit=2, batch=2, baselines=False, refiner=refiner,
                              landmark_noise=2.0, refine_labels="network", icp_iterations=0)
    (landmarks, labels), = seen
    samples = [load_eval_sample(f, face_model) for f in find_eval_folders(synth4)[:2]]
    training = TripletDataset(synth4, landmark_noise_px=2.0)
    for i, sample in enumerate(samples):
        error = landmarks[i] - sample.landmarks
        assert 1.5 < error.std() < 2.5                                                    # 2 px per coordinate
        np.testing.assert_allclose(landmarks[i], training[i]["landmarks"].numpy(), atol=1e-4)   # training's draw
    _, network_labels, _ = predictor.predict(predictor.card.normalise(np.stack([s.images for s in samples])))
    np.testing.assert_array_equal(labels, network_labels)
    assert not np.array_equal(labels, np.stack([s.labels for s in samples]))              # not the exact maps
    assert "2 px" in report["refine_inputs"]["landmarks"] and "network" in report["refine_inputs"]["labels"]
    code, output = run_cli(eval_command, ["--onnx", "default", "--data", synth4, "--landmark-noise", "2"], capsys)
    assert code == 2 and "--refine" in output
    # --refine-landmark-weight reaches the fit's loss weights (recorded in the report's config); by default
    # the run's weight, not the training recipe's, and the help says which
    from dfmvr.train.losses.total import LossWeights
    from dfmvr.train.refine import RUN_LANDMARK_WEIGHT

    # and --refine-landmark-anneal its start multiple (default 1: a constant weight)
    for given, expected, anneal in ((["--refine-landmark-weight", "0.004", "--refine-landmark-anneal", "3"], 0.004, 3.0),
                                    ([], RUN_LANDMARK_WEIGHT, 1.0)):
        out = tmp_path / f"weighted{expected}.json"
        code, output = run_cli(eval_command, ["--onnx", "default", "--data", synth4, "--limit", "1", "--refine", "1",
                                              *given, "--icp-iterations", "0", "--json", out, "--quiet"], capsys)
        assert code == 0, output
        config = json.loads(out.read_text())["refine"]["config"]
        assert config["loss_weights"] == {"landmark_2d": expected} and config["landmark_anneal"] == anneal
    assert RUN_LANDMARK_WEIGHT < LossWeights().landmark_2d
    code, output = run_cli(eval_command, ["--help"], capsys)
    assert f"Default {RUN_LANDMARK_WEIGHT:g}" in " ".join(output.split())
    code, output = run_cli(eval_command, ["--onnx", "default", "--data", synth4, "--refine-landmark-weight", "0.001"],
                           capsys)
    assert code == 2 and "--refine N" in output
    code, output = run_cli(eval_command, ["--onnx", "default", "--data", synth4, "--refine-landmark-anneal", "3"],
                           capsys)
    assert code == 2 and "--refine N" in output
    code, output = run_cli(eval_command, ["--onnx", "default", "--data", synth4, "--refine", "1",
                                          "--refine-landmark-anneal", "0.5"], capsys)
    assert code == 2 and "0.5" in output                                # below 1: refused before any fit


@needs_default
def test_refine_fits_the_networks_own_keypoints_when_asked(synth4, capsys):
    """--refine-landmarks network: the refiner is handed the graph's keypoints output (all visible), what
    dfmvr-run --refine fits by default; not with --landmark-noise (the data's error)."""
    import numpy as np

    from dfmvr.cli.eval import command as eval_command
    from dfmvr.eval import OnnxPredictor, evaluate_dataset
    from dfmvr.eval.dataset import find_eval_folders, load_eval_sample
    from dfmvr.face.model import MorphableModel
    from dfmvr.train.refine import RefineConfig, Refiner
    from tests.conftest import run_cli

    face_model = MorphableModel.load(synth4 / "face_model.npz")
    predictor = OnnxPredictor(DEFAULT_ONNX, threads=1)
    real = Refiner(face_model, predictor.card.camera_obj(), RefineConfig(steps=1, progress=False))
    seen = []

    def refiner(coeffs, images, landmarks, visible, labels):       # the real refiner, its inputs recorded
        seen.append((landmarks.copy(), visible.copy(), labels.copy()))
        return real(coeffs, images, landmarks, visible, labels)

    report = evaluate_dataset(predictor, synth4, face_model, limit=2, batch=2, baselines=False, refiner=refiner,
                              refine_landmarks="network", icp_iterations=0)
    (landmarks, visible, labels), = seen
    samples = [load_eval_sample(f, face_model) for f in find_eval_folders(synth4)[:2]]
    _, _, keypoints = predictor.predict(predictor.card.normalise(np.stack([s.images for s in samples])))
    np.testing.assert_allclose(landmarks, keypoints, atol=1e-4)
    assert visible.all()
    np.testing.assert_array_equal(labels, np.stack([s.labels for s in samples]))        # labels stay the data's
    for i, sample in enumerate(samples):             # landmarks of these faces, not the exact ones
        error = np.linalg.norm(landmarks[i] - sample.landmarks, axis=-1)[sample.landmark_visible]
        assert 0.1 < np.sqrt(np.mean(error ** 2)) < 6.0
    assert "keypoints" in report["refine_inputs"]["landmarks"]
    report = evaluate_dataset(predictor, synth4, face_model, limit=2, batch=2, baselines=False, refiner=refiner,
                              refine_landmarks="none", icp_iterations=0)          # the ablation: no landmark term
    assert not seen[-1][1].any() and report["refine_inputs"]["landmarks"].startswith("none")
    code, output = run_cli(eval_command, ["--onnx", "default", "--data", synth4, "--refine", "1",
                                          "--refine-landmarks", "network", "--landmark-noise", "2"], capsys)
    assert code == 2 and "--landmark-noise" in output


def test_refine_on_data_without_landmarks_is_refused_naming_the_triplet(synth4, tmp_path):
    """A triplet without 2D landmarks was refined on the photo alone, silently (what dfmvr-run refuses:
    it wrecks the expression); it is refused naming the folder, and --refine-landmarks none still asks
    for exactly that."""
    import shutil

    import numpy as np

    from dfmvr.errors import InputError
    from dfmvr.eval import OnnxPredictor, evaluate_dataset
    from dfmvr.face.model import MorphableModel
    from dfmvr.train.refine import RefineConfig, Refiner

    data = tmp_path / "data"
    shutil.copytree(synth4, data)
    gt = dict(np.load(data / "000001" / "gt.npz"))
    del gt["landmarks"]
    np.savez(data / "000001" / "gt.npz", **gt)
    face_model = MorphableModel.load(data / "face_model.npz")
    predictor = OnnxPredictor(DEFAULT_ONNX, threads=1)
    refiner = Refiner(face_model, predictor.card.camera_obj(), RefineConfig(steps=1))
    with pytest.raises(InputError, match="has none") as err:
        evaluate_dataset(predictor, data, face_model, limit=2, batch=2, baselines=False, refiner=refiner)
    assert "000001" in str(err.value) and "--refine-landmarks network" in str(err.value)
    report = evaluate_dataset(predictor, data, face_model, limit=2, batch=2, baselines=False, refiner=refiner,
                              refine_landmarks="none")
    assert report["num_triplets"] == 2


def test_a_late_triplet_without_landmarks_is_refused_before_any_batch_is_refined(synth4, tmp_path):
    """The check ran per batch: a triplet without landmarks late in a set was refused after the batches
    before it had been refined (minutes each on a real set), their work lost."""
    import shutil

    import numpy as np

    from dfmvr.errors import InputError
    from dfmvr.eval import OnnxPredictor, evaluate_dataset
    from dfmvr.face.model import MorphableModel
    from dfmvr.train.refine import RefineConfig, Refiner

    class CountingRefiner(Refiner):
        calls = 0

        def __call__(self, *args, **kwargs):
            self.calls += 1
            return super().__call__(*args, **kwargs)

    data = tmp_path / "data"
    shutil.copytree(synth4, data)
    last = sorted(p for p in data.iterdir() if p.is_dir())[-1]
    gt = dict(np.load(last / "gt.npz"))
    del gt["landmarks"]
    np.savez(last / "gt.npz", **gt)
    face_model = MorphableModel.load(data / "face_model.npz")
    predictor = OnnxPredictor(DEFAULT_ONNX, threads=1)
    refiner = CountingRefiner(face_model, predictor.card.camera_obj(), RefineConfig(steps=1))
    with pytest.raises(InputError, match="has none") as err:
        evaluate_dataset(predictor, data, face_model, batch=1, baselines=False, refiner=refiner)
    assert last.name in str(err.value)
    assert refiner.calls == 0
