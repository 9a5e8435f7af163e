"""The numpy geometry reference against hand-computed cases, on a tiny hand-made morphable model."""

from __future__ import annotations

import numpy as np
import pytest

from dfmvr.face.camera import DEEP3D_CAMERA, project
from dfmvr.face.geometry import (
    assemble_mesh, build_vertex_triangles, euler_from_matrix, face_albedo, face_shape, rotation_matrix,
    sh_basis, sh_shade, triangle_normals, vertex_normals,
)
from dfmvr.face.layout import COEFFS
from dfmvr.face.model import MorphableModel

# A unit octahedron, triangles counter-clockwise seen from outside.
OCTA_VERTICES = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], np.float32)
OCTA_TRIANGLES = np.array([
    [0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4],
    [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5],
], np.int32)


def axis_rotation(axis: int, angle: float) -> np.ndarray:
    """Right-handed rotation by ``angle`` about x (0), y (1) or z (2), written out by hand."""
    c, s = np.cos(angle), np.sin(angle)
    if axis == 0:
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == 1:
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def tiny_model(seed: int = 0) -> MorphableModel:
    """An octahedron (radius 0.5 dm) with random small bases of the network's sizes."""
    rng = np.random.default_rng(seed)
    n = len(OCTA_VERTICES)

    def basis(k):
        return (rng.normal(size=(n, 3, k)) * 0.01).astype(np.float32)

    return MorphableModel(
        mean_shape=OCTA_VERTICES * 0.5, id_basis=basis(80), exp_basis=basis(64),
        mean_albedo=np.full((n, 3), 0.5, np.float32), albedo_basis=basis(80),
        triangles=OCTA_TRIANGLES, vertex_triangles=build_vertex_triangles(OCTA_TRIANGLES, n),
        keypoints=np.arange(68) % n, skin_mask=np.ones(n, bool), parts=np.zeros(n, np.uint8),
        front_region=np.ones(n, bool), name="octahedron",
    )


@pytest.fixture(scope="module")
def model() -> MorphableModel:
    return tiny_model()


# --- rotation -------------------------------------------------------------------------------
def test_zero_angles_give_the_identity():
    np.testing.assert_allclose(rotation_matrix(np.zeros(3)), np.eye(3), atol=1e-7)


@pytest.mark.parametrize("axis, v_in, v_out", [
    (0, [0, 1, 0], [0, 0, 1]),   # +90 deg about x takes y to z
    (1, [0, 0, 1], [1, 0, 0]),   # +90 deg about y takes z to x
    (2, [1, 0, 0], [0, 1, 0]),   # +90 deg about z takes x to y
])
def test_quarter_turns_about_each_axis(axis, v_in, v_out):
    angles = np.zeros(3)
    angles[axis] = np.pi / 2
    np.testing.assert_allclose(rotation_matrix(angles) @ np.array(v_in, float), v_out, atol=1e-6)


def test_composition_order_is_rz_ry_rx():
    x, y, z = 0.3, -0.7, 1.2
    expected = axis_rotation(2, z) @ axis_rotation(1, y) @ axis_rotation(0, x)
    np.testing.assert_allclose(rotation_matrix(np.array([x, y, z])), expected, atol=1e-6)
    wrong_order = axis_rotation(0, x) @ axis_rotation(1, y) @ axis_rotation(2, z)
    assert not np.allclose(rotation_matrix(np.array([x, y, z])), wrong_order, atol=1e-3)


def test_batched_rotations_are_orthonormal_and_invert_to_their_angles():
    rng = np.random.default_rng(1)
    angles = rng.uniform(-1.4, 1.4, size=(4, 3, 3)).astype(np.float32)   # |y| < 90 degrees
    r = rotation_matrix(angles)
    assert r.shape == (4, 3, 3, 3) and r.dtype == np.float32
    np.testing.assert_allclose(r @ np.swapaxes(r, -1, -2), np.broadcast_to(np.eye(3), r.shape), atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-5)
    np.testing.assert_allclose(euler_from_matrix(r), angles, atol=1e-4)


