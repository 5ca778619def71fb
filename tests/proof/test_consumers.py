"""Consumer contracts: loading, the shorthand forms, errors with field, value and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from backout.errors import ConfigError
from backout.proof.consumers import ConsumerContract, load_consumer_file, parse_consumer_yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "consumers"


@pytest.mark.parametrize("name", ["checkout", "garden-app", "nightly-report"])
def test_shipped_examples_load(name: str) -> None:
    consumer = load_consumer_file(EXAMPLES / f"{name}.yaml")
    assert consumer.name == name and consumer.model == "iris" and consumer.reads


def test_type_names_become_schemas_and_read_lists_become_fields() -> None:
    consumer = parse_consumer_yaml("name: a\nmodel: iris\nsends: {x: number}\nreads: [label]\n")
    assert consumer.sends == {"x": {"type": "number"}}
    assert consumer.reads["label"].enum is None


def test_to_dict_and_from_dict_round_trip() -> None:
    consumer = load_consumer_file(EXAMPLES / "checkout.yaml")
    assert ConsumerContract.from_dict(consumer.to_dict()) == consumer


def test_malformed_file_names_field_value_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: a\nmodel: iris\nsends:\n  x: number\n  y: numbr\n")
    with pytest.raises(ConfigError) as info:
        load_consumer_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}: line 5: sends.y: unknown type 'numbr'")
    assert "(got 'numbr')" in message


def test_bad_relied_on_enum_names_its_line() -> None:
    text = "name: a\nmodel: iris\nreads:\n  label:\n    enum: 3\n"
    with pytest.raises(ConfigError, match=r"line 5: reads\.label\.enum: .*\(got 3\)"):
        parse_consumer_yaml(text, "c.yaml")


def test_missing_field_points_at_the_mapping_that_lacks_it() -> None:
    with pytest.raises(ConfigError, match=r"c\.yaml: line 1: model: Field required \(missing\)"):
        parse_consumer_yaml("name: a\nsends: {}\n", "c.yaml")


def test_unknown_key_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"line 3: sendz: Extra inputs are not permitted"):
        parse_consumer_yaml("name: a\nmodel: iris\nsendz: {}\n", "c.yaml")


def test_invalid_yaml_names_the_line() -> None:
    with pytest.raises(ConfigError, match=r"^c\.yaml: line 2 is not valid YAML: [^\n]+$"):
        parse_consumer_yaml("name: a\nmodel: iris: x\n", "c.yaml")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read consumer file"):
        load_consumer_file(tmp_path / "nope.yaml")


def test_bad_from_dict_names_the_field() -> None:
    with pytest.raises(ConfigError, match="name: use lower-case"):
        ConsumerContract.from_dict({"name": "Bad Name", "model": "iris"})
