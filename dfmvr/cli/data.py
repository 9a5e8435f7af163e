"""``dfmvr data``: face models (``face-model``), synthetic multi-view datasets (``synth``) and training
sets from a user's own photos (``prepare``)."""

from __future__ import annotations

import importlib

import click

from .options import exit_codes
from .settings import HELP_SETTINGS

_SUB = {
    "face-model": ("dfmvr.cli.data_face_model", "Build a face model: synthetic, BFM front .mat, or BFM2009."),
    "synth": ("dfmvr.cli.data_synth", "Render a synthetic multi-view dataset with exact ground truth."),
    "prepare": ("dfmvr.cli.data_prepare", "Your own multi-view photos -> a training set for the weak losses."),
}


class _LazyData(click.Group):
    def list_commands(self, ctx):
        return sorted(_SUB)

    def get_command(self, ctx, name):
        if name not in _SUB:
            return None
        return importlib.import_module(_SUB[name][0]).command

    def format_commands(self, ctx, formatter):
        with formatter.section("Commands"):
            formatter.write_dl([(k, v[1]) for k, v in sorted(_SUB.items())])


@click.group(cls=_LazyData, context_settings=HELP_SETTINGS, epilog=exit_codes(c3=None))
def command():
    """Build face models, synthetic multi-view datasets and training sets from your own photos."""
