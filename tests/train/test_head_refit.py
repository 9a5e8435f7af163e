"""The closed-form head refit (dfmvr/train/head_refit.py, ``dfmvr-train --stage heads``)."""

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from dfmvr.face.model import MorphableModel
from dfmvr.models.checkpoint import load_checkpoint
from dfmvr.models.variants import build_model, make_card
from dfmvr.train.data import TripletDataset
from dfmvr.train.head_refit import group_columns, head_features, refit_heads, ridge_fit


def test_ridge_fit_recovers_a_linear_map_on_raw_inputs():
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(500, 12)) * rng.uniform(0.01, 50, size=12) + rng.normal(size=12) * 10
    inputs[:, 3] = 7.0                                     # a constant input: must get weight 0, not nan
    true_weight, true_bias = rng.normal(size=(5, 12)), rng.normal(size=5)
    true_weight[:, 3] = 0
    targets = inputs @ true_weight.T + true_bias + rng.normal(scale=1e-3, size=(500, 5))
    weight, bias = ridge_fit(inputs, targets, strength=1e-6)
    np.testing.assert_allclose(weight, true_weight, atol=1e-3)
    np.testing.assert_allclose(bias, true_bias, atol=1e-2)
    assert np.all(weight[:, 3] == 0)
    shrunk, _ = ridge_fit(inputs, targets, strength=1e4)      # a strong penalty shrinks the map
    assert np.abs(shrunk).sum() < 0.5 * np.abs(weight).sum()


def test_refit_installs_the_ridge_map_in_the_network(synth4, lite_checkpoint):
    """The refit heads compute what the ridge predicted (the standardisation folded into the convs);
    groups not asked for keep their weights; a group refit only when the selection set improves."""
    model, _, _ = load_checkpoint(lite_checkpoint, load_train_state=False)
    face_model = MorphableModel.load(synth4 / "face_model.npz")
    features = head_features(model, TripletDataset(synth4))
    before = {k: v.clone() for k, v in model.rednet_fc.state_dict().items()}
    report = refit_heads(model, features, features, face_model, groups=("identity", "rotation"))
    assert report["identity"]["refit"] and report["rotation"]["refit"]    # in-sample: ridge beats random heads
    assert report["identity"]["select_after"] > report["identity"]["select_before"]
    after = head_features(model, TripletDataset(synth4))
    columns = group_columns(model.card.layout_obj())
    for group in ("identity", "rotation"):
        weight, bias = ridge_fit(features.inputs, features.coefficients[:, columns[group]], report[group]["strength"])
        np.testing.assert_allclose(after.predicted[:, columns[group]], features.inputs @ weight.T + bias,
                                   rtol=1e-4, atol=1e-4)
    state = model.rednet_fc.state_dict()
    changed = {k for k in state if not torch.equal(state[k], before[k])}
    assert changed == {f"{name}.{p}" for name in ("conv2_id", "conv2_rotate_lt", "conv2_rotate_ft", "conv2_rotate_rt")
                       for p in ("weight", "bias")}
    np.testing.assert_allclose(after.inputs, features.inputs, rtol=1e-5, atol=1e-5)   # nothing before the heads moved


