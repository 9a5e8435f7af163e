"""Slow exports: the paper network from official-format weights, and --engine demanded without TensorRT."""

from __future__ import annotations

import json

import onnx
import pytest

from dfmvr.cli.export import command
from tests.conftest import run_cli
from dfmvr.export.involution_onnx import involution_nodes
from dfmvr.export.onnx_export import read_card
from dfmvr.export.tensorrt_build import tensorrt_unavailable

pytestmark = pytest.mark.slow


def _run(args, capsys) -> tuple[int, str]:
    return run_cli(command, args, capsys, prog_name="dfmvr-export")


def test_engine_demanded_without_tensorrt_exits_3_after_writing_the_onnx(tmp_path, capsys):
    if tensorrt_unavailable() is None:
        pytest.skip("TensorRT works here: an engine would be built")
    code, text = _run(["tiny", "--out", tmp_path, "--engine", "model.plan"], capsys)
    assert code == 3
    assert "model.plan" in text and "TensorRT" in text
    assert (tmp_path / "model.onnx").is_file() and (tmp_path / "model.parity.json").is_file()
    assert not (tmp_path / "model.plan").exists()


def test_paper_export_from_official_format_weights(tmp_path, capsys):
    """Random `paper` weights saved the way the authors' checkpoint is (DDP `module.` keys in a
    `state_dict` wrapper) -> converted on the fly -> exported -> parity against torch."""
    import torch

    from dfmvr.models.variants import build_model

    torch.manual_seed(1)
    model = build_model("paper")
    weights = tmp_path / "000000279.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, weights)
    del model
    out = tmp_path / "out"
    code, text = _run([weights, "--out", out, "--parity-batch", "1"], capsys)
    assert code == 0, text
    graph = onnx.load(str(out / "model.onnx"), load_external_data=False)
    assert len(involution_nodes(graph)) == 17          # RedNet-50: stem + 3 + 4 + 6 + 3 blocks
    card = read_card(graph)
    assert card.variant == "paper" and card.camera["distance"] == 1.0     # the official camera
    doc = json.loads((out / "model.parity.json").read_text())
    (fp32,) = [r for r in doc["reports"] if r["backend"] == "onnxruntime-cpu"]
    assert fp32["passed"] and fp32["coefficients_max_abs"] <= 1e-4 and fp32["mesh_max_mm"] < 0.01
