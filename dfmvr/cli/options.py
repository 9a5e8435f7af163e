"""Options and help text that several dfmvr commands share, each declared once here: one name, one
type, one help text, wherever it appears (see also ``settings.py`` for -h/--help).

- ``face_model_option``, ``onnx_option``, ``engine_option``, ``quiet_option``, ``threads_option``,
  ``json_option``, ``batch_size_option``, ``refine_device_option``: the shared options.
- ``OutputPath``: the type of every output option (``--out``, ``--json``, ``--markdown``, ...). It
  checks, while the command line is parsed and so before any work, that the path can be written: a
  path under a regular file, or in a folder that is not writable, is a usage error (exit 2) naming
  the path and what to do.
- ``exit_codes``: the "Exit codes" epilog every command's --help ends with.

``--batch`` means a batch size (an integer: triplets per network call, or per training step) in
``dfmvr-run``, ``dfmvr eval`` and ``dfmvr-train``. The two commands that took other things under that
name now name them: ``dfmvr-export --engine-batch MIN:OPT:MAX`` (the TensorRT engine's range of batch
sizes) and ``dfmvr-bench --batch-sizes 1,4,16`` (the batch sizes to measure); ``--batch`` still
works there as the old spelling.
"""

from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path

import click

__all__ = ["EXIT_CODES", "exit_codes", "OutputPath", "output_problem", "face_model_option", "onnx_option",
           "engine_option", "data_face_model_option", "quiet_option", "threads_option", "json_option", "batch_size_option",
           "refine_device_option", "refine_landmark_weight_option", "refine_landmark_anneal_option",
           "refine_landmarks_option", "refine_config", "detector_option",
           "FACE_MODEL_HELP", "FiniteFloatRange", "given_on_command_line"]

# code -> its meaning in every command; a command may say more about a code, or leave one out.
EXIT_CODES = {
    0: "success",
    1: "anything else (a failed check, a bug)",
    2: "bad usage or bad input; the message names the file or option and what to do",
    3: "a requested capability is missing on this machine (a GPU, TensorRT)",
    130: "interrupted (Ctrl-C)",
    143: "stopped by SIGTERM (a batch scheduler's stop, `kill`)",
}


def exit_codes(**said) -> str:
    """The epilog listing exit codes: ``exit_codes(c3=None, c2="...")`` leaves 3 out and rewords 2."""
    lines = []
    for code, meaning in EXIT_CODES.items():
        meaning = said.get(f"c{code}", meaning)
        if meaning is not None:
            lines += textwrap.wrap(meaning, width=72, initial_indent=f"  {code:<4} ", subsequent_indent=" " * 7)
    return "\b\nExit codes:\n" + "\n".join(lines)


# --- outputs ----------------------------------------------------------------------------------------
def output_problem(path, kind: str = "folder") -> str | None:
    """Why ``path`` cannot be written as a ``kind`` ("folder" or "file"), in words; None when it can.

    Looks only at the file system (nothing is created): the path itself when it exists, else the
    nearest existing folder above it, which must be a writable folder (not a file, not read-only).
    """
    path = Path(path)
    if os.path.lexists(path):
        if not path.exists():
            return f"'{path}' is a broken link"
        if kind == "folder" and not path.is_dir():
            return f"'{path}' is a file, not a folder"
        if kind == "file" and path.is_dir():
            return f"'{path}' is a folder, not a file"
        where = path if kind == "folder" else (path.parent if str(path.parent) else Path("."))
        if not os.access(where, os.W_OK | os.X_OK):
            return f"'{where}' is not writable"
        return None
    above = path.parent
    while not os.path.lexists(above) and above != above.parent:
        above = above.parent
    if not above.exists():
        return f"'{above}' (a folder above '{path}') is a broken link"
    if not above.is_dir():
        return f"'{path}' cannot be created: '{above}' is a file, not a folder"
    if not os.access(above, os.W_OK | os.X_OK):
        return f"'{path}' cannot be created: '{above}' is not writable"
    return None


class OutputPath(click.Path):
    """A path the command will write (``kind`` "folder" or "file"), checked before any work starts."""

    def __init__(self, kind: str = "folder"):
        super().__init__(file_okay=kind == "file", dir_okay=kind == "folder", path_type=Path)
        self.kind = kind

    def convert(self, value, param, ctx):
        path = Path(value)
        problem = output_problem(path, self.kind)
        if problem:
            self.fail(f"{problem} -- choose another path, or move that file or fix its permissions", param, ctx)
        return path


class FiniteFloatRange(click.FloatRange):
    """click's FloatRange with NaN and infinity refused: NaN passes every range check (each comparison with it
    is false) and inf passes an open maximum; a learning rate of NaN crashed Adam, and inf, or a NaN gradient
    clip, trained a checkpoint of NaN weights with exit 0."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def given_on_command_line(ctx: click.Context) -> list[str]:
    """The parameters of ``ctx`` that the command line set (not defaults), sorted: what a command may refuse
    as ignored or compare with a run's record."""
    from click.core import ParameterSource

    return sorted(name for name in ctx.params if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE)


