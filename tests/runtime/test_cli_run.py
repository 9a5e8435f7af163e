"""``dfmvr-run`` as a user meets it: exit codes, messages naming the file, nothing half-written."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from dfmvr.cli import run_entry
from dfmvr.face.layout import VIEWS
from dfmvr.runtime.artifacts import DEFAULT_ONNX

from tests.conftest import REPO, run_python
from .conftest import make_crops, write_triplet


def dfmvr_run(args, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        run_entry([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


@pytest.fixture()
def base(stats_onnx, face_model_path):
    return ["--onnx", stats_onnx, "--face-model", face_model_path, "--threads", "1"]


def test_single_triplet_writes_its_folder(tmp_path, base, capsys):
    write_triplet(tmp_path / "me", make_crops(0))
    code, out, err = dfmvr_run([tmp_path / "me", *base, "--aligned", "--out", tmp_path / "out",
                                "--format", "json,ply"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out" / "me").iterdir()) == ["mesh.ply", "result.json"]
    assert "me: wrote" in out and "network" in out


def _bad_cases(tmp_path: Path, stats_onnx: Path, face_model):
    """name -> (args before --out, the file the message must name)."""
    crops = make_crops(0)
    cases = {}
    t = write_triplet(tmp_path / "missing", crops[:2], names=["left", "front"])
    cases["missing view"] = ([t, "--aligned"], t)
    t = write_triplet(tmp_path / "unreadable", crops)
    (t / "right.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    cases["unreadable file"] = ([t, "--aligned"], t / "right.png")
    t = write_triplet(tmp_path / "zero", crops)
    (t / "left.png").write_bytes(b"")
    cases["zero-byte file"] = ([t, "--aligned"], t / "left.png")
    grey = np.full((3, 240, 320, 3), 128, np.uint8)
    t = write_triplet(tmp_path / "grey", grey)
    cases["no face found"] = ([t], t / "left.png")
    t = write_triplet(tmp_path / "big", make_crops(0, size=256))
    cases["non-224 with --aligned"] = ([t, "--aligned"], t / "left.png")
    good = write_triplet(tmp_path / "good", crops)
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(stats_onnx.read_bytes()[:-40])
    cases["truncated onnx"] = ([good, "--aligned", "--onnx", cut], cut)
    engine = tmp_path / "model.plan"
    engine.write_bytes(stats_onnx.read_bytes())
    cases["wrong engine file"] = ([good, "--aligned", "--engine", engine], engine)
    other = dataclasses.replace(face_model, mean_shape=face_model.mean_shape + 0.01, name="someone-else")
    other_path = other.save(tmp_path / "other_fm.npz")
    cases["mismatched face model"] = ([good, "--aligned", "--face-model", other_path], other_path)
    return cases


def test_every_bad_input_exits_2_naming_the_file_and_writes_nothing(tmp_path, stats_onnx, face_model,
                                                                    face_model_path, capsys):
    for name, (args, culprit) in _bad_cases(tmp_path, stats_onnx, face_model).items():
        out_dir = tmp_path / f"out-{name.replace(' ', '_')}"
        defaults = {"--onnx": stats_onnx, "--face-model": face_model_path}
        for flag, value in defaults.items():
            if flag not in args and not (flag == "--onnx" and "--engine" in args):
                args = [*args, flag, value]
        code, out, err = dfmvr_run([*args, "--threads", "1", "--out", out_dir], capsys)
        assert code == 2, f"{name}: exit {code}\n{err}"
        assert str(culprit) in err, f"{name}: message does not name {culprit}:\n{err}"
        assert "Traceback" not in err
        assert not out_dir.exists(), f"{name}: wrote {list(out_dir.rglob('*'))}"


@pytest.mark.parametrize("overlap", [[], ["--no-overlap"]], ids=["overlap", "no-overlap"])
def test_batch_with_a_bad_triplet_finishes_the_others(tmp_path, base, capsys, overlap):
    root = tmp_path / "batch"
    for i in range(3):
        write_triplet(root / f"p{i}", make_crops(i))
    bad = write_triplet(root / "p_bad", make_crops(9))
    (bad / "front.png").write_bytes(b"")
    code, out, err = dfmvr_run([root, *base, "--aligned", "--batch", "2", "--format", "npz,json",
                                "--out", tmp_path / "out", *overlap], capsys)
    assert code == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["p0", "p1", "p2", "summary.json"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [d["triplet"] for d in summary["done"]] == ["p0", "p1", "p2"]
    assert summary["failed"][0]["triplet"] == "p_bad" and "front.png" in summary["failed"][0]["reason"]
    assert "FAILED" in err and "p_bad" in err and "1 failed" in err and "triplets/s" in err
    assert summary["triplets_per_s"] > 0 and set(summary["mean_stage_ms"]) >= {"network", "assembly"}


def test_three_paths_and_format_errors(tmp_path, base, capsys):
    t = write_triplet(tmp_path / "x", make_crops(3), ext=".bmp")
    paths = [t / f"{v}.bmp" for v in VIEWS]
    code, _, err = dfmvr_run([*paths, *base, "--aligned", "--format", "npz", "--out", tmp_path / "o"], capsys)
    assert code == 0, err
    assert (tmp_path / "o" / "x" / "coeffs.npz").is_file()
    code, _, err = dfmvr_run([*paths, *base, "--aligned", "--format", "obj,stl", "--out", tmp_path / "o2"], capsys)
    assert code == 2 and "stl" in err and not (tmp_path / "o2").exists()


def test_runtime_never_imports_torch(tmp_path, stats_onnx, face_model_path):
    """Every runtime module imports with torch blocked, --help works, and a whole run succeeds."""
    write_triplet(tmp_path / "t", make_crops(1))
    code = f"""
    import importlib, pkgutil, sys
    import dfmvr.runtime as rt
    for m in pkgutil.iter_modules(rt.__path__):
        importlib.import_module("dfmvr.runtime." + m.name)
    import dfmvr.cli.run
    from dfmvr.cli import run_entry
    for args in (["--help"], [{str(tmp_path / 't')!r}, "--onnx", {str(stats_onnx)!r}, "--face-model",
                 {str(face_model_path)!r}, "--aligned", "--out", {str(tmp_path / 'out')!r}]):
        try:
            run_entry(args)
        except SystemExit as e:
            assert e.code == 0, e.code
    assert "torch" not in sys.modules and not any(k.startswith(("dfmvr.train", "dfmvr.models", "dfmvr.synth")) for k in sys.modules)
    print("NO-TORCH-OK")
    """
    res = run_python(code, block_torch=True, cwd=tmp_path)
    assert "NO-TORCH-OK" in res.stdout, res.stderr[-3000:]
    assert "--aligned" in res.stdout and "--batch" in res.stdout          # the help text
    assert (tmp_path / "out" / "t" / "overlay.png").is_file()


EXAMPLE = REPO / "examples" / "triplet"


@pytest.mark.skipif(not DEFAULT_ONNX.is_file(), reason="no bundled model in dfmvr/assets/default/ "
                    "(scripts/train_default_model.sh installs it)")
def test_bundled_model_end_to_end_on_the_example_triplet(tmp_path, capsys):
    """The default model on the example (aligned 224 crops): outputs agree with a direct ORT run."""
    import onnxruntime as ort

    from dfmvr.face.geometry import assemble_mesh
    from dfmvr.face.layout import COEFFS
    from dfmvr.face.meshio import read_mesh
    from dfmvr.runtime.artifacts import load_artifact
    from dfmvr.runtime.pipeline import Pipeline

    code, _, err = dfmvr_run([EXAMPLE, "--aligned", "--out", tmp_path / "out", "--threads", "2"], capsys)
    assert code == 0, err
    (folder,) = [p for p in (tmp_path / "out").iterdir() if p.is_dir()]
    npz = np.load(folder / "coeffs.npz")
    card = load_artifact().card
    crops = np.stack([cv2.imread(str(EXAMPLE / f"{v}.png"))[:, :, ::-1] for v in VIEWS])
    x = ((crops.astype(np.float32) / 255.0 - card.input_mean) / card.input_std).transpose(0, 3, 1, 2)[None]
    direct = ort.InferenceSession(str(DEFAULT_ONNX)).run(None, {"images": np.ascontiguousarray(x)})
    np.testing.assert_allclose(npz["coefficients"], direct[0][0], atol=1e-4)
    pipe = Pipeline.from_options(aligned=True)
    mesh = assemble_mesh(pipe.face_model, COEFFS.split(npz["coefficients"][None]), pipe.camera)
    verts_mm, _ = read_mesh(folder / "mesh.ply")
    assert np.abs(verts_mm - mesh.vertices[0, 1] * 100.0).max() < 0.01              # mm
    assert cv2.imread(str(folder / "overlay.png")) is not None


@pytest.mark.skipif(not DEFAULT_ONNX.is_file(), reason="no bundled model in dfmvr/assets/default/")
def test_photos_in_the_wrong_slots_are_reported_and_still_reconstructed(tmp_path, capsys):
    """A batch of the example as it is and with its front photo in every slot: both are written; only the
    second gets slot doubts (its side slots read about +7 deg where -45 / +45 is expected), in result.json,
    summary.json and on stderr."""
    import shutil

    from dfmvr.runtime.outputs import SLOT_YAW_TOLERANCE_DEG

    (tmp_path / "in" / "as_is").mkdir(parents=True)
    (tmp_path / "in" / "front_everywhere").mkdir()
    for v in VIEWS:
        shutil.copy(EXAMPLE / f"{v}.png", tmp_path / "in" / "as_is" / f"{v}.png")
        shutil.copy(EXAMPLE / "front.png", tmp_path / "in" / "front_everywhere" / f"{v}.png")
    code, _, err = dfmvr_run([tmp_path / "in", "--aligned", "--out", tmp_path / "out"], capsys)
    assert code == 0, err
    as_is = json.loads((tmp_path / "out" / "as_is" / "result.json").read_text())
    broken = json.loads((tmp_path / "out" / "front_everywhere" / "result.json").read_text())
    assert as_is["slot_doubts"] == {}
    assert set(broken["slot_doubts"]) == {"left", "right"}
    for view, nominal in (("left", -45.0), ("right", 45.0)):
        assert abs(broken["slot_doubts"][view] - nominal) > SLOT_YAW_TOLERANCE_DEG
        assert broken["slot_doubts"][view] == pytest.approx(broken["views"][view]["yaw_deg"], abs=0.05)
    summary = {d["triplet"]: d for d in json.loads((tmp_path / "out" / "summary.json").read_text())["done"]}
    assert "slot_doubts" not in summary["as_is"] and set(summary["front_everywhere"]["slot_doubts"]) == {"left", "right"}
    assert "front_everywhere: the left photo is turned" in err and "left / front / right order" in err
    assert "as_is: the" not in err


def _has_cuda_device() -> bool:
    try:
        from cuda.bindings import runtime as cudart

        err, count = cudart.cudaGetDeviceCount()
        return int(err) == 0 and count > 0
    except ImportError:
        return False


@pytest.mark.skipif(_has_cuda_device(), reason="a CUDA device is present")
def test_device_cuda_without_a_gpu_exits_3_and_writes_nothing(tmp_path, base, capsys):
    write_triplet(tmp_path / "t", make_crops(0))
    code, _, err = dfmvr_run([tmp_path / "t", *base, "--aligned", "--device", "cuda", "--out", tmp_path / "o"],
                             capsys)
    assert code == 3 and "--device cpu" in err and not (tmp_path / "o").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not _has_cuda_device(), reason="needs an NVIDIA GPU and driver")
def test_device_cuda_matches_cpu(tmp_path, stats_onnx, face_model_path):
    from dfmvr.runtime.pipeline import Pipeline

    write_triplet(tmp_path / "t", make_crops(4))
    from dfmvr.runtime.inputs import discover_triplets

    (t,), _ = discover_triplets([tmp_path / "t"])
    meshes = {}
    for device in ("cpu", "cuda"):
        with Pipeline.from_options(onnx=stats_onnx, face_model=face_model_path, aligned=True, device=device) as p:
            meshes[device] = p.reconstruct([p.prepare(t)])[0].mesh
    for name in ("vertices", "colors", "landmarks"):
        np.testing.assert_allclose(getattr(meshes["cuda"], name), getattr(meshes["cpu"], name), atol=1e-3)


def test_face_alignment_detector_names_its_extra_when_missing(tmp_path, base, capsys):
    import importlib.util

    if importlib.util.find_spec("face_alignment") is not None:
        pytest.skip("face-alignment is installed")
    write_triplet(tmp_path / "t", make_crops(0))
    code, _, err = dfmvr_run([tmp_path / "t", *base, "--detector", "face-alignment", "--out", tmp_path / "o"],
                             capsys)
    assert code == 2 and "dfmvr[face-alignment]" in err and not (tmp_path / "o").exists()


def test_resume_skips_finished_triplets(tmp_path, base, capsys):
    root = tmp_path / "batch"
    for i in range(2):
        write_triplet(root / f"p{i}", make_crops(i))
    args = [root, *base, "--aligned", "--format", "json", "--out", tmp_path / "out"]
    assert dfmvr_run(args, capsys)[0] == 0
    first = (tmp_path / "out" / "p0" / "result.json").read_text()
    write_triplet(root / "p2", make_crops(2))
    code, _, err = dfmvr_run([*args, "--resume"], capsys)
    assert code == 0 and "2 triplet(s) already done" in err
    assert (tmp_path / "out" / "p2" / "result.json").is_file()
    assert (tmp_path / "out" / "p0" / "result.json").read_text() == first      # untouched


def test_out_under_a_regular_file_is_refused_before_any_work(tmp_path, capsys):
    write_triplet(tmp_path / "me", make_crops(0))
    blocker = tmp_path / "results.txt"
    blocker.write_text("a file, not a folder")
    # the model does not exist either: the --out check must come first, before anything is loaded
    code, out, err = dfmvr_run([tmp_path / "me", "--onnx", tmp_path / "missing.onnx", "--aligned",
                                "--out", blocker / "sub"], capsys)
    assert code == 2
    assert str(blocker) in err and "--out" in err and "is a file, not a folder" in err
    assert "choose another path" in err and "missing.onnx" not in err
    assert blocker.read_text() == "a file, not a folder"
    code, _, err = dfmvr_run([tmp_path / "me", "--aligned", "--out", blocker], capsys)
    assert code == 2 and str(blocker) in err


def test_an_out_that_puts_a_triplets_folder_on_its_photos_is_refused_and_the_photos_kept(tmp_path, base, capsys):
    """`dfmvr-run me --out .` (the folder above the photos) or a batch with --out its own input folder: the
    triplet's output folder was the photos' folder, replaced whole: the photos were deleted, exit 0."""
    photos = write_triplet(tmp_path / "me", make_crops(0))
    (photos / "notes.txt").write_text("the user's")
    before = sorted(p.name for p in photos.iterdir())
    for resume in ([], ["--resume"]):       # --resume took the photos' folder for a finished output
        code, _, err = dfmvr_run([photos, *base, "--aligned", "--format", "json", "--out", tmp_path, *resume], capsys)
        assert code == 2 and str(photos) in err and "would delete the photos" in err
        assert sorted(p.name for p in photos.iterdir()) == before
    batch = tmp_path / "batch"
    for i in range(2):
        write_triplet(batch / f"p{i}", make_crops(i))
    code, _, err = dfmvr_run([batch, *base, "--aligned", "--format", "json", "--out", batch], capsys)
    assert code == 2 and "p0" in err and "p1" in err
    assert sorted(p.name for p in (batch / "p0").iterdir()) == sorted(f"{v}.png" for v in VIEWS)
    (photos / "notes.txt").unlink()         # photos alone, by names a run never writes: still refused
    code, _, err = dfmvr_run([photos, *base, "--aligned", "--format", "json", "--out", tmp_path], capsys)
    assert code == 2 and "would delete the photos" in err
    # an earlier output (and a file browser's view file) is still replaced by a rerun
    out = tmp_path / "out"
    assert dfmvr_run([photos, *base, "--aligned", "--format", "json,ply", "--out", out], capsys)[0] == 0
    (out / "me" / ".DS_Store").write_bytes(b"view settings")
    (out / "me" / "._mesh.ply").write_bytes(b"AppleDouble")       # macOS on exFAT / SMB
    assert dfmvr_run([photos, *base, "--aligned", "--format", "obj", "--out", out], capsys)[0] == 0
    assert sorted(p.name for p in (out / "me").iterdir()) == ["mesh.obj"]


def test_an_out_through_dotdot_replaces_the_earlier_output_and_strands_nothing(tmp_path, base, capsys):
    """--out o/t/..: the earlier o/t moved aside, and every path through t/.. was gone with it: the run failed,
    o/t stayed hidden in .t.old-*/x beside a .t.partial-* folder."""
    photos = write_triplet(tmp_path / "a" / "t", make_crops(0))
    out = tmp_path / "o"
    assert dfmvr_run([photos, *base, "--aligned", "--format", "json,ply", "--out", out], capsys)[0] == 0
    code, _, err = dfmvr_run([photos, *base, "--aligned", "--format", "json", "--out", out / "t" / ".."], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["t"]
    assert sorted(p.name for p in (out / "t").iterdir()) == ["result.json"]


def test_a_summary_that_cannot_be_written_exits_2_after_listing_the_failures(tmp_path, base, capsys):
    """A folder named summary.json in --out (or --out made read-only mid-run): IsADirectoryError, exit 1, after
    the whole batch, and with -q the failed triplets were never listed."""
    root = tmp_path / "batch"
    write_triplet(root / "good", make_crops(0))
    write_triplet(root / "bad", make_crops(1, size=100))
    (tmp_path / "out" / "summary.json").mkdir(parents=True)
    code, _, err = dfmvr_run([root, *base, "--aligned", "--format", "json", "--out", tmp_path / "out", "-q"], capsys)
    assert code == 2 and "bad" in err and "cannot write the batch summary" in err
    assert err.index("bad") < err.index("cannot write the batch summary")
    assert (tmp_path / "out" / "good" / "result.json").is_file()


def test_a_link_to_dot_in_a_triplet_folder_reconstructs_once(tmp_path, base, capsys):
    write_triplet(tmp_path / "me", make_crops(0))
    (tmp_path / "me" / "loop").symlink_to(".", target_is_directory=True)
    code, out, err = dfmvr_run([tmp_path / "me", *base, "--aligned", "--out", tmp_path / "out",
                                "--format", "json"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["me"]      # single mode: no summary.json
    assert "me: wrote" in out


def test_a_network_that_outputs_nan_is_named_not_the_output_folder(tmp_path, stats_onnx, face_model_path, capsys):
    """Damaged weights (here one bias made NaN) give non-finite vertices, which the mesh writers refuse; the
    error named the output folder ("cannot write outputs"). It names the model and what to do; the batch
    lists every triplet, writes none of them, exits 2."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(stats_onnx))
    bias = next(t for t in model.graph.initializer if t.name == "bias")
    broken = numpy_helper.to_array(bias).copy()
    broken[0] = np.nan
    bias.CopyFrom(numpy_helper.from_array(broken, "bias"))
    path = tmp_path / "damaged.onnx"
    onnx.save(model, str(path))
    for i in range(2):
        write_triplet(tmp_path / "in" / f"t{i}", make_crops(i))
    code, out, err = dfmvr_run([tmp_path / "in", "--aligned", "--onnx", path, "--face-model", face_model_path,
                                "--threads", "1", "--out", tmp_path / "out"], capsys)
    assert code == 2, err
    assert err.count("damaged.onnx") >= 2 and "not finite" in err and "re-export" in err, err
    assert "cannot write outputs" not in err
    assert not any((tmp_path / "out" / f"t{i}").exists() for i in range(2))


def test_a_triplet_named_like_the_batch_summary_is_listed_and_quiet_still_lists_failures(tmp_path, base, capsys):
    """A triplet folder named summary.json made the batch's summary write fail (IsADirectoryError, exit 1,
    no table); it is a bad item now. --quiet printed only the closing count, while its help promises the
    errors: it lists each failure too."""
    write_triplet(tmp_path / "in" / "summary.json", make_crops(1))
    write_triplet(tmp_path / "in" / "good", make_crops(2))
    code, out, err = dfmvr_run([tmp_path / "in", "--aligned", *base, "--out", tmp_path / "out", "--quiet"], capsys)
    assert code == 2, err
    assert "summary.json: " in err and "rename the folder" in err and "1 of 2 triplets failed" in err, err
    doc = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [d["triplet"] for d in doc["done"]] == ["good"]
    assert [d["triplet"] for d in doc["failed"]] == ["summary.json"]
