"""The runtime's TensorrtRunner around TensorRT, run here with STAND-INS (issue 20, defects 4 and 6).

Real: dfmvr.runtime.runners (activation, plugin decision, profile checks, buffer handling, errors), the
model card. Stand-ins: ``tensorrt`` (``FakeTrt``: an engine with one optimisation profile and a context
that answers ``set_input_shape`` like TensorRT does: False and -1 dimensions outside the profile),
cuda-python's driver API under dfmvr.kernels.cuda_driver (``FakeDriver``: fake pointers, copies that do
nothing), and dfmvr's plugin
registration / PTX compilation (patched to fail if called, or to record). No GPU, no TensorRT.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

from dfmvr.card import ModelCard
from dfmvr.errors import InputError
from dfmvr.runtime import runners

PROFILE = ((1, 3, 3, 8, 8), (2, 3, 3, 8, 8), (4, 3, 3, 8, 8))


class FakeContext:
    def __init__(self, engine):
        self.engine, self.shapes, self.calls = engine, {}, []

    def set_input_shape(self, name, shape):
        self.calls.append(("set_input_shape", shape))
        lo, _, hi = PROFILE
        ok = all(a <= d <= b for d, a, b in zip(shape, lo, hi)) and self.engine.accepts
        self.shapes[name] = shape if ok else None
        return ok

    def get_tensor_shape(self, name):
        x = self.shapes.get("images")
        if x is None:
            return (-1, 269) if name == "coefficients" else (-1, 3, 8, 8)
        return (x[0], 269) if name == "coefficients" else (x[0], 3, 8, 8)

    def set_tensor_address(self, name, ptr):
        pass

    def execute_async_v3(self, stream):
        return True


class FakeEngine:
    num_io_tensors = 3
    names = ("images", "coefficients", "labels")

    def __init__(self, has_profile=True, accepts=True):
        self.has_profile, self.accepts = has_profile, accepts

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, name):
        return "in" if name == "images" else "out"

    def get_tensor_dtype(self, name):
        return {"images": np.float32, "coefficients": np.float32, "labels": np.uint8}[name]

    def get_tensor_profile_shape(self, name, index):
        if not self.has_profile:
            raise RuntimeError("no profile")
        return [list(s) for s in PROFILE]

    def create_execution_context(self):
        self.context = FakeContext(self)
        return self.context


def fake_trt(engine):
    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return engine

    return types.SimpleNamespace(
        Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, *a: None}), Runtime=Runtime,
        TensorIOMode=types.SimpleNamespace(INPUT="in"), nptype=lambda dt: dt,
        init_libnvinfer_plugins=lambda logger, ns: True)


class FakeDriver:
    """Stand-in for cuda-python's driver API (``cuda.bindings.driver``) as dfmvr.kernels.cuda_driver
    uses it: fake pointers and handles, copies that do nothing; records stream flags and frees."""

    CUresult = types.SimpleNamespace(CUDA_SUCCESS=0, CUDA_ERROR_NO_DEVICE=100, CUDA_ERROR_NOT_INITIALIZED=3,
                                     CUDA_ERROR_INVALID_DEVICE=101)
    CUstream_flags = types.SimpleNamespace(CU_STREAM_DEFAULT=0, CU_STREAM_NON_BLOCKING=1)
    CUdevice_attribute = types.SimpleNamespace(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR=75,
                                               CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR=76)

    def __init__(self):
        self.next, self.stream_flags, self.freed, self.released = 0x1000, [], [], []

    def cuInit(self, flags):
        return (0,)

    def cuDeviceGetCount(self):
        return (0, 1)

    def cuDeviceGet(self, i):
        return (0, i)

    def cuDevicePrimaryCtxRetain(self, dev):
        return (0, "ctx")

    def cuDevicePrimaryCtxRelease(self, dev):
        self.released.append(dev)
        return (0,)

    def cuCtxSetCurrent(self, ctx):
        return (0,)

    def cuDeviceGetAttribute(self, attr, dev):
        return (0, 9 if attr == 75 else 0)

    def cuStreamCreate(self, flags):
        self.stream_flags.append(flags)
        return (0, 7)

    def cuStreamDestroy(self, s):
        return (0,)

    def cuStreamSynchronize(self, s):
        return (0,)

    def cuMemAlloc(self, n):
        self.next += n
        return (0, self.next)

    def cuMemFree(self, p):
        self.freed.append(p)
        return (0,)

    def cuMemcpyHtoDAsync(self, *a):
        return (0,)

    def cuMemcpyDtoHAsync(self, *a):
        return (0,)


@pytest.fixture
def engine_file(tmp_path):
    path = tmp_path / "model.plan"
    path.write_bytes(b"stand-in engine")
    return path


def _card(record):
    return ModelCard("tiny", {}, provenance={"tensorrt_engine": record} if record is not None else {})


AOT_RECORD = {"input": "images", "profile": {"batch": "1:2:4", "min": list(PROFILE[0]), "opt": list(PROFILE[1]),
                                             "max": list(PROFILE[2])},
              "precision": "fp32", "plugin": {"id": "dfmvr::Involution", "aot": True}}


@pytest.fixture
def stand_ins(monkeypatch):
    """Install the stand-ins; plugin registration and PTX compilation fail the test unless replaced."""
    from dfmvr.kernels import cuda_driver, trt_plugin, trt_version

    fake_driver = FakeDriver()

    def install(engine, register=None):
        monkeypatch.setattr(trt_version, "import_tensorrt", lambda purpose: fake_trt(engine))
        monkeypatch.setattr(cuda_driver, "driver", lambda: fake_driver)
        monkeypatch.setattr(trt_plugin, "register_involution_plugin",
                            register or (lambda: pytest.fail("registered the Python plugin for an AOT engine")))
        monkeypatch.setattr(trt_plugin, "involution_ptx", lambda *a: pytest.fail("compiled PTX at run time"))
        engine.driver = fake_driver
        return engine
    return install


def _images(batch):
    return {"images": np.zeros((batch, 3, 3, 8, 8), np.float32)}


def test_aot_engine_runs_without_the_python_plugin_or_ptx(engine_file, stand_ins):
    """Defect 6: an engine whose card says AOT needs no plugin registration and no NVRTC. Defect 7: it
    runs on its own non-blocking stream, not the legacy default stream."""
    engine = stand_ins(FakeEngine())
    with runners.TensorrtRunner(engine_file, card=_card(AOT_RECORD)) as runner:
        out = runner.infer(_images(2))
    assert out["coefficients"].shape == (2, 269) and out["labels"].dtype == np.uint8
    assert engine.driver.stream_flags == [FakeDriver.CUstream_flags.CU_STREAM_NON_BLOCKING]
    assert len(engine.driver.freed) == 3 and engine.driver.released == [0]   # buffers and context released


def test_engine_without_a_record_registers_the_plugin_lazily(engine_file, stand_ins):
    registered = []
    stand_ins(FakeEngine(), register=lambda: registered.append(True))
    with runners.TensorrtRunner(engine_file, card=_card(None)) as runner:
        runner.infer(_images(1))
    assert registered == [True]                 # registered; involution_ptx (patched to fail) never ran


def test_out_of_profile_batch_is_an_input_error_naming_the_profile(engine_file, stand_ins):
    """Defect 4: batch 5 on a 1:2:4 engine is exit 2 naming the profile, before TensorRT sees it."""
    engine = stand_ins(FakeEngine())
    with runners.TensorrtRunner(engine_file, card=_card(AOT_RECORD)) as runner:
        with pytest.raises(InputError, match=r"batch 5 .*outside the engine's optimisation profile.*"
                                             r"max \(4, 3, 3, 8, 8\).*--batch from 1 to 4") as info:
            runner.infer(_images(5))
    assert info.value.exit_code == 2
    assert engine.context.calls == []


def test_set_input_shape_result_is_checked(engine_file, stand_ins):
    """Defect 4: an engine without a readable profile that refuses the shape: still a clear InputError."""
    stand_ins(FakeEngine(has_profile=False, accepts=False))
    with runners.TensorrtRunner(engine_file, card=_card(AOT_RECORD)) as runner:
        with pytest.raises(InputError, match="TensorRT refused input shape"):
            runner.infer(_images(2))


def test_check_batch_before_activation_reads_the_card(engine_file):
    runner = runners.TensorrtRunner(engine_file, card=_card(AOT_RECORD))
    runner.check_batch(4)
    with pytest.raises(InputError, match="batch 8 .*min \\(1, 3, 3, 8, 8\\)"):
        runner.check_batch(8)
    runners.TensorrtRunner(engine_file, card=_card(None)).check_batch(8)     # no record: nothing to check


def test_runner_for_hands_the_card_to_the_engine_runner(engine_file):
    from dfmvr.runtime.artifacts import Artifact

    runner = runners.runner_for(Artifact("engine", engine_file, _card(AOT_RECORD)))
    assert isinstance(runner, runners.TensorrtRunner) and not runner.needs_python_plugin()


def test_a_refused_engine_releases_the_cuda_context(engine_file, stand_ins, monkeypatch):
    """TensorRT cannot deserialize the file: exit 2, and the context taken on activation is released."""
    engine = stand_ins(FakeEngine())
    trt = fake_trt(None)
    from dfmvr.kernels import trt_version

    monkeypatch.setattr(trt_version, "import_tensorrt", lambda purpose: trt)
    runner = runners.TensorrtRunner(engine_file, card=_card(AOT_RECORD))
    with pytest.raises(InputError, match="cannot deserialize"):
        runner.activate()
    assert engine.driver.released == [0] and not runner.is_active


# --- dfmvr-run --engine --batch N: refused before detection (issue 20, defect 4) -------------------------
# Real: dfmvr.runtime.pipeline (Pipeline.run / check_batch), the runtime's TensorrtRunner and its card
# profile check, artefact loading (the engine file's magic, the card beside it), the face-model check and,
# in the CLI test, dfmvr-run itself (click, exit codes). Stand-ins: TensorRT and cuda-python (above), the
# engine file's bytes (TensorRT's magic + padding, never deserialized by TensorRT), the detector (fails the
# test if it is built into detection). No GPU, no TensorRT.

def _engine_with_card(tmp_path, card, batch="1:2:4", size=224):
    import dataclasses

    from dfmvr.card import engine_card_path
    from dfmvr.runtime.artifacts import TRT_ENGINE_MAGIC

    lo, opt, hi = (int(b) for b in batch.split(":"))
    record = {**AOT_RECORD, "profile": {"batch": batch, **{k: [b, 3, 3, size, size] for k, b in
                                                            (("min", lo), ("opt", opt), ("max", hi))}}}
    plan = tmp_path / "model.plan"
    plan.write_bytes(TRT_ENGINE_MAGIC + bytes(range(256)) * 4)
    engine_card_path(plan).write_text(
        dataclasses.replace(card, provenance={**card.provenance, "tensorrt_engine": record}).to_json())
    return plan


def _no_detection(monkeypatch):
    """The detector stand-in: building it is allowed, using it fails the test."""
    from dfmvr.runtime import detect

    monkeypatch.setattr(detect, "make_detector", lambda name, device="cpu": object())
    monkeypatch.setattr(detect, "detect_triplet", lambda *a, **k: pytest.fail("detection started"))


def test_pipeline_refuses_an_out_of_profile_batch_before_reading_any_triplet(tmp_path, card, face_model_path,
                                                                             stand_ins, monkeypatch):
    from dfmvr.runtime.inputs import Triplet
    from dfmvr.runtime.pipeline import Pipeline

    plan = _engine_with_card(tmp_path, card)
    stand_ins(FakeEngine())
    _no_detection(monkeypatch)
    triplets = [Triplet(f"t{i}", {v: tmp_path / f"t{i}_{v}.png" for v in ("left", "front", "right")})
                for i in range(6)]
    with Pipeline.from_options(engine=plan, face_model=face_model_path) as pipe:
        assert isinstance(pipe.runner, runners.TensorrtRunner)
        with pytest.raises(InputError, match=r"batch 5 .*outside the engine's optimisation profile .*"
                                             r"max \(4, 3, 3, 224, 224\).*--batch from 1 to 4") as info:
            pipe.run(triplets, tmp_path / "out", ("json",), batch=5)
        assert info.value.exit_code == 2 and info.value.path == str(plan)
        pipe.check_batch(4)
        # the largest call a run makes is min(batch, triplets): --batch 8 on three triplets is a batch of 3
        prepared = []

        def prepare(t):
            prepared.append(t.name)
            raise InputError(t.paths["left"], "stand-in: unreadable")
        monkeypatch.setattr(pipe, "prepare", prepare)
        summary = pipe.run(triplets[:3], tmp_path / "out", ("json",), batch=8)
    assert prepared == ["t0", "t1", "t2"] and len(summary.failed) == 3
    assert not (tmp_path / "out").exists()


def test_onnx_pipelines_take_any_batch(stats_onnx, face_model_path):
    from dfmvr.runtime.pipeline import Pipeline

    pipe = Pipeline.from_options(onnx=stats_onnx, face_model=face_model_path, aligned=True)
    pipe.check_batch(1000)        # ONNX Runtime: dynamic batch, nothing to check (and nothing activated)


def test_dfmvr_run_engine_batch_above_the_profile_is_exit_2_before_detection(tmp_path, card, face_model_path,
                                                                             stand_ins, monkeypatch, capsys):
    from dfmvr.cli import run_entry

    from .conftest import make_crops, write_triplet

    plan = _engine_with_card(tmp_path, card)
    stand_ins(FakeEngine())
    _no_detection(monkeypatch)
    for i in range(6):
        write_triplet(tmp_path / "photos" / f"p{i}", make_crops(i, size=64))
    with pytest.raises(SystemExit) as exc:
        run_entry([str(a) for a in (tmp_path / "photos", "--engine", plan, "--face-model", face_model_path,
                                    "--batch", 8, "--out", tmp_path / "out", "--quiet")])
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert "batch 6 " in err and "outside the engine's optimisation profile" in err
    assert "max (4, 3, 3, 224, 224)" in err and "--engine-batch" in err and "model.plan" in err
    assert not (tmp_path / "out" / "summary.json").exists()
