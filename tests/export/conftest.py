"""Fixtures for tests/export: one real export of the `tiny` variant, shared by the whole session."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """Run the full export (ONNX + parity + fp16) of `tiny` (random weights, seed 0) once.

    Returns a dict: summary (ExportSummary), out (folder), parity (the JSON report), lines (echoed text).
    """
    from dfmvr.export.pipeline import export_all

    out = tmp_path_factory.mktemp("tiny_export")
    lines: list[str] = []
    summary = export_all("tiny", out, fp16=True, echo=lines.append)
    return {"summary": summary, "out": out, "lines": lines,
            "parity": json.loads((out / "model.parity.json").read_text())}


@pytest.fixture(scope="session")
def tiny_torch():
    """The same seed-0 `tiny` model and card the export used."""
    from dfmvr.export.pipeline import load_for_export

    model, card, _ = load_for_export("tiny")
    return model, card
