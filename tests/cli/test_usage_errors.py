"""Usage errors are one line and exit 2, never a traceback, for every command of the app.

The cases are generated from the app's own command tree, so a command added later is
covered without editing this file: an unknown option, a missing argument, a number that
is not one, and a number below its minimum.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

import backout
from backout.cli import main
from backout.cli.main import app

SRC = Path(backout.__file__).resolve().parents[1]


def _tree(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(path, command) for every command and group under ``command``, groups included."""
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _tree(sub, (*path, name))


ROOT = typer.main.get_command(app)
LEAVES = [(p, c) for p, c in _tree(ROOT) if p and not hasattr(c, "commands")]
GROUPS = [p for p, c in _tree(ROOT) if p and hasattr(c, "commands")]


def _placeholders(command: Any) -> list[str]:
    """A value for each required argument, so that parsing reaches the options."""
    return [
        "x"
        for p in command.params
        if p.param_type_name == "argument" and p.required
        for _ in range(max(p.nargs, 1))
    ]


def _cases() -> Iterator[Any]:
    for path, command in LEAVES:
        name = " ".join(path)
        yield pytest.param([*path, "--no-such-option"], "--no-such-option", id=f"{name} unknown")
        if _placeholders(command):
            yield pytest.param(list(path), "Missing argument", id=f"{name} missing argument")
        for p in command.params:
            if p.param_type_name != "option" or p.is_flag or p.bare_type not in (int, float):
                continue
            opt = p.opts[0]
            args = [*path, *_placeholders(command), opt]
            yield pytest.param([*args, "abc"], opt, id=f"{name} {opt}=abc")
            if p.min is not None:
                yield pytest.param([*args, str(p.min - 1)], opt, id=f"{name} {opt} below min")


def test_the_tree_is_the_whole_app() -> None:
    """The generated cases see every command ``backout --help`` lists."""
    names = {p[0] for p, _ in LEAVES} | {p[0] for p in GROUPS}
    assert {"status", "serve", "report", "release", "consumers", "policy"} <= names
    assert ("release", "register") in [p for p, _ in LEAVES]


@pytest.mark.parametrize(("args", "named"), list(_cases()))
def test_a_usage_error_is_one_line_and_exit_2(
    args: list[str], named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "store.db"
    with pytest.raises(SystemExit) as exc:
        main(["--store", f"sqlite:///{db}", "--artifacts", str(tmp_path / "a"), *args])
    captured = capsys.readouterr()
    assert exc.value.code == 2, captured.err
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: "), captured.err
    assert named in captured.err
    assert "--help`" in captured.err  # names the help of the command that was meant
    assert not db.exists()  # nothing ran: parsing failed before any command touched a store


@pytest.mark.parametrize("group", GROUPS, ids=" ".join)
def test_a_group_without_a_subcommand_prints_its_help(
    group: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(list(group))
    captured = capsys.readouterr()
    assert exc.value.code == 2  # as Typer exits for no_args_is_help
    assert "Usage: backout " + " ".join(group) in captured.out
    assert captured.err == ""


def test_an_unexpected_failure_is_one_line_naming_debug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = typer.Typer()

    @broken.command()
    def boom(debug: bool = False) -> None:
        raise KeyError("no such thing")

    monkeypatch.setattr(sys.modules["backout.cli.main"], "app", broken)
    with pytest.raises(SystemExit) as exc:
        main([])
    err = capsys.readouterr().err
    assert exc.value.code == 1
    assert err.count("\n") == 1
    assert err.startswith("error: unexpected KeyError: 'no such thing'") and "--debug" in err
    with pytest.raises(KeyError):
        main(["--debug"])


def _backout(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(SRC.parent)])}
    return subprocess.run(
        [sys.executable, "-m", "backout", *args], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["status", "--bogus"], "error: No such option: --bogus (see `backout status --help`)"),
        (["bogus"], "error: No such command 'bogus' (see `backout --help`)"),
        (["consumers", "list"], "error: Missing argument 'model' (see `backout consumers list --help`)"),
        (["release", "register", "m", "-1"], "error: No such option: -1: to pass a value that starts with '-', put '--' before it (`backout release register ... -- -1`)"),
        (["serve", "--workers", "0"], "error: Invalid value for '--workers': Input should be greater than or equal to 1 (see `backout serve --help`)"),
        (["status", "--window", "abc"], "error: Invalid value for '--window': Input should be a valid number, unable to parse string as a number (see `backout status --help`)"),
    ],
    ids=" ".join,
)  # fmt: skip
def test_the_reported_usage_errors_through_the_console_script(
    args: list[str], message: str, tmp_path: Path
) -> None:
    """The issue's reproductions, run as a user runs them: whole stderr, exit 2."""
    done = _backout(*args, cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", message + "\n")
    assert not (tmp_path / ".backout").exists()


@pytest.mark.parametrize("args", [[], ["release"]], ids=["backout", "backout release"])
def test_no_arguments_print_the_help_through_the_console_script(
    args: list[str], tmp_path: Path
) -> None:
    done = _backout(*args, cwd=tmp_path)
    assert done.returncode == 2
    assert "Usage: backout" in done.stdout and "Traceback" not in done.stderr
