"""The ``dfmvr`` command group and the direct entry points (dfmvr-train, -export, -run, -bench).

Subcommands are imported only when invoked, so ``dfmvr-run --help`` never imports torch. Each
subcommand lives in its own module and exposes a click command named ``command``.
"""

from __future__ import annotations

import contextlib
import importlib
import signal
import sys
import threading

import click

from .options import exit_codes
from .settings import HELP_SETTINGS

from ..errors import DfmvrError

__all__ = ["main", "train_entry", "export_entry", "run_entry", "bench_entry", "SUBCOMMANDS"]

# name -> (module, one-line help shown in `dfmvr --help` without importing the module)
SUBCOMMANDS = {
    "data": ("dfmvr.cli.data", "Build face models, synthetic multi-view datasets and training sets from your own photos."),
    "train": ("dfmvr.cli.train", "Train DF-MVR (or its parse net) with weak supervision."),
    "eval": ("dfmvr.cli.eval", "Evaluate reconstructions with the NoW-style protocol (mm)."),
    "export": ("dfmvr.cli.export", "Export to one ONNX graph (+ TensorRT engine where possible)."),
    "run": ("dfmvr.cli.run", "Reconstruct faces from triplets of photos (no torch needed)."),
    "bench": ("dfmvr.cli.bench", "Benchmark every backend, per stage, in one run."),
    "convert": ("dfmvr.cli.convert", "Convert foreign checkpoints (the official DF-MVR weights)."),
}


def load_command(name: str) -> click.Command:
    module, _ = SUBCOMMANDS[name]
    return importlib.import_module(module).command


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx, name):
        if name not in SUBCOMMANDS:
            return None
        return load_command(name)

    def format_commands(self, ctx, formatter):
        rows = [(name, SUBCOMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a batch scheduler's stop, ``kill``), raised in the main thread so that a run unwinds as on
    Ctrl-C: the triplet being written finishes or its hidden staging folder is removed, none is left half
    written for ``--resume`` to trip over. Exit 143 (128 + SIGTERM), as if the signal had killed it."""


@contextlib.contextmanager
def _sigterm_unwinds():
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is None:
        yield       # only the main thread may set handlers; one installed outside Python could not be put back
        return

    def _raise(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def invoke(cmd: click.Command, args=None, prog_name=None) -> None:
    """Run a click command, turning DfmvrError into a clear message and its exit code."""
    try:
        with _sigterm_unwinds():
            cmd.main(args=args, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort as exc:
        if isinstance(exc.__cause__, Terminated):
            click.echo("Terminated.", err=True)
            sys.exit(128 + signal.SIGTERM)
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except DfmvrError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    sys.exit(0)


@click.group(cls=LazyGroup, context_settings=HELP_SETTINGS, epilog=exit_codes())
@click.version_option(package_name="dfmvr")
def _group():
    """dfmvr: multi-view (left, front, right) 3D face reconstruction with DF-MVR."""


def main(args=None):
    invoke(_group, args, prog_name="dfmvr")


def _entry(name: str):
    def run(args=None):
        invoke(load_command(name), args, prog_name=f"dfmvr-{name}")
    return run


train_entry = _entry("train")
export_entry = _entry("export")
run_entry = _entry("run")
bench_entry = _entry("bench")
