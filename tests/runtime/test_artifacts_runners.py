"""Artefact loading (ONNX card scan, engines, face models) and the runners' shared lifecycle."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from dfmvr.card import ONNX_METADATA_KEY
from dfmvr.errors import InputError, UnavailableError
from dfmvr.runtime.artifacts import (TRT_ENGINE_MAGIC, engine_card_path, load_artifact,
                                     load_engine_artifact, load_face_model, load_onnx_artifact,
                                     read_onnx_metadata)
from dfmvr.runtime.runners import OnnxrtRunner, TensorrtRunner, runner_for

from .conftest import CARD_MEAN, CARD_STD, build_stats_onnx, expected_coefficients, make_crops, write_triplet


def test_card_is_read_from_metadata_props(stats_onnx, card):
    meta = read_onnx_metadata(stats_onnx)
    assert meta["note"] == "runtime test model"
    art = load_onnx_artifact(stats_onnx)
    assert art.kind == "onnx" and art.card.to_dict() == card.to_dict()
    assert "stats-test" in art.model_id and "runtime-fixture" in art.model_id


def test_truncated_or_foreign_onnx_is_refused(stats_onnx, tmp_path, card):
    data = stats_onnx.read_bytes()
    cases = {"cut.onnx": data[: len(data) // 2], "tail.onnx": data[:-3], "empty.onnx": b"",
             "text.onnx": b"hello, this is not a protobuf model\n" * 4}
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(InputError) as err:
            load_onnx_artifact(tmp_path / name)
        assert name in str(err.value)
    for cut in range(1, len(data), max(1, len(data) // 60)):       # any cut point: a clean InputError
        (tmp_path / "cutn.onnx").write_bytes(data[:cut])
        with pytest.raises(InputError):
            load_onnx_artifact(tmp_path / "cutn.onnx")
    bare = build_stats_onnx(tmp_path / "bare.onnx", card, metadata=False)
    with pytest.raises(InputError, match=ONNX_METADATA_KEY):
        load_onnx_artifact(bare)


def test_engine_files_are_checked_before_tensorrt_is_needed(stats_onnx, tmp_path, card):
    as_engine = tmp_path / "model.plan"
    as_engine.write_bytes(stats_onnx.read_bytes())
    with pytest.raises(InputError, match="ONNX model") as err:
        load_engine_artifact(as_engine)
    assert "model.plan" in str(err.value)
    png = tmp_path / "photo.plan"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    with pytest.raises(InputError, match="PNG"):
        load_engine_artifact(png)
    plan = tmp_path / "good.plan"
    plan.write_bytes(TRT_ENGINE_MAGIC + bytes(range(256)) * 4)
    with pytest.raises(InputError, match="card"):              # no card beside it
        load_engine_artifact(plan)
    engine_card_path(plan).write_text(card.to_json())
    art = load_artifact(engine=plan)
    assert art.kind == "engine" and art.card.input_mean == CARD_MEAN
    with pytest.raises(InputError):
        load_artifact(onnx=stats_onnx, engine=plan)


def test_face_model_must_match_the_card(stats_onnx, face_model, face_model_path, tmp_path):
    art = load_onnx_artifact(stats_onnx)
    assert load_face_model(face_model_path, art.card).identity() == face_model.identity()
    other = dataclasses.replace(face_model, mean_shape=face_model.mean_shape * 1.01, name="other")
    other_path = other.save(tmp_path / "other.npz")
    with pytest.raises(InputError, match="does not match") as err:
        load_face_model(other_path, art.card)
    assert "other.npz" in str(err.value)


def test_the_word_default_names_the_bundled_model_and_its_absence_is_a_clear_error(monkeypatch, tmp_path):
    """'default' is resolved by runtime.artifacts for every tool (run, eval, bench, export, checkpoints);
    where the bundled files are missing (an install without assets) each says so, with its own fix."""
    from dfmvr.models import checkpoint
    from dfmvr.runtime import artifacts

    assert artifacts.names_bundled("default") and not artifacts.names_bundled(None)
    assert not artifacts.names_bundled("default.onnx")
    assert artifacts.resolve_onnx("models/m.onnx") == Path("models/m.onnx")        # a path is passed through
    monkeypatch.setattr(artifacts, "DEFAULT_ONNX", tmp_path / "model.onnx")
    monkeypatch.setattr(checkpoint, "DEFAULT_CHECKPOINT", tmp_path / "model.safetensors")
    with pytest.raises(InputError, match="not installed") as err:
        artifacts.resolve_onnx("default", fix="do this")
    assert err.value.path == str(tmp_path / "model.onnx") and err.value.fix == "do this"
    with pytest.raises(InputError, match="not installed") as err:
        load_artifact()
    assert "--onnx" in err.value.fix
    with pytest.raises(InputError, match="not installed") as err:
        checkpoint.resolve_checkpoint("default")
    assert err.value.path == str(tmp_path / "model.safetensors") and "dfmvr train" in err.value.fix


def test_onnxrt_runner_lifecycle_and_numbers(stats_onnx):
    crops = make_crops(2)[None]
    x = np.ascontiguousarray(((crops / 255.0 - CARD_MEAN) / CARD_STD).astype(np.float32).transpose(0, 1, 4, 2, 3))
    runner = OnnxrtRunner(stats_onnx, threads=1)
    with pytest.raises(RuntimeError, match="not active"):
        runner.infer({"images": x})
    assert runner.last_inference_time() is None
    with runner as r:
        assert r.is_active and r.session.get_session_options().intra_op_num_threads == 1
        out = r.infer({"images": x})
        assert r.last_inference_time() > 0
    assert not runner.is_active and runner.session is None
    np.testing.assert_allclose(out["coefficients"], expected_coefficients(crops), atol=2e-5)
    assert out["labels"].dtype == np.uint8 and out["labels"].shape == (1, 3, 224, 224)
    np.testing.assert_array_equal(out["labels"], (x[:, :, 0] > 0).astype(np.uint8))


def test_onnxrt_runner_refuses_a_graph_ort_cannot_load(tmp_path, stats_onnx):
    # a whole protobuf that is not a valid model for ORT: the graph field is mangled but well-framed
    import onnx

    model = onnx.load(str(stats_onnx))
    model.graph.node[2].op_type = "NoSuchOp"
    bad = tmp_path / "badop.onnx"
    onnx.save(model, str(bad))
    load_onnx_artifact(bad)                                    # the card is still readable
    with pytest.raises(InputError, match="ONNX Runtime cannot load") as err:
        OnnxrtRunner(bad).activate()
    assert "badop.onnx" in str(err.value)


def test_cuda_device_uses_the_cuda_provider_only_when_present(stats_onnx):
    import onnxruntime as ort

    with OnnxrtRunner(stats_onnx, device="cuda") as r:
        used = r.session.get_providers()
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    assert ("CUDAExecutionProvider" in used) == has_cuda and "CPUExecutionProvider" in used


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed")
def test_tensorrt_runner_without_tensorrt_is_unavailable(tmp_path, card):
    plan = tmp_path / "m.plan"
    plan.write_bytes(TRT_ENGINE_MAGIC + bytes(1000))
    engine_card_path(plan).write_text(json.dumps(card.to_dict()))
    runner = runner_for(load_engine_artifact(plan))
    assert isinstance(runner, TensorrtRunner)
    with pytest.raises(UnavailableError, match="TensorRT"):
        runner.activate()



def test_another_graph_with_a_dfmvr_card_copied_in_is_refused_by_name(stats_onnx, face_model_path, tmp_path, capsys):
    """A card says nothing about the graph it rides on: a one-node Relu graph carrying the test model's card
    failed inside ONNX Runtime's run ("Required inputs ... are missing", a traceback, exit 1). The runner's
    inputs and outputs are checked against dfmvr's graph contract on activation, in dfmvr-run and in eval."""
    import onnx
    from onnx import TensorProto, helper

    from dfmvr.eval.dataset import OnnxPredictor
    from dfmvr.runtime.runners import check_graph_io

    from .test_cli_run import dfmvr_run

    card = read_onnx_metadata(stats_onnx)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    other = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "other", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(other, card)
    path = tmp_path / "other_with_card.onnx"
    onnx.save(other, str(path))
    assert load_onnx_artifact(path).card is not None            # the card alone reads as a dfmvr model
    with OnnxrtRunner(path) as runner, pytest.raises(InputError, match="a dfmvr graph takes") as err:
        check_graph_io(runner)
    assert "other_with_card.onnx" in str(err.value)
    with OnnxrtRunner(stats_onnx) as runner:
        check_graph_io(runner)                                   # the real contract passes
    with pytest.raises(InputError, match="a dfmvr graph takes"):
        OnnxPredictor(path)
    crops = tmp_path / "in" / "t1"
    write_triplet(crops, make_crops(3))
    code, out, err_text = dfmvr_run([crops, "--aligned", "--onnx", path, "--face-model", face_model_path,
                                     "--out", tmp_path / "out"], capsys)
    assert code == 2 and "other_with_card.onnx" in err_text and "a dfmvr graph takes" in err_text, err_text
    assert not (tmp_path / "out" / "t1").exists()
