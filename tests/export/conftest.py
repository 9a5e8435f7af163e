"""Fixtures for tests/export: real exports of the `tiny` variant, shared by the whole session.

fp32 + fp16 and int8 are separate exports on purpose: int8 parity depends on the CPU's int8 kernels
and the ONNX Runtime version, so an int8 gate failure must fail the int8 tests and nothing else.
"""

from __future__ import annotations

import json

import pytest


def _export(tmp_path_factory, name: str, **options) -> dict:
    from dfmvr.export.pipeline import export_all

    out = tmp_path_factory.mktemp(name)
    lines: list[str] = []
    summary = export_all("tiny", out, echo=lines.append, **options)
    return {"summary": summary, "out": out, "lines": lines,
            "parity": json.loads((out / "model.parity.json").read_text())}


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """The export (ONNX + parity + fp16) of `tiny` (random weights, seed 0), run once.

    Returns a dict: summary (ExportSummary), out (folder), parity (the JSON report), lines (echoed text).
    """
    return _export(tmp_path_factory, "tiny_export", fp16=True)


@pytest.fixture(scope="session")
def tiny_int8_export(tmp_path_factory):
    """The same export with the int8 graph instead of fp16; int8_calibration: the triplets it was
    calibrated on (4, quick to render and run)."""
    return {**_export(tmp_path_factory, "tiny_int8_export", int8=True, calibration=4), "int8_calibration": 4}


@pytest.fixture(scope="session")
def lite_fp32_graph(tmp_path_factory):
    """(fp32 ONNX graph, card) of random-weight `lite` (seed 0), exported once (~10 s)."""
    import onnx

    from dfmvr.export.onnx_export import export_onnx
    from dfmvr.export.pipeline import load_for_export

    model, card, _ = load_for_export("lite")
    path = tmp_path_factory.mktemp("lite_fp32") / "model.onnx"
    export_onnx(model, path, card)
    return onnx.load(str(path)), card


@pytest.fixture(scope="session")
def tiny_torch():
    """The same seed-0 `tiny` model and card the export used."""
    from dfmvr.export.pipeline import load_for_export

    model, card, _ = load_for_export("tiny")
    return model, card
