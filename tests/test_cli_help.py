"""Every command answers -h and --help, whether run through ``dfmvr`` or as its own entry point."""

from __future__ import annotations

import pytest

from dfmvr.cli import SUBCOMMANDS, _entry, invoke, load_command


@pytest.mark.parametrize("flag", ["-h", "--help"])
@pytest.mark.parametrize("name", ["train", "export", "run", "bench"])
def test_entry_points_answer_help(name, flag, capsys):
    with pytest.raises(SystemExit) as exc:
        _entry(name)([flag])
    assert exc.value.code == 0
    assert f"Usage: dfmvr-{name}" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_subcommands_answer_h(name, capsys):
    with pytest.raises(SystemExit) as exc:
        invoke(load_command(name), ["-h"], prog_name=f"dfmvr {name}")
    assert exc.value.code == 0 and "Usage:" in capsys.readouterr().out
