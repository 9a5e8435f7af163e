"""The bundled demo model (dfmvr/assets/default): present, consistent, small, and better than the baselines.

It is what `dfmvr-run`, `dfmvr-export default` and `dfmvr eval --checkpoint/--onnx default` use. It
is shipped; the skip below only keeps a checkout without it (e.g. while retraining with
`scripts/train_default_model.sh`) from failing for the wrong reason.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from dfmvr.card import ONNX_METADATA_KEY, ModelCard
from dfmvr.face.model import MorphableModel
from dfmvr.runtime.artifacts import DEFAULT_DIR, DEFAULT_FACE_MODEL, DEFAULT_ONNX, read_onnx_metadata
from tests.conftest import REPO

CHECKPOINT = DEFAULT_DIR / "model.safetensors"
EXAMPLE = REPO / "examples" / "triplet"
ICP_ITERATIONS = 30          # dfmvr eval's default, used for eval.json
SLOT_BROKEN_MAX_DEG = 12.0

pytestmark = pytest.mark.skipif(not DEFAULT_ONNX.is_file(), reason="no bundled model in dfmvr/assets/default/")


def _example_images(card: ModelCard) -> np.ndarray:
    import cv2

    from dfmvr.face.layout import VIEWS

    crops = np.stack([cv2.imread(str(EXAMPLE / f"{v}.png"))[:, :, ::-1] for v in VIEWS])
    x = (crops.astype(np.float32) / 255.0 - card.input_mean) / card.input_std
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)[None])


def test_the_bundle_is_complete_small_and_self_consistent():
    files = {p.name: p.stat().st_size for p in DEFAULT_DIR.iterdir() if p.is_file()}
    assert {"model.safetensors", "model.onnx", "face_model.npz"} <= set(files)
    # shipped in the wheel: keep it small (17.6 MB now; 0.7 MB of it the keypoint heads, the refinement's landmarks)
    assert sum(files.values()) < 18e6, files
    card = ModelCard.from_json(read_onnx_metadata(DEFAULT_ONNX)[ONNX_METADATA_KEY])
    assert card.variant == "lite"
    assert card.provenance.get("weights_rounded_to") == "float16"
    face_model = MorphableModel.load(DEFAULT_FACE_MODEL)
    card.check_face_model(face_model, source=DEFAULT_FACE_MODEL)


def test_onnx_graph_matches_the_checkpoint_in_torch_on_the_example():
    torch = pytest.importorskip("torch")
    import onnxruntime as ort

    from dfmvr.export.parity import mesh_difference_mm
    from dfmvr.models.checkpoint import load_checkpoint

    model, card, _ = load_checkpoint("default", load_train_state=False)
    onnx_card = ModelCard.from_json(read_onnx_metadata(DEFAULT_ONNX)[ONNX_METADATA_KEY])
    assert onnx_card.to_dict() == card.to_dict()
    x = _example_images(card)
    with torch.no_grad():
        want, _, want_points = (t.numpy() for t in model.forward_with_keypoints(torch.from_numpy(x)))
        np.testing.assert_allclose(model(torch.from_numpy(x))[0].numpy(), want, atol=1e-6)   # the same coefficients
    session = ort.InferenceSession(str(DEFAULT_ONNX), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"images": x})))
    assert list(got) == ["coefficients", "labels", "keypoints"]      # the demo's graph has the optional third
    assert np.abs(got["coefficients"] - want).max() < 1e-3
    assert mesh_difference_mm(MorphableModel.load(DEFAULT_FACE_MODEL), card, want, got["coefficients"])[0] < 0.01
    assert np.abs(got["keypoints"] - want_points).max() < 0.01                    # px on the 224-px crop


def test_the_shipped_evaluation_reproduces_on_regenerated_held_out_triplets(tmp_path):
    """eval.json (the README's numbers) was measured on 64 triplets of the held-out seed 1; the data
    generator is deterministic per (seed, index), so the first triplets regenerated here must score the
    same through the shipped ONNX graph, for the model and both baselines."""
    pytest.importorskip("torch")          # the synthetic renderer is torch code
    from dfmvr.eval import OnnxPredictor, evaluate_dataset
    from dfmvr.synth.dataset import write_dataset

    shipped = json.loads((DEFAULT_DIR / "eval.json").read_text())
    assert shipped["num_triplets"] == 64 and shipped["icp_iterations"] == ICP_ITERATIONS
    write_dataset(tmp_path / "val", 4, seed=1, progress=False)
    report = evaluate_dataset(OnnxPredictor(DEFAULT_ONNX), tmp_path / "val", MorphableModel.load(DEFAULT_FACE_MODEL),
                              icp_iterations=ICP_ITERATIONS)
    for got, want in zip(report["rows"], shipped["rows"][:4], strict=True):
        assert got["name"] == want["name"]
        for part in ("model", "front_only", "mean_face"):
            assert got[part]["mean_mm"] == pytest.approx(want[part]["mean_mm"], abs=0.02), (got["name"], part)


def test_default_names_the_bundle_for_run_eval_and_export():
    from dfmvr.runtime.artifacts import load_artifact

    assert load_artifact().path == load_artifact(onnx="default").path == DEFAULT_ONNX
    pytest.importorskip("torch")
    from dfmvr.models.checkpoint import resolve_checkpoint

    assert resolve_checkpoint("default") == CHECKPOINT


def test_the_readme_quotes_the_shipped_evaluation():
    """The README's table is eval.json rounded to 3 decimals: retraining without updating it fails here."""
    shipped = json.loads((DEFAULT_DIR / "eval.json").read_text())
    readme = (REPO / "README.md").read_text()
    rows = {"multi-view (the model)": shipped["model"], "front view only (same model)":
            shipped["baselines"]["front_only"], "mean face": shipped["baselines"]["mean_face"]}
    r2 = {"multi-view (the model)": shipped["coefficient_r2"]["model"],
          "front view only (same model)": shipped["coefficient_r2"]["front_only"]}
    for label, summary in rows.items():
        want = " | ".join(f"{summary[k]:.3f}" for k in ("mean_mm", "median_mm", "rmse_mm"))
        if label in r2:
            want += f" | {r2[label]['identity']:.2f} | {r2[label]['expression']:.2f}"
        assert f"| {label} | {want} |" in readme, (label, want)
    flat = " ".join(readme.split())
    for baseline, text in (("mean_face", "over the mean face"), ("front_only", "over its own front view alone")):
        gain = shipped["model_vs"][baseline]
        low, high = gain["ci95_mm"]
        assert f"{text}: {gain['mean_mm']:.3f} mm ({low:.3f} to {high:.3f}), better on " \
               f"{100 * gain['better_fraction']:.0f} %" in flat, baseline
    pose = shipped["pose"]
    rotation = (pose["model"]["rotation_deg"]["median"], pose["slot_prior"]["rotation_deg"]["median"])
    translation = (pose["model"]["translation_mm"]["median"], pose["slot_prior"]["translation_mm"]["median"])
    assert f"error per view is {rotation[0]:.1f}° against {rotation[1]:.1f}° for the slot prior" in flat
    assert f"translation error {translation[0]:.0f} mm against {translation[1]:.0f} mm" in flat


def test_the_shipped_model_reads_identity_pose_and_the_side_views():
    """What the README promises, against eval.json: identity and expression read from the photos (the
    previous demo's identity R² was -0.01), the side views adding identity over the front view alone,
    the head pose read from the photo rather than the slot, and margins whose intervals exclude zero."""
    shipped = json.loads((DEFAULT_DIR / "eval.json").read_text())
    r2 = shipped["coefficient_r2"]
    # floors under the shipped demo (0.60, 0.80; the demo before 0.57, 0.78; the 16-epoch demo 0.42, 0.72)
    assert r2["model"]["identity"] >= 0.55 and r2["model"]["expression"] >= 0.77
    assert r2["model"]["identity"] - r2["front_only"]["identity"] >= 0.15
    # issue 18's error targets (the demo: 0.48x and 0.60x): <= 0.7x the mean face, <= 0.85x front only
    mean_mm = shipped["model"]["mean_mm"]
    assert mean_mm <= 0.7 * shipped["baselines"]["mean_face"]["mean_mm"]
    assert mean_mm <= 0.85 * shipped["baselines"]["front_only"]["mean_mm"]
    pose = shipped["pose"]
    assert pose["model"]["rotation_deg"]["median"] * 3 <= pose["slot_prior"]["rotation_deg"]["median"]
    for baseline in ("mean_face", "front_only"):
        assert shipped["model_vs"][baseline]["ci95_mm"][0] > 0, baseline


@pytest.mark.parametrize("sources", [(1, 1, 1), (2, 1, 0)], ids=["front_photo_in_every_slot", "left_right_swapped"])
def test_the_shipped_model_reads_each_views_pose_from_its_photo(sources):
    """Photos in the wrong slots: each slot's rotation follows the photo it is given, not the slot's
    usual pose (the heads' refit saw slot-broken triplets, --slot-breaks; the demo before it answered
    the example's front photo in the left slot with the left slot's -52 deg yaw)."""
    import onnxruntime as ort

    from dfmvr.face.layout import COEFFS
    from dfmvr.face.metrics import rotation_error_deg

    card = ModelCard.from_json(read_onnx_metadata(DEFAULT_ONNX)[ONNX_METADATA_KEY])
    x = _example_images(card)[:, list(sources)]
    got = ort.InferenceSession(str(DEFAULT_ONNX), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    with np.load(EXAMPLE / "gt.npz") as z:
        truth = COEFFS.split(z["coefficients"][None].astype(np.float32)).with_views(sources)
    errors = rotation_error_deg(COEFFS.split(got).rotation, truth.rotation)[0]
    assert errors.max() < SLOT_BROKEN_MAX_DEG, errors


def test_the_contract_check_takes_the_keypoints_output_only_third():
    pytest.importorskip("torch")          # dfmvr.export's involution schema registration
    import onnx

    from dfmvr.export.onnx_export import ExportError, check_exported_model

    graph = onnx.load(str(DEFAULT_ONNX))
    check_exported_model(graph)                                   # coefficients, labels, keypoints
    outputs = list(graph.graph.output)
    del graph.graph.output[:]
    graph.graph.output.extend([outputs[0], outputs[2], outputs[1]])    # keypoints where labels belong
    with pytest.raises(ExportError, match="graph I/O"):
        check_exported_model(graph)