# --- shared options ---------------------------------------------------------------------------------
FACE_MODEL_HELP = ("Face model .npz. Default: the bundled one (the synthetic seed-0 model). A network's face "
                   "model must match its model card.")
DATA_FACE_MODEL_HELP = ("Face model .npz. Default: the --data folder's face_model.npz if it has one, else the "
                        "bundled one (the synthetic seed-0 model). A network's face model must match its model card.")


def _face_model_option(help: str):
    return click.option("--face-model", "face_model", default=None,
                        type=click.Path(exists=True, dir_okay=False, path_type=Path), help=help)


face_model_option = _face_model_option(FACE_MODEL_HELP)
data_face_model_option = _face_model_option(DATA_FACE_MODEL_HELP)     # commands with --data (dfmvr eval)


def onnx_option(f):
    return click.option("--onnx", type=click.Path(path_type=Path), default=None,
                        help="An ONNX graph made by dfmvr-export, or 'default': the bundled demo model "
                             "(ONNX Runtime; no torch needed).")(f)


def engine_option(f):
    return click.option("--engine", type=click.Path(path_type=Path), default=None,
                        help="A TensorRT engine made by dfmvr-export, with its .card.json beside it.")(f)


def quiet_option(f):
    return click.option("--quiet", "-q", is_flag=True,
                        help="Print less: no progress bar, no per-triplet lines (results and errors still show).")(f)


def threads_option(f):
    return click.option("--threads", type=click.IntRange(min=1), default=None,
                        help="Intra-op threads (ONNX Runtime, and torch where it runs); default: the "
                             "library's own, about one per core.")(f)


def detector_option(f):
    return click.option("--detector", type=click.Choice(["dlib", "face-alignment"]), default="dlib", show_default=True,
                        help="Face and landmark detector: 'dlib' (HOG detector and 68-point "
                             "predictor, offline; the 'detect' extra) or 'face-alignment' (2D-FAN; needs torch and "
                             "downloads its weights on first use; the 'face-alignment' extra).")(f)


def refine_device_option(f):
    return click.option("--refine-device", default="cpu", show_default=True,
                        help="torch device of the --refine optimisation: cpu, cuda, cuda:1, ...")(f)


def _refine_number_option(flag: str, least: float, metavar: str, help: str):
    """A ``--refine-*`` number, None when not given (the command then uses the refiner's default)."""
    return click.option(flag, flag.lstrip("-").replace("-", "_"), default=None, type=FiniteFloatRange(min=least),
                        metavar=metavar, help=help)


refine_landmark_weight_option = _refine_number_option(
    "--refine-landmark-weight", 0, "W",
    "With --refine: the weight of the 2D landmark term. Default 0.001 (refine.RUN_LANDMARK_WEIGHT), 20x below the "
    "training recipe's 0.02, which over-trusts a detector's error (docs/refine.md, 'How much to trust the landmarks').")

refine_landmark_anneal_option = _refine_number_option(
    "--refine-landmark-anneal", 1, "F",
    "With --refine: the landmark weight starts at F times its value and falls to it by the last step. Default 1 "
    "(constant). 3 helps landmarks with about 2 px of error and hurts noisier ones (docs/refine.md, 'A landmark "
    "weight that falls').")


def refine_landmarks_option(f):
    from ..runtime.refine import LANDMARK_SOURCES

    return click.option("--refine-landmarks", "refine_landmarks", type=click.Choice(LANDMARK_SOURCES), default=None,
                        help="With --refine: the 2D landmarks it fits. network: the graph's own keypoints "
                             "(its 'keypoints' output; the bundled demo has it); detector: the detector's 68 points "
                             "(not with --aligned). Default auto: network when the graph has keypoints, else "
                             "detector (docs/refine.md, 'Which landmarks').")(f)


def refine_config(steps: int, device: str, landmark_weight: float | None, progress: bool,
                  landmark_anneal: float | None = None):
    """The ``RefineConfig`` of ``--refine N [--refine-device D] [--refine-landmark-weight W]
    [--refine-landmark-anneal F]`` (needs torch)."""
    from ..train.refine import RUN_LANDMARK_WEIGHT, RefineConfig

    weight = RUN_LANDMARK_WEIGHT if landmark_weight is None else float(landmark_weight)
    anneal = 1.0 if landmark_anneal is None else float(landmark_anneal)
    return RefineConfig(steps=steps, device=device, progress=progress, loss_weights={"landmark_2d": weight},
                        landmark_anneal=anneal)


def json_option(f):
    return click.option("--json", "json_out", type=OutputPath("file"), default=None,
                        help="Also write the report as JSON to this file.")(f)


def batch_size_option(default: int, per: str = "per network call"):
    """``--batch N``: a batch size (an integer), the one meaning ``--batch`` has in every command."""
    return click.option("--batch", type=click.IntRange(min=1), default=default, show_default=True,
                        help=f"Batch size: triplets {per}.")
