"""Consumer files are read by the policy's loader, so both kinds of file behave alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from backout.control.policy import parse_policy
from backout.errors import ConfigError, PolicyError
from backout.proof.consumers import load_consumer_file, parse_consumer_yaml


def test_yes_and_no_stay_strings_as_in_yaml_1_2() -> None:
    """YAML 1.1 would read the relied-on values ``yes``/``no``/``on`` as booleans."""
    consumer = parse_consumer_yaml(
        "name: a\nmodel: iris\nreads:\n  approved: {enum: [yes, no, on]}\n", "c.yaml"
    )
    assert consumer.reads["approved"].enum == ("yes", "no", "on")


def test_a_duplicate_key_is_refused_with_both_lines() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_consumer_yaml("name: a\nmodel: iris\nmodel: fraud\n", "c.yaml")
    assert str(exc.value) == "c.yaml:3: model: duplicate key (first on line 2)"


def test_every_error_is_reported_one_per_line_first_line_first() -> None:
    text = "name: Bad Name\nmodel: iris\nsends:\n  x: numbr\nreads: 3\nextra: 1\n"
    with pytest.raises(ConfigError) as exc:
        parse_consumer_yaml(text, "c.yaml")
    lines = str(exc.value).splitlines()
    assert [line.split(": ", 2)[:2] for line in lines] == [
        ["c.yaml:1", "name"],
        ["c.yaml:4", "sends.x"],
        ["c.yaml:5", "reads"],
        ["c.yaml:6", "extra"],
    ]


@pytest.mark.parametrize(
    "text",
    ["name: a\nmodel: iris\nmodel: x\n", "- a\n- b\n", "a: &x [*x]\n", "a: [\n"],
    ids=["duplicate", "not a mapping", "self alias", "syntax"],
)
def test_the_same_text_fails_alike_as_a_consumer_and_as_a_policy(text: str) -> None:
    """Where a file is wrong in a way that is not about its fields, both loaders say the
    same thing in the same form."""
    with pytest.raises(ConfigError) as consumer:
        parse_consumer_yaml(text, "f.yaml")
    with pytest.raises(PolicyError) as policy:
        parse_policy(text, "f.yaml")
    policy_lines = str(policy.value).replace("a policy", "a consumer contract").splitlines()
    assert str(consumer.value).splitlines()[0] in policy_lines


def test_the_shipped_consumers_load() -> None:
    root = Path(__file__).resolve().parents[2] / "examples"
    for path in sorted(root.rglob("consumers/*.yaml")):
        assert load_consumer_file(path).name, path
