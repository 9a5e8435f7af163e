"""The runtime on a real exported graph (tiny variant, with dfmvr::Involution nodes) against torch."""

from __future__ import annotations

import numpy as np
import pytest

from dfmvr.face.layout import VIEWS

from .conftest import make_crops, write_triplet


@pytest.mark.slow
def test_runtime_mesh_equals_the_pytorch_pipeline_within_0_01_mm(tmp_path, face_model, face_model_path):
    torch = pytest.importorskip("torch")
    variants = pytest.importorskip("dfmvr.models.variants")
    onnx_export = pytest.importorskip("dfmvr.export.onnx_export")
    from dfmvr.face.meshio import read_mesh
    from dfmvr.runtime.inputs import discover_triplets
    from dfmvr.runtime.pipeline import Pipeline
    from dfmvr.synth.face_torch import FaceModelTorch

    card = variants.make_card("tiny", face_model=face_model.identity())
    torch.manual_seed(0)
    net = variants.build_model(card).eval()
    onnx_path = onnx_export.export_onnx(net, tmp_path / "tiny.onnx", card).path

    crops = make_crops(21)
    write_triplet(tmp_path / "in" / "t", crops)
    (triplet,), _ = discover_triplets([tmp_path / "in" / "t"])
    with Pipeline.from_options(onnx=onnx_path, face_model=face_model_path, aligned=True, threads=2) as pipe:
        rec = pipe.reconstruct([pipe.prepare(triplet)])[0]
        folder = pipe.write(rec, tmp_path / "out", ("ply", "npz"))

    x = ((crops.astype(np.float32) / 255.0 - card.input_mean) / card.input_std).transpose(0, 3, 1, 2)[None]
    with torch.no_grad():
        coeffs_t, labels_t = onnx_export.graph_wrapper(net)(torch.from_numpy(np.ascontiguousarray(x)))
        mesh_t = FaceModelTorch(face_model, card.camera_obj())(coeffs_t)
    npz = np.load(folder / "coeffs.npz")
    np.testing.assert_allclose(npz["coefficients"], coeffs_t[0].numpy(), atol=1e-4)
    assert (npz["labels"] == labels_t[0].numpy()).mean() > 0.999
    verts_mm, _ = read_mesh(folder / "mesh.ply")
    assert np.abs(verts_mm - mesh_t.vertices[0, VIEWS.index("front")].numpy() * 100.0).max() < 0.01
