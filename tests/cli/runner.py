"""Run the command line in-process against one store and capture what it prints."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from backout.cli import main


class Cli:
    """The `backout` command line on one store and artifact folder, run in this process."""

    def __init__(self, capsys: pytest.CaptureFixture[str], store_url: str, home: Path) -> None:
        self.capsys = capsys
        self.base = ["--store", store_url, "--artifacts", str(home / "artifacts"), "--actor", "ana"]

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        try:
            main([*self.base, *args])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = self.capsys.readouterr()
        return code, captured.out, captured.err

    def json(self, *args: str) -> object:
        code, out, err = self(*args, "--json")
        assert code == 0, err
        return orjson.loads(out)
