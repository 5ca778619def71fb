"""The compatibility diff: breaking and compatible changes, consumers named, both directions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from backout.proof.compat import CompatReport, Direction, Severity, diff_contracts
from backout.proof.consumers import ConsumerContract, load_consumer_file
from backout.proof.contracts import contract_from_mlflow_signature
from backout.registry.manifest import Contract

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "consumers"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
LABELS = ["setosa", "versicolor", "virginica"]


def iris_input(**changes: Any) -> dict[str, Any]:
    props: dict[str, Any] = {f: {"type": "number", "minimum": 0} for f in FEATURES}
    schema: dict[str, Any] = {
        "type": "object",
        "properties": props,
        "required": list(FEATURES),
        "additionalProperties": False,
    }
    for key, value in changes.items():
        if key in ("required", "additionalProperties"):
            schema[key] = value
        elif value is None:
            props.pop(key)
        else:
            props[key] = value
    return schema


def iris_output(
    labels: list[str] = LABELS, required: tuple[str, ...] = ("label",)
) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "label": {"enum": labels},
            "probabilities": {
                "type": "array",
                "items": {"type": "number", "minimum": 0, "maximum": 1},
            },
        },
        "required": list(required),
    }


def iris(inp: dict[str, Any] | None = None, out: dict[str, Any] | None = None) -> Contract:
    return Contract(input=inp or iris_input(), output=out or iris_output())


def consumer(name: str, sends: dict[str, Any] | None = None, reads: Any = None) -> ConsumerContract:
    return ConsumerContract.model_validate(
        {
            "name": name,
            "model": "iris",
            "sends": sends or dict.fromkeys(FEATURES, "number"),
            "reads": reads or {},
        }
    )


def only(report: CompatReport, path: str, severity: Severity | None = None) -> list[Any]:
    return [
        f
        for f in report.findings
        if f.path == path and (severity is None or f.severity is severity)
    ]


def test_identical_contracts_are_compatible() -> None:
    report = diff_contracts(iris(), iris())
    assert report.compatible and report.findings == ()


def test_field_target_requires_that_live_does_not_send_is_breaking() -> None:
    target = iris(iris_input(petal_area={"type": "number"}, required=[*FEATURES, "petal_area"]))
    report = diff_contracts(iris(), target)
    assert not report.compatible
    (finding,) = only(report, "petal_area", Severity.BREAKING)
    assert finding.direction is Direction.INPUT and finding.change == "required"


def test_field_optional_on_live_and_required_on_target_is_breaking() -> None:
    live = iris(iris_input(required=FEATURES[:3]))
    report = diff_contracts(live, iris())
    assert only(report, "petal_width", Severity.BREAKING)[0].old == "optional"


def test_newly_required_field_every_consumer_sends_is_only_info() -> None:
    live = iris(iris_input(required=FEATURES[:3]))
    report = diff_contracts(live, iris(), [consumer("a"), consumer("b")])
    assert report.compatible
    assert only(report, "petal_width", Severity.INFO)


def test_newly_required_field_names_the_consumer_that_does_not_send_it() -> None:
    live = iris(iris_input(required=FEATURES[:3]))
    lazy = consumer("lazy", sends=dict.fromkeys(FEATURES[:3], "number"))
    report = diff_contracts(live, iris(), [consumer("full"), lazy])
    assert report.broken_consumers == ("lazy",)


def test_number_narrowed_to_integer_is_breaking() -> None:
    target = iris(iris_input(sepal_length={"type": "integer", "minimum": 0}))
    (finding,) = only(diff_contracts(iris(), target), "sepal_length")
    assert finding.severity is Severity.BREAKING and (finding.old, finding.new) == (
        "number",
        "integer",
    )


def test_integer_widened_to_number_is_compatible() -> None:
    live = iris(iris_input(sepal_length={"type": "integer", "minimum": 0}))
    report = diff_contracts(live, iris())
    assert report.compatible and only(report, "sepal_length", Severity.COMPATIBLE)


def test_string_narrowed_to_enum_is_breaking() -> None:
    live = iris(iris_input(region={"type": "string"}))
    target = iris(iris_input(region={"enum": ["eu", "us"]}))
    (finding,) = only(diff_contracts(live, target), "region")
    assert finding.severity is Severity.BREAKING and finding.change == "enum"


def test_fewer_input_enum_values_is_breaking() -> None:
    live = iris(iris_input(region={"enum": ["eu", "us", "apac"]}))
    target = iris(iris_input(region={"enum": ["eu", "us"]}))
    (finding,) = only(diff_contracts(live, target), "region")
    assert finding.severity is Severity.BREAKING and "apac" in finding.message


def test_more_input_enum_values_is_compatible() -> None:
    live = iris(iris_input(region={"enum": ["eu", "us"]}))
    target = iris(iris_input(region={"enum": ["eu", "us", "apac"]}))
    assert diff_contracts(live, target).compatible


def test_tightened_minimum_is_breaking_and_loosened_is_compatible() -> None:
    tighter = iris(iris_input(petal_width={"type": "number", "minimum": 0.1}))
    assert only(diff_contracts(iris(), tighter), "petal_width")[0].severity is Severity.BREAKING
    looser = iris(iris_input(petal_width={"type": "number"}))
    assert diff_contracts(iris(), looser).compatible


def test_tightened_maximum_is_breaking() -> None:
    live = iris(iris_input(petal_width={"type": "number", "maximum": 10}))
    target = iris(iris_input(petal_width={"type": "number", "exclusiveMaximum": 10}))
    assert only(diff_contracts(live, target), "petal_width")[0].severity is Severity.BREAKING


def test_new_optional_field_is_compatible() -> None:
    target = iris(iris_input(region={"type": "string"}))
    report = diff_contracts(iris(), target)
    assert report.compatible
    assert only(report, "region")[0].severity is Severity.COMPATIBLE


def test_rollback_to_older_release_rejecting_newer_callers_extra_field_is_breaking() -> None:
    """iris@2 takes an optional `region`; iris@1 allows no extra fields, so rolling back breaks."""
    newer = iris(iris_input(region={"type": "string"}))
    older = iris()
    garden = load_consumer_file(EXAMPLES / "garden-app.yaml")
    checkout = load_consumer_file(EXAMPLES / "checkout.yaml")
    report = diff_contracts(
        newer, older, [garden, checkout], live_name="iris@2.0.0", target_name="iris@1.0.0"
    )
    assert not report.compatible
    assert report.broken_consumers == ("garden-app",)
    assert only(report, "region")[0].change == "rejected"
    assert "iris@1.0.0 cannot take iris@2.0.0's traffic" in report.render()


def test_rollback_to_older_release_that_ignores_extra_fields_is_compatible() -> None:
    newer = iris(iris_input(region={"type": "string"}))
    older = iris(iris_input(additionalProperties=True))
    report = diff_contracts(newer, older)
    assert report.compatible
    assert only(report, "region", Severity.INFO)[0].change == "ignored"


def test_consumer_sending_undeclared_field_to_strict_target_is_named() -> None:
    live = iris(iris_input(additionalProperties=True))
    sender = consumer("sender", sends={**dict.fromkeys(FEATURES, "number"), "debug": "boolean"})
    report = diff_contracts(live, iris(), [sender, consumer("quiet")])
    assert report.broken_consumers == ("sender",)


def test_consumer_whose_declared_type_the_target_refuses_is_named() -> None:
    live = iris(iris_input(sepal_length={"type": ["number", "string"]}))
    target = iris(iris_input(sepal_length={"type": "number"}))
    stringy = consumer(
        "stringy", sends={**dict.fromkeys(FEATURES, "number"), "sepal_length": "string"}
    )
    report = diff_contracts(live, target, [stringy, consumer("numeric")])
    assert report.broken_consumers == ("stringy",)


def test_output_field_consumers_read_that_target_drops_is_breaking() -> None:
    live = iris(out=iris_output(required=("label", "probabilities")))
    target_out = iris_output()
    del target_out["properties"]["probabilities"]
    checkout = load_consumer_file(EXAMPLES / "checkout.yaml")
    nightly = load_consumer_file(EXAMPLES / "nightly-report.yaml")
    report = diff_contracts(live, iris(out=target_out), [checkout, nightly])
    (finding,) = only(report, "probabilities")
    assert finding.severity is Severity.BREAKING and finding.consumers == ("checkout",)


def test_output_field_no_longer_required_breaks_its_readers() -> None:
    live = iris(out=iris_output(required=("label", "probabilities")))
    report = diff_contracts(live, iris(), [consumer("reader", reads=["probabilities"])])
    assert report.broken_consumers == ("reader",)


def test_output_field_nobody_reads_dropped_is_only_info() -> None:
    live = iris(out=iris_output(required=("label", "probabilities")))
    report = diff_contracts(live, iris(), [consumer("labels-only", reads=["label"])])
    assert report.compatible


def test_dropped_output_enum_value_a_consumer_relies_on_is_breaking() -> None:
    """A rollback target that never predicts `virginica` breaks the app that branches on it."""
    older = iris(out=iris_output(labels=["setosa", "versicolor"]))
    garden = load_consumer_file(EXAMPLES / "garden-app.yaml")
    nightly = load_consumer_file(EXAMPLES / "nightly-report.yaml")
    report = diff_contracts(iris(), older, [garden, nightly])
    (finding,) = only(report, "label", Severity.BREAKING)
    assert finding.consumers == ("garden-app",) and finding.direction is Direction.OUTPUT


def test_dropped_output_enum_value_nobody_relies_on_is_info() -> None:
    older = iris(out=iris_output(labels=["setosa", "virginica"]))
    picky = consumer("picky", reads={"label": {"enum": ["setosa", "virginica"]}})
    report = diff_contracts(iris(), older, [picky])
    assert report.compatible and only(report, "label", Severity.INFO)


def test_output_type_widened_breaks_its_readers() -> None:
    live_out = iris_output()
    live_out["properties"]["score"] = {"type": "integer"}
    target_out = iris_output()
    target_out["properties"]["score"] = {"type": ["number", "null"]}
    report = diff_contracts(
        iris(out=live_out), iris(out=target_out), [consumer("scorer", reads=["score"])]
    )
    assert report.broken_consumers == ("scorer",)


def test_positional_array_of_different_length_is_breaking() -> None:
    four = Contract(
        input={"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4}
    )
    five = Contract(
        input={"type": "array", "items": {"type": "number"}, "minItems": 5, "maxItems": 5}
    )
    (finding,) = diff_contracts(four, five).breaking
    assert (finding.change, finding.old, finding.new) == ("length", 4, 5)


def test_positional_array_item_type_widened_is_compatible() -> None:
    ints = Contract(
        input={"type": "array", "items": {"type": "integer"}, "minItems": 4, "maxItems": 4}
    )
    nums = Contract(
        input={"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4}
    )
    assert diff_contracts(ints, nums).compatible
    assert not diff_contracts(nums, ints).compatible


def test_object_to_positional_array_is_breaking() -> None:
    array = Contract(input={"type": "array", "items": {"type": "number"}})
    assert not diff_contracts(iris(), array).compatible


def test_tensor_datatype_and_shape_changes_are_breaking() -> None:
    def tensor(shape: list[int], datatype: str) -> Contract:
        tensors = [{"name": "X", "shape": shape, "datatype": datatype}]
        return Contract(
            input={"type": "array", "items": {"type": "number"}, "x-backout-tensors": tensors}
        )

    assert not diff_contracts(tensor([-1, 4], "FP32"), tensor([-1, 4], "FP64")).compatible
    assert not diff_contracts(tensor([-1, -1], "FP32"), tensor([-1, 4], "FP32")).compatible
    assert diff_contracts(tensor([-1, 4], "FP32"), tensor([-1, -1], "FP32")).compatible


def test_mlflow_long_column_rolled_back_to_integer_is_breaking() -> None:
    def sig(kind: str) -> Contract:
        return contract_from_mlflow_signature({"inputs": f'[{{"type": "{kind}", "name": "age"}}]'})

    assert diff_contracts(sig("integer"), sig("long")).compatible
    assert diff_contracts(sig("integer"), sig("double")).compatible
    assert diff_contracts(sig("float"), sig("double")).compatible
    for narrower, wider in [("integer", "long"), ("float", "double"), ("long", "double")]:
        report = diff_contracts(sig(wider), sig(narrower))
        assert not report.compatible, (wider, narrower)
    (finding,) = diff_contracts(sig("long"), sig("double")).breaking
    assert finding.change == "mlflow-type"


def test_report_to_dict_and_render_list_every_finding() -> None:
    target = iris(iris_input(sepal_length={"type": "integer"}))
    report = diff_contracts(iris(), target, [consumer("a")])
    data = report.to_dict()
    assert data["compatible"] is False and data["consumers"] == ["a"]
    assert data["findings"][0]["severity"] == "breaking"
    text = report.render()
    assert "sepal_length" in text and "number → integer" in text
    assert len(report.rows()) == len(report.findings)


schemas = st.fixed_dictionaries(
    {"type": st.sampled_from(["number", "integer", "string", "boolean"])},
    optional={
        "minimum": st.integers(-5, 5),
        "maximum": st.integers(6, 20),
        "enum": st.lists(st.integers(0, 5), min_size=1, max_size=4, unique=True),
    },
)
objects = st.dictionaries(
    st.sampled_from([*FEATURES, "region", "age"]), schemas, min_size=1, max_size=5
).flatmap(
    lambda props: st.fixed_dictionaries(
        {
            "type": st.just("object"),
            "properties": st.just(props),
            "required": st.lists(st.sampled_from(sorted(props)), unique=True),
            "additionalProperties": st.booleans(),
        }
    )
)


@settings(max_examples=60, deadline=None)
@given(objects, objects)
def test_a_contract_is_always_compatible_with_itself(
    inp: dict[str, Any], out: dict[str, Any]
) -> None:
    contract = Contract(input=inp, output=out)
    assert diff_contracts(contract, contract).compatible


@settings(max_examples=60, deadline=None)
@given(objects, st.sampled_from(["new_a", "new_b"]), schemas)
def test_adding_an_optional_input_field_is_always_compatible(
    inp: dict[str, Any], name: str, schema: dict[str, Any]
) -> None:
    wider = {**inp, "properties": {**inp["properties"], name: schema}}
    assert diff_contracts(Contract(input=inp), Contract(input=wider)).compatible
