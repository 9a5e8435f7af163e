"""scripts/loss_truth_probe.py runs and records the terms at the truth, id0 and the mean face."""

from __future__ import annotations

import json

import pytest

from tests.conftest import REPO, run_python


@pytest.mark.slow      # a research script's end-to-end run (~4 s)
def test_probe_on_two_clean_triplets(tmp_path):
    out = tmp_path / "probe.json"
    r = run_python(f"""
        import sys, torch
        torch.set_num_threads(1)
        sys.argv = ["probe", "--triplets", "2", "--seed", "23", "--clean", "--json", {str(out)!r}]
        sys.path.insert(0, {str(REPO / "scripts")!r})
        import loss_truth_probe
        loss_truth_probe.main()
        """)
    assert r.returncode == 0, r.stderr
    rec = json.loads(out.read_text())
    for row in rec["rows"]:
        assert row["truth"]["prdl"] < 1e-3 < row["id0"]["prdl"]
        assert abs(row["truth"]["photo"] - row["photo_rounding"]) < 1e-5
        assert row["id0"]["grad_ratio_lm2d_lm3d"] > 100
    assert "PRDL lower at the truth than at id0 on 2/2 triplets" in r.stdout
