"""The policy: defaults, durations, errors that name field, value, choices and line, the
gates it builds, the example files and ``backout policy check``."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import typer
from typer.testing import CliRunner

from backout import judges as j
from backout.cli.policy import policy_app
from backout.control.policy import (
    Action,
    GateSpec,
    LatencyTrigger,
    NoticeKind,
    Policy,
    default_policy,
    example_policy,
    format_duration,
    load_policy,
    parse_duration,
    parse_policy,
    render_policy,
)
from backout.errors import PolicyError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "policies"


def errors_of(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p.yaml")
    return info.value.message.splitlines()


def only_error(text: str) -> str:
    (line,) = errors_of(text)
    return line


# --- durations ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("5m", 300),
        ("1h", 3600),
        ("250ms", 0.25),
        ("1m30s", 90),
        (12, 12),
        ("2.5", 2.5),
    ],
)
def test_durations_parse_to_seconds(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["30x", "m5", "", "-5", True, [1], "1h 5"])
def test_durations_reject_anything_else(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(86400, "1d"), (3600, "1h"), (300, "5m"), (90, "90s"), (0.25, "250ms"), (0, "0s")],
)
def test_durations_format_in_their_shortest_exact_spelling(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


# --- defaults and round trips ------------------------------------------------------------


def test_an_empty_file_is_the_default_policy() -> None:
    assert parse_policy("") == default_policy()


def test_default_policy_has_safe_defaults() -> None:
    p = default_policy("fraud")
    assert (p.model, p.rollout.steps, p.rollout.bake) == ("fraud", [5, 25, 50, 100], 30)
    assert (p.rollout.on_inconclusive, p.rollout.on_missing_data) == (Action.ROLLBACK, Action.ASK)
    assert (p.rollback.mode, p.rollback.target, p.rollback.window) == (
        "staged",
        "last-known-good",
        0,
    )
    assert p.notifications.on == set(NoticeKind) - {NoticeKind.COMPLETED}
    assert [t.kind for t in p.triggers] == ["integrity", "error_rate"]
    assert p.freeze.on_both_unhealthy and p.termination.abort_rollback_if_target_worse


def test_an_empty_section_takes_its_defaults() -> None:
    assert parse_policy("rollout:\nrollback:\n") == default_policy()


def test_a_section_must_be_a_mapping() -> None:
    assert only_error("rollout: fast\n") == (
        "p.yaml:1: rollout: must be a mapping of fields (got 'fast')"
    )


def test_rollback_completion_defaults_to_the_verification_duration() -> None:
    p = parse_policy("rollback:\n  verification:\n    duration: 3m\n")
    assert (p.completion.rollback, p.rollback_completion) == (180, 180)


def test_effective_policy_spells_durations_and_fills_defaults() -> None:
    eff = default_policy().effective()
    assert eff["rollout"]["bake"] == "30s"
    assert eff["completion"] == {"rollout": "1m", "rollback": "1m"}
    assert eff["rollout"]["gate"]["judges"][0] == {
        "judge": "error_rate",
        "min_requests": None,
        "tolerance": 0.2,
    }


def test_rendered_policy_reads_back_to_the_same_policy() -> None:
    p = load_policy(EXAMPLES / "staged-rollback.yaml")
    assert parse_policy(render_policy(p)) == p


def test_on_is_a_key_not_a_boolean() -> None:
    p = parse_policy("notifications:\n  on: [freeze]\n")
    assert p.notifications.on == {NoticeKind.FREEZE}


def test_trigger_name_defaults_to_its_kind() -> None:
    p = parse_policy("triggers:\n- {kind: latency, max_ms: 300}\n")
    assert isinstance(p.triggers[0], LatencyTrigger) and p.triggers[0].name == "latency"


def test_validate_for_refuses_a_policy_of_another_model() -> None:
    with pytest.raises(PolicyError, match="for model 'fraud', not 'churn'"):
        default_policy("fraud").validate_for("churn")


# --- errors ------------------------------------------------------------------------------


def test_out_of_range_step_names_path_value_and_line() -> None:
    assert only_error("rollout:\n  steps: [5, 25, 150]\n") == (
        "p.yaml:2: rollout.steps[2]: must be less than or equal to 100 (got 150)"
    )


def test_unknown_key_is_an_error_that_lists_the_allowed_keys() -> None:
    assert only_error("rollout:\n  bake: 30s\n  stpes: [5, 100]\n") == (
        "p.yaml:3: rollout.stpes: unknown field; did you mean 'steps'? allowed: bake, gate, "
        "min_requests, missing_data_after, on_inconclusive, on_missing_data, steps"
    )


def test_bad_choice_lists_the_allowed_values() -> None:
    assert only_error("rollback:\n  mode: emergncy\n") == (
        "p.yaml:2: rollback.mode: must be one of emergency, staged (got 'emergncy')"
    )


def test_bad_action_lists_the_allowed_actions() -> None:
    assert only_error("\nrollout:\n  on_inconclusive: maybe\n") == (
        "p.yaml:3: rollout.on_inconclusive: must be one of wait, ask, rollback (got 'maybe')"
    )


def test_unknown_trigger_kind_lists_the_kinds() -> None:
    assert only_error("triggers:\n- kind: cpu\n") == (
        "p.yaml:2: triggers[0].kind: must be one of error_rate, latency, integrity, drift, "
        "prometheus (got 'cpu')"
    )


def test_trigger_without_kind_lists_the_kinds() -> None:
    assert only_error("triggers:\n- {window: 1m}\n") == (
        "p.yaml:2: triggers[0].kind: must be one of error_rate, latency, integrity, drift, "
        "prometheus"
    )


def test_unknown_judge_field_lists_that_judge_fields() -> None:
    text = "rollout:\n  gate:\n    judges:\n    - judge: latency\n      quantile: 0.9\n"
    assert only_error(text) == (
        "p.yaml:5: rollout.gate.judges[0].quantile: unknown field; allowed: judge, "
        "min_requests, tolerance"
    )


def test_missing_required_trigger_field_is_named() -> None:
    assert only_error("triggers:\n- kind: latency\n  window: 1m\n") == (
        "p.yaml:2: triggers[0].max_ms: is required"
    )


def test_bad_duration_says_how_to_write_one() -> None:
    assert only_error("rollout:\n  bake: soon\n") == (
        "p.yaml:2: rollout.bake: must be a duration such as 30s, 5m, 1h, 250ms, 1m30s or a "
        "number of seconds (got 'soon')"
    )


def test_steps_must_increase() -> None:
    assert only_error("rollout:\n  steps: [5, 50, 25, 100]\n") == (
        "p.yaml:2: rollout.steps[2]: rollout steps must be strictly increasing (25 after 50)"
    )


def test_rollout_must_end_at_100() -> None:
    assert only_error("rollout:\n  steps:\n  - 5\n  - 50\n") == (
        "p.yaml:4: rollout.steps[1]: the last rollout step must be 100 (got 50)"
    )


def test_rollback_steps_must_end_at_100() -> None:
    assert only_error("rollback:\n  steps: [25, 50]\n") == (
        "p.yaml:2: rollback.steps[1]: the last rollback step must be 100 (got 50)"
    )


def test_alpha_above_half_is_refused() -> None:
    assert only_error("rollout:\n  gate:\n    alpha: 0.6\n") == (
        "p.yaml:3: rollout.gate.alpha: must be less than or equal to 0.5 (got 0.6)"
    )


def test_gate_horizon_shorter_than_bake_is_refused() -> None:
    assert only_error("rollout:\n  bake: 1m\n  gate:\n    horizon: 30s\n") == (
        "p.yaml:4: rollout.gate.horizon: gate.horizon (30s) must be at least the bake time (1m)"
    )


def test_error_rate_trigger_needs_a_limit_or_the_judge() -> None:
    assert only_error("triggers:\n- kind: error_rate\n") == (
        "p.yaml:2: triggers[0].max_rate: an error_rate trigger needs max_rate or use_judge: true"
    )


def test_trigger_names_must_be_unique() -> None:
    text = "triggers:\n- {kind: integrity}\n- {kind: integrity}\n"
    assert only_error(text) == (
        "p.yaml:3: triggers[1].name: trigger name 'integrity' is used twice; name each"
    )


def test_contact_needs_a_webhook_or_an_email() -> None:
    assert only_error("escalation:\n  contacts:\n  - name: ana\n") == (
        "p.yaml:3: escalation.contacts[0].webhook: contact 'ana' needs a webhook or an email"
    )


def test_webhook_must_be_an_http_url() -> None:
    assert only_error("notifications:\n  webhooks: [hooks.example.com/x]\n") == (
        "p.yaml:2: notifications.webhooks[0]: must be an http:// or https:// URL "
        "(got 'hooks.example.com/x')"
    )


def test_a_field_cannot_be_both_redacted_and_hashed() -> None:
    assert only_error("capture:\n  redact: [email]\n  hash: [email]\n") == (
        "p.yaml:3: capture.hash: fields both redacted and hashed: email"
    )


def test_rollback_time_limit_must_fit_its_bakes_and_verification() -> None:
    assert only_error("termination:\n  max_rollback_duration: 1m\n") == (
        "p.yaml:2: termination.max_rollback_duration: max_rollback_duration (1m) is shorter "
        "than the rollback's bakes and verification (90s)"
    )


def test_duplicate_keys_are_errors() -> None:
    assert only_error("rollout:\n  bake: 30s\n  bake: 1m\n") == (
        "p.yaml:3: rollout.bake: duplicate key (first on line 2)"
    )


def test_yaml_syntax_errors_give_the_line() -> None:
    assert only_error("rollout:\n  steps: [5, 25\nrollback: {}\n").startswith(
        "p.yaml:3: YAML syntax error: "
    )


def test_a_list_is_not_a_policy() -> None:
    assert only_error("- 1\n- 2\n") == "p.yaml:1: a policy is a mapping of fields, not a list"


def test_every_error_is_reported_in_file_order() -> None:
    text = "rollback:\n  mode: fast\nrollout:\n  bake: soon\n  steps: [0, 100]\n"
    assert [e.split(": ")[0] for e in errors_of(text)] == ["p.yaml:2", "p.yaml:4", "p.yaml:5"]


def test_missing_file_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="policy file not found"):
        load_policy(tmp_path / "nope.yaml")


# --- gates -------------------------------------------------------------------------------


def test_default_gate_builds_the_four_default_judges() -> None:
    gate = GateSpec().build()
    kinds = [type(x) for x in gate.judges]
    assert kinds == [j.ErrorRateJudge, j.LatencyJudge, j.TailLatencyJudge, j.IntegrityJudge]
    assert gate.alpha == 0.05


def test_gate_passes_alpha_horizon_and_min_requests_to_its_judges() -> None:
    spec = parse_policy(
        "rollout:\n  gate:\n    alpha: 0.01\n    horizon: 2m\n    judges:\n"
        "    - {judge: error_rate, tolerance: 0.3, min_requests: 50}\n"
        "    - {judge: latency_budget, quantile: 0.95, max_ms: 250}\n"
    ).rollout.gate
    err, budget = spec.build(min_requests=400).judges
    assert err.config == j.ErrorRateConfig(
        common=j.Common(alpha=0.01, min_requests=50, horizon_batches=120), tolerance=0.3
    )
    assert (budget.config.limit_s, budget.config.quantile) == (0.25, 0.95)
    assert budget.config.common.min_requests == 400


def test_gate_builds_drift_and_tail_judges_with_their_settings() -> None:
    spec = GateSpec.model_validate(
        {
            "judges": [
                {"judge": "drift", "classes": ["a", "b"]},
                {"judge": "tail_latency", "quantiles": [0.99, 0.9]},
            ]
        }
    )
    drift, tail = spec.build().judges
    assert drift.config.classes == ("a", "b")
    assert tail.config.quantiles == (0.9, 0.99)


# --- example files -----------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_example_policies_are_valid(path: Path) -> None:
    assert isinstance(load_policy(path), Policy)


def test_default_example_is_exactly_the_default_policy() -> None:
    assert load_policy(EXAMPLES / "default.yaml") == default_policy()


def test_packaged_examples_are_the_example_files() -> None:
    names = sorted(p.stem for p in EXAMPLES.glob("*.yaml"))
    assert names == ["default", "emergency", "staged-rollback"]
    for name in names:
        assert example_policy(name) == (EXAMPLES / f"{name}.yaml").read_text()


# --- backout policy check ----------------------------------------------------------------


def run(*args: str) -> tuple[int, str, str]:
    app = typer.Typer()
    app.add_typer(policy_app, name="policy")
    result = CliRunner().invoke(app, ["policy", "check", *args])
    return result.exit_code, result.stdout, result.stderr


def test_check_prints_the_effective_policy() -> None:
    path = EXAMPLES / "emergency.yaml"
    code, out, err = run(str(path))
    assert (code, err) == (0, "")
    assert out == render_policy(load_policy(path))


def test_check_json_prints_the_effective_policy_as_json() -> None:
    path = EXAMPLES / "emergency.yaml"
    code, out, _ = run(str(path), "--json")
    assert code == 0 and orjson.loads(out) == load_policy(path).effective()


def test_check_prints_one_line_per_error_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("rollback:\n  mode: fast\nrollout:\n  bake: soon\n")
    code, out, err = run(str(path))
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"error: {path}:2: rollback.mode: must be one of emergency, staged (got 'fast')",
        f"error: {path}:4: rollout.bake: must be a duration such as 30s, 5m, 1h, 250ms, "
        "1m30s or a number of seconds (got 'soon')",
    ]


def test_public_names_all_exist() -> None:
    import backout.control.policy

    assert [
        n for n in backout.control.policy.__all__ if not hasattr(backout.control.policy, n)
    ] == []


def test_check_refuses_a_policy_its_router_cannot_carry(capsys: pytest.CaptureFixture[str]) -> None:
    from backout.cli import main

    with pytest.raises(SystemExit) as code:
        main(
            ["policy", "check", str(EXAMPLES / "staged-rollback.yaml"), "--router", "weights-only"]
        )
    captured = capsys.readouterr()
    assert code.value.code == 2 and captured.out == ""
    assert captured.err == (
        "error: the policy cannot run on the weights-only router: capture.rate: 0.05 needs the "
        "capture capability; replay.allowed: true needs the capture capability, which it lacks "
        "(turn those settings off for this model, or route it through a router that has them)\n"
    )


def test_check_names_the_routers_it_knows(capsys: pytest.CaptureFixture[str]) -> None:
    from backout.cli import main

    with pytest.raises(SystemExit) as code:
        main(["policy", "check", str(EXAMPLES / "default.yaml"), "--router", "envoy"])
    assert code.value.code == 2
    assert capsys.readouterr().err == (
        "error: --router 'envoy' is not a router backout knows: use one of gateway, traefik, "
        "gateway-api, weights-only\n"
    )
