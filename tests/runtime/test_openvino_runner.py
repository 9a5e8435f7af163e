"""``OpenvinoRunner`` (OpenVINO CPU plugin, the ``openvino`` extra) and ``dfmvr-run --backend openvino``.

Real OpenVINO on the real bundled graph: its dfmvr::Involution local functions are inlined for
OpenVINO's ONNX front end, and the answers are compared with ONNX Runtime's with tolerances (two
separately computed float results are never compared bit for bit).
"""

from __future__ import annotations

import numpy as np
import pytest

from dfmvr.cli import run_entry
from dfmvr.runtime.artifacts import DEFAULT_ONNX

from tests.conftest import REPO, run_python

EXAMPLE = REPO / "examples" / "triplet"
needs_bundled = pytest.mark.skipif(not DEFAULT_ONNX.is_file(), reason="no bundled model in dfmvr/assets/default/")


def _images(batch: int, seed: int = 0) -> np.ndarray:
    """Realistic graph inputs: the bench's painted synthetic face crops, normalised with the card.
    (On uniform noise the parse net's logits have near ties: one flipped label pixel, which ``lite``
    one-hot encodes back into its regressor, moved a coefficient by 1.4e-3 -- 0.04 mm -- between two
    correct fp32 runtimes.)"""
    from dfmvr.bench.inputs import painted_crops
    from dfmvr.runtime.artifacts import load_artifact, load_face_model

    card = load_artifact().card
    model = load_face_model(None, card)
    crops = np.stack([painted_crops(model, card.camera_obj(), seed + i) for i in range(batch)])
    return card.normalise(crops)


@needs_bundled
def test_openvino_agrees_with_onnxruntime_on_the_bundled_model():
    pytest.importorskip("openvino")
    pytest.importorskip("onnx")
    from dfmvr.runtime.openvino_runner import OpenvinoRunner
    from dfmvr.runtime.runners import OnnxrtRunner

    with OpenvinoRunner(DEFAULT_ONNX, threads=1) as ov, OnnxrtRunner(DEFAULT_ONNX, threads=1) as ort:
        assert ov.inlined is True            # the graph's dfmvr::Involution functions were inlined
        for batch in (1, 3, 2):              # one compiled model, any batch (dynamic batch dimension)
            x = _images(batch, seed=batch)
            got, want = ov.infer({"images": x}), ort.infer({"images": x})
            assert set(got) == set(want) == {"coefficients", "labels", "keypoints"}
            for name in want:
                assert got[name].dtype == want[name].dtype and got[name].shape == want[name].shape, name
            np.testing.assert_allclose(got["coefficients"], want["coefficients"], rtol=1e-3, atol=1e-4)
            assert np.mean(got["labels"] == want["labels"]) >= 0.99
            np.testing.assert_allclose(got["keypoints"], want["keypoints"], atol=0.05)     # px
        # noise inputs: labels still agree (near-tie pixels may flip), nothing blows up
        noise = np.random.default_rng(0).uniform(-2, 2, (2, 3, 3, 224, 224)).astype(np.float32)
        got, want = ov.infer({"images": noise}), ort.infer({"images": noise})
        assert np.mean(got["labels"] == want["labels"]) >= 0.99
        np.testing.assert_allclose(got["coefficients"], want["coefficients"], atol=2e-2)
        assert ov.last_inference_time() > 0


def test_openvino_runner_is_lazy_and_names_the_extra(tmp_path):
    """Importing the runtime (and constructing the runner) imports neither openvino nor onnx; with
    openvino missing, activation is a MissingExtraError (exit 2) naming the extra."""
    res = run_python(f"""
        import sys, importlib.abc
        from dfmvr.runtime.runners import runner_for
        from dfmvr.runtime.artifacts import Artifact
        from dfmvr.card import ModelCard
        card = ModelCard(variant="lite", architecture=dict())
        r = runner_for(Artifact("onnx", r"{DEFAULT_ONNX}", card), backend="openvino")
        assert type(r).__name__ == "OpenvinoRunner"
        assert "openvino" not in sys.modules and "onnx" not in sys.modules
        class _Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "openvino" or name.startswith("openvino."):
                    raise ImportError("blocked by test")
        sys.meta_path.insert(0, _Block())
        from dfmvr.errors import MissingExtraError
        try:
            r.activate()
        except MissingExtraError as exc:
            assert exc.exit_code == 2 and "dfmvr[openvino]" in str(exc), str(exc)
            print("OK")
    """, block_torch=True, cwd=REPO)
    assert res.returncode == 0 and "OK" in res.stdout, res.stderr[-2000:]


def test_runner_for_refuses_unknown_and_engine_backends():
    from dfmvr.card import ModelCard
    from dfmvr.errors import InputError
    from dfmvr.runtime.artifacts import Artifact
    from dfmvr.runtime.runners import runner_for

    with pytest.raises(InputError, match="unknown backend"):
        runner_for(Artifact("onnx", DEFAULT_ONNX, ModelCard(variant="x", architecture={})), backend="tvm")
    with pytest.raises(InputError, match="not TensorRT engines"):
        runner_for(Artifact("engine", REPO / "x.plan", ModelCard(variant="x", architecture={})),
                   backend="openvino")
    with pytest.raises(InputError, match="CPU only"):
        runner_for(Artifact("onnx", DEFAULT_ONNX, ModelCard(variant="x", architecture={})),
                   backend="openvino", device="cuda")


def _run(args, capsys):
    with pytest.raises(SystemExit) as exc:
        run_entry([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


@needs_bundled
def test_dfmvr_run_backend_openvino_on_the_example(tmp_path, capsys):
    """--backend openvino on the bundled model and the example triplet: the same reconstruction as
    ONNX Runtime's, to a tolerance (mesh within 0.05 mm)."""
    pytest.importorskip("openvino")
    pytest.importorskip("onnx")
    outs = {}
    for backend in ("onnxruntime", "openvino"):
        code, _, err = _run([EXAMPLE, "--aligned", "--backend", backend, "--out", tmp_path / backend,
                             "--threads", "1", "--format", "npz,json"], capsys)
        assert code == 0, err
        (folder,) = [p for p in (tmp_path / backend).iterdir() if p.is_dir()]
        outs[backend] = np.load(folder / "coeffs.npz")
    np.testing.assert_allclose(outs["openvino"]["coefficients"], outs["onnxruntime"]["coefficients"],
                               rtol=1e-3, atol=1e-4)
    from dfmvr.face.geometry import assemble_mesh
    from dfmvr.face.layout import COEFFS
    from dfmvr.runtime.pipeline import Pipeline

    pipe = Pipeline.from_options(aligned=True)
    v = {k: assemble_mesh(pipe.face_model, COEFFS.split(o["coefficients"][None]), pipe.camera).vertices
         for k, o in outs.items()}
    assert np.abs(v["openvino"] - v["onnxruntime"]).max() * 100.0 < 0.05                  # mm


def test_dfmvr_run_backend_openvino_without_openvino_exits_2(tmp_path):
    res = run_python(f"""
        import sys, importlib.abc
        class _Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "openvino" or name.startswith("openvino."):
                    raise ImportError("blocked by test")
        sys.meta_path.insert(0, _Block())
        from dfmvr.cli import run_entry
        run_entry([r"{EXAMPLE}", "--aligned", "--backend", "openvino", "--out", r"{tmp_path / 'o'}"])
    """, block_torch=True, cwd=REPO)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "pip install 'dfmvr[openvino]'" in res.stderr and not (tmp_path / "o").exists()
