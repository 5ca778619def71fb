"""The one loader of user-written YAML: bounded in size, aliases, nesting and expansion.

Every refusal is one line naming the limit, raised before any value is built, so an input
bomb costs no more than reading its first bytes. (How fast that is is measured, not
asserted: ``pytest-timeout`` only bounds a test that would otherwise run for minutes.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from backout.configfile import (
    MAX_YAML_ALIASES,
    MAX_YAML_BYTES,
    MAX_YAML_DEPTH,
    MAX_YAML_VALUES,
    read_text_file,
    validate_yaml,
)
from backout.errors import ConfigError


class Anything(BaseModel):
    """A file of any fields: the limits hold before a model sees the data."""

    model_config = ConfigDict(extra="allow")


def laughs(levels: int, width: int = 10) -> str:
    """The "billion laughs": each level a list of ``width`` aliases of the level below."""
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def one_line(exc: pytest.ExceptionInfo[ConfigError]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


@pytest.mark.timeout(20)
def test_the_billion_laughs_is_refused_at_its_aliases() -> None:
    with pytest.raises(ConfigError) as exc:
        validate_yaml(Anything, laughs(9), "bomb.yaml")
    assert one_line(exc).startswith(f"bomb.yaml:8: more than {MAX_YAML_ALIASES} YAML aliases")


@pytest.mark.timeout(20)
def test_few_aliases_that_expand_past_the_limit_are_refused() -> None:
    """Five levels use 40 aliases (under the alias limit) but expand to 100,000 values."""
    with pytest.raises(ConfigError) as exc:
        validate_yaml(Anything, laughs(5), "bomb.yaml")
    assert one_line(exc) == (
        f"bomb.yaml:5: the YAML expands to more than {MAX_YAML_VALUES:,} values through its "
        "aliases, the limit that stops alias bombs: write the values out"
    )


def test_a_few_honest_aliases_are_fine() -> None:
    data = validate_yaml(Anything, laughs(3), "ok.yaml")
    assert len(data.model_dump()["a2"]) == 10


def test_an_alias_inside_its_own_collection_is_refused() -> None:
    with pytest.raises(ConfigError) as exc:
        validate_yaml(Anything, "a: &r {b: *r}\n", "loop.yaml")
    assert one_line(exc).startswith("loop.yaml:1: an alias (*name) inside the collection it names")


@pytest.mark.parametrize("flow", [True, False], ids=["flow", "block"])
def test_deep_nesting_is_refused_without_a_recursion_error(flow: bool) -> None:
    n = MAX_YAML_DEPTH * 4
    text = "a: " + "[" * n + "]" * n if flow else "".join(f"{' ' * i}k:\n" for i in range(n))
    with pytest.raises(ConfigError) as exc:
        validate_yaml(Anything, text, "deep.yaml")
    assert f"nested deeper than {MAX_YAML_DEPTH} levels" in one_line(exc)


@pytest.mark.timeout(20)
def test_ten_megabytes_of_text_are_refused_before_parsing() -> None:
    text = "a: b\n" + "# padding\n" * 1_000_000
    with pytest.raises(ConfigError) as exc:
        validate_yaml(Anything, text, "big.yaml", what="a policy")
    assert one_line(exc) == (
        f"big.yaml: {len(text):,} bytes is larger than {MAX_YAML_BYTES:,} bytes, the limit for "
        "a policy: is it the right file?"
    )


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", ["big.yaml", "/dev/zero"])
def test_a_file_is_read_only_up_to_its_limit(name: str, tmp_path: Path) -> None:
    path = Path(name) if name.startswith("/") else tmp_path / name
    if not path.exists():
        path.write_bytes(b"# padding\n" * 1_000_000)
    with pytest.raises(ConfigError) as exc:
        read_text_file(path, what="policy file", limit=1000)
    assert one_line(exc) == (
        f"{path}: policy file is larger than 1,000 bytes, the limit for such files: "
        "is it the right file?"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "consumer file not found: check the path"),
        (b"\xff\xfe\x00garbage", "consumer file is not UTF-8 text (byte 0 is not)"),
    ],
    ids=["missing", "binary"],
)
def test_an_unreadable_file_is_one_line(
    content: bytes | None, message: str, tmp_path: Path
) -> None:
    path = tmp_path / "c.yaml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as exc:
        read_text_file(path, what="consumer file", limit=MAX_YAML_BYTES)
    assert one_line(exc) == f"{path}: {message}"
    with pytest.raises(ConfigError, match="cannot read directory file: Is a directory"):
        read_text_file(tmp_path, what="directory file", limit=10)


def test_the_limits_leave_room_for_every_shipped_example() -> None:
    """The largest real file is far below each limit."""
    root = Path(__file__).resolve().parents[1] / "examples"
    for path in root.rglob("*.yaml"):
        text = path.read_text()
        assert len(text.encode()) * 4 < MAX_YAML_BYTES, path
        data: Any = validate_yaml(Anything, text, str(path)).model_dump()
        assert data, path
