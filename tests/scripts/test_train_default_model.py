"""scripts/train_default_model.sh: valid bash, and every option it passes is one its command accepts.

The recipe runs for two to three hours; a mistyped or retired flag would only surface when its step is
reached. Parsed with each command's own click parser (options only: no paths are opened, nothing runs).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess

import click
import pytest

from dfmvr.cli import load_command
from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "train_default_model.sh"
INVOCATION = re.compile(r"(dfmvr-train|dfmvr-export|dfmvr data synth|dfmvr eval|dfmvr convert half)\s+(.*)")


def _context(command: click.Command, name: str) -> click.Context:
    # With the command's own settings, as invoking it builds one: click caches the help option on the
    # command object from the first context it sees, and a bare context would leave every later test in
    # this process a command without -h.
    return click.Context(command, info_name=name, **command.context_settings)


def _command(prefix: str) -> click.Command:
    if prefix in ("dfmvr-train", "dfmvr-export", "dfmvr eval"):
        return load_command(prefix.removeprefix("dfmvr").strip(" -"))
    group_name, sub = prefix.split()[1:]
    group = load_command(group_name)
    return group.get_command(_context(group, group_name), sub)


def _statements(text: str) -> tuple[list[str], dict[str, list[str]]]:
    """The script's lines with comments dropped and continuations joined, and its bash arrays."""
    lines = [re.sub(r"(^|\s)#.*$", "", line) for line in text.splitlines()]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    arrays = {}
    for name, body in re.findall(r"(\w+)=\(([^)]*)\)", joined):
        arrays[name] = shlex.split(body)          # RESUME=() then RESUME=(--resume): the last one, a valid flag
    return joined.splitlines(), arrays


def _invocations(script):
    statements, arrays = _statements(script.read_text())
    found = []
    for statement in statements:
        match = INVOCATION.search(statement)
        if not match:
            continue
        tail = re.sub(r'"\$\{(\w+)\[@\]\}"', lambda m: " ".join(shlex.quote(t) for t in arrays[m.group(1)]),
                      match.group(2))
        found.append((match.group(1), shlex.split(tail.split(";")[0])))
    return found


def _refused(script) -> list[str]:
    """Each invocation whose options its command's parser refuses, with the parser's message."""
    refused = []
    for prefix, args in _invocations(script):
        command = _command(prefix)
        parser = command.make_parser(_context(command, prefix))
        try:
            parser.parse_args(args=list(args))
        except click.UsageError as exc:
            refused.append(f"{prefix} {' '.join(args)}: {exc}")
    return refused


def test_the_recipe_is_valid_bash():
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash on this machine")
    result = subprocess.run([bash, "-n", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_option_the_recipe_passes_is_accepted_by_its_command():
    # data x3, the parse stage, the main stage's four parts, the refit, convert, export, eval x2
    assert len(_invocations(SCRIPT)) >= 13
    assert _refused(SCRIPT) == []


def test_a_mistyped_option_in_the_recipe_is_caught(tmp_path):
    """The check can fail: the recipe with one flag misspelt is refused, at the step that has it."""
    typo = tmp_path / SCRIPT.name
    typo.write_text(SCRIPT.read_text().replace("--mask-weight", "--mask-wieght"))
    refused = _refused(typo)
    assert refused and all("--mask-wieght" in line and line.startswith("dfmvr-train") for line in refused)
