"""TripletDataset over synthetic and real-layout folders; augmentation; clear errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dfmvr.errors import InputError
from dfmvr.face.layout import COEFFS
from dfmvr.train.data import TripletDataset, augment_views, color_jitter, gaussian_blur

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "triplet"


def _copy_example(tmp_path: Path, name: str = "t0") -> Path:
    dst = tmp_path / "root" / name
    shutil.copytree(EXAMPLE, dst)
    return dst


def test_example_triplet_item_matches_files():
    ds = TripletDataset(EXAMPLE)
    assert len(ds) == 1
    item = ds[0]
    assert item["images"].shape == (3, 3, 224, 224) and item["images"].dtype == torch.float32
    front = cv2.cvtColor(cv2.imread(str(EXAMPLE / "front.png")), cv2.COLOR_BGR2RGB)
    expected = torch.from_numpy(front).permute(2, 0, 1).float() / 127.5 - 1.0
    assert torch.allclose(item["images"][1], expected, atol=1e-6)
    assert item["images"].min() >= -1.0 and item["images"].max() <= 1.0
    with np.load(EXAMPLE / "gt.npz") as gt:
        assert item["labels"].dtype == torch.int64
        assert torch.equal(item["labels"], torch.from_numpy(gt["labels"].astype(np.int64)))
        assert torch.equal(item["landmarks"], torch.from_numpy(gt["landmarks"]))
        assert torch.equal(item["landmarks_visible"], torch.from_numpy(gt["landmarks_visible"]))
        assert torch.equal(item["coefficients"], torch.from_numpy(gt["coefficients"]))
        assert item["coefficients"].shape == (COEFFS.size,)
        assert item["landmarks3d"].shape == (68, 3)
    assert bool(item["has_labels"]) and bool(item["has_landmarks"])


def test_real_layout_with_optional_files(tmp_path):
    folder = tmp_path / "root" / "person1"
    folder.mkdir(parents=True)
    for view in ("left", "front", "right"):
        img = cv2.imread(str(EXAMPLE / f"{view}.png"))
        cv2.imwrite(str(folder / f"{view}.jpg"), img)
    other = _copy_example(tmp_path, "person0")
    (other / "gt.npz").unlink()
    ds = TripletDataset(tmp_path / "root")
    assert [f.name for f in ds.folders] == ["person0", "person1"]
    item = ds[1]
    assert not bool(item["has_labels"]) and not bool(item["has_landmarks"])
    assert item["labels"].abs().sum() == 0 and "coefficients" not in item
    lm = np.random.default_rng(0).uniform(0, 224, (3, 68, 2)).astype(np.float32)
    np.savez(folder / "landmarks.npz", landmarks=lm)
    labels = np.random.default_rng(1).integers(0, 10, (3, 224, 224)).astype(np.uint8)
    np.savez(folder / "labels.npz", labels=labels)
    item = ds[1]
    assert bool(item["has_landmarks"]) and bool(item["landmarks_visible"].all())
    assert torch.equal(item["landmarks"], torch.from_numpy(lm))
    assert torch.equal(item["labels"], torch.from_numpy(labels.astype(np.int64)))
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    assert batch["images"].shape == (2, 3, 3, 224, 224)


def test_missing_view_names_the_file(tmp_path):
    folder = _copy_example(tmp_path)
    (folder / "right.png").unlink()
    with pytest.raises(InputError, match="right.png"):
        TripletDataset(tmp_path / "root")[0]


@pytest.mark.parametrize("name", ["front.png", "gt.npz"])
def test_corrupt_file_names_it(tmp_path, name):
    folder = _copy_example(tmp_path)
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError) as info:
        TripletDataset(tmp_path / "root")[0]
    assert str(folder / name) in str(info.value)


def test_wrong_size_and_bad_labels_are_refused(tmp_path):
    folder = _copy_example(tmp_path)
    cv2.imwrite(str(folder / "left.png"), np.zeros((100, 120, 3), np.uint8))
    with pytest.raises(InputError, match="left.png.*120x100"):
        TripletDataset(tmp_path / "root")[0]
    shutil.copy(EXAMPLE / "left.png", folder / "left.png")
    np.savez(folder / "labels.npz", labels=np.full((3, 224, 224), 12, np.uint8))
    with pytest.raises(InputError, match="labels.npz"):
        TripletDataset(tmp_path / "root")[0]


def test_empty_root_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no triplet folders"):
        TripletDataset(tmp_path)


def test_augmentation_is_shared_seeded_and_off_by_default():
    plain = TripletDataset(EXAMPLE)
    aug = TripletDataset(EXAMPLE, augment=True)
    torch.manual_seed(0)
    a = aug[0]["images"]
    torch.manual_seed(0)
    b = aug[0]["images"]
    assert torch.equal(a, b)
    assert not torch.equal(a, plain[0]["images"])
    assert torch.equal(plain[0]["images"], plain[0]["images"])
    assert a.min() >= -1.0 and a.max() <= 1.0


def test_color_jitter_is_the_same_for_every_view():
    view = torch.rand(1, 3, 16, 16)
    out = color_jitter(view.expand(3, -1, -1, -1).clone(), np.random.default_rng(3))
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
    assert not torch.allclose(out[0], view[0])


def test_gaussian_blur_keeps_constants_and_smooths_noise():
    flat = torch.full((3, 20, 20), 0.4)
    assert torch.allclose(gaussian_blur(flat, 1.5), flat, atol=1e-6)
    noise = torch.rand(3, 40, 40)
    blurred = gaussian_blur(noise, 1.5)
    assert blurred.shape == noise.shape and blurred.std() < 0.5 * noise.std()
    assert abs(blurred.mean() - noise.mean()) < 0.02


def test_views_are_blurred_with_probability_0_3():
    views = torch.rand(3, 3, 8, 8)
    blurred = 0
    for seed in range(100):
        out = augment_views(views, np.random.default_rng(seed))
        jittered = color_jitter(views, np.random.default_rng(seed))   # the same jitter draw
        blurred += int((~torch.isclose(out, jittered, atol=1e-6)).flatten(1).any(1).sum())
    assert 0.2 < blurred / 300 < 0.4          # 0.3 +- 3.8 standard deviations


def test_landmark_noise_is_a_fixed_detector_like_error_per_triplet(synth4):
    """--landmark-noise: Gaussian pixels per coordinate, the same on every read of a triplet (a detector
    errs the same way on the same photo each epoch), different between triplets and seeds."""
    clean = TripletDataset(synth4)
    noisy = TripletDataset(synth4, landmark_noise_px=2.0, noise_seed=0)
    errors = torch.cat([(noisy[i]["landmarks"] - clean[i]["landmarks"]).flatten() for i in range(len(clean))])
    assert errors.std().item() == pytest.approx(2.0, rel=0.1) and abs(errors.mean().item()) < 0.2
    assert torch.equal(noisy[1]["landmarks"], noisy[1]["landmarks"])
    assert not torch.allclose(noisy[0]["landmarks"] - clean[0]["landmarks"], noisy[1]["landmarks"] - clean[1]["landmarks"])
    other_seed = TripletDataset(synth4, landmark_noise_px=2.0, noise_seed=1)
    assert not torch.allclose(other_seed[0]["landmarks"], noisy[0]["landmarks"])
    assert torch.equal(noisy[0]["images"], clean[0]["images"])           # only the landmarks change


def test_subset_slices_the_folders_and_keeps_the_settings(synth4):
    dataset = TripletDataset(synth4, augment=True, landmark_noise_px=2.0)
    part = dataset.subset(1, 3)
    assert part.folders == dataset.folders[1:3] and len(part) == 2 and len(dataset) == 4
    assert part.augment and part.landmark_noise_px == 2.0
    clean = TripletDataset(synth4)
    torch.testing.assert_close(clean.subset(1, 3)[0]["images"], clean[1]["images"])    # triplet 1, not 0
