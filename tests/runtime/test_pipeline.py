"""The pipeline end to end on a real ORT session (the statistics model) and real outputs."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from dfmvr.errors import InputError
from dfmvr.face.align import TEMPLATE_224, estimate_similarity, five_points_from_68
from dfmvr.face.geometry import assemble_mesh
from dfmvr.face.layout import COEFFS, VIEWS
from dfmvr.face.meshio import read_mesh
from dfmvr.runtime.detect import DlibDetector
from dfmvr.runtime.inputs import Triplet, discover_triplets
from dfmvr.runtime.outputs import FORMATS, landmarks_on_photo, staged_folder
from dfmvr.runtime.pipeline import Pipeline

from .conftest import expected_coefficients, make_crops, write_triplet


@pytest.fixture()
def aligned_pipe(stats_onnx, face_model_path):
    with Pipeline.from_options(onnx=stats_onnx, face_model=face_model_path, aligned=True, threads=1) as pipe:
        yield pipe


def test_aligned_triplet_gives_the_graph_numbers_and_every_output(aligned_pipe, face_model, tmp_path):
    crops = make_crops(7)
    write_triplet(tmp_path / "in" / "t1", crops)
    triplets, _ = discover_triplets([tmp_path / "in"])
    summary = aligned_pipe.run(triplets, tmp_path / "out", FORMATS)
    assert not summary.failed and len(summary.done) == 1
    folder = tmp_path / "out" / "t1"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["mesh.obj", "mesh.ply", "coeffs.npz", "result.json", "overlay.png", "overlay.jpg"])

    want = expected_coefficients(crops[None])                 # card mean/std, VIEWS order, layout
    npz = np.load(folder / "coeffs.npz")
    np.testing.assert_allclose(npz["coefficients"], want[0], atol=2e-5)
    c = COEFFS.split(want)
    np.testing.assert_allclose(npz["rotation"], c.rotation[0], atol=1e-6)
    assert npz["labels"].shape == (3, 224, 224) and set(np.unique(npz["labels"])) <= {0, 1}

    mesh = assemble_mesh(face_model, COEFFS.split(npz["coefficients"][None]), aligned_pipe.camera)
    verts_mm, tris = read_mesh(folder / "mesh.ply")
    np.testing.assert_allclose(verts_mm, mesh.vertices[0, 1] * 100.0, atol=1e-3)   # front pose, mm
    np.testing.assert_array_equal(tris, face_model.triangles)
    obj_verts, _ = read_mesh(folder / "mesh.obj")
    np.testing.assert_allclose(obj_verts, verts_mm, atol=1e-2)
    np.testing.assert_allclose(npz["landmarks_crop"], mesh.landmarks[0], atol=1e-3)
    np.testing.assert_allclose(npz["landmarks_photo"], mesh.landmarks[0], atol=1e-3)   # --aligned: same

    doc = json.loads((folder / "result.json").read_text())
    for v, view in enumerate(VIEWS):
        pose = doc["views"][view]
        assert pose["yaw_deg"] == pytest.approx(np.degrees(c.rotation[0, v, 1]), abs=1e-4)
        assert pose["pitch_deg"] == pytest.approx(np.degrees(c.rotation[0, v, 0]), abs=1e-4)
        assert pose["translation_mm"][2] == pytest.approx(c.translation[0, v, 2] * 100, abs=1e-3)
    assert doc["model"]["id"].startswith("stats-test") and doc["model"]["face_model"]["hash"]
    assert set(doc["timings_ms"]) == {"decode_align", "normalise", "network", "assembly", "write", "total"}
    assert doc["timings_ms"]["write"] > 0

    overlay = cv2.imread(str(folder / "overlay.png"))
    assert overlay.shape == (512, 3 * 512, 3)
    plain = cv2.resize(crops[1][:, :, ::-1], (512, 512))
    assert np.abs(overlay[:, 512:1024].astype(int) - plain).mean() > 5    # the mesh is painted on


def test_batching_gives_the_same_numbers(aligned_pipe, tmp_path):
    for i in range(3):
        write_triplet(tmp_path / "in" / f"t{i}", make_crops(10 + i))
    triplets, _ = discover_triplets([tmp_path / "in"])
    one = aligned_pipe.reconstruct([aligned_pipe.prepare(t) for t in triplets[:1]])
    three = aligned_pipe.reconstruct([aligned_pipe.prepare(t) for t in triplets])
    np.testing.assert_allclose(COEFFS.join(three[0].coeffs), COEFFS.join(one[0].coeffs), atol=1e-5)
    np.testing.assert_allclose(three[0].mesh.vertices, one[0].mesh.vertices, atol=1e-5)
    for rec, t in zip(three, triplets):
        want = expected_coefficients(np.stack([cv2.imread(str(p))[:, :, ::-1] for p in t.ordered()])[None])
        np.testing.assert_allclose(COEFFS.join(rec.coeffs), want, atol=2e-5)
        assert rec.times.network > 0 and rec.times.decode_align > 0


def test_batch_with_bad_triplets_finishes_the_good_ones(aligned_pipe, tmp_path):
    write_triplet(tmp_path / "in" / "good1", make_crops(1))
    write_triplet(tmp_path / "in" / "good2", make_crops(2))
    bad = write_triplet(tmp_path / "in" / "small", make_crops(3, size=100))    # not 224 with --aligned
    write_triplet(tmp_path / "in" / "partial", make_crops(4)[:2], names=["left", "front"])
    triplets, problems = discover_triplets([tmp_path / "in"])
    seen = []
    summary = aligned_pipe.run(triplets, tmp_path / "out", ("json", "npz"), batch=2, problems=problems,
                               progress=lambda name, ok: seen.append((name, ok)))
    assert sorted(n for n, _, _ in summary.done) == ["good1", "good2"]
    reasons = {p.name: str(p.error) for p in summary.failed}
    assert set(reasons) == {"small", "partial"}
    assert "100x100" in reasons["small"] and str(bad / "left.png") in reasons["small"]
    assert "right" in reasons["partial"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good1", "good2"]
    assert sorted(seen) == [("good1", True), ("good2", True), ("small", False)]


def test_staged_folder_is_all_or_nothing(tmp_path):
    target = tmp_path / "out" / "t"
    with pytest.raises(RuntimeError):
        with staged_folder(target) as tmp:
            (tmp / "mesh.obj").write_text("half")
            raise RuntimeError("interrupted")
    assert not target.exists() and list((tmp_path / "out").iterdir()) == []
    with staged_folder(target) as tmp:
        (tmp / "a.txt").write_text("first")
    with staged_folder(target, frozenset({"a.txt", "b.txt"})) as tmp:     # an earlier output of this writer
        (tmp / "b.txt").write_text("second")
    assert [p.name for p in target.iterdir()] == ["b.txt"]          # replaced whole, not merged
    with pytest.raises(InputError, match="would delete them"):       # a folder of files it does not write
        with staged_folder(target, frozenset({"a.txt"})) as tmp:
            (tmp / "a.txt").write_text("third")
    assert [p.name for p in target.iterdir()] == ["b.txt"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["t"]  # no temporary folders left


def test_a_failed_swap_keeps_the_earlier_output_and_leaves_no_hidden_folder(tmp_path, monkeypatch):
    """The earlier output moves aside before the new folder moves in: when the move in failed, the earlier
    output stayed hidden in .t.old-*; when the move aside failed, an empty .t.old-* stayed."""
    import os

    import dfmvr.runtime.outputs as outputs

    target = tmp_path / "t"
    with staged_folder(target) as tmp:
        (tmp / "a.txt").write_text("first")
    real = os.replace
    for failing_call in (1, 2):     # 1: moving the earlier output aside; 2: moving the new one in
        calls = []

        def replace(src, dst, _fail=failing_call):
            calls.append(src)
            if len(calls) == _fail:
                raise PermissionError("simulated")
            return real(src, dst)

        monkeypatch.setattr(outputs.os, "replace", replace)
        with pytest.raises(PermissionError):
            with staged_folder(target, frozenset({"a.txt"})) as tmp:
                (tmp / "a.txt").write_text("second")
        monkeypatch.setattr(outputs.os, "replace", real)
        assert (target / "a.txt").read_text() == "first", failing_call
        assert sorted(p.name for p in tmp_path.iterdir()) == ["t"], failing_call


def test_a_file_where_the_folder_goes_is_refused_not_replaced(tmp_path):
    (tmp_path / "t").write_text("the user's notes")
    with pytest.raises(InputError, match="a file") as err:
        with staged_folder(tmp_path / "t") as tmp:
            (tmp / "a.txt").write_text("x")
    assert str(tmp_path / "t") in str(err.value)
    assert (tmp_path / "t").read_text() == "the user's notes" and sorted(tmp_path.iterdir()) == [tmp_path / "t"]


@pytest.mark.parametrize("name", ["", ".", "..", "../raw_photos", "a/../../raw_photos", "/abs"])
def test_a_triplet_name_that_leaves_the_output_folder_is_refused(aligned_pipe, tmp_path, name):
    """Through the Python API, Triplet("") or Triplet(".") replaced the whole output folder (a user's files in it
    deleted) and Triplet("../raw_photos") the sibling folder of photos."""
    write_triplet(tmp_path / "in" / "t", make_crops(1))
    (tmp_path / "raw_photos").mkdir()
    (tmp_path / "raw_photos" / "img.jpg").write_bytes(b"a photo")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("the user's")
    triplet = Triplet(name, {v: tmp_path / "in" / "t" / f"{v}.png" for v in VIEWS})
    summary = aligned_pipe.run([triplet], out, ["json"])
    assert not summary.done and "not a folder under the output folder" in str(summary.failed[0].error)
    assert (out / "notes.txt").read_text() == "the user's" and (tmp_path / "raw_photos" / "img.jpg").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_a_finished_folder_gets_the_umask_mode_not_a_temporary_folders_0700(tmp_path):
    """The staging folder came from mkdtemp (0700), so every triplet folder was private to its writer."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        with staged_folder(tmp_path / "t") as tmp:
            (tmp / "a.txt").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "t").stat().st_mode) == 0o755


