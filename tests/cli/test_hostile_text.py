"""Text people wrote prints as written: Rich markup in a reason, a changelog or an owner is
neither applied nor an error, in every command that shows it."""

from __future__ import annotations

from pathlib import Path

import pytest

from backout.cli import main

HOSTILE = "[/oops] [bold red]loud[/bold red] [link=https://e.test]x[/link]"


def test_markup_in_stored_text_prints_literally(
    tmp_path: Path, model_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--store", f"sqlite:///{tmp_path / 's.db'}", "--artifacts", str(tmp_path / "a")]

    def run(*args: str) -> str:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main([*base, "--actor", HOSTILE, *args])
        captured = capsys.readouterr()
        assert exc.value.code == 0, captured.err
        return captured.out

    run("init")
    run("release", "register", "fraud", "1.0.0", "-a", str(model_file), "--changelog", HOSTILE,
        "--owner", HOSTILE, "--rollback-plan", HOSTILE)  # fmt: skip
    run("release", "mark-good", "fraud@1.0.0", "--reason", HOSTILE)
    run("deploy", "fraud@1.0.0", "--reason", HOSTILE)
    shown = run("release", "show", "fraud@1.0.0")
    assert shown.count(HOSTILE) >= 3  # owner, changelog, rollback plan, the mark's reason
    # Tables wrap long cells; the brackets still print as written.
    assert "[/oops]" in run("release", "list")
    assert "[/oops]" in run("history")
    assert "fraud" in run("status")
