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


def fraud_live(tmp_path: Path) -> str:
    """A store with fraud@1.0.0 live at 100% (and known-good) and fraud@1.1.0 registered,
    both proven to load and answer; its URL."""
    from backout.control.controller import Controller
    from backout.registry.artifacts import LocalBlobStore
    from backout.registry.releases import Registry
    from backout.store import open_store
    from tests.control.world import FakeProber

    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = open_store(url, create=True)
    registry = Registry(store, LocalBlobStore(tmp_path / "artifacts"))
    for v in ("1.0.0", "1.1.0"):
        f = tmp_path / f"model-{v}.bin"
        f.write_bytes(f"weights {v}".encode())
        registry.register("fraud", v, [f], actor="ana")
    controller = Controller(store, registry, prober=FakeProber())
    controller.prove("fraud", ["1.0.0", "1.1.0"], "ana", "take traffic")
    controller.deploy("fraud", "1.0.0", actor="ana")
    store.dispose()
    return url
