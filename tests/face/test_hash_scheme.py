"""Face-model content hashes that do not depend on the machine (scheme 2), and identities stamped
before it (scheme 1: raw bytes, so BLAS-dependent signed zeros leaked in) that still match."""

from __future__ import annotations

import json
import platform
import sys

import numpy as np
import pytest

from dfmvr.card import ModelCard
from dfmvr.errors import InputError
from dfmvr.face.model import HASH_SCHEME, LEGACY_HASH_ALIASES, MorphableModel, identity_matches
from dfmvr.face.synthetic import default_face_model, synthetic_face_model
from tests.conftest import REPO, run_python


@pytest.fixture(scope="module")
def small():
    return synthetic_face_model(seed=1, num_vertices=400)


def _with_negative_zeros(model: MorphableModel) -> MorphableModel:
    fields = {k: getattr(model, k).copy() for k in model.array_names()}
    basis = fields["exp_basis"]
    zeros = basis == 0
    assert zeros.any(), "the test needs exact zeros to flip"
    basis[zeros] = -0.0
    return MorphableModel(**fields, name=model.name)


def test_signed_zeros_do_not_change_the_hash_but_values_do(small):
    flipped = _with_negative_zeros(small)
    assert np.signbit(flipped.exp_basis[flipped.exp_basis == 0]).all()
    assert flipped.content_hash() == small.content_hash()
    assert flipped.legacy_hash() != small.legacy_hash()          # what broke scheme 1
    fields = {k: getattr(small, k).copy() for k in small.array_names()}
    fields["exp_basis"][0, 0, 0] = np.nextafter(fields["exp_basis"][0, 0, 0], np.float32(1))
    assert MorphableModel(**fields).content_hash() != small.content_hash()


def test_generated_arrays_hold_no_negative_zeros(small):
    for key in ("mean_shape", "id_basis", "exp_basis", "mean_albedo", "albedo_basis"):
        arr = getattr(small, key)
        assert not np.signbit(arr[arr == 0]).any(), key


def _coretypes() -> list[str]:
    """Two OpenBLAS kernels that run on this CPU and differ in how they round (Sandybridge's gave
    other signed zeros than Haswell/Zen/Prescott's in scheme 1)."""
    if platform.machine() in ("x86_64", "AMD64"):
        flags = open("/proc/cpuinfo").read() if sys.platform.startswith("linux") else ""
        return ["Prescott", "Sandybridge"] if " avx " in flags else ["Prescott", "Core2"]
    if platform.machine() in ("aarch64", "arm64"):
        return ["ARMV8", "NEOVERSEN1"]
    pytest.skip(f"no known pair of OpenBLAS core types for {platform.machine()}")


def test_default_model_is_the_same_under_different_blas_kernels(monkeypatch):
    """Regenerate the default synthetic model in fresh interpreters under two OpenBLAS kernels: equal
    arrays, equal hashes, and equal to the bundled face model."""
    code = """
        from dfmvr.face.synthetic import default_face_model
        m = default_face_model()
        print(m.content_hash(), m.legacy_hash())
    """
    hashes = {}
    for coretype in _coretypes():
        monkeypatch.setenv("OPENBLAS_CORETYPE", coretype)
        result = run_python(code)
        assert result.returncode == 0, result.stderr
        hashes[coretype] = result.stdout.split()
    assert len({h[0] for h in hashes.values()}) == 1, hashes
    assert len({h[1] for h in hashes.values()}) == 1, hashes      # the arrays themselves, bit for bit
    bundled = MorphableModel.load(REPO / "dfmvr" / "assets" / "default" / "face_model.npz")
    assert next(iter(hashes.values()))[0] == bundled.content_hash() == default_face_model().content_hash()


def test_identity_records_the_scheme_and_files_say_it(tmp_path, small):
    ident = small.identity()
    assert ident["hash_scheme"] == HASH_SCHEME == 2 and ident["hash"] == small.content_hash()
    path = small.save(tmp_path / "fm.npz")
    with np.load(path) as z:
        meta = json.loads(str(z["meta"]))
    assert meta["hash_scheme"] == 2 and meta["hash"] == small.content_hash()


def _legacy_file(model: MorphableModel, path) -> None:
    """A face model .npz as scheme 1 wrote it: raw-byte hash, no hash_scheme key."""
    model.save(path)
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    meta = json.loads(str(data["meta"]))
    meta.pop("hash_scheme")
    meta["hash"] = model.legacy_hash()
    data["meta"] = np.array(json.dumps(meta))
    np.savez(path, **data)


def test_a_file_stamped_with_scheme_1_still_loads(tmp_path, small):
    flipped = _with_negative_zeros(small)
    _legacy_file(flipped, tmp_path / "old.npz")
    loaded = MorphableModel.load(tmp_path / "old.npz")
    assert loaded.content_hash() == small.content_hash()


def test_a_corrupt_file_stamped_with_scheme_1_is_still_refused(tmp_path, small):
    _legacy_file(small, tmp_path / "old.npz")
    with np.load(tmp_path / "old.npz") as z:
        data = {k: z[k] for k in z.files}
    data["mean_albedo"] = data["mean_albedo"] * 0.5
    np.savez(tmp_path / "old.npz", **data)
    with pytest.raises(InputError, match="hash"):
        MorphableModel.load(tmp_path / "old.npz")


def test_cards_stamped_with_scheme_1_match_equal_content_through_the_aliases():
    model = default_face_model()
    for legacy in LEGACY_HASH_ALIASES:              # both machines' scheme-1 hashes of the default model
        card = ModelCard(variant="tiny", architecture={}, face_model={"name": "synthetic-seed0", "hash": legacy,
                                                     "num_vertices": model.num_vertices})
        card.check_face_model(model)                # does not raise
    assert set(LEGACY_HASH_ALIASES.values()) == {model.content_hash()}


def test_cards_refuse_other_content_in_either_scheme(small):
    model = default_face_model()
    for stamp in ({"hash": small.content_hash(), "hash_scheme": 2}, {"hash": small.legacy_hash()},
                  {"hash": "ffee2bbec947a49d"}):
        card = ModelCard(variant="tiny", architecture={}, face_model={"name": "x", **stamp})
        target = model if stamp["hash"] != "ffee2bbec947a49d" else small
        with pytest.raises(InputError, match="does not match"):
            card.check_face_model(target)
    assert identity_matches({"hash": small.legacy_hash()}, small)   # scheme 1 on the machine that wrote it
