"""A user's own photos, end to end without ground truth: ``dfmvr data prepare`` (real dlib on real
rendered photos) -> a weak training step with the parser's labels -> the heads refit to the photos'
landmark fits. Nothing here reads a gt.npz: the prepared folders have none."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from dfmvr.face.layout import COEFFS, VIEWS
from dfmvr.face.model import MorphableModel
from dfmvr.models.checkpoint import load_checkpoint
from dfmvr.train.data import TripletDataset
from dfmvr.train.landmark_fit import landmark_fits

from tests.conftest import run_cli
from tests.runtime.conftest import RENDER_YAW_DEG, render_views


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Three triplets of rendered photos (the face at -35 / 0 / +35 degrees of yaw, framed three ways),
    through ``dfmvr data prepare``."""
    from dfmvr.cli.data_prepare import command
    from dfmvr.face.synthetic import synthetic_face_model

    photos, _ = render_views(synthetic_face_model(seed=0, num_vertices=1500))
    root = tmp_path_factory.mktemp("own-photos")
    for k, (scale, shift) in enumerate(((1.0, 0), (0.85, 20), (1.1, -15))):
        folder = root / "photos" / f"person{k}"
        folder.mkdir(parents=True)
        warp = np.array([[scale, 0, shift + 200 * (1 - scale)], [0, scale, 200 * (1 - scale)]], np.float32)
        for view, img in zip(VIEWS, photos):
            framed = cv2.warpAffine(img, warp, (400, 400), borderValue=(90, 90, 90))
            assert cv2.imwrite(str(folder / f"{view}.jpg"), framed[:, :, ::-1])
    from dfmvr.cli import invoke

    with pytest.raises(SystemExit) as exc:
        invoke(command, [str(root / "photos"), "--out", str(root / "data"), "--quiet"])
    assert exc.value.code in (0, None)
    return root / "data"


def test_prepared_photos_are_a_training_set_without_ground_truth(prepared, synth4, one_torch_thread):
    data = TripletDataset(prepared)
    assert len(data) == 3 and not any((folder / "gt.npz").exists() for folder in data.folders)
    item = data[0]
    assert bool(item["has_landmarks"]) and "coefficients" not in item and not bool(item["has_labels"])
    # fitted to the detector's landmarks alone, each view turns the way its photo does: the landmarks
    # are in the crop's pixels, in the order and convention the weak losses read
    from dfmvr.models.variants import make_card

    face_model = MorphableModel.load(synth4 / "face_model.npz")
    camera = make_card("lite", face_model=face_model.identity()).camera_obj()
    yaw = np.degrees(COEFFS.split(landmark_fits(data, face_model, camera)).rotation[..., 1])
    assert (yaw[:, 0] < -10).all() and (np.abs(yaw[:, 1]) < 10).all() and (yaw[:, 2] > 10).all(), yaw
    assert RENDER_YAW_DEG == (-35.0, 0.0, 35.0)


def test_weak_training_and_the_landmark_fit_heads_run_on_prepared_photos(prepared, synth4, tmp_path, capsys,
                                                                         one_torch_thread):
    from dfmvr.cli.train import command as train
    from dfmvr.train.parse_stage import ParseConfig, train_parse_net

    parser = train_parse_net(ParseConfig(data=str(synth4), out=str(tmp_path / "parse"), epochs=1, batch=2,
                                         max_steps_per_epoch=1, progress=False))
    face_model = ["--face-model", synth4 / "face_model.npz"]
    code, output = run_cli(train, ["--data", prepared, *face_model, "--variant", "lite", "--parse-net", parser,
                                   "--parser-labels", "--epochs", "1", "--batch", "2", "--max-steps", "1",
                                   "--out", tmp_path / "weak", "--quiet"], capsys)
    assert code == 0, output
    run = tmp_path / "weak" / "checkpoint.safetensors"
    code, output = run_cli(train, ["--stage", "heads", "--init", run, "--data", prepared, "--val", prepared,
                                   *face_model, "--targets", "landmark-fit", "--out", tmp_path / "heads",
                                   "--quiet"], capsys)
    assert code == 0, output
    assert json.loads((tmp_path / "heads" / "heads.json").read_text())["targets"] == "landmark-fit"
    refit, card, _ = load_checkpoint(tmp_path / "heads" / "checkpoint.safetensors", load_train_state=False)
    trained, _, _ = load_checkpoint(run, load_train_state=False)
    assert card.provenance["head_refit"]["targets"] == "landmark-fit"
    assert not torch.equal(refit.rednet_fc.conv2_id.weight, trained.rednet_fc.conv2_id.weight)
