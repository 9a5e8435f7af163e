"""``dfmvr bench`` end to end on small real models, one iteration (timings are never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from dfmvr.card import ModelCard
from tests.conftest import REPO, run_python
from tests.runtime.conftest import build_stats_onnx

STAGES = ("decode_align", "normalise", "network", "assembly", "write")
STAT_KEYS = ("min_ms", "median_ms", "p90_ms", "p99_ms", "mean_ms", "throughput_per_s")


@pytest.fixture(scope="module")
def tiny_stats_onnx(tmp_path_factory):
    """The image-statistics graph of tests/runtime with a card of variant 'tiny' (so it pairs with
    ``--checkpoint tiny``): a real ONNX model honouring the graph contract that loads in milliseconds."""
    card = ModelCard(variant="tiny", architecture={"kind": "image statistics"})
    return build_stats_onnx(tmp_path_factory.mktemp("bench") / "stats.onnx", card)


def _check_row(row, batch):
    assert row["batch"] == batch
    for s in STAT_KEYS:
        assert row["end_to_end"][s] > 0
    assert row["end_to_end"]["iters"] == 1
    assert set(row["stages"]) == set(STAGES)
    for s in STAGES:
        assert row["stages"][s]["median_ms"] > 0, s
    # the stages are parts of the end-to-end wall time
    assert sum(row["stages"][s]["median_ms"] for s in STAGES) <= row["end_to_end"]["median_ms"] * 1.001
    assert row["end_to_end"]["throughput_per_s"] == pytest.approx(batch * 1000 / row["end_to_end"]["median_ms"])


class _StatsTorch:
    """The statistics graph of tests/runtime written in torch (an nn.Module built lazily)."""

    @staticmethod
    def build():
        import torch

        from tests.runtime.conftest import stats_weights

        w, bias = stats_weights(0)

        class Stats(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.register_buffer("w", torch.from_numpy(w))
                self.register_buffer("bias", torch.from_numpy(bias))

            def forward(self, images):
                feats = images.mean(dim=(3, 4)).flatten(1)
                return feats @ self.w + self.bias, (images[:, :, 0] > 0).to(torch.int64)

        return Stats()


def _check_report(report, backends, batches):
    assert report["format"] == "dfmvr-bench" and report["model"]["variant"] == "tiny"
    assert list(report["backends"]) == list(backends)
    assert "tensorrt" in report["unavailable"] and report["unavailable"]["tensorrt"]
    for name in backends:
        rows = report["backends"][name]["batches"]
        assert [r["batch"] for r in rows] == list(batches)
        for r, b in zip(rows, batches):
            _check_row(r, b)
            sp = r["speedup_vs_torch"]
            assert sp["network"] > 0 and sp["end_to_end"] > 0
            assert r["network_gflops"] > 0 and 0 < r["fraction_of_gemm"]
    torch_row = report["backends"]["torch"]["batches"][0]
    assert torch_row["speedup_vs_torch"]["network"] == pytest.approx(1.0)
    env = report["environment"]
    assert env["logical_cpus"] >= 1 and env["versions"]["onnxruntime"]


def test_bench_torch_and_onnxruntime_side_by_side(tiny_stats_onnx, tmp_path):
    """torch (eager module) and onnxruntime (the same maths as a graph) in one run, side by side."""
    from dfmvr.bench.backends import TorchEagerRunner
    from dfmvr.bench.e2e import Sources, run_bench
    from dfmvr.bench.report import markdown_report
    from dfmvr.runtime.artifacts import load_onnx_artifact

    artifact = load_onnx_artifact(tiny_stats_onnx)
    sources = Sources(card=artifact.card, artifact=artifact, torch_model=_StatsTorch.build(),
                      onnx_path=tiny_stats_onnx, description={"variant": "tiny", "onnx": str(tiny_stats_onnx)})
    report = run_bench(sources, backends=("torch", "onnxruntime", "tensorrt"), batches=(1, 2), iters=1, warmup=0,
                       formats=("obj", "json"), gemm_size=128)
    report = json.loads(json.dumps(report))          # JSON-serialisable as it is
    _check_report(report, ("torch", "onnxruntime"), (1, 2))
    # parity against torch eager on the bench's own inputs: the same maths, so ~0 mm
    assert report["parity_reference"]["backend"] == "torch"
    for name in ("torch", "onnxruntime"):
        for r in report["backends"][name]["batches"]:
            assert r["parity"]["mesh_max_mm"] < 1e-3 and r["parity"]["labels_agreement"] == 1.0, (name, r["parity"])
    # FLOPs counted from the graph: the statistics model's only counted op is a [1, 9] x [9, 269] MatMul
    assert report["flops"]["by_op"] == {"MatMul": 2 * 9 * 269}
    ort_row = report["backends"]["onnxruntime"]["batches"][1]
    expect = 2 * 9 * 269 * 2 / (ort_row["stages"]["network"]["median_ms"] * 1e-3) / 1e9
    assert ort_row["network_gflops"] == pytest.approx(expect)
    gemm = report["gemm"]
    assert gemm["n"] == 128 and gemm["onnxruntime_gflops"] > 0 and gemm["numpy_gflops"] > 0
    assert gemm["best_gflops"] == max(gemm["onnxruntime_peak_gflops"], gemm["numpy_peak_gflops"])
    assert gemm["best_gflops"] >= max(gemm["onnxruntime_gflops"], gemm["numpy_gflops"])
    assert ort_row["fraction_of_gemm"] == pytest.approx(expect / gemm["best_gflops"])
    # both backends computed the same coefficients (the torch runner answers like the graph)
    images = np.random.default_rng(0).uniform(-1, 1, (2, 3, 3, 224, 224)).astype(np.float32)
    with TorchEagerRunner(sources.torch_model) as t:
        got = t.infer({"images": images})
    from dfmvr.runtime.runners import OnnxrtRunner
    with OnnxrtRunner(tiny_stats_onnx) as o:
        want = o.infer({"images": images})
    np.testing.assert_allclose(got["coefficients"], want["coefficients"], rtol=1e-4, atol=1e-5)
    assert got["labels"].dtype == np.uint8 and np.array_equal(got["labels"], want["labels"])
    md = markdown_report(report)
    assert "| torch | 1 |" in md and "| onnxruntime | 2 |" in md and "**tensorrt**: not measured" in md
    assert "x torch (net)" in md and "GEMM rate" in md and "mesh max mm vs torch" in md


@pytest.mark.slow
def test_bench_cli_on_the_real_tiny_export(tmp_path, monkeypatch):
    """The command as users run it: --checkpoint tiny (random weights) exported on the fly, into a temporary
    folder that goes with the run (each run left 14 MB of graphs in /tmp)."""
    import tempfile

    from dfmvr.cli.bench import command

    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    out_json, out_md = tmp_path / "r.json", tmp_path / "r.md"
    command.main(["--checkpoint", "tiny", "--backends", "torch,onnxruntime,tensorrt", "--batch", "1", "--iters", "1",
                  "--warmup", "0", "--format", "obj,json", "--json", str(out_json), "--markdown", str(out_md),
                  "--quiet"], standalone_mode=False)
    assert [p.name for p in (tmp_path / "tmp").iterdir() if p.name.startswith("dfmvr")] == []
    report = json.loads(out_json.read_text())
    _check_report(report, ("torch", "onnxruntime"), (1,))
    assert report["flops"]["by_op"]["Involution"] > 0 and report["flops"]["by_op"]["Conv"] > 1e9
    assert "| onnxruntime | 1 |" in out_md.read_text()


def test_bench_onnxruntime_without_torch(tiny_stats_onnx, tmp_path):
    """The onnxruntime backend runs with torch blocked; torch is listed as unavailable with a reason."""
    out_json = tmp_path / "r.json"
    res = run_python(f"""
        import sys
        from dfmvr.cli.bench import command
        command.main(["--onnx", r"{tiny_stats_onnx}", "--backends", "onnxruntime,torch", "--batch", "1,3,1",
                      "--iters", "1", "--warmup", "0", "--no-gemm", "--format", "json",
                      "--json", r"{out_json}", "-q"], standalone_mode=False)
        assert "torch" not in sys.modules
        print("OK")
    """, block_torch=True, cwd=REPO)
    assert res.returncode == 0, res.stderr
    report = json.loads(out_json.read_text())
    assert list(report["backends"]) == ["onnxruntime"]
    rows = report["backends"]["onnxruntime"]["batches"]
    assert [r["batch"] for r in rows] == [1, 3]
    for r, b in zip(rows, (1, 3)):
        _check_row(r, b)
    assert "torch" in report["unavailable"]["torch"]     # blocked here: reported as not installed
    assert "gemm" not in report and "speedup_vs_torch" not in report["backends"]["onnxruntime"]["batches"][0]


def test_bench_bad_input_exit_codes(tiny_stats_onnx, tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-c", "from dfmvr.cli import bench_entry; bench_entry()", *args],
                              capture_output=True, text=True, cwd=REPO, timeout=120)

    r = run("--onnx", str(tmp_path / "missing.onnx"), "--backends", "onnxruntime")
    assert r.returncode == 2 and "not found" in r.stderr
    r = run("--onnx", str(tiny_stats_onnx), "--backends", "onnxruntime,cuda")
    assert r.returncode == 2 and "unknown backend" in r.stderr
    r = run("--onnx", str(tiny_stats_onnx), "--batch", "0")
    assert r.returncode == 2
    fast = ("--iters", "1", "--warmup", "0", "--no-gemm", "--format", "json", "--batch", "1", "-q")
    r = run("--onnx", str(tiny_stats_onnx), *fast, "--json", str(tmp_path / "r"), "--markdown", str(tmp_path / "r"))
    assert r.returncode == 2 and "same file" in r.stderr and not (tmp_path / "r").exists()     # the table ate the JSON
    r = run("--onnx", str(tiny_stats_onnx), "--int8-onnx", str(tiny_stats_onnx), "--backends", "onnxruntime-int8", *fast)
    assert r.returncode == 2 and "is not an int8 graph" in r.stderr        # an fp32 graph timed as "int8 QDQ"
    r = run("--onnx", str(tiny_stats_onnx), "--backends", "tensorrt", *fast)
    assert r.returncode == 3 and "none of the backends asked for can run here" in r.stderr and "tensorrt:" in r.stderr
    r = run("--onnx", str(tiny_stats_onnx), "--backends", "onnxruntime", *fast, "--markdown", "/proc/dfmvr-bench.md")
    assert r.returncode == 2 and "/proc/dfmvr-bench.md" in r.stderr and "Traceback" not in r.stderr


def test_markdown_report_lists_every_backend_row():
    from dfmvr.bench.e2e import derive
    from dfmvr.bench.report import markdown_report
    from dfmvr.bench.stats import summarize

    def row(b, net):
        stages = {s: summarize([1.0], b) for s in STAGES}
        stages["network"] = summarize([net], b)
        return {"batch": b, "end_to_end": summarize([net + 5.0], b), "stages": stages}

    report = {"model": {"variant": "x", "onnx": "m.onnx"}, "face_model": {"name": "f", "num_vertices": 3},
              "settings": {"iters": 1, "warmup": 0, "formats": ["json"], "inputs": "synthetic"},
              "environment": {"cpu": "c", "logical_cpus": 2, "threads": None, "gpu": None, "versions": {}},
              "backends": {"torch": {"batches": [row(1, 40.0)]}, "onnxruntime": {"batches": [row(1, 10.0)]}},
              "unavailable": {"tensorrt": "no GPU"}, "flops": {"total": 2e9, "by_op": {"Conv": 2e9}},
              "gemm": {"n": 8, "onnxruntime_gflops": 400.0, "numpy_gflops": 100.0, "best_gflops": 400.0}}
    derive(report)
    ort = report["backends"]["onnxruntime"]["batches"][0]
    assert ort["speedup_vs_torch"]["network"] == pytest.approx(4.0)
    assert ort["speedup_vs_torch"]["end_to_end"] == pytest.approx(45.0 / 15.0)
    assert ort["network_gflops"] == pytest.approx(200.0) and ort["fraction_of_gemm"] == pytest.approx(0.5)
    md = markdown_report(report)
    line = next(ln for ln in md.splitlines() if ln.startswith("| onnxruntime | 1 |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[7:9] == ["3.00", "4.00"] and cells[-2:] == ["200.0", "50.0"]
    assert np.isclose(float(cells[3]), 15.0)


# --- engine peers: torch-compile, onnxruntime-int8, openvino, and parity in mesh mm ---------------------


def test_bench_peers_with_parity(tiny_stats_onnx, tmp_path):
    """openvino and onnxruntime-int8 next to torch and onnxruntime, each row with its parity against torch
    eager in mesh mm. The int8 backend picks up the ``.int8.onnx`` folder-mate of --onnx (here the fp32
    statistics graph under a card that records a quantization: this checks the wiring, not quantization --
    the slow test below runs a real int8 graph)."""
    pytest.importorskip("openvino")
    pytest.importorskip("onnx")
    import shutil

    from dfmvr.bench.e2e import resolve_sources, run_bench
    from dfmvr.bench.report import markdown_report

    onnx = tmp_path / "model.onnx"
    shutil.copy(tiny_stats_onnx, onnx)
    build_stats_onnx(tmp_path / "model.int8.onnx", ModelCard(variant="tiny", architecture={"kind": "image statistics"},
                                                             provenance={"quantization": {"stand-in": "fp32"}}))
    sources = resolve_sources(onnx=onnx, backends=("onnxruntime", "onnxruntime-int8", "openvino"))
    assert sources.int8_path == tmp_path / "model.int8.onnx"
    sources.torch_model = _StatsTorch.build()
    backends = ("torch", "onnxruntime", "onnxruntime-int8", "openvino", "tensorrt")
    report = json.loads(json.dumps(run_bench(sources, backends=backends, batches=(1, 2), iters=1, warmup=0,
                                             threads=1, formats=("json",), gemm=False)))
    assert list(report["backends"]) == ["torch", "onnxruntime", "onnxruntime-int8", "openvino"]
    assert report["parity_reference"]["backend"] == "torch" and report["parity_reference"]["measured_in_this_run"]
    for name, entry in report["backends"].items():
        assert entry["description"] and entry["activate_s"] >= 0
        for r, b in zip(entry["batches"], (1, 2)):
            _check_row(r, b)
            par = r["parity"]
            assert par["mesh_max_mm"] < 1e-3 and par["mesh_mean_mm"] <= par["mesh_max_mm"], (name, par)
            assert par["labels_agreement"] == 1.0 and par["coefficients_max_abs"] < 1e-4, (name, par)
    assert report["backends"]["openvino"]["inlined_local_functions"] is False     # no functions in this graph
    assert report["backends"]["onnxruntime-int8"]["model"] == str(tmp_path / "model.int8.onnx")
    md = markdown_report(report)
    line = next(ln for ln in md.splitlines() if ln.startswith("| openvino | 2 |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert float(cells[9]) < 1e-3 and float(cells[11]) == 1.0            # mesh max mm, labels agree
    assert "- openvino: OpenVINO CPU plugin" in md and "inlined" in md


def test_unavailable_peers_are_reported_with_their_reason(tiny_stats_onnx, tmp_path):
    """With torch blocked and no int8 graph: torch-compile and onnxruntime-int8 are listed with their
    reasons; openvino runs torch-free; parity falls back to ONNX Runtime fp32 and says so."""
    pytest.importorskip("openvino")
    pytest.importorskip("onnx")
    out_json = tmp_path / "r.json"
    res = run_python(f"""
        import sys
        from dfmvr.cli.bench import command
        command.main(["--onnx", r"{tiny_stats_onnx}",
                      "--backends", "torch-compile,onnxruntime,onnxruntime-int8,openvino",
                      "--batch", "1", "--iters", "1", "--warmup", "0", "--no-gemm", "--format", "json",
                      "--threads", "1",
                      "--json", r"{out_json}", "-q"], standalone_mode=False)
        assert "torch" not in sys.modules
        print("OK")
    """, block_torch=True, cwd=REPO)
    assert res.returncode == 0 and "OK" in res.stdout, res.stderr[-3000:]
    report = json.loads(out_json.read_text())
    assert list(report["backends"]) == ["onnxruntime", "openvino"]
    un = report["unavailable"]
    assert set(un) == {"torch-compile", "onnxruntime-int8"}
    assert "torch is not installed" in un["torch-compile"]
    assert "no int8 graph" in un["onnxruntime-int8"] and "--int8-onnx" in un["onnxruntime-int8"]
    assert report["parity_reference"]["backend"] == "onnxruntime"
    assert report["backends"]["openvino"]["batches"][0]["parity"]["mesh_max_mm"] < 1e-3


def test_a_failed_torch_compile_is_reported_not_raised(tiny_stats_onnx, one_torch_thread):
    """A model torch.compile cannot run: the backend is unavailable with the reason, the others run."""
    import torch

    from dfmvr.bench.e2e import Sources, run_bench
    from dfmvr.runtime.artifacts import load_onnx_artifact

    class Broken(torch.nn.Module):
        def forward(self, images):
            raise RuntimeError("this model cannot be compiled")

    artifact = load_onnx_artifact(tiny_stats_onnx)
    sources = Sources(card=artifact.card, artifact=artifact, torch_model=Broken(), onnx_path=tiny_stats_onnx,
                      description={"variant": "tiny"})
    report = run_bench(sources, backends=("torch-compile", "onnxruntime"), batches=(1,), iters=1, warmup=0,
                       threads=1, formats=("json",), gemm=False)
    assert list(report["backends"]) == ["onnxruntime"]
    reason = report["unavailable"]["torch-compile"]
    assert reason.startswith("torch.compile failed") and "cannot be compiled" in reason
    # torch eager, the first choice of reference, fails the same way: parity falls back to ONNX Runtime fp32
    assert report["parity_reference"]["backend"] == "onnxruntime"


@pytest.mark.slow
def test_bench_cli_engine_peers_on_the_real_tiny_export(tmp_path):
    """The issue's command on the real tiny variant (random weights, exported and int8-quantized on the
    fly): every peer runs and has parity numbers against torch eager. Slow: Inductor compiles the net
    (minutes on a busy 2-core machine with a cold cache)."""
    pytest.importorskip("openvino")
    from dfmvr.cli.bench import command

    out_json = tmp_path / "r.json"
    command.main(["--checkpoint", "tiny", "--backends", "onnxruntime,openvino,torch-compile,onnxruntime-int8",
                  "--batch", "1", "--iters", "1", "--warmup", "0", "--no-gemm", "--threads", "1", "--format", "json",
                  "--json", str(out_json), "--quiet"], standalone_mode=False)
    report = json.loads(out_json.read_text())
    assert report["unavailable"] == {}, report["unavailable"]
    assert list(report["backends"]) == ["onnxruntime", "openvino", "torch-compile", "onnxruntime-int8"]
    assert report["parity_reference"] == {"backend": "torch", "description": report["parity_reference"]["description"],
                                          "measured_in_this_run": False}
    tc = report["backends"]["torch-compile"]
    assert tc["compile_total_s"] > 0 and set(tc["compile_s"]) == {"1"}
    assert report["backends"]["openvino"]["inlined_local_functions"] is True
    for name, entry in report["backends"].items():
        par = entry["batches"][0]["parity"]
        assert "error" not in par, (name, par)
        limit = 1.0 if name == "onnxruntime-int8" else 0.05            # mm: int8 gate / fp32 runtimes
        assert par["mesh_max_mm"] < limit, (name, par)
        assert par["labels_agreement"] >= (0.95 if name == "onnxruntime-int8" else 0.99), (name, par)


@pytest.mark.slow      # torch.compile's first compile (~10 s)
def test_torch_compile_compiles_before_timing_with_parity(tiny_stats_onnx, one_torch_thread):
    """torch-compile on the statistics module: compiled on activation for every batch size (times
    reported apart), then timed like the others, with ~0 mm parity against torch eager."""
    from dfmvr.bench.e2e import Sources, run_bench
    from dfmvr.runtime.artifacts import load_onnx_artifact

    artifact = load_onnx_artifact(tiny_stats_onnx)
    sources = Sources(card=artifact.card, artifact=artifact, torch_model=_StatsTorch.build(),
                      onnx_path=tiny_stats_onnx, description={"variant": "tiny"})
    report = run_bench(sources, backends=("torch", "torch-compile"), batches=(1, 2), iters=1, warmup=0, threads=1,
                       formats=("json",), gemm=False)
    assert report["unavailable"] == {}, report["unavailable"]
    entry = report["backends"]["torch-compile"]
    assert entry["runner"] == "TorchCompileRunner" and set(entry["compile_s"]) == {"1", "2"}
    assert entry["compile_total_s"] == pytest.approx(sum(entry["compile_s"].values()), abs=0.02)
    assert entry["activate_s"] >= entry["compile_total_s"] - 0.02
    for r, b in zip(entry["batches"], (1, 2)):
        _check_row(r, b)
        assert r["parity"]["mesh_max_mm"] < 1e-3 and r["parity"]["labels_agreement"] == 1.0
    from dfmvr.bench.report import markdown_report

    assert "- torch-compile: torch.compile" in markdown_report(report)
    assert "compiled in" in markdown_report(report)


def test_bench_checks_the_bundled_graphs_keypoints_against_torch(tmp_path):
    """`--onnx default` is the bundled graph (as its help says); torch runs what the graph computes, its keypoints
    included, and each backend's parity row gives the keypoints' distance in pixels."""
    pytest.importorskip("torch")
    from dfmvr.cli import main

    out = tmp_path / "bench.json"
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--checkpoint", "default", "--onnx", "default", "--backends", "torch,onnxruntime",
              "--batch-sizes", "1", "--iters", "1", "--warmup", "0", "--gemm-size", "64", "--json", str(out)])
    assert exc.value.code == 0
    report = json.loads(out.read_text())
    torch_parity = report["backends"]["torch"]["batches"][0]["parity"]
    ort_parity = report["backends"]["onnxruntime"]["batches"][0]["parity"]
    assert torch_parity["keypoints_max_px"] < 1e-4                   # the reference itself
    assert 0.0 <= ort_parity["keypoints_max_px"] < 0.01 and ort_parity["mesh_max_mm"] < 0.01
    from dfmvr.bench.report import markdown_report

    md = markdown_report(report)
    header = next(ln for ln in md.splitlines() if ln.startswith("| backend |"))
    column = [c.strip() for c in header.strip("|").split("|")].index("keypoints max px")
    line = next(ln for ln in md.splitlines() if ln.startswith("| onnxruntime | 1 |"))
    assert float([c.strip() for c in line.strip("|").split("|")][column]) == pytest.approx(
        ort_parity["keypoints_max_px"], abs=1e-4)
