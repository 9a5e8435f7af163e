"""TensorRT engine build and parity: runs only where TensorRT imports and a GPU is present."""

from __future__ import annotations

import json

import pytest

from dfmvr.card import engine_card_path
from dfmvr.export.tensorrt_build import tensorrt_unavailable

pytestmark = [pytest.mark.tensorrt, pytest.mark.gpu]
_REASON = tensorrt_unavailable()


@pytest.mark.skipif(_REASON is not None, reason=f"no TensorRT engine can be built here: {_REASON}")
@pytest.mark.parametrize("fp16", [False, True])
def test_engine_build_parity_and_timing_cache(tmp_path, fp16):
    from dfmvr.card import ModelCard
    from dfmvr.export.pipeline import export_all

    cache = tmp_path / "timing.cache"
    summary = export_all("tiny", tmp_path, fp16=fp16, engine="model.plan", batch="1:2:4",
                         workspace_gb=1.0, timing_cache=cache, echo=lambda s: None)
    assert summary.engine_path == tmp_path / "model.plan" and summary.engine_path.stat().st_size > 0
    card = ModelCard.from_json(engine_card_path(summary.engine_path).read_text())
    assert card.variant == "tiny"
    assert cache.is_file() and cache.stat().st_size > 0
    doc = json.loads(summary.parity_path.read_text())
    (trt,) = [r for r in doc["reports"] if r["backend"] == "tensorrt"]
    assert trt["passed"] is True


def test_reason_is_given_when_unavailable():
    if _REASON is None:
        pytest.skip("TensorRT is available")
    assert "TensorRT" in _REASON or "GPU" in _REASON
