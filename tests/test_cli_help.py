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


def _all_commands():
    """(path, command) for every command and group, nested ones (dfmvr data synth, convert half) too."""
    import click

    from dfmvr.cli import _group

    out = [("dfmvr", _group)]
    for name in sorted(SUBCOMMANDS):
        cmd = load_command(name)
        out.append((f"dfmvr {name}", cmd))
        if isinstance(cmd, click.Group):
            ctx = click.Context(cmd)
            out += [(f"dfmvr {name} {sub}", cmd.get_command(ctx, sub)) for sub in cmd.list_commands(ctx)]
    return out


@pytest.mark.parametrize("path,cmd", _all_commands(), ids=lambda x: x if isinstance(x, str) else "")
def test_every_help_ends_with_the_exit_codes(path, cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        invoke(cmd, ["--help"], prog_name=path)
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "Exit codes:" in text and "    0 " in text and "    2 " in text, path
    assert "-h, --help" in text, path


def test_every_option_has_a_description():
    for path, cmd in _all_commands():
        for param in cmd.params:
            if param.param_type_name == "option" and not param.hidden:
                assert param.help, f"{path} {param.opts[0]} has no help text"


def test_shared_options_are_declared_once():
    """--face-model, --onnx, --engine, --quiet, --threads, --json: one type and one help text everywhere
    (--face-model: one for the commands that read a --data folder, whose face_model.npz is its default, one
    for the rest; the rest once said "the --data folder's" too, where there is none)."""
    from dfmvr.cli.options import DATA_FACE_MODEL_HELP, FACE_MODEL_HELP

    for path, cmd in _all_commands():
        names = {p.name for p in cmd.params}
        for param in cmd.params:
            if param.name == "face_model":
                assert param.help == (DATA_FACE_MODEL_HELP if "data" in names else FACE_MODEL_HELP), path
    seen: dict[str, tuple] = {}
    shared = {"face_model": {"train", "eval", "export", "run", "bench", "data synth"},
              "onnx": {"eval", "run", "bench"}, "engine": {"run", "bench"},
              "quiet": {"train", "eval", "run", "bench", "data synth"}, "threads": {"run", "bench"},
              "json_out": {"eval", "bench"}}
    found = {name: set() for name in shared}
    for path, cmd in _all_commands():
        for param in cmd.params:
            if param.name in shared and path.removeprefix("dfmvr ") in shared[param.name]:
                found[param.name].add(path.removeprefix("dfmvr "))
                help_text = FACE_MODEL_HELP if param.name == "face_model" else param.help     # two, checked above
                key = (tuple(param.opts + param.secondary_opts), type(param.type).__name__, help_text)
                assert seen.setdefault(param.name, key) == key, (path, param.name)
    assert found == shared
    assert seen["quiet"][0] == ("--quiet", "-q")


def test_batch_names_say_what_they_take():
    """--batch is a batch size everywhere; export's profile and bench's list have their own names, and
    the old spelling --batch still parses there."""
    export, bench = load_command("export"), load_command("bench")
    for old in ("--batch", "--engine-batch"):
        ctx = export.make_context("dfmvr-export", ["tiny", "--out", "o", old, "1:2:8"])
        assert ctx.params["batch"] == "1:2:8"
    for old in ("--batch", "--batch-sizes"):
        ctx = bench.make_context("dfmvr-bench", [old, "1,3"])
        assert ctx.params["batches"] == (1, 3)
    for name in ("run", "eval", "train"):
        (param,) = [p for p in load_command(name).params if p.name == "batch"]
        assert param.opts == ["--batch"] and param.help.startswith("Batch size: triplets")


def test_run_help_describes_the_detector(capsys):
    with pytest.raises(SystemExit):
        _entry("run")(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--detector [dlib|face-alignment] Face and landmark detector" in text
    assert "OUT/<triplet name>/" in text


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_output_paths_under_a_file_are_refused_with_the_path(tmp_path, kind):
    from dfmvr.cli.options import output_problem

    blocker = tmp_path / "a.txt"
    blocker.write_text("x")
    assert output_problem(tmp_path / "new" / "deeper", kind) is None
    problem = output_problem(blocker / "x" / "y", kind)
    assert problem and str(blocker) in problem and "is a file, not a folder" in problem
    if kind == "folder":
        assert "is a file" in output_problem(blocker, kind)
    else:
        assert "is a folder" in output_problem(tmp_path, kind)


def test_output_paths_in_a_read_only_folder_are_refused(tmp_path):
    import os

    from dfmvr.cli.options import output_problem

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who may write anywhere (root)")
        assert "is not writable" in output_problem(locked / "out", "folder")
        assert "is not writable" in output_problem(locked, "folder")
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize("argv", [["train", "--data", ".", "--out", "BLOCK/x"], ["export", "tiny", "--out", "BLOCK/x"],
                                  ["data", "synth", "--out", "BLOCK/x", "--triplets", "1"],
                                  ["eval", "--onnx", "default", "--data", ".", "--json", "BLOCK/x.json"],
                                  ["bench", "--markdown", "BLOCK/x.md"]])
def test_every_output_option_is_checked_before_any_work(tmp_path, argv, capsys):
    blocker = tmp_path / "BLOCK"
    blocker.write_text("x")
    argv = [a.replace("BLOCK", str(blocker)) for a in argv]
    from dfmvr.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert str(blocker) in capsys.readouterr().err
