"""Mesh and landmark file round trips, units, atomicity and clear errors."""

from __future__ import annotations

import os

import numpy as np
import pytest

from dfmvr.errors import InputError
from dfmvr.face.meshio import (
    MM_PER_MODEL_UNIT, read_landmarks, read_mesh, write_landmarks, write_mesh, write_obj, write_ply,
)

RNG = np.random.default_rng(5)
VERTICES = RNG.normal(scale=0.5, size=(30, 3)).astype(np.float32)          # decimetres
TRIANGLES = RNG.integers(0, 30, size=(40, 3)).astype(np.int32)             # any topology
COLORS = RNG.uniform(0, 1, size=(30, 3)).astype(np.float32)


@pytest.mark.parametrize("writer, name", [(write_obj, "face.obj"), (write_ply, "face.ply")])
def test_round_trip_in_millimetres_keeps_order_and_colours(tmp_path, writer, name):
    import trimesh

    path = writer(tmp_path / name, VERTICES, TRIANGLES, COLORS)
    v, t = read_mesh(path)
    assert v.dtype == np.float32 and t.dtype == np.int32
    np.testing.assert_allclose(v, VERTICES * MM_PER_MODEL_UNIT, rtol=1e-6, atol=1e-4)   # mm by default
    np.testing.assert_array_equal(t, TRIANGLES)
    loaded = trimesh.load(str(path), process=False)
    colors = np.asarray(loaded.visual.vertex_colors)[:, :3]
    np.testing.assert_allclose(colors / 255.0, COLORS, atol=0.5 / 255 + 1e-6)   # 8-bit quantisation
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]            # no temp files left


def test_ply_is_binary_and_scale_one_writes_model_units(tmp_path):
    path = write_ply(tmp_path / "m.ply", VERTICES, TRIANGLES, scale=1.0)
    head = path.read_bytes()[:200]
    assert b"format binary_little_endian" in head
    v, _ = read_mesh(path)
    np.testing.assert_allclose(v, VERTICES, atol=1e-6)
    v_mm, _ = read_mesh(path, scale=100.0)
    np.testing.assert_allclose(v_mm, VERTICES * 100.0, rtol=1e-5)


def test_colours_outside_unit_range_are_clipped(tmp_path):
    import trimesh

    lit = COLORS * 3.0 - 1.0
    path = write_obj(tmp_path / "lit.obj", VERTICES, TRIANGLES, lit)
    colors = np.asarray(trimesh.load(str(path), process=False).visual.vertex_colors)[:, :3]
    np.testing.assert_allclose(colors / 255.0, np.clip(lit, 0, 1), atol=0.5 / 255 + 1e-6)


def test_write_mesh_dispatches_on_suffix_and_rejects_unknown(tmp_path):
    assert write_mesh(tmp_path / "a.PLY", VERTICES, TRIANGLES).read_bytes().startswith(b"ply")
    assert b"\nv " in write_mesh(tmp_path / "a.obj", VERTICES, TRIANGLES).read_bytes()
    with pytest.raises(InputError, match=r"a\.stl.*unknown mesh format"):
        write_mesh(tmp_path / "a.stl", VERTICES, TRIANGLES)


def test_bad_arrays_are_rejected_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError):
        write_obj(tmp_path / "x.obj", VERTICES, TRIANGLES + 30)
    with pytest.raises(ValueError):
        write_ply(tmp_path / "x.ply", VERTICES, TRIANGLES, COLORS[:5])
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = write_obj(tmp_path / "keep.obj", VERTICES, TRIANGLES)
    before = path.read_bytes()
    with pytest.raises(ValueError):
        write_obj(path, VERTICES[:, :2], TRIANGLES)
    assert path.read_bytes() == before