def test_dlib_finds_the_synthetic_face_offline(rendered_faces):
    photos, true68 = rendered_faces
    det = DlibDetector()
    found = det.landmarks(photos[1])
    f5, t5 = five_points_from_68(found), five_points_from_68(true68[1])
    iod = np.linalg.norm(t5[0] - t5[1])
    assert (np.linalg.norm(f5 - t5, axis=1) < 0.25 * iod).all()
    with pytest.raises(InputError, match="no face found") as err:
        det.landmarks(np.full((300, 400, 3), 128, np.uint8), source="grey.png")
    assert "grey.png" in str(err.value)


def test_detect_and_align_maps_results_back_to_the_photo(stats_onnx, face_model_path, rendered_faces, tmp_path):
    photos, _ = rendered_faces
    folder = tmp_path / "shots"
    folder.mkdir()
    for name, img in zip(("s0", "s1", "s2"), photos):     # official 0/1/2 naming, jpg
        cv2.imwrite(str(folder / f"{name}.jpg"), img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    with Pipeline.from_options(onnx=stats_onnx, face_model=face_model_path, threads=1) as pipe:
        (triplet,), _ = discover_triplets([folder])
        prep = pipe.prepare(triplet)
        assert prep.crops.shape == (3, 224, 224, 3)
        for v in range(3):
            sim = prep.similarities[v]
            five = pipe.detector.landmarks(prep.photos[v])
            # the crop is the least-squares fit of the detected five points onto the template
            np.testing.assert_allclose(sim.matrix, estimate_similarity(five_points_from_68(five),
                                                                       TEMPLATE_224).matrix, atol=1e-6)
            if VIEWS[v] == "front":     # a frontal face fits the frontal template (the synthetic face has its own proportions)
                assert np.abs(sim.apply(five_points_from_68(five)) - TEMPLATE_224).max() < 12
            # crop pixel (row, col) shows the photo at sim^-1 of its centre
            u, w = sim.inverse().apply(np.array([112.5, 112.5]))
            assert np.abs(prep.crops[v][112, 112].astype(int) - prep.photos[v][int(w), int(u)]).max() < 40
        rec = pipe.reconstruct([prep])[0]
        back = landmarks_on_photo(rec)
        for v in range(3):
            np.testing.assert_allclose(prep.similarities[v].apply(back[v]), rec.mesh.landmarks[0, v], atol=1e-2)
        out = pipe.write(rec, tmp_path / "out", ("png",))
        overlay = cv2.imread(str(out / "overlay.png"))[:, :, ::-1]
        assert overlay.shape[0] == 512 and overlay.shape[1] == 3 * 512
        # each panel is painted where the face is in the photo (the mapping back is right)
        scale = 512 / photos.shape[1]
        for v in range(3):
            plain = cv2.resize(prep.photos[v], (512, 512), interpolation=cv2.INTER_LINEAR)
            painted = np.abs(overlay[:, 512 * v:512 * (v + 1)].astype(int) - plain).max(axis=2) > 30
            rows, cols = np.nonzero(painted)
            lo, hi = back[v].min(axis=0) * scale, back[v].max(axis=0) * scale
            assert lo[0] < cols.mean() < hi[0] and lo[1] < rows.mean() < hi[1]


def test_triplet_with_unreadable_view_is_refused(aligned_pipe, tmp_path):
    folder = write_triplet(tmp_path / "t", make_crops(0))
    (folder / "front.png").write_bytes(b"")
    with pytest.raises(InputError, match="empty") as err:
        aligned_pipe.prepare(Triplet("t", {v: folder / f"{v}.png" for v in VIEWS}))
    assert "front.png" in str(err.value)


def test_overlay_triangles_simplify_but_cover_the_same_face(face_model):
    from dfmvr.face.camera import Camera, project
    from dfmvr.face.paint import paint_mesh
    from dfmvr.runtime.overlay import overlay_triangles

    m = face_model
    assert np.array_equal(overlay_triangles(m.mean_shape, m.triangles, target=10 ** 6), m.triangles)
    coarse = overlay_triangles(m.mean_shape, m.triangles, target=len(m.triangles) // 4)
    assert len(coarse) < len(m.triangles) // 2 and coarse.min() >= 0 and coarse.max() < m.num_vertices
    assert (coarse[:, 0] != coarse[:, 1]).all() and (coarse[:, 1] != coarse[:, 2]).all()
    assert len(np.unique(np.sort(coarse, axis=1), axis=0)) == len(coarse)
    cam = Camera(focal=2000.0, image_size=256)
    px, depth = project(m.mean_shape, cam), cam.distance - m.mean_shape[:, 2]
    blank = np.zeros((256, 256, 3), np.uint8)
    full = (paint_mesh(blank, px, depth, m.triangles) != 0).any(-1)
    fast = (paint_mesh(blank, px, depth, coarse) != 0).any(-1)
    assert (full & fast).sum() / (full | fast).sum() > 0.95         # same silhouette, winding kept


def test_normalise_is_the_card_formula_in_graph_layout(aligned_pipe):
    rng = np.random.default_rng(3)
    crops = rng.integers(0, 256, size=(2, 3, 224, 224, 3), dtype=np.uint8)
    card = aligned_pipe.card
    want = ((crops.astype(np.float64) / 255.0 - card.input_mean) / card.input_std).transpose(0, 1, 4, 2, 3)
    got = aligned_pipe.normalise(crops)
    assert got.dtype == np.float32 and got.shape == (2, 3, 3, 224, 224) and got.flags.c_contiguous
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_caller_mistakes_through_the_api_are_named_not_silently_wrong(aligned_pipe, stats_onnx, tmp_path):
    """Float crops or crops already in graph layout were normalised into nonsense without a word; a Triplet
    without a view raised KeyError and stopped the whole run; formats "json" (a string) matched by substring
    and ["OBJ"] wrote an empty folder counted as done; reconstruct([]) raised from np.stack; a face model other
    than the card's was accepted by the constructor (from_options refuses it)."""
    from dfmvr.face.synthetic import synthetic_face_model
    from dfmvr.runtime.artifacts import load_artifact
    from dfmvr.runtime.runners import OnnxrtRunner

    crops = make_crops(2)[None]
    for wrong in (crops.astype(np.float32) / 255, crops.transpose(0, 1, 4, 2, 3), crops[0]):
        with pytest.raises(ValueError, match="expected uint8 RGB crops"):
            aligned_pipe.normalise(wrong)
    write_triplet(tmp_path / "in" / "t", make_crops(2))
    paths = {v: tmp_path / "in" / "t" / f"{v}.png" for v in VIEWS}
    no_right = Triplet("t", {v: p for v, p in paths.items() if v != "right"})
    summary = aligned_pipe.run([no_right, Triplet("u", paths)], tmp_path / "out", "json")
    assert [d[0] for d in summary.done] == ["u"] and "has no right photo" in str(summary.failed[0].error)
    assert sorted(p.name for p in (tmp_path / "out" / "u").iterdir()) == ["result.json"]
    summary = aligned_pipe.run([Triplet("v", paths)], tmp_path / "out", ["OBJ"])
    assert sorted(p.name for p in (tmp_path / "out" / "v").iterdir()) == ["mesh.obj"]
    with pytest.raises(InputError, match="unknown output format"):
        aligned_pipe.write(aligned_pipe.reconstruct([aligned_pipe.prepare(Triplet("w", paths))])[0],
                           tmp_path / "out", ["bogus"])
    assert not (tmp_path / "out" / "w").exists()
    assert aligned_pipe.reconstruct([]) == []
    artifact = load_artifact(onnx=stats_onnx)
    with pytest.raises(InputError, match="does not match the model card"):
        Pipeline(artifact, synthetic_face_model(seed=5), OnnxrtRunner(stats_onnx, threads=1), aligned=True)


# --- batch mode overlap (decode + align and writing in threads around the network) ---------------
def _six_triplets_one_bad(root):
    for i in range(6):
        write_triplet(root / f"t{i}", make_crops(20 + i, size=100 if i == 2 else 224))   # t2: not 224
    return discover_triplets([root])


def _run_recorded(pipe, triplets, problems, out, overlap):
    seen = []
    summary = pipe.run(triplets, out, FORMATS, batch=2, problems=problems, overlap=overlap,
                       progress=lambda name, ok: seen.append((name, ok)))
    return summary, seen


def test_overlap_keeps_outputs_order_and_errors_as_sequential(aligned_pipe, tmp_path):
    triplets, problems = _six_triplets_one_bad(tmp_path / "in")
    seq, seq_seen = _run_recorded(aligned_pipe, triplets, problems, tmp_path / "seq", overlap=False)
    ovl, ovl_seen = _run_recorded(aligned_pipe, triplets, problems, tmp_path / "ovl", overlap=True)
    good = ["t0", "t1", "t3", "t4", "t5"]
    for summary in (seq, ovl):
        assert [n for n, _, _ in summary.done] == good                        # input order
        assert [p.name for p in summary.failed] == ["t2"] and "100x100" in str(summary.failed[0].error)
    assert ovl_seen == seq_seen == [("t0", True), ("t1", True), ("t2", False), ("t3", True), ("t4", True),
                                    ("t5", True)]
    # every folder whole, no temporary folders left, and the same bytes as without overlap
    for out in ("seq", "ovl"):
        assert sorted(p.name for p in (tmp_path / out).iterdir()) == good
    for name in good:
        a, b = tmp_path / "seq" / name, tmp_path / "ovl" / name
        assert sorted(p.name for p in b.iterdir()) == sorted(p.name for p in a.iterdir())
        for f in ("mesh.obj", "mesh.ply", "overlay.png"):
            assert (a / f).read_bytes() == (b / f).read_bytes(), (name, f)
        na, nb = np.load(a / "coeffs.npz"), np.load(b / "coeffs.npz")
        assert sorted(na.files) == sorted(nb.files)
        for k in na.files:
            np.testing.assert_array_equal(na[k], nb[k])
        ja, jb = (json.loads((d / "result.json").read_text()) for d in (a, b))
        ja.pop("timings_ms"), jb.pop("timings_ms")
        assert ja == jb


def test_overlap_prepares_the_next_batch_while_the_network_runs(aligned_pipe, tmp_path, monkeypatch):
    import threading

    triplets, problems = _six_triplets_one_bad(tmp_path / "in")
    next_batch_started = threading.Event()
    prepare, infer = aligned_pipe.prepare, aligned_pipe.infer
    calls = []

    def watched_prepare(t):
        if t.name == "t2":          # the first triplet of the second batch
            next_batch_started.set()
        return prepare(t)

    def waiting_infer(images):
        calls.append(threading.current_thread().name)
        if len(calls) == 1:         # the first network call waits until batch 2's decoding began
            calls.append(next_batch_started.wait(timeout=10))
        return infer(images)

    monkeypatch.setattr(aligned_pipe, "prepare", watched_prepare)
    monkeypatch.setattr(aligned_pipe, "infer", waiting_infer)
    summary = aligned_pipe.run(triplets, tmp_path / "out", ("json",), batch=2, problems=problems, overlap=True)
    assert calls[1] is True                        # overlapped: no 10 s wait
    assert calls[0] == threading.current_thread().name         # the network runs in the caller's thread
    assert len(summary.done) == 5


def test_overlap_stops_on_a_network_error_and_leaves_only_whole_folders(aligned_pipe, tmp_path, monkeypatch):
    triplets, problems = _six_triplets_one_bad(tmp_path / "in")
    infer, calls = aligned_pipe.infer, []

    def failing_infer(images):
        calls.append(len(images))
        if len(calls) == 2:
            raise RuntimeError("the network broke")
        return infer(images)

    monkeypatch.setattr(aligned_pipe, "infer", failing_infer)
    with pytest.raises(RuntimeError, match="the network broke"):
        aligned_pipe.run(triplets, tmp_path / "out", FORMATS, batch=2, problems=problems, overlap=True)
    assert len(calls) == 2                                       # no batch after the error
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["t0", "t1"]     # batch 1, whole
    for name in ("t0", "t1"):
        assert len(list((tmp_path / "out" / name).iterdir())) == len(FORMATS)


def test_overlap_can_be_switched_off_by_the_environment(aligned_pipe, tmp_path, monkeypatch):
    import threading

    triplets, problems = _six_triplets_one_bad(tmp_path / "in")
    threads = set()
    prepare = aligned_pipe.prepare
    monkeypatch.setattr(aligned_pipe, "prepare", lambda t: threads.add(threading.current_thread().name) or prepare(t))
    monkeypatch.setenv("DFMVR_NO_OVERLAP", "1")
    aligned_pipe.run(triplets, tmp_path / "a", ("json",), batch=2, problems=problems)
    assert threads == {threading.current_thread().name}
    monkeypatch.delenv("DFMVR_NO_OVERLAP")
    threads.clear()
    aligned_pipe.run(triplets, tmp_path / "b", ("json",), batch=2, problems=problems)
    assert threads and threading.current_thread().name not in threads


def test_overlay_png_holds_exactly_the_painted_pixels(aligned_pipe, tmp_path):
    from dfmvr.runtime.overlay import overlay_image, write_overlay

    write_triplet(tmp_path / "in" / "t", make_crops(5))
    (t,), _ = discover_triplets([tmp_path / "in"])
    rec = aligned_pipe.reconstruct([aligned_pipe.prepare(t)])[0]
    path = write_overlay(tmp_path / "overlay.png", aligned_pipe, rec)
    # the "up" row filter changes the bytes, never the pixels (PNG is lossless)
    np.testing.assert_array_equal(cv2.imread(str(path))[:, :, ::-1], overlay_image(aligned_pipe, rec))
    ok, default = cv2.imencode(".png", overlay_image(aligned_pipe, rec)[:, :, ::-1])
    np.testing.assert_array_equal(cv2.imdecode(default, cv2.IMREAD_COLOR), cv2.imread(str(path)))


def test_overlay_jpg_is_the_same_picture_lossy_and_written_beside_png(aligned_pipe, tmp_path):
    """--format png,jpg paints once and encodes twice: the JPEG decodes close to the PNG's pixels
    (quality 92: a small mean error, not the same bytes) and is much smaller."""
    write_triplet(tmp_path / "in" / "t", make_crops(6))
    (t,), _ = discover_triplets([tmp_path / "in"])
    aligned_pipe.run([t], tmp_path / "out", ("png", "jpg"))
    folder = tmp_path / "out" / "t"
    assert sorted(p.name for p in folder.iterdir()) == ["overlay.jpg", "overlay.png"]
    png, jpg = (cv2.imread(str(folder / name)).astype(np.float64) for name in ("overlay.png", "overlay.jpg"))
    assert png.shape == jpg.shape
    error = np.abs(png - jpg)
    assert 0 < error.mean() < 3.0 and np.percentile(error, 99) < 40
    assert (folder / "overlay.jpg").stat().st_size < 0.5 * (folder / "overlay.png").stat().st_size


def test_overlay_refuses_a_file_type_it_cannot_write(aligned_pipe, tmp_path):
    from dfmvr.runtime.overlay import write_overlay

    write_triplet(tmp_path / "in" / "t", make_crops(7))
    (t,), _ = discover_triplets([tmp_path / "in"])
    rec = aligned_pipe.reconstruct([aligned_pipe.prepare(t)])[0]
    with pytest.raises(ValueError, match="png or .jpg"):
        write_overlay(tmp_path / "overlay.bmp", aligned_pipe, rec)
    assert not (tmp_path / "overlay.bmp").exists()


def _write_many(root: str, writer: int, rounds: int = 60) -> list[str]:
    from pathlib import Path

    errors = []
    for k in range(rounds):
        try:
            with staged_folder(Path(root) / f"t{k % 3}", frozenset({"a.txt"})) as tmp:
                (tmp / "a.txt").write_text(str(writer))
        except Exception as exc:         # noqa: BLE001 - counted, not raised: the test is about how many
            errors.append(f"{type(exc).__name__}: {exc}")
    return errors


def test_two_writers_of_the_same_folders_take_turns(tmp_path):
    """Two dfmvr-run into one --out: between one writer's move-aside and move-in the other's rename failed
    (Directory not empty / No such file) and an earlier output stayed in a hidden .old-* folder."""
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(3) as pool:
        errors = pool.starmap(_write_many, [(str(tmp_path), w) for w in range(3)])
    assert sum(errors, []) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t0", "t1", "t2"]
    for k in range(3):
        assert [p.name for p in (tmp_path / f"t{k}").iterdir()] == ["a.txt"]


def test_a_folder_given_as_an_image_or_a_model_is_named_as_a_folder(tmp_path):
    """An image path that is a folder said "Is a directory -- check its permissions"; an --onnx folder said
    "ONNX model not found" although the path exists."""
    from dfmvr.runtime.artifacts import load_artifact
    from dfmvr.runtime.inputs import decode_image

    with pytest.raises(InputError, match="is a folder, not an image file"):
        decode_image(tmp_path)
    with pytest.raises(InputError, match="is a folder, not an ONNX model file"):
        load_artifact(onnx=tmp_path)


def test_a_file_system_that_refuses_the_folder_lock_still_gets_its_output(tmp_path, monkeypatch):
    """NFS and SMB refuse an exclusive flock on a folder (EBADF), Lustre without -o flock (ENOSYS): every
    output write failed. The lock is best effort."""
    import errno
    import fcntl

    def refuse(fd, op):
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr(fcntl, "flock", refuse)
    with staged_folder(tmp_path / "t", frozenset({"a.txt"})) as tmp:
        (tmp / "a.txt").write_text("x")
    assert (tmp_path / "t" / "a.txt").read_text() == "x"
