"""``dfmvr eval --refine N``: the refined prediction is scored with the same protocol, beside the
network's, and without torch ``--refine`` stops with exit 2 naming the extra."""

import json

import pytest

from dfmvr.runtime.artifacts import DEFAULT_ONNX
from tests.conftest import run_python

needs_default = pytest.mark.skipif(not DEFAULT_ONNX.is_file(), reason="no bundled model in dfmvr/assets/default/")


@needs_default
def test_eval_refine_writes_refined_numbers_beside_the_network(synth4, tmp_path):
    from dfmvr.cli import main

    out = tmp_path / "report.json"
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--onnx", "default", "--data", str(synth4), "--limit", "2", "--batch", "2",
              "--refine", "5", "--icp-iterations", "0", "--json", str(out), "--quiet"])
    assert exc.value.code == 0
    report = json.loads(out.read_text())
    assert report["num_triplets"] == 2
    for row in report["rows"]:
        assert set(row) >= {"model", "refined", "mean_face", "front_only"}
        assert row["refined"]["mean_mm"] != row["model"]["mean_mm"]
    assert set(report["refined"]) >= {"mean_mm", "median_mm", "rmse_mm"}
    r = report["refine"]
    assert r["loss_after_mean"] < r["loss_before_mean"] and r["seconds_per_triplet"] > 0
    assert 0.0 <= r["kept_initial_fraction"] < 1.0
    assert r["config"]["steps"] == 5
    assert set(report["refined_vs"]) == {"model", "mean_face"}
    assert "refined" in report["coefficient_r2"] and "refined" in report["pose"]


def test_eval_refine_without_torch_exits_2_naming_the_extra(synth4):
    code = f"""
    from dfmvr.cli import main
    main(["eval", "--onnx", "default", "--data", r"{synth4}", "--limit", "1", "--refine", "5", "--quiet"])
    """
    r = run_python(code, block_torch=True)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "--refine" in r.stderr and "pip install 'dfmvr[train]'" in r.stderr
