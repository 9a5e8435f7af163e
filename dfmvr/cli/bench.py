"""``dfmvr bench`` / ``dfmvr-bench``: every backend, per stage, in one run (JSON + Markdown).

Exit codes: 0 done (unavailable backends are listed with their reason, not an error); 2 bad usage or
bad input; 3 none of the backends asked for can run here; 1 anything else; 130 / 143 interrupted.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..bench.backends import BACKENDS
from .options import (OutputPath, engine_option, exit_codes, face_model_option, json_option, onnx_option, quiet_option,
                      threads_option)
from .settings import HELP_SETTINGS

__all__ = ["command"]


def _int_list(ctx, param, value):
    try:
        out = [int(v) for v in str(value).split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if not out or min(out) < 1:
        raise click.BadParameter(f"expected positive batch sizes, got {value!r}")
    return tuple(dict.fromkeys(out))        # "1,1" measured and reported the same row twice


def _backends(ctx, param, value):
    names = tuple(dict.fromkeys(v.strip().lower() for v in str(value).split(",") if v.strip()))
    bad = [n for n in names if n not in BACKENDS]
    if bad or not names:
        raise click.BadParameter(f"unknown backend(s) {bad or [value]}; choose from {','.join(BACKENDS)}")
    return names


@click.command(name="bench", context_settings=HELP_SETTINGS, epilog=exit_codes(
    c0="done (backends unavailable here are listed with their reason, not an error)",
    c3="none of the backends asked for can run here (each one's reason is listed)"))
@click.option("--checkpoint", help="Torch weights: a dfmvr checkpoint, 'default', or a variant name "
              "('tiny', 'paper': random weights, seed 0). Exported on the fly for ONNX Runtime unless --onnx is given.")
@onnx_option
@engine_option
@click.option("--int8-onnx", "int8_onnx", type=click.Path(path_type=Path), default=None,
              help="The int8 graph for the onnxruntime-int8 backend (dfmvr-export --int8's model.int8.onnx). "
                   "Default: model.int8.onnx beside --onnx when there is one; with --checkpoint and no --onnx, "
                   "the graph exported on the fly is also quantized on the fly.")
@click.option("--backends", "backends", default=",".join(BACKENDS), show_default=True,
              callback=_backends, help=f"Comma-separated: {', '.join(BACKENDS)}. Unavailable ones are listed "
                                       "with their reason.")
@click.option("--batch-sizes", "--batch", "batches", default="1,4,16", show_default=True, callback=_int_list,
              help="Comma-separated batch sizes to measure (triplets per network call). --batch is the old "
                   "spelling.")
@click.option("--iters", type=click.IntRange(min=1), default=10, show_default=True, help="Timed iterations.")
@click.option("--warmup", type=click.IntRange(min=0), default=2, show_default=True, help="Untimed iterations first.")
@threads_option
@face_model_option
@click.option("--format", "formats", default="obj,ply,npz,json,png", show_default=True,
              help="Outputs written in the write stage.")
@click.option("--no-gemm", is_flag=True, help="Skip measuring the machine's GEMM rate.")
@click.option("--gemm-size", type=click.IntRange(min=16), default=2048, show_default=True,
              help="n of the n x n x n fp32 GEMM that measures the machine.")
@json_option
@click.option("--markdown", "md_path", type=OutputPath("file"), help="Also write the report as a Markdown table.")
@quiet_option
def command(checkpoint, onnx, engine, int8_onnx, backends, batches, iters, warmup, threads, face_model, formats,
            no_gemm, gemm_size, json_out, md_path, quiet):
    """Benchmark the reconstruction pipeline end to end and per stage (decode + align, normalise,
    network, mesh assembly, write) on every available backend, side by side, with each backend's
    speed-up over PyTorch eager, FLOPs per triplet, achieved GFLOP/s, this machine's GEMM rate, and
    each backend's parity (posed-mesh distance in mm, label agreement) against PyTorch eager (ONNX
    Runtime fp32 without torch weights) on the same inputs. torch-compile is compiled before any timed
    iteration and its compile time is reported on its own.

    With no model option, the bundled default model is used.
    """
    import tempfile

    from ..bench.e2e import resolve_sources, run_bench
    from ..bench.report import markdown_report
    from ..errors import UnavailableError
    from ..runtime.outputs import parse_formats

    if json_out and md_path and Path(json_out).resolve() == Path(md_path).resolve():   # the table overwrote the JSON
        raise click.BadParameter("--json and --markdown name the same file", param_hint="--markdown")
    fmts = parse_formats(formats)
    echo = (lambda s: None) if quiet else (lambda s: click.echo(s, err=True))
    # a graph exported (and quantized) on the fly lives here and goes with it: 14 MB per run stayed in /tmp
    with tempfile.TemporaryDirectory(prefix="dfmvr-bench-", ignore_cleanup_errors=True) as workdir:
        sources = resolve_sources(checkpoint=checkpoint, onnx=onnx, engine=engine, backends=backends, echo=echo,
                                  int8_onnx=int8_onnx, workdir=workdir)
        report = run_bench(sources, backends=backends, batches=batches, iters=iters, warmup=warmup, threads=threads,
                           formats=fmts, face_model=face_model, gemm=not no_gemm, gemm_size=gemm_size, echo=echo)
    if not report["backends"]:
        raise UnavailableError("none of the backends asked for can run here: " + "; ".join(
            f"{name}: {why}" for name, why in report["unavailable"].items()))
    text = markdown_report(report)
    if json_out:
        _write_report(json_out, json.dumps(report, indent=2) + "\n")
    if md_path:
        _write_report(md_path, text)
    click.echo(text)


def _write_report(path, text: str) -> None:
    """The report's file, or exit 2 naming it (the check before the run cannot see every refusal: /proc as root)."""
    from ..atomic import atomic_write_text
    from ..errors import InputError

    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise InputError(path, f"cannot write the report ({exc.strerror or exc})", "choose another path") from exc