def test_quads_are_triangulated_and_point_clouds_are_optional(tmp_path):
    quad = tmp_path / "quad.obj"
    quad.write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nf 1 2 3 4\n")
    v, t = read_mesh(quad)
    assert v.shape == (4, 3) and t.shape == (2, 3)
    cloud = tmp_path / "cloud.obj"
    cloud.write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\n")
    with pytest.raises(InputError, match="no faces"):
        read_mesh(cloud)
    v, t = read_mesh(cloud, require_triangles=False)
    assert v.shape == (3, 3) and t.shape == (0, 3)


def test_missing_and_corrupt_mesh_files_raise_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_mesh(tmp_path / "nope.obj")
    bad = tmp_path / "bad.ply"
    bad.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 100\nproperty float x\n"
                    b"end_header\n\x00\x01")
    with pytest.raises(InputError, match="bad.ply"):
        read_mesh(bad)
    junk = tmp_path / "junk.obj"
    junk.write_text("this is not a mesh\n")
    with pytest.raises(InputError, match="junk.obj"):
        read_mesh(junk)
    bnt = tmp_path / "scan.bnt"
    bnt.write_bytes(b"\x00" * 16)
    with pytest.raises(InputError, match="scan.bnt.*unsupported"):
        read_mesh(bnt)


@pytest.mark.parametrize("dims", [2, 3])
def test_landmark_text_round_trip(tmp_path, dims):
    pts = RNG.uniform(0, 224, size=(68, dims)).astype(np.float32)
    path = write_landmarks(tmp_path / "lm.txt", pts)
    lines = path.read_text().splitlines()
    assert len(lines) == 68 and len(lines[0].split()) == dims
    np.testing.assert_allclose(read_landmarks(path), pts, atol=1e-5)


def test_landmark_formats_pts_pp_npy_and_commas(tmp_path):
    pts = RNG.uniform(0, 100, size=(68, 2))
    ibug = tmp_path / "a.pts"
    ibug.write_text("version: 1\nn_points: 68\n{\n" + "\n".join(f"{x} {y}" for x, y in pts) + "\n}\n")
    np.testing.assert_allclose(read_landmarks(ibug), pts, atol=1e-4)
    csv = tmp_path / "a.csv"
    csv.write_text("\n".join(f"{x},{y}" for x, y in pts))
    np.testing.assert_allclose(read_landmarks(csv), pts, atol=1e-4)
    np.save(tmp_path / "a.npy", pts)
    np.testing.assert_allclose(read_landmarks(tmp_path / "a.npy"), pts, atol=1e-4)
    scan7 = RNG.normal(size=(7, 3))
    pp = tmp_path / "scan.pp"
    pp.write_text("<!DOCTYPE PickedPoints>\n<PickedPoints>\n" + "".join(
        f'<point x="{x}" y="{y}" z="{z}" active="1" name="{i}"/>\n' for i, (x, y, z) in enumerate(scan7))
        + "</PickedPoints>\n")
    np.testing.assert_allclose(read_landmarks(pp, num_points=7, dims=(3,)), scan7, atol=1e-5)


def test_bad_landmark_files_raise_input_error_naming_the_file(tmp_path):
    with pytest.raises(InputError, match="missing.txt.*not found"):
        read_landmarks(tmp_path / "missing.txt")
    short = write_landmarks(tmp_path / "short.txt", np.zeros((5, 2)))
    with pytest.raises(InputError, match="short.txt.*found 5 landmarks, expected 68"):
        read_landmarks(short)
    assert read_landmarks(short, num_points=None).shape == (5, 2)
    text = tmp_path / "text.txt"
    text.write_text("left eye here\n")
    with pytest.raises(InputError, match="text.txt.*cannot parse"):
        read_landmarks(text)
    four = tmp_path / "four.txt"
    four.write_text("1 2 3 4\n" * 68)
    with pytest.raises(InputError, match="shape"):
        read_landmarks(four)
    with pytest.raises(ValueError):
        write_landmarks(tmp_path / "nan.txt", np.full((68, 2), np.nan))
    assert not (tmp_path / "nan.txt").exists()
