"""The README's quick start says where its output goes, and it goes there; the findings live in docs/."""

from __future__ import annotations

import re
import shlex

from dfmvr.runtime.inputs import discover_triplets

from tests.conftest import REPO


def _readme() -> str:
    return (REPO / "README.md").read_text()


def test_the_quick_start_names_the_folder_it_writes():
    text = _readme()
    block = re.search(r"<!-- run-command -->\s*```bash\n(.*?)\n```", text, re.S).group(1)
    run = shlex.split(block.split("&&")[-1])
    assert run[0] == "dfmvr-run"
    inputs, out = run[1], run[run.index("--out") + 1]
    triplets, problems = discover_triplets([REPO / inputs])
    assert len(triplets) == 1 and not problems
    where = f"{out}/{triplets[0].name}/"              # every triplet gets OUT/<name>/, a single one too
    assert f"It writes `{where}`" in " ".join(text.split())


def test_the_findings_moved_to_docs():
    text = _readme()
    assert "docs/findings.md" in text and (REPO / "docs" / "findings.md").is_file()
    assert "Batch statistics starve an involution network" not in text
    assert "Batch statistics starve an involution network" in (REPO / "docs" / "findings.md").read_text()
