"""The mean-size projection of identity coefficients (dfmvr/face/size.py), checked through the vertices
(face_shape), a path separate from the projection's own coefficient-space arithmetic."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dfmvr.face.geometry import face_shape
from dfmvr.face.metrics import uniform_scale_direction, without_uniform_scale
from dfmvr.face.size import identity_size_component, mean_size_projection
from dfmvr.face.synthetic import default_face_model


@pytest.fixture(scope="module")
def fm():
    return default_face_model()


def _offsets(fm, identity):
    """[N, K] identity -> [N, V*3] vertex offsets from the mean shape (expression zero), float64."""
    zeros = np.zeros((len(identity), fm.exp_basis.shape[2]), np.float32)
    return (face_shape(fm, identity, zeros).astype(np.float64) - fm.mean_shape).reshape(len(identity), -1)


def test_projected_identities_have_the_mean_size_and_move_only_along_the_scaling(fm):
    rng = np.random.default_rng(0)
    identity = rng.normal(size=(30, fm.id_basis.shape[2]))
    projection = mean_size_projection(fm)
    assert 0.999 < projection.in_basis <= 1.0 + 1e-9       # the synthetic basis holds the scaling
    projected = identity @ projection.matrix.T
    r = uniform_scale_direction(fm.mean_shape)
    before, after = _offsets(fm, identity) @ r, _offsets(fm, projected) @ r
    scale = np.sqrt(np.mean(before ** 2))                                  # the sizes' spread before
    assert np.abs(after).max() < 1e-4 * scale                              # float32 vertices: not exact
    # the vertices move as metrics.without_uniform_scale moves them, up to the part of the scaling the
    # basis cannot hold (1 - in_basis = 2e-4 here: a residue of ~1.5 % of the size component)
    expected = without_uniform_scale(_offsets(fm, identity), fm.mean_shape)
    residue = np.linalg.norm(_offsets(fm, projected) - expected, axis=1)
    assert residue.max() < 0.03 * np.abs(before).max()
    np.testing.assert_allclose(identity_size_component(fm, identity), before, rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(identity_size_component(fm, projected), 0.0, atol=1e-9 * scale)


def test_a_scaled_mean_face_projects_to_the_mean_and_shape_changes_stay(fm):
    projection = mean_size_projection(fm)
    basis = fm.id_basis.reshape(-1, fm.id_basis.shape[2]).astype(np.float64)
    centre = fm.mean_shape.mean(axis=0)
    scaled = ((fm.mean_shape - centre) * 0.05).ravel()                   # the mean face 5 % larger
    alpha = np.linalg.lstsq(basis, scaled, rcond=None)[0]
    assert np.linalg.norm(basis @ (projection.matrix @ alpha)) < 0.02 * np.linalg.norm(scaled)
    np.testing.assert_allclose(projection.matrix @ projection.matrix, projection.matrix, atol=1e-9)   # P² = P
    # an identity without a size component (in coefficient space) is left as it is
    row = basis.T @ uniform_scale_direction(fm.mean_shape)
    other = np.random.default_rng(1).normal(size=row.size)
    other -= (other @ row) / (row @ row) * row
    np.testing.assert_allclose(projection.matrix @ other, other, atol=1e-9)


def test_a_basis_holding_part_of_the_scaling_still_zeroes_the_size(fm):
    """BFM's basis need not hold a uniform scaling whole: the map still zeroes the size component
    exactly, moving the vertices along the part it holds; none at all is refused."""
    basis = fm.id_basis.reshape(-1, fm.id_basis.shape[2]).astype(np.float64)
    r = uniform_scale_direction(fm.mean_shape)
    # tilt the basis' scaling 45° out of its span: it then holds half of a uniform scaling
    away = np.random.default_rng(3).normal(size=r.size)
    away -= basis @ np.linalg.lstsq(basis, away, rcond=None)[0]          # orthogonal to the span (and r)
    tilted = (r + away / np.linalg.norm(away)) / np.sqrt(2.0)
    partial = basis + np.outer(tilted - r, r @ basis)
    part = dataclasses.replace(fm, id_basis=partial.reshape(fm.id_basis.shape).astype(np.float32))
    projection = mean_size_projection(part)
    assert projection.in_basis == pytest.approx(0.5, abs=0.01)
    identity = np.random.default_rng(2).normal(size=(10, fm.id_basis.shape[2]))
    before = _offsets(part, identity) @ r
    after = _offsets(part, identity @ projection.matrix.T) @ r
    assert np.abs(after).max() < 1e-4 * np.abs(before).max()
    none = dataclasses.replace(fm, id_basis=(basis - np.outer(r, r @ basis)).reshape(fm.id_basis.shape).astype(np.float32))
    with pytest.raises(ValueError, match="no uniform scaling"):
        mean_size_projection(none)
