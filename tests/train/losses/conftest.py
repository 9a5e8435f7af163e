"""Fixtures for the loss tests: the default synthetic face model and two rendered triplets."""

import numpy as np
import pytest
import torch

from dfmvr.face.camera import Camera


@pytest.fixture(scope="session")
def face_model():
    from dfmvr.face.synthetic import default_face_model
    return default_face_model()


@pytest.fixture(scope="session")
def synthetic_batch(face_model):
    """Two synthetic triplets as a loss batch (photos in [0, 1]) plus their true coefficients."""
    from dfmvr.synth.dataset import TripletGenerator

    gen = TripletGenerator(face_model, Camera(), seed=3)
    items = [gen.sample(i) for i in range(2)]
    batch = {
        "photos": torch.from_numpy(np.stack([t.images for t in items])).permute(0, 1, 4, 2, 3).float() / 255.0,
        "labels": torch.from_numpy(np.stack([t.gt["labels"] for t in items]).astype(np.int64)),
        "landmarks": torch.from_numpy(np.stack([t.gt["landmarks"] for t in items])),
        "landmark_visible": torch.from_numpy(np.stack([t.gt["landmarks_visible"] for t in items])),
        "landmarks_3d": torch.from_numpy(np.stack([t.gt["landmarks3d"] for t in items])),
        "gt_coefficients": torch.from_numpy(np.stack([t.gt["coefficients"] for t in items])),
    }
    return batch
