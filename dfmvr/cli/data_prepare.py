"""``dfmvr data prepare``: your own multi-view photos -> a training set for the weak losses (no torch).

Exit codes: 0 every triplet prepared; 2 bad usage or bad input -- for a batch, 2 when at least one
triplet failed (the others are written, and the failures are listed and saved in
``OUT/prepare_summary.json``); 1 anything else.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .options import OutputPath, detector_option, exit_codes, quiet_option
from .settings import HELP_SETTINGS

__all__ = ["command", "SUMMARY_FILE"]

SUMMARY_FILE = "prepare_summary.json"


@click.command(name="prepare", context_settings=HELP_SETTINGS, epilog=exit_codes(
    c2="bad usage or bad input; for a batch, at least one triplet failed (the others are written, "
       f"the failures listed and saved in OUT/{SUMMARY_FILE})", c3=None))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out", required=True, type=OutputPath("folder"),
              help="Dataset folder: one triplet folder per input triplet (OUT/<triplet name>/).")
@click.option("--aligned", is_flag=True,
              help="Inputs are already 224x224 aligned crops: kept as they are, the detector runs on the crops.")
@detector_option
@click.option("--resume", is_flag=True,
              help="Skip triplets whose folder exists in OUT (folders are only ever complete).")
@quiet_option
def command(inputs, out, aligned, detector, resume, quiet):
    """Turn triplets of photos (INPUTS, found as dfmvr-run finds them) into training triplets for the
    weak losses: OUT/<name>/left.png, front.png, right.png (the aligned crops the network sees) and
    landmarks.npz (the detector's 68 landmarks per view, in crop pixels), with prepare.json saying
    where each view came from and how its face was found.

    No ground truth is written or needed. Train on it with the weak losses and the parse net's labels
    (dfmvr-train --data OUT --parser-labels --parse-net P ...), and refit the heads to each triplet's
    landmark fit (dfmvr-train --stage heads --targets landmark-fit); docs/training.md, "Your own photos".
    """
    from ..runtime.detect import make_detector
    from ..runtime.inputs import discover_triplets
    from ..runtime.prepare import prepare_dataset
    from .run import TripletBar, _print_fallbacks, _quiet_opencv

    _quiet_opencv()
    triplets, problems = discover_triplets(inputs)
    single = len(triplets) + len(problems) == 1
    if single and problems:
        raise problems[0].error
    found_by = make_detector(detector)
    bar = TripletBar(len(triplets), "preparing", show=not quiet and not single)
    summary = prepare_dataset(triplets, out, found_by, aligned=aligned, resume=resume, problems=problems,
                              progress=bar)
    bar.close()
    if not quiet:
        _print_fallbacks(summary.fallbacks, check="its landmarks.npz (prepare draws no overlay)")
    if single and summary.failed:
        raise summary.failed[0].error
    if not single:
        _write_summary(Path(out), summary)
    for problem in summary.failed:                  # errors show with --quiet too
        click.echo(f"{problem.name}: FAILED: {problem.error}", err=True)
    if not quiet:
        click.echo(f"{out}: prepared {len(summary.done)} triplets, skipped {len(summary.skipped)} already there, "
                   f"{len(summary.failed)} failed ({summary.seconds:.1f} s)", err=True)
    if summary.failed:
        if not single:
            click.echo(f"error: {len(summary.failed)} of {len(summary.failed) + len(summary.done)} triplets failed "
                       f"(listed above and in {Path(out) / SUMMARY_FILE})", err=True)
        sys.exit(2)


def _write_summary(out: Path, summary) -> None:
    from ..atomic import atomic_write_text

    doc = {"done": [{"triplet": name, "folder": str(folder),
                     **({"detection_fallbacks": summary.fallbacks[name]} if name in summary.fallbacks else {})}
                    for name, folder in summary.done],
           "skipped": summary.skipped,
           "failed": [{"triplet": p.name, "file": p.error.path,
                       "reason": str(p.error)} for p in summary.failed],
           "seconds": round(summary.seconds, 3)}
    atomic_write_text(out / SUMMARY_FILE, json.dumps(doc, indent=2) + "\n")
