"""Fixtures for tests/export: one real export of the `tiny` variant, shared by the whole session."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """Run the full export (ONNX + parity + fp16 + int8) of `tiny` (random weights, seed 0) once.

    Returns a dict: summary (ExportSummary), out (folder), parity (the JSON report), lines (echoed text),
    int8_calibration (triplets the int8 graph was calibrated on: 4, quick to render and run).
    """
    from dfmvr.export.pipeline import export_all

    out = tmp_path_factory.mktemp("tiny_export")
    lines: list[str] = []
    summary = export_all("tiny", out, fp16=True, int8=True, calibration=4, echo=lines.append)
    return {"summary": summary, "out": out, "lines": lines, "int8_calibration": 4,
            "parity": json.loads((out / "model.parity.json").read_text())}


@pytest.fixture(scope="session")
def tiny_torch():
    """The same seed-0 `tiny` model and card the export used."""
    from dfmvr.export.pipeline import load_for_export

    model, card, _ = load_for_export("tiny")
    return model, card