def test_stage_heads_cli_writes_a_refit_checkpoint(synth4, lite_checkpoint, tmp_path):
    from dfmvr.cli.train import command

    out = tmp_path / "heads"
    result = CliRunner().invoke(command, ["--stage", "heads", "--init", str(lite_checkpoint), "--data", str(synth4),
                                          "--val", str(synth4), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "identity: selection set" in result.output
    report = json.loads((out / "heads.json").read_text())
    assert set(report["groups"]) == {"identity", "expression", "rotation"}
    assert report["triplets"] == 4 and report["rows"] == 6          # all views, then 2 of 4 with views missing
    model, card, _ = load_checkpoint(out / "checkpoint.safetensors", load_train_state=False)
    assert card.provenance["head_refit"]["groups"] == report["groups"]
    original, _, _ = load_checkpoint(lite_checkpoint, load_train_state=False)
    assert not torch.equal(model.rednet_fc.conv2_id.weight, original.rednet_fc.conv2_id.weight)
    assert torch.equal(model.uuunet.enc_0[0].weight, original.uuunet.enc_0[0].weight)


def test_stage_heads_needs_a_network_and_a_selection_set(synth4, tmp_path):
    from dfmvr.cli.train import command

    result = CliRunner().invoke(command, ["--stage", "heads", "--data", str(synth4), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "--init" in result.output and "--val" in result.output


def test_training_mix_adds_missing_view_rows(synth4, lite_checkpoint):
    """All views for every triplet, then the first half again with the single-view training's
    patterns in turn: front view only, then left only (a missing view is zeros)."""
    from dfmvr.models.dfmvr_net import pack_views
    from dfmvr.train.head_refit import training_mix_features

    model, _, _ = load_checkpoint(lite_checkpoint, load_train_state=False)
    dataset = TripletDataset(synth4)
    mix = training_mix_features(model, dataset)
    assert len(mix.inputs) == 6
    full = head_features(model, dataset)
    np.testing.assert_allclose(mix.inputs[:4], full.inputs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mix.coefficients[4:], full.coefficients[:2])
    for row, (index, view) in zip((4, 5), ((0, "front"), (1, "left"))):
        images = dataset[index]["images"]
        alone = pack_views({view: images[("left", "front", "right").index(view)][None]})
        with torch.no_grad():
            expected, _ = model(alone)
        np.testing.assert_allclose(mix.predicted[row], expected[0].double().numpy(), rtol=1e-4, atol=1e-5)
        difference = np.abs(mix.inputs[row] - full.inputs[index]).max()
        assert difference > 1e-3 * np.abs(full.inputs[index]).max()     # the missing views changed the input


def test_refit_works_on_the_official_design(synth4, one_torch_thread):
    """`tiny` (the official topology, average pooling): the same heads, the same installed map."""
    torch.manual_seed(0)
    face_model = MorphableModel.load(synth4 / "face_model.npz")
    model = build_model(make_card("tiny", face_model=face_model.identity())).eval()
    features = head_features(model, TripletDataset(synth4))
    report = refit_heads(model, features, features, face_model, groups=("identity",))
    assert report["identity"]["refit"]
    after = head_features(model, TripletDataset(synth4))
    weight, bias = ridge_fit(features.inputs, features.coefficients[:, :80], report["identity"]["strength"])
    np.testing.assert_allclose(after.predicted[:, :80], features.inputs @ weight.T + bias, rtol=1e-4, atol=1e-4)


def test_stage_heads_without_ground_truth_is_a_clear_error(synth4, lite_checkpoint, tmp_path):
    """Triplets without gt.npz (a user's photos): an input error naming the folder, no checkpoint written."""
    import shutil

    from dfmvr.cli.train import command

    photos = tmp_path / "photos"
    shutil.copytree(synth4, photos)
    for gt in photos.glob("*/gt.npz"):
        gt.unlink()
    (photos / "meta.json").unlink()       # a user's photos: not a synthetic set (whose triplets all need gt.npz)
    out = tmp_path / "heads"
    result = CliRunner().invoke(command, ["--stage", "heads", "--init", str(lite_checkpoint), "--data", str(photos),
                                          "--val", str(synth4), "--out", str(out)])
    from dfmvr.errors import InputError

    assert isinstance(result.exception, InputError) and result.exception.exit_code == 2   # dfmvr-train: exit 2
    assert "true coefficients" in str(result.exception) and str(photos) in str(result.exception)
    assert not (out / "checkpoint.safetensors").exists()


def test_slot_broken_triplet_moves_photos_and_pose_truth_together(synth4):
    from dfmvr.face.layout import COEFFS
    from dfmvr.train.slot_breaks import SlotBroken, random_breaks

    base = TripletDataset(synth4)
    broken = SlotBroken(base, [(2, 1, 1)])[0]
    item = base[0]
    assert torch.equal(broken["images"][0], item["images"][2]) and torch.equal(broken["images"][2], item["images"][1])
    poses_before = COEFFS.split(item["coefficients"].numpy()[None])
    poses_after = COEFFS.split(broken["coefficients"].numpy()[None])
    np.testing.assert_array_equal(poses_after.rotation[0, 0], poses_before.rotation[0, 2])
    np.testing.assert_array_equal(poses_after.translation[0, 2], poses_before.translation[0, 1])
    np.testing.assert_array_equal(poses_after.identity, poses_before.identity)
    assert all(s != (0, 1, 2) for s in random_breaks(200, 0))
    # a smaller draw is a prefix of a larger one (the sweep's fractions reuse one set of rows)
    assert random_breaks(7, 1) == random_breaks(40, 1)[:7]
    with pytest.raises(ValueError):
        SlotBroken(base, random_breaks(5, 0))            # more mappings than triplets


def test_stage_heads_slot_breaks_fit_the_pose_of_the_photo(synth4, lite_checkpoint, tmp_path):
    """--slot-breaks 1: every triplet again with its slots broken (pose truth following the photo) in
    the fit and in the selection rows, recorded; on those broken triplets the refit rotation heads
    predict the photo's pose far better than a refit that never saw a broken slot."""
    from dfmvr.cli.train import command
    from dfmvr.face.layout import COEFFS
    from dfmvr.face.metrics import rotation_error_deg
    from dfmvr.train.slot_breaks import SlotBroken, random_breaks

    errors = {}
    for fraction in ("0", "1"):
        out = tmp_path / f"heads{fraction}"
        result = CliRunner().invoke(command, ["--stage", "heads", "--init", str(lite_checkpoint), "--data", str(synth4),
                                              "--val", str(synth4), "--out", str(out), "--slot-breaks", fraction, "--quiet"])
        assert result.exit_code == 0, result.output
        report = json.loads((out / "heads.json").read_text())
        assert report["rows"] == 6 + 4 * int(fraction) and report["select_rows"] == report["rows"]
        model, card, _ = load_checkpoint(out / "checkpoint.safetensors", load_train_state=False)
        assert card.provenance["head_refit"]["slot_breaks"] == float(fraction)
        broken = head_features(model, SlotBroken(TripletDataset(synth4), random_breaks(4, 1)))
        predicted, truth = (COEFFS.split(a.astype(np.float32)) for a in (broken.predicted, broken.coefficients))
        errors[fraction] = float(np.median(rotation_error_deg(predicted.rotation, truth.rotation)))
    assert errors["1"] < 0.5 * errors["0"], errors


def test_slot_breaks_belong_to_the_heads_stage(tmp_path):
    from dfmvr.cli.train import command

    result = CliRunner().invoke(command, ["--data", str(tmp_path), "--out", str(tmp_path / "m"), "--slot-breaks", "0.5"])
    assert result.exit_code == 2 and "--stage heads" in result.output


def _unlabelled_copy(synth4, root):
    """synth4 as a user's photos: the three crops and a detector's landmarks (landmarks.npz), no gt.npz."""
    import shutil

    for folder in sorted(p for p in synth4.iterdir() if p.is_dir()):
        (root / folder.name).mkdir(parents=True)
        for view in ("left", "front", "right"):
            shutil.copy(folder / f"{view}.png", root / folder.name / f"{view}.png")
        gt = np.load(folder / "gt.npz")
        np.savez(root / folder.name / "landmarks.npz", landmarks=gt["landmarks"], landmarks_visible=gt["landmarks_visible"])
    shutil.copy(synth4 / "face_model.npz", root / "face_model.npz")
    return root


@pytest.mark.slow   # 26 s on a slow host
def test_stage_heads_fits_landmark_fits_on_photos_without_ground_truth(synth4, lite_checkpoint, tmp_path, capsys,
                                                                       one_torch_thread, monkeypatch):
    from dfmvr.cli.train import command as train_command
    from tests.conftest import run_cli

    photos = _unlabelled_copy(synth4, tmp_path / "photos")
    out = tmp_path / "heads"
    args = ["--stage", "heads", "--init", str(lite_checkpoint), "--data", str(photos), "--val", str(photos),
            "--out", str(out), "--quiet"]
    code, output = run_cli(train_command, args, capsys)                      # the default targets need gt.npz
    assert code == 2 and "true coefficients" in output and not out.exists()
    code, output = run_cli(train_command, args + ["--targets", "landmark-fit", "--landmark-noise", "2"], capsys)
    assert code == 0, output
    report = json.loads((out / "heads.json").read_text())
    assert report["targets"] == "landmark-fit" and report["landmark_fit"]["landmark_noise_px"] == 2.0
    assert report["landmark_fit"]["loss_weights"]["photo"] == 0.0
    model, card, _ = load_checkpoint(out / "checkpoint.safetensors", load_train_state=False)
    assert card.provenance["head_refit"]["targets"] == "landmark-fit"
    original, _, _ = load_checkpoint(lite_checkpoint, load_train_state=False)
    refit = [g for g, r in report["groups"].items() if r["refit"]]
    assert "identity" in refit                                     # a random head agrees with no fit
    assert not torch.equal(model.rednet_fc.conv2_id.weight, original.rednet_fc.conv2_id.weight)
    assert torch.equal(model.uuunet.enc_0[0].weight, original.uuunet.enc_0[0].weight)
    # the refit identity head reproduces the photos' own landmark fits (computed here separately), the
    # trained one does not: the heads were fitted to the fits, not to anything else
    from dfmvr.face.layout import COEFFS
    from dfmvr.face.metrics import shape_r2
    from dfmvr.train.landmark_fit import landmark_fits

    noisy = TripletDataset(photos, landmark_noise_px=2.0)
    fm = MorphableModel.load(photos / "face_model.npz")
    fits = COEFFS.split(landmark_fits(noisy, fm, card.camera_obj()))
    agreement = {name: shape_r2(fm, COEFFS.split(head_features(net, noisy, targets=np.zeros((4, COEFFS.size))).predicted
                                                 .astype(np.float32)), fits)["identity"]
                 for name, net in (("refit", model), ("trained", original))}
    assert agreement["refit"] > 0.5 and agreement["trained"] < 0.2, agreement
    code, output = run_cli(train_command, args + ["--targets", "landmark-fit", "--slot-breaks", "0.5"], capsys)
    assert code == 2 and "--slot-breaks" in output
    # the fits are saved; --fits reuses them without fitting again, and gives the same heads
    import dfmvr.train.landmark_fit as landmark_fit_module

    stored = out / "landmark_fits.npz"
    with np.load(stored) as z:
        assert list(z["train_folders"]) == [f.name for f in noisy.folders] and z["select_fits"].shape == (4, COEFFS.size)
    monkeypatch.setattr(landmark_fit_module, "landmark_fits", lambda *a, **k: pytest.fail("fitted again"))
    again = ["--stage", "heads", "--init", str(lite_checkpoint), "--data", str(photos), "--val", str(photos),
             "--targets", "landmark-fit", "--landmark-noise", "2", "--fits", str(stored), "--quiet"]
    code, output = run_cli(train_command, again + ["--out", str(tmp_path / "again"), "--groups", "identity,translation"],
                           capsys)
    assert code == 0, output
    reused, _, _ = load_checkpoint(tmp_path / "again" / "checkpoint.safetensors", load_train_state=False)
    torch.testing.assert_close(reused.rednet_fc.conv2_id.weight, model.rednet_fc.conv2_id.weight)
    assert sorted(json.loads((tmp_path / "again" / "heads.json").read_text())["groups"]) == ["identity", "translation"]
    torch.testing.assert_close(reused.rednet_fc.conv2_exp.weight, original.rednet_fc.conv2_exp.weight)  # not refit
    code, output = run_cli(train_command, again + ["--out", str(tmp_path / "z"), "--groups", "identity,shape"], capsys)
    assert code == 2 and "shape" in output and "translation" in output
    # other settings, or other triplets, are refused with the file named
    code, output = run_cli(train_command, [a if a != "2" else "3" for a in again] + ["--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "landmark_fits.npz" in output and "landmark_noise_px" in output and not (tmp_path / "x").exists()
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    for folder in noisy.folders[:3]:
        shutil.copytree(folder, fewer / folder.name)
    shutil.copy(photos / "face_model.npz", fewer / "face_model.npz")
    code, output = run_cli(train_command, [a if a != str(photos) else str(fewer) for a in again]
                           + ["--out", str(tmp_path / "y")], capsys)
    assert code == 2 and "other triplet folders" in output
    code, output = run_cli(train_command, args + ["--fits", str(stored)], capsys)
    assert code == 2 and "--fits" in output


def test_head_inputs_of_an_unstable_network_and_a_one_triplet_selection_set_are_refused(synth4, lite_checkpoint,
                                                                                        tmp_path):
    """A barely trained network blew up on missing-view rows (head inputs NaN or 1e24): the refit fitted NaN
    heads, reported them as kept and wrote NaN into heads.json. A one-triplet selection set scored every
    strength NaN. Both are input errors now, naming the checkpoint / the folder, nothing written."""
    from dfmvr.cli.train import command
    from dfmvr.errors import InputError
    from dfmvr.train.head_refit import HeadFeatures, _check_head_inputs

    rows = np.ones((4, 8))
    _check_head_inputs(HeadFeatures(rows, np.zeros((4, 269))), "net.safetensors", "data")
    for bad in (np.nan, np.inf, 1.6e24):
        broken = rows.copy()
        broken[2, 3] = bad
        with pytest.raises(InputError, match="1 of 4 rows of data") as err:
            _check_head_inputs(HeadFeatures(broken, np.zeros((4, 269))), "net.safetensors", "data")
        assert "net.safetensors" in str(err.value) and "unstable" in str(err.value)
    one = tmp_path / "one"
    one.mkdir()
    shutil.copytree(synth4 / sorted(p.name for p in synth4.iterdir() if p.is_dir())[0], one / "000000")
    shutil.copy(synth4 / "face_model.npz", one / "face_model.npz")
    out = tmp_path / "heads"
    result = CliRunner().invoke(command, ["--stage", "heads", "--init", str(lite_checkpoint), "--data", str(synth4),
                                          "--val", str(one), "--out", str(out)])
    assert isinstance(result.exception, InputError) and "needs at least 2" in str(result.exception)
    assert str(one) in str(result.exception) and not out.exists()
