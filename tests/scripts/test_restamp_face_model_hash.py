"""scripts/restamp_face_model_hash.py: scheme-1 stamps become scheme-2 stamps; another model's stamp is left alone."""

from __future__ import annotations

import json

import pytest

from dfmvr.face.model import HASH_SCHEME, MorphableModel
from dfmvr.face.synthetic import synthetic_face_model
from tests.conftest import REPO, run_python

SCRIPT = REPO / "scripts" / "restamp_face_model_hash.py"


@pytest.fixture(scope="module")
def small():
    return synthetic_face_model(seed=1, num_vertices=400)


def _run(*args):
    return run_python(f"import sys, runpy; sys.argv = {[str(SCRIPT), *map(str, args)]!r}; "
                      f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')")


def test_json_identity_is_restamped_with_the_current_scheme(tmp_path, small):
    fm = small.save(tmp_path / "fm.npz")
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"face_model": {"name": small.name, "hash": small.legacy_hash()}, "seed": 3}))
    result = _run("--face-model", fm, meta)
    assert result.returncode == 0, result.stderr
    doc = json.loads(meta.read_text())
    assert doc["face_model"]["hash"] == small.content_hash() and doc["face_model"]["hash_scheme"] == HASH_SCHEME
    assert doc["seed"] == 3 and MorphableModel.load(fm).content_hash() == small.content_hash()


def test_a_stamp_of_another_model_is_left_alone(tmp_path, small):
    fm = small.save(tmp_path / "fm.npz")
    meta = tmp_path / "meta.json"
    text = json.dumps({"face_model": {"name": "other", "hash": "0123456789abcdef"}})
    meta.write_text(text)
    result = _run("--face-model", fm, meta)
    assert result.returncode != 0 and "is not" in result.stderr
    assert meta.read_text() == text