# --- shape and albedo -------------------------------------------------------------------------
def test_shape_is_linear_in_identity_and_expression(model):
    rng = np.random.default_rng(2)
    a1, a2 = rng.normal(size=(2, 1, 80)).astype(np.float32)
    b1 = rng.normal(size=(1, 64)).astype(np.float32)
    zero_e = np.zeros((1, 64), np.float32)
    mean = model.mean_shape[None]
    s1, s2 = face_shape(model, a1, zero_e), face_shape(model, a2, zero_e)
    s12 = face_shape(model, a1 + a2, b1)
    se = face_shape(model, np.zeros((1, 80), np.float32), b1)
    np.testing.assert_allclose(s12 - mean, (s1 - mean) + (s2 - mean) + (se - mean), atol=1e-5)
    # a unit coefficient selects one basis column
    unit = np.zeros((1, 80), np.float32)
    unit[0, 7] = 1.0
    np.testing.assert_allclose(face_shape(model, unit, zero_e)[0], model.mean_shape + model.id_basis[:, :, 7],
                               atol=1e-6)
    unit_e = np.zeros((1, 64), np.float32)
    unit_e[0, 63] = 2.0
    np.testing.assert_allclose(face_shape(model, np.zeros((1, 80)), unit_e)[0],
                               model.mean_shape + 2.0 * model.exp_basis[:, :, 63], atol=1e-6)


def test_albedo_is_linear_in_texture(model):
    t = np.zeros((2, 80), np.float32)
    t[1, 3] = -1.5
    albedo = face_albedo(model, t)
    assert albedo.shape == (2, 6, 3) and albedo.dtype == np.float32
    np.testing.assert_allclose(albedo[0], model.mean_albedo)
    np.testing.assert_allclose(albedo[1], model.mean_albedo - 1.5 * model.albedo_basis[:, :, 3], atol=1e-6)


# --- normals -----------------------------------------------------------------------------------
def test_octahedron_triangle_and_vertex_normals():
    tn = triangle_normals(OCTA_VERTICES, OCTA_TRIANGLES)
    centroids = OCTA_VERTICES[OCTA_TRIANGLES].mean(axis=1)
    # each face normal is its centroid direction (+-1, +-1, +-1) / sqrt(3): outward
    np.testing.assert_allclose(tn, centroids / np.linalg.norm(centroids, axis=1, keepdims=True), atol=1e-6)
    table = build_vertex_triangles(OCTA_TRIANGLES, 6)
    assert ((table >= 0).sum(axis=1) == 4).all() and (table[:, 4:] == -1).all()
    # at a tip the four face normals cancel sideways: the vertex normal is the tip direction
    np.testing.assert_allclose(vertex_normals(OCTA_VERTICES, OCTA_TRIANGLES, table), OCTA_VERTICES, atol=1e-6)


def test_sphere_vertex_normals_point_radially():
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.7)
    v = sphere.vertices.astype(np.float32)
    f = sphere.faces.astype(np.int32)
    table = build_vertex_triangles(f, len(v))
    n = vertex_normals(v[None], f, table)[0]
    radial = v / np.linalg.norm(v, axis=1, keepdims=True)
    # the 12 icosahedron corners have 5 symmetric neighbours: exact; elsewhere the unweighted average
    # of unequal faces tilts the normal by under a degree
    np.testing.assert_allclose(n[:12], radial[:12], atol=1e-5)
    assert (np.einsum("nc,nc->n", n, radial) > np.cos(np.radians(1.0))).all()


def test_vertex_triangle_table_lists_each_triangle_at_its_corners_and_rejects_overflow():
    table = build_vertex_triangles(OCTA_TRIANGLES, 6)
    for t, tri in enumerate(OCTA_TRIANGLES):
        for vid in tri:
            assert t in table[vid]
    fan = np.array([[0, i, i + 1] for i in range(1, 11)])   # vertex 0 touches 10 triangles
    with pytest.raises(ValueError, match="more than 8"):
        build_vertex_triangles(fan, 12)


# --- SH lighting ---------------------------------------------------------------------------------
# a_l * c_l worked out by hand: band 0 sqrt(pi)/2, band 1 sqrt(pi), band 2 sqrt(30 pi)/4.
B0, B1, B2 = np.sqrt(np.pi) / 2, np.sqrt(np.pi), np.sqrt(30 * np.pi) / 4


@pytest.mark.parametrize("normal, expected", [
    ([0, 0, 1], [B0, 0, B1, 0, 0, 0, B2 / np.sqrt(3), 0, 0]),
    ([0, 1, 0], [B0, -B1, 0, 0, 0, 0, -B2 / (2 * np.sqrt(3)), 0, -B2 / 2]),
    ([1, 0, 0], [B0, 0, 0, -B1, 0, 0, -B2 / (2 * np.sqrt(3)), 0, B2 / 2]),
    ([0, 0, -1], [B0, 0, -B1, 0, 0, 0, B2 / np.sqrt(3), 0, 0]),
])
def test_sh_basis_of_axis_aligned_normals(normal, expected):
    np.testing.assert_allclose(sh_basis(np.array([normal], np.float32))[0], expected, atol=1e-5)


