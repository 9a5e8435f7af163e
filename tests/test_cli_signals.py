"""SIGTERM (a scheduler stopping a batch job) unwinds a command as Ctrl-C does: no half-written output."""

from __future__ import annotations

import os
import signal
import sys
import time

import click
import pytest

from dfmvr.cli import invoke
from dfmvr.runtime.outputs import staged_folder


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_mid_write_leaves_no_partial_folder_and_exits_143(tmp_path, capsys):
    """Killed by SIGTERM's default action, a run left its hidden staging folder (.t.partial-*) behind,
    which --resume then neither used nor removed."""
    before = signal.getsignal(signal.SIGTERM)

    @click.command()
    def writes_then_is_terminated():
        with staged_folder(tmp_path / "out" / "t") as tmp:
            (tmp / "mesh.obj").write_text("half")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)                   # the handler raises at the next bytecode, long before this ends
            (tmp / "result.json").write_text("never")

    with pytest.raises(SystemExit) as exc:
        invoke(writes_then_is_terminated, [])
    assert exc.value.code == 128 + signal.SIGTERM
    assert "Terminated." in capsys.readouterr().err
    assert list((tmp_path / "out").iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) == before      # the handler is the command's only
