"""The release manifest: validation and the canonical digest."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backout.errors import InvalidContract, InvalidVersion, ValidationError
from backout.registry.manifest import (
    Artifact,
    Contract,
    ReleaseManifest,
    Runtime,
    RuntimeKind,
    check_version,
    manifest_from_json,
    parse_ref,
)

SHA = "a" * 64


def manifest(**kw: object) -> ReleaseManifest:
    base: dict[str, object] = {
        "model": "fraud",
        "version": "1.4.0",
        "artifacts": (Artifact(path="model.joblib", sha256=SHA, size=10),),
        "runtime": Runtime(kind=RuntimeKind.SKLEARN),
    }
    base.update(kw)
    return ReleaseManifest(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("v", ["1.4.0", "0.0.1-rc.1+build.5", "2024-06-01", "v7", "blue_green"])
def test_valid_versions_are_accepted(v: str) -> None:
    assert check_version(v) == v


@pytest.mark.parametrize("v", ["", "1..0", "../etc", "a b", "-1", "x" * 65, "1.0/2"])
def test_invalid_versions_are_refused_with_the_rule(v: str) -> None:
    with pytest.raises(InvalidVersion, match="semantic version"):
        check_version(v)


def test_manifest_refuses_an_invalid_version() -> None:
    with pytest.raises(InvalidVersion):
        manifest(version="1..0")


def test_manifest_refuses_an_artifact_path_that_escapes() -> None:
    with pytest.raises(ValueError, match="relative"):
        Artifact(path="../model.joblib", sha256=SHA, size=1)


def test_contract_that_is_not_json_schema_is_refused() -> None:
    with pytest.raises(InvalidContract, match="not valid JSON Schema"):
        Contract(input={"type": "no-such-type"})


def test_digest_is_stable_across_a_round_trip() -> None:
    m = manifest(config={"b": 1, "a": [1, 2]})
    again = manifest_from_json(m.canonical())
    assert again.digest() == m.digest()


def test_content_digest_ignores_who_and_when() -> None:
    a = manifest(created_by="ana")
    b = manifest(created_by="bo")
    assert a.digest() != b.digest()
    assert a.content_digest() == b.content_digest()


@given(st.dictionaries(st.text(max_size=5), st.integers(-(2**63), 2**63 - 1), max_size=5))
def test_digest_does_not_depend_on_key_order(config: dict[str, int]) -> None:
    reordered = dict(reversed(list(config.items())))
    m1 = manifest(config=config, created_at="2026-01-01T00:00:00Z")
    m2 = manifest(config=reordered, created_at="2026-01-01T00:00:00Z")
    assert m1.digest() == m2.digest()


def test_parse_ref_names_the_expected_form() -> None:
    assert parse_ref("fraud@1.4.0") == ("fraud", "1.4.0")
    with pytest.raises(ValidationError, match="MODEL@VERSION"):
        parse_ref("fraud")


def test_an_integer_beyond_64_bits_is_refused_clearly() -> None:
    with pytest.raises(ValidationError, match="canonical JSON"):
        manifest(config={"n": 2**70}).digest()


def test_schema_verdicts_are_cached_by_content_and_still_name_each_caller() -> None:
    """A cached verdict gives the same answer, and the message names whoever asked."""
    from backout.registry.manifest import check_json_schema

    bad = {"type": "object", "properties": {"x": {"type": "decimal"}}}
    for what in ("contract", "input contract"):
        with pytest.raises(
            InvalidContract, match=f"^{what} is not valid JSON Schema at properties/x/type"
        ):
            check_json_schema(dict(bad), what)
    good = {"type": "object", "properties": {"x": {"type": "number"}}}
    assert check_json_schema(good, "contract") is good
    assert check_json_schema(dict(good), "contract") == good