def test_sh_basis_mixed_terms():
    s = 1 / np.sqrt(2)
    y = sh_basis(np.array([[s, s, 0], [0, s, s], [s, 0, s]], np.float32))
    np.testing.assert_allclose(y[0, 4], B2 / 2, atol=1e-5)     # xy term
    np.testing.assert_allclose(y[1, 5], -B2 / 2, atol=1e-5)    # -yz term
    np.testing.assert_allclose(y[2, 7], -B2 / 2, atol=1e-5)    # -xz term


def test_shading_adds_the_dc_offset_and_keeps_channels_apart():
    albedo = np.full((1, 2, 3), 0.5, np.float32)
    normals = np.array([[[0, 0, 1], [1, 0, 0]]], np.float32)
    lit = sh_shade(albedo, normals, np.zeros((1, 27), np.float32))
    np.testing.assert_allclose(lit, 0.5 * 0.8 * B0, atol=1e-6)     # grey ambient from the 0.8 offset
    gamma = np.zeros((1, 27), np.float32)
    gamma[0, 9 + 2] = 0.3            # green channel, band-1 z term (channel-major layout)
    lit = sh_shade(albedo, normals, gamma)
    np.testing.assert_allclose(lit[0, 0], [0.4 * B0, 0.5 * (0.8 * B0 + 0.3 * B1), 0.4 * B0], atol=1e-6)
    np.testing.assert_allclose(lit[0, 1], 0.4 * B0, atol=1e-6)     # a normal along x sees no z light


# --- assemble_mesh ---------------------------------------------------------------------------------
def random_coefficients(batch: int, seed: int):
    rng = np.random.default_rng(seed)
    c = COEFFS.split(rng.normal(scale=0.5, size=(batch, COEFFS.size)).astype(np.float32))
    c.rotation[:] = rng.uniform(-0.6, 0.6, size=c.rotation.shape)
    c.translation[:] = rng.uniform(-0.3, 0.3, size=c.translation.shape)
    return c


def test_assemble_mesh_shapes_and_posing(model):
    c = random_coefficients(2, 3)
    m = assemble_mesh(model, c, DEEP3D_CAMERA)
    assert m.shape.shape == (2, 6, 3) and m.albedo.shape == (2, 6, 3)
    for arr in (m.vertices, m.normals, m.colors):
        assert arr.shape == (2, 3, 6, 3) and arr.dtype == np.float32
    assert m.landmarks.shape == (2, 3, 68, 2) and m.landmarks.dtype == np.float32
    np.testing.assert_allclose(m.shape, face_shape(model, c.identity, c.expression), atol=1e-6)
    for b in range(2):
        for v in range(3):
            r = rotation_matrix(c.rotation[b, v])
            posed = m.shape[b] @ r.T + c.translation[b, v]
            np.testing.assert_allclose(m.vertices[b, v], posed, atol=1e-5)
            # landmarks are the projected posed keypoints
            np.testing.assert_allclose(m.landmarks[b, v], project(posed[model.keypoints], DEEP3D_CAMERA),
                                       atol=1e-3)
            # normals of the posed mesh computed directly agree with the rotated unposed normals
            np.testing.assert_allclose(
                m.normals[b, v], vertex_normals(posed, model.triangles, model.vertex_triangles), atol=1e-5)


def test_each_view_is_lit_with_its_own_rotation(model):
    c = random_coefficients(1, 4)
    c.rotation[0] = [[0.0, -0.8, 0.0], [0.0, 0.0, 0.0], [0.0, 0.8, 0.0]]
    c.lighting[0] = 0.0
    c.lighting[0, [2, 11, 20]] = 0.5          # light from +z (towards the camera) in every channel
    m = assemble_mesh(model, c, DEEP3D_CAMERA)
    normals0 = vertex_normals(m.shape, model.triangles, model.vertex_triangles)
    for v in range(3):
        rotated = normals0 @ rotation_matrix(c.rotation[0, v]).T
        np.testing.assert_allclose(m.colors[0, v], sh_shade(m.albedo, rotated, c.lighting)[0], atol=1e-5)
    # the official defect (all views lit with the right view's rotation) would make these equal
    assert not np.allclose(m.colors[0, 0], m.colors[0, 2], atol=1e-3)
