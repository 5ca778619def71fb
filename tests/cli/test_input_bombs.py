"""Every file a command reads is bounded: policies, consumer files, contracts, configs.

The loaders below the command line share :func:`backout.configfile.read_text_file` and
:func:`backout.configfile.validate_yaml`; these tests go through the commands a user types
and check the one line each bomb gets, and that nothing reached the store.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from backout.cli import main
from tests.test_configfile import laughs

BOMBS = {
    "laughs.yaml": laughs(9).encode(),
    "expanding.yaml": laughs(5).encode(),
    "big.yaml": b"name: a\n" + b"# padding\n" * 1_000_000,
    "deep.yaml": b"name: " + b"[" * 5000 + b"]" * 5000 + b"\n",
    "binary.yaml": bytes(range(256)) * 40,
}
EXPECTED = {
    "laughs.yaml": ":8: more than 64 YAML aliases",
    "expanding.yaml": ":5: the YAML expands to more than 50,000 values",
    "big.yaml": "is larger than 65,536 bytes",
    "deep.yaml": ":1: nested deeper than 64 levels",
    "binary.yaml": "is not UTF-8 text",
}


def run(capsys: pytest.CaptureFixture[str], tmp_path: Path, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    base = ["--store", f"sqlite:///{tmp_path / 'store.db'}", "--artifacts", str(tmp_path / "a")]
    with pytest.raises(SystemExit) as exc:
        main([*base, *args])
    captured = capsys.readouterr()
    return int(exc.value.code or 0), captured.err


@pytest.mark.timeout(60)
@pytest.mark.parametrize("bomb", sorted(BOMBS))
@pytest.mark.parametrize("command", ["policy check", "deploy", "consumers add"])
def test_a_yaml_bomb_is_one_line_naming_the_limit(
    bomb: str, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / bomb
    path.write_bytes(BOMBS[bomb])
    args = {
        "policy check": ["policy", "check", str(path)],
        "deploy": ["deploy", "fraud@1.0.0", "--policy", str(path)],
        "consumers add": ["consumers", "add", str(path)],
    }[command]
    code, err = run(capsys, tmp_path, *args)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"error: {path}"), err
    assert EXPECTED[bomb] in err
    assert not (tmp_path / "store.db").exists()  # refused before any store was opened


@pytest.mark.timeout(60)
@pytest.mark.parametrize("option", ["--contract", "--config"])
@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"input": {"enum": [' + b"1," * 2_000_000 + b"1]}}", "is larger than 1,048,576 bytes"),
        (b'{"input": ' + b"[" * 5000 + b"]" * 5000 + b"}", "is not valid JSON: depth limit"),
        (b"\xff" * 100, "is not UTF-8 text"),
    ],
    ids=["big", "deep", "binary"],
)
def test_a_json_bomb_is_one_line(
    option: str,
    content: bytes,
    expected: str,
    tmp_path: Path,
    artifact: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "file.json"
    path.write_bytes(content)
    code, err = run(
        capsys, tmp_path, "release", "register", "fraud", "1.0.0", "-a", str(artifact),
        option, str(path),
    )  # fmt: skip
    assert code == 2
    assert err.count("\n") == 1 and expected in err, err
    assert not (tmp_path / "store.db").exists()
