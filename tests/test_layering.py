"""One-way layering between dfmvr's rooms, checked on the source (nothing is imported).

    cli -> bench / export / train -> models / synth -> eval -> runtime / kernels -> face -> errors

Every ``import`` and ``from ... import`` in a room's modules (lazy ones inside functions included,
relative ones resolved) may reach only the rooms listed for it. ``card``, ``errors``, ``atomic`` and the
package root are shared by all. The torch-free side is checked by running it in
tests/test_no_torch_imports.py; this test keeps the torch rooms apart from each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "dfmvr"
SHARED = {"", "card", "errors", "atomic", "assets"}
TORCH_FREE = {"face", "kernels", "runtime", "eval"}

# room -> the rooms it may import (besides itself and SHARED)
MAY_IMPORT = {
    "face": set(),
    "kernels": {"face"},
    "runtime": {"face", "kernels"},
    "eval": {"face", "kernels", "runtime"},
    "synth": TORCH_FREE,
    "models": TORCH_FREE,
    "train": TORCH_FREE | {"models", "synth"},
    "export": TORCH_FREE | {"models", "synth"},
    "bench": TORCH_FREE | {"models", "synth", "export"},
    "cli": TORCH_FREE | {"models", "synth", "train", "export", "bench"},
}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path):
    module_parts = list(path.relative_to(REPO).with_suffix("").parts)
    package = module_parts if module_parts[-1] == "__init__" else module_parts[:-1]
    package = [p for p in package if p != "__init__"]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield node.lineno, target
            for alias in node.names:       # ``from dfmvr import synth`` reaches the room synth
                if target == "dfmvr":
                    yield node.lineno, f"dfmvr.{alias.name}"


def test_every_room_is_listed():
    rooms = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert rooms - set(MAY_IMPORT) - SHARED == set(), "add the new room to MAY_IMPORT"


@pytest.mark.parametrize("room", sorted(MAY_IMPORT))
def test_imports_point_down_only(room):
    allowed = MAY_IMPORT[room] | SHARED | {room}
    bad = []
    for path in sorted((PACKAGE / room).rglob("*.py")):
        for line, target in _imports(path):
            if target == "dfmvr" or target.startswith("dfmvr."):
                if target.startswith("dfmvr.") and _room(target) not in allowed and \
                        (PACKAGE / _room(target)).exists():
                    bad.append(f"{path.relative_to(REPO)}:{line} imports {target}")
    assert bad == [], "imports against the layering:\n" + "\n".join(bad)
