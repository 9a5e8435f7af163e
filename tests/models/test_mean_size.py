"""``dfmvr convert mean-size``: the projection folded into the identity head of a real checkpoint,
checked on the network's own forward pass."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from dfmvr.cli.convert import command  # noqa: E402
from dfmvr.face.layout import COEFFS  # noqa: E402
from dfmvr.face.model import MorphableModel  # noqa: E402
from dfmvr.face.size import identity_size_component, mean_size_projection  # noqa: E402
from dfmvr.models.checkpoint import load_checkpoint  # noqa: E402
from dfmvr.models.mean_size import MEAN_SIZE_KEY  # noqa: E402
from tests.conftest import run_cli  # noqa: E402


def _predict(path, images):
    model, _, _ = load_checkpoint(path, load_train_state=False)
    with torch.no_grad():
        return model(images)[0].double().numpy()


def test_the_folded_head_predicts_the_mean_size_and_nothing_else_moves(tmp_path, lite_checkpoint, synth4):
    out = tmp_path / "mean_size.safetensors"
    r = CliRunner().invoke(command, ["mean-size", str(lite_checkpoint), "--out", str(out),
                                     "--face-model", str(synth4 / "face_model.npz")])
    assert r.exit_code == 0, r.output
    torch.manual_seed(1)
    images = torch.rand(3, 3, 3, 224, 224) * 2 - 1
    before, after = _predict(lite_checkpoint, images), _predict(out, images)
    fm = MorphableModel.load(synth4 / "face_model.npz")
    ident = COEFFS.shared_slices()["identity"]
    size_before = identity_size_component(fm, before[:, ident])
    assert np.abs(size_before).min() > 0                                   # the random head has sizes to lose
    np.testing.assert_allclose(identity_size_component(fm, after[:, ident]), 0.0,
                               atol=1e-4 * np.abs(size_before).max())     # float32 network
    np.testing.assert_allclose(after[:, ident], before[:, ident] @ mean_size_projection(fm).matrix.T,
                               rtol=1e-4, atol=1e-5 * np.abs(before[:, ident]).max())
    rest = np.ones(before.shape[1], bool)
    rest[ident] = False
    np.testing.assert_allclose(after[:, rest], before[:, rest], rtol=1e-5, atol=1e-6)   # other heads: same weights
    _, card, _ = load_checkpoint(out, load_train_state=False)
    assert card.provenance[MEAN_SIZE_KEY]["by"] == "dfmvr convert mean-size"
    assert card.provenance[MEAN_SIZE_KEY]["scaling_in_identity_basis"] > 0.99
    again = tmp_path / "twice.safetensors"                                 # P² = P: a second fold changes nothing
    assert CliRunner().invoke(command, ["mean-size", str(out), "--out", str(again), "--face-model",
                                        str(synth4 / "face_model.npz")]).exit_code == 0
    np.testing.assert_allclose(_predict(again, images), after, rtol=1e-5, atol=1e-6 * np.abs(after).max())


def test_bad_input_exits_2_naming_the_file_and_writes_nothing(tmp_path, lite_checkpoint, capsys):
    from dfmvr.face.synthetic import synthetic_face_model

    out = tmp_path / "out.safetensors"
    code, err = run_cli(command, ["mean-size", tmp_path / "missing.safetensors", "--out", out], capsys)
    assert code == 2 and "missing.safetensors" in err and "not found" in err
    other = synthetic_face_model(seed=6, num_vertices=400).save(tmp_path / "other.npz")
    code, err = run_cli(command, ["mean-size", lite_checkpoint, "--out", out, "--face-model", other], capsys)
    assert code == 2 and "other.npz" in err
    code, err = run_cli(command, ["mean-size", lite_checkpoint, "--out", tmp_path / "out.pt"], capsys)
    assert code == 2 and ".safetensors" in err
    assert not out.exists() and not (tmp_path / "out.pt").exists()
