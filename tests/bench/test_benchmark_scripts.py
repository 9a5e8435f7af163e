"""The scripts under benchmarks/ start (``python -m benchmarks.<name> --help`` from the repository root),
share code through ``benchmarks._common`` instead of sys.path edits, and no benchmark script is shipped
inside the dfmvr package."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO

SCRIPTS = sorted(p.stem for p in (REPO / "benchmarks").glob("bench_*.py"))


def test_scripts_found():
    assert {"bench_network", "bench_int8", "bench_export_body", "bench_render_grid"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_benchmark_starts(name):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", "--help"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "usage:" in r.stdout


def test_no_sys_path_edits_and_no_benchmark_in_the_package():
    for path in (REPO / "benchmarks").glob("*.py"):
        assert "sys.path" not in path.read_text(), path
    assert not (REPO / "dfmvr" / "export" / "body_bench.py").exists()
    for path in (REPO / "dfmvr").rglob("*bench*.py"):      # dfmvr/bench/ serves `dfmvr bench` (click)
        assert "import argparse" not in path.read_text(), f"{path}: a benchmark script inside the package"


def test_export_body_alternatives_compute_the_involution():
    """The moved involution-body benchmark still builds graphs that compute the op (small shape)."""
    import onnxruntime as ort

    from benchmarks.bench_export_body import gather_reduce_model, unrolled_model
    from dfmvr.kernels.op import involution_output_size, involution_reference

    c, k, s, g, size = 8, 3, 2, 2, 9
    ho = involution_output_size(size, k, s)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, c, size, size), dtype=np.float32)
    w = rng.standard_normal((1, g * k * k, ho, ho), dtype=np.float32)
    want = involution_reference(x, w, k, s, g)
    for build in (gather_reduce_model, unrolled_model):
        sess = ort.InferenceSession(build(c, k, s, g, size).SerializeToString(), providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(sess.run(None, {"X": x, "W": w})[0], want, atol=1e-4)


@pytest.mark.slow
def test_int8_weights_benchmark_measures_both_formats(tmp_path):
    """bench_int8_weights on random-weight lite, one round: both formats quantized, measured against the
    fp32 graph on the gate's inputs and on more triplets, timed, and written to the JSON asked for."""
    import json

    from benchmarks import bench_int8_weights

    out = tmp_path / "formats.json"
    bench_int8_weights.main(["--checkpoint", "lite", "--accuracy-triplets", "2", "--iters", "1", "--warmup", "0",
                             "--json", str(out)])
    doc = json.loads(out.read_text())
    assert doc["variant"] == "lite" and set(doc["formats"]) == {"s8", "u8"}
    for name in ("s8", "u8"):
        acc = doc["accuracy_against_fp32"][name]
        gate, more = acc["gate (2 triplets, seed 0)"], acc["2 triplets, seed 5"]
        assert gate["triplets"] == more["triplets"] == 2 and 0 < gate["max_mm"] < 1.0
        assert gate["max_mm"] == max(gate["per_triplet_max_mm"])
        assert acc["fused_vs_simulated_mesh_max_mm"] < 0.5
    speed = doc["speed"]["batch_1"]
    assert speed["speedup_over_fp32"]["u8"] == pytest.approx(
        speed["median_ms"]["fp32"] / speed["median_ms"]["u8"], rel=0.01)


@pytest.mark.slow
def test_train_render_benchmark_times_the_three_arms(synth4, tmp_path):
    """bench_train_render on four synthetic triplets and a two-step parse net: the recipe's step, the same at
    half-size render and without the render, each timed on the same batches, the ratios those of the
    medians written. (Which arm is faster is the benchmark's finding, not asserted here.)"""
    import json

    from benchmarks import bench_train_render
    from dfmvr.train.parse_stage import ParseConfig, train_parse_net

    parse = train_parse_net(ParseConfig(data=str(synth4), out=str(tmp_path / "parse"), epochs=1, batch=2,
                                        max_steps_per_epoch=2, progress=False))
    out = tmp_path / "render.json"
    bench_train_render.main(["--data", str(synth4), "--parse-net", str(parse), "--batch", "2", "--steps", "2",
                             "--warmup", "0", "--threads", "1", "--out", str(out)])
    doc = json.loads(out.read_text())
    medians = doc["median_step_s"]
    assert list(medians) == list(bench_train_render.ARMS) and all(len(v) == 2 for v in doc["step_s"].values())
    full, half, bare = (medians[name] for name in bench_train_render.ARMS)
    assert doc["speedup_half_size_render"] == pytest.approx(full / half, rel=0.01)
    assert doc["speedup_without_render"] == pytest.approx(full / bare, rel=0.01)
