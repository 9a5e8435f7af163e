"""Fixtures for the runtime tests: a real small ONNX model honouring the graph contract, a face model,
and image triplets.

The "statistics" model: per view and colour channel, the mean of the normalised input ([B, 9]) goes
through a MatMul with ``W`` [9, 269] plus ``bias`` [269] to give the coefficients; the labels are
``images[:, :, 0] > 0`` as uint8. ``expected_coefficients`` recomputes that in numpy, so a test can
check normalisation, view order and the coefficient layout end to end.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from dfmvr.card import GRAPH_INPUT, GRAPH_OUTPUTS, ONNX_METADATA_KEY, ModelCard
from dfmvr.face.layout import COEFFS, VIEW_YAW_DEG, VIEWS

CARD_MEAN, CARD_STD = 0.4, 0.25     # deliberately not 0.5/0.5, so a runtime ignoring the card fails


def stats_weights(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """W [9, 269], bias [269]: small shape/colour responses, plausible per-view poses in the bias."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((9, COEFFS.size)) * 0.05).astype(np.float32)
    c = COEFFS.zeros(1)
    c.rotation[0, :, 1] = np.radians(VIEW_YAW_DEG)         # yaw per view
    c.rotation[0, :, 0] = np.radians([3.0, -2.0, 4.0])      # a little pitch
    c.translation[0, :, 2] = [0.1, -0.2, 0.05]
    c.lighting[0, [0, 9, 18]] = 0.3
    bias = COEFFS.join(c)[0]
    # poses come from the bias only, so every photo gets a sensible head pose
    rows = np.zeros((1, COEFFS.size), np.float32)
    rows[0, COEFFS.shared:] = 1.0
    w = w * (1.0 - rows)
    return w, bias


def expected_coefficients(crops: np.ndarray, mean=CARD_MEAN, std=CARD_STD, seed: int = 0) -> np.ndarray:
    """crops [B, V, S, S, 3] uint8 -> the coefficients [B, 269] the statistics model must output."""
    w, bias = stats_weights(seed)
    x = (crops.astype(np.float64) / 255.0 - mean) / std
    feats = x.mean(axis=(2, 3)).reshape(len(crops), 9)       # [B, V*3], view-major then channel
    return (feats @ w + bias).astype(np.float32)


def build_stats_onnx(path: Path, card: ModelCard, seed: int = 0, metadata: bool = True) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w, bias = stats_weights(seed)
    s = card.image_size
    nodes = [
        helper.make_node("ReduceMean", [GRAPH_INPUT, "axes"], ["m"], keepdims=0),         # [B, V, 3]
        helper.make_node("Flatten", ["m"], ["feats"], axis=1),                            # [B, 9]
        helper.make_node("MatMul", ["feats", "W"], ["wx"]),
        helper.make_node("Add", ["wx", "bias"], [GRAPH_OUTPUTS[0]]),
        helper.make_node("Gather", [GRAPH_INPUT, "zero"], ["red"], axis=2),               # [B, V, S, S]
        helper.make_node("Greater", ["red", "fzero"], ["mask"]),
        helper.make_node("Cast", ["mask"], [GRAPH_OUTPUTS[1]], to=TensorProto.UINT8),
    ]
    inits = [numpy_helper.from_array(np.array([3, 4], np.int64), "axes"),
             numpy_helper.from_array(w, "W"), numpy_helper.from_array(bias, "bias"),
             numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array(0.0, np.float32), "fzero")]
    graph = helper.make_graph(
        nodes, "stats",
        [helper.make_tensor_value_info(GRAPH_INPUT, TensorProto.FLOAT, ["B", 3, 3, s, s])],
        [helper.make_tensor_value_info(GRAPH_OUTPUTS[0], TensorProto.FLOAT, ["B", COEFFS.size]),
         helper.make_tensor_value_info(GRAPH_OUTPUTS[1], TensorProto.UINT8, ["B", 3, s, s])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="dfmvr-tests")
    model.ir_version = 9
    if metadata:
        helper.set_model_props(model, {ONNX_METADATA_KEY: card.to_json(), "note": "runtime test model"})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def face_model():
    from dfmvr.face.synthetic import synthetic_face_model

    return synthetic_face_model(seed=0, num_vertices=600)     # small: fast to build and to assemble


@pytest.fixture(scope="session")
def face_model_path(face_model, tmp_path_factory) -> Path:
    return face_model.save(tmp_path_factory.mktemp("fm") / "face_model.npz")


@pytest.fixture(scope="session")
def card(face_model) -> ModelCard:
    return ModelCard(variant="stats-test", architecture={"kind": "image statistics"},
                     input_mean=CARD_MEAN, input_std=CARD_STD, face_model=face_model.identity(),
                     provenance={"id": "runtime-fixture"})


@pytest.fixture(scope="session")
def stats_onnx(card, tmp_path_factory) -> Path:
    return build_stats_onnx(tmp_path_factory.mktemp("onnx") / "stats.onnx", card)


def make_crops(seed: int = 0, size: int = 224) -> np.ndarray:
    """[V, S, S, 3] uint8 smooth random images (distinct per view)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (len(VIEWS), 8, 8, 3), dtype=np.uint8)
    return np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_LINEAR) for im in small])


def write_triplet(folder: Path, crops: np.ndarray, ext: str = ".png", names=VIEWS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, img in zip(names, crops):
        assert cv2.imwrite(str(folder / f"{name}{ext}"), img[:, :, ::-1])
    return folder


RENDER_YAW_DEG = (-35.0, 0.0, 35.0)     # HOG finds the synthetic face reliably within +-35 degrees


def render_views(model, size: int = 400, yaws=RENDER_YAW_DEG) -> tuple[np.ndarray, np.ndarray]:
    """Paint ``model``'s mean face at each yaw over a grey background.

    Returns photos [V, size, size, 3] uint8 RGB and the true 68 landmarks [V, 68, 2] (pixels).
    """
    from dfmvr.face.camera import Camera, project
    from dfmvr.face.geometry import assemble_mesh
    from dfmvr.face.paint import paint_mesh

    cam = Camera(focal=1015.0 * size / 224 * 0.8, image_size=size, distance=10.0)
    photos, marks = [], []
    for yaw in yaws:
        c = COEFFS.zeros(1)
        c.rotation[0, :, 1] = np.radians(yaw)
        mesh = assemble_mesh(model, c, cam)
        v = mesh.vertices[0, 0]
        img = np.full((size, size, 3), 90, np.uint8)
        photos.append(paint_mesh(img, project(v, cam), cam.distance - v[:, 2], model.triangles,
                                 mesh.albedo[0], vertices=v))
        marks.append(mesh.landmarks[0, 0])
    return np.stack(photos), np.stack(marks)


@pytest.fixture(scope="session")
def rendered_faces():
    """(photos [3, 400, 400, 3] uint8, true landmarks [3, 68, 2]) of a 1500-vertex synthetic face."""
    from dfmvr.face.synthetic import synthetic_face_model

    return render_views(synthetic_face_model(seed=0, num_vertices=1500))
