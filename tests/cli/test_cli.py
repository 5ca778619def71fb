"""The command line: whole outputs, --json, and one clear line per error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backout.cli import main
from backout.store import open_store
from tests.cli.runner import Cli


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], store_url: str, tmp_path: Path) -> Cli:
    open_store(store_url, create=True).dispose()  # as `backout init` does
    return Cli(capsys, store_url, tmp_path)


def test_register_prints_one_line(cli: Cli, artifact: Path) -> None:
    code, out, _ = cli("release", "register", "fraud", "1.0.0", "--artifact", str(artifact))
    assert code == 0
    assert out.startswith("fraud@1.0.0 registered  manifest sha256:")
    assert out.rstrip().endswith("1 artifact(s)")


def test_register_json_says_whether_it_was_created(cli: Cli, artifact: Path) -> None:
    first = cli.json("release", "register", "fraud", "1.0.0", "-a", str(artifact))
    again = cli.json("release", "register", "fraud", "1.0.0", "-a", str(artifact))
    assert isinstance(first, dict) and isinstance(again, dict)
    assert (first["created"], again["created"]) == (True, False)
    assert first["digest"] == again["digest"]


def test_errors_are_one_line_with_a_non_zero_exit(cli: Cli, tmp_path: Path) -> None:
    code, out, err = cli("release", "register", "fraud", "1..0", "-a", str(tmp_path))
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: version '1..0' is not valid")


def test_a_missing_artifact_names_the_path(cli: Cli, tmp_path: Path) -> None:
    code, _, err = cli("release", "register", "fraud", "1.0.0", "-a", str(tmp_path / "x.pkl"))
    assert code == 2
    assert err == f"error: artifact '{tmp_path / 'x.pkl'}' does not exist: check the path\n"


def test_an_invalid_contract_file_is_refused(cli: Cli, artifact: Path, tmp_path: Path) -> None:
    bad = tmp_path / "contract.json"
    bad.write_text('{"input": {"type": 12}}')
    code, _, err = cli(
        "release", "register", "fraud", "1.0.0", "-a", str(artifact), "--contract", str(bad)
    )
    assert code == 1
    assert "is not valid JSON Schema at type" in err
    bad.write_text("{not json")
    code, _, err = cli(
        "release", "register", "fraud", "1.0.0", "-a", str(artifact), "--contract", str(bad)
    )
    assert code == 2 and "is not valid JSON" in err


def test_list_shows_a_table(cli: Cli, model_file: Path) -> None:
    artifact = model_file
    cli(
        "release",
        "register",
        "fraud",
        "1.0.0",
        "-a",
        str(artifact),
        "--owner",
        "risk",
        "--changelog",
        "first cut",
    )
    cli("release", "mark-good", "fraud@1.0.0")
    code, out, _ = cli("release", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "release",
        "runtime",
        "mark",
        "served",
        "registered",
        "owner",
        "changelog",
    ]
    assert lines[1].split()[:3] == ["fraud@1.0.0", "sklearn", "known-good"]
    assert lines[1].split()[-3:] == ["risk", "first", "cut"]


def test_show_json_carries_the_marks(cli: Cli, model_file: Path) -> None:
    artifact = model_file
    cli("release", "register", "fraud", "1.0.0", "-a", str(artifact))
    cli("release", "mark-good", "fraud@1.0.0", "--reason", "rollout complete")
    doc = cli.json("release", "show", "fraud@1.0.0")
    assert isinstance(doc, dict)
    assert doc["known_good"] is True
    assert doc["marks"][0]["reason"] == "rollout complete"
    assert doc["manifest"]["artifacts"][0]["path"] == "model.bin"


def test_verify_exits_1_and_names_the_file(cli: Cli, artifact: Path, tmp_path: Path) -> None:
    doc = cli.json("release", "register", "fraud", "1.0.0", "-a", str(artifact))
    assert isinstance(doc, dict)
    sha = doc["manifest"]["artifacts"][0]["sha256"]
    code, out, _ = cli("release", "verify", "fraud@1.0.0")
    assert (code, out) == (
        0,
        "fraud@1.0.0 verified: manifest and 1 artifact(s) match their digests\n",
    )
    blob = tmp_path / "artifacts" / "sha256" / sha[:2] / sha
    os.chmod(blob, 0o644)
    data = bytearray(blob.read_bytes())
    data[0] ^= 1
    blob.write_bytes(bytes(data))
    code, out, err = cli("release", "verify", "fraud@1.0.0")
    assert code == 1
    assert err.startswith("fraud@1.0.0: model.bin: bytes no longer hash to sha256:")


def test_history_verify_reports_an_intact_chain(cli: Cli, artifact: Path) -> None:
    cli("release", "register", "fraud", "1.0.0", "-a", str(artifact))
    code, out, _ = cli("history", "fraud", "--verify")
    assert code == 0
    assert out.splitlines()[-1] == "chain verified: 1 event(s), hashes intact"
    doc = cli.json("history", "--verify")
    assert isinstance(doc, dict) and doc["chain"] == {"ok": True, "problems": []}


def test_delete_needs_confirmation(cli: Cli, artifact: Path) -> None:
    cli("release", "register", "fraud", "1.0.0", "-a", str(artifact))
    code, _, err = cli("release", "delete", "fraud@1.0.0", "--reason", "typo")
    assert code == 2 and "add --yes" in err
    code, out, _ = cli("release", "delete", "fraud@1.0.0", "--reason", "typo", "--yes")
    assert (code, out) == (0, "fraud@1.0.0 deleted\n")


def test_an_unreachable_store_is_one_line_without_the_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--store", "postgresql+psycopg://u:s3cret@127.0.0.1:1/db", "release", "list"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "s3cret" not in err and err.startswith(
        "error: cannot open store 'postgresql+psycopg://u:***@"
    )
