"""The operational commands: deploy, rollback, abort, promote, pause, resume, unfreeze, status,
history, traffic, policy check, consumers, compat, replay, drill --history, report.

Whole outputs are compared where they are deterministic; times are masked. Every error is
exactly one line starting with ``error:`` and a non-zero exit.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from backout.control.controller import Controller
from backout.registry.artifacts import LocalBlobStore
from backout.registry.releases import Registry
from backout.store import open_store
from backout.telemetry.batches import Batch, latency_bucket, write_batches
from tests.cli.runner import Cli
from tests.control.world import FakeProber

MODEL = "fraud"


def _template(root: Path, *, deploy: bool) -> Path:
    """A store with fraud@1.0.0, 1.1.0 and 1.2.0 registered (and 1.0.0 live if ``deploy``),
    built once and copied into each test: registering and migrating take most of a second."""
    store = open_store(f"sqlite:///{root / 'store.db'}", create=True)
    registry = Registry(store, LocalBlobStore(root / "artifacts"))
    for v in ("1.0.0", "1.1.0", "1.2.0"):
        f = root / f"model-{v}.bin"
        f.write_bytes(f"weights {v}".encode())
        registry.register(MODEL, v, [f], actor="ana")
    # The releases are placeholder bytes: record them as loaded and answered, so the CLI's
    # controller (which probes for real) finds them proven in the store.
    controller = Controller(store, registry, prober=FakeProber())
    for v in ("1.0.0", "1.1.0", "1.2.0"):
        controller.prove(MODEL, [v], "ana", "take traffic")
    if deploy:
        controller.deploy(MODEL, "1.0.0", actor="ana")
    store.dispose()
    return root


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Path]:
    return {d: _template(tmp_path_factory.mktemp(f"template-{d}"), deploy=d) for d in (False, True)}


def _cli(capsys: pytest.CaptureFixture[str], tmp_path: Path, template: Path) -> Cli:
    shutil.copytree(template, tmp_path, dirs_exist_ok=True)
    return Cli(capsys, f"sqlite:///{tmp_path / 'store.db'}", tmp_path)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], tmp_path: Path, templates: dict[bool, Path]) -> Cli:
    """A CLI on a store with fraud@1.0.0, 1.1.0 and 1.2.0 registered."""
    return _cli(capsys, tmp_path, templates[False])


@pytest.fixture
def live(capsys: pytest.CaptureFixture[str], tmp_path: Path, templates: dict[bool, Path]) -> Cli:
    """The same, with fraud@1.0.0 live at 100%."""
    return _cli(capsys, tmp_path, templates[True])


def ok(result: tuple[int, str, str]) -> str:
    code, out, err = result
    assert code == 0, err
    assert err == ""
    return out


def error(result: tuple[int, str, str], code: int | None = None) -> str:
    """The one error line, without its ``error: `` prefix and newline."""
    rc, out, err = result
    assert rc != 0 and out == "", (rc, out, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and err.endswith("\n"), err
    if code is not None:
        assert rc == code
    return err.removeprefix("error: ").removesuffix("\n")


def doc(cli: Cli, *args: str) -> dict[str, Any]:
    d = cli.json(*args)
    assert isinstance(d, dict)
    return d


def kinds(cli: Cli) -> list[str]:
    events = doc(cli, "history", MODEL)["events"]
    return [e["kind"] for e in events]


# -- deploy ----------------------------------------------------------------------------------


def test_the_first_deploy_makes_the_release_live_and_known_good(cli: Cli) -> None:
    out = ok(cli("deploy", f"{MODEL}@1.0.0"))
    assert out == "fraud@1.0.0 is live at 100% (first release of fraud; marked known-good)\n"
    assert doc(cli, "release", "show", f"{MODEL}@1.0.0")["known_good"] is True


def test_deploy_starts_a_rollout_and_prints_its_first_step(live: Cli) -> None:
    out = ok(live("deploy", f"{MODEL}@1.1.0"))
    assert out == (
        "rollout of fraud@1.1.0 started: 1.0.0=95% 1.1.0=5% — watch it with `backout status fraud`\n"
    )


def test_deploy_json_is_the_operation(live: Cli) -> None:
    d = doc(live, "deploy", f"{MODEL}@1.1.0")
    assert {k: d[k] for k in ("model", "kind", "phase", "step", "stable", "target", "weights")} == {
        "model": "fraud", "kind": "rollout", "phase": "rolling-out", "step": 0,
        "stable": "1.0.0", "target": "1.1.0", "weights": {"1.0.0": 95.0, "1.1.0": 5.0},
    }  # fmt: skip
    assert d["actor"] == "ana" and d["ended_at"] is None


def test_a_second_deploy_during_a_rollout_is_refused(live: Cli) -> None:
    ok(live("deploy", f"{MODEL}@1.1.0"))
    assert error(live("deploy", f"{MODEL}@1.2.0"), 1) == (
        "fraud already has a rollout in progress (rolling-out, target 1.1.0): abort it first"
    )


def test_deploying_an_unregistered_release_names_the_registered_ones(live: Cli) -> None:
    assert error(live("deploy", f"{MODEL}@9.9.9")) == (
        "release fraud@9.9.9 is not registered (registered versions: 1.2.0, 1.1.0, 1.0.0)"
    )


# -- rollback --------------------------------------------------------------------------------


def test_an_emergency_rollback_moves_everything_at_once(live: Cli) -> None:
    ok(live("deploy", f"{MODEL}@1.1.0"))
    out = ok(live("rollback", MODEL, "--emergency", "--reason", "pager"))
    assert out == (
        "emergency rollback of fraud from 1.1.0 to 1.0.0 started: 1.0.0=100% (verifying)\n"
    )
    assert kinds(live)[-3:] == ["phase.aborted", "rollback.started", "traffic.applied"]


def test_a_staged_rollback_takes_the_first_step_back(live: Cli) -> None:
    ok(live("deploy", f"{MODEL}@1.1.0"))
    ok(live("promote", MODEL))
    out = ok(live("rollback", MODEL, "--staged"))
    assert out == (
        "staged rollback of fraud from 1.1.0 to 1.0.0 started: 1.1.0=50% 1.0.0=50% (rolling-back)\n"
    )
    d = doc(live, "status", MODEL)
    assert d["operation"]["kind"] == "rollback" and d["operation"]["phase"] == "rolling-back"
    assert d["operation"]["state"]["mode"] == "staged"


def test_rollback_to_a_named_release_says_when_it_is_not_warm(live: Cli) -> None:
    ok(live("deploy", f"{MODEL}@1.1.0"))
    out = ok(live("rollback", MODEL, "--to", "1.2.0", "--emergency"))
    assert out == (
        "emergency rollback of fraud from 1.1.0 to 1.2.0 started: 1.2.0=100% (verifying)\n"
        "1.2.0 is not a warm rollback point: gateways load it before switching\n"
    )


def test_rollback_json_is_the_rollback_operation(live: Cli) -> None:
    ok(live("deploy", f"{MODEL}@1.1.0"))
    d = doc(live, "rollback", MODEL, "--emergency")
    assert (d["kind"], d["phase"], d["stable"], d["target"]) == (
        "rollback", "verifying", "1.1.0", "1.0.0",
    )  # fmt: skip
    assert d["state"]["mode"] == "emergency" and d["state"]["superseded"] == 2


def test_rollback_errors_are_one_line(live: Cli) -> None:
    assert error(live("rollback", MODEL, "--emergency", "--staged"), 2) == (
        "--emergency and --staged contradict each other: pick one"
    )
    assert error(live("rollback", MODEL, "--to", "9.9.9")) == (
        "release fraud@9.9.9 is not registered (registered versions: 1.2.0, 1.1.0, 1.0.0)"
    )
    assert error(live("rollback", MODEL, "--to", "1.0.0")) == (
        "fraud@1.0.0 already takes all traffic: there is nothing to roll back from; "
        "name another release with --to"
    )
    assert error(live("rollback", "nope")).startswith("model 'nope' has no live traffic")


def test_a_second_rollback_says_one_is_running(live: Cli) -> None:
    ok(live("deploy", f"{MODEL}@1.1.0"))
    ok(live("rollback", MODEL, "--emergency"))
    assert error(live("rollback", MODEL, "--emergency"), 1) == (
        "fraud is already rolling back to 1.0.0 (phase verifying): all traffic is on 1.0.0 "
        "while it is verified (`backout status fraud`); `backout rollback fraud --emergency "
        "--to VERSION` moves it all to another release now"
    )


# -- abort, promote, pause, resume, unfreeze -------------------------------------------------


def test_abort_returns_traffic_to_stable(live: Cli) -> None:
    ok(live("deploy", f"{MODEL}@1.1.0"))
    assert ok(live("abort", MODEL, "--reason", "wrong build")) == (
        "fraud rollout: aborted (1.0.0=100%)\n"
    )
    assert error(live("abort", MODEL), 1) == (
        "fraud has no rollout or rollback in progress: nothing to abort"
    )


def test_a_verifying_rollback_cannot_be_aborted(live: Cli) -> None:
    ok(live("deploy", f"{MODEL}@1.1.0"))
    ok(live("rollback", MODEL, "--emergency"))
    assert error(live("abort", MODEL), 1) == (
        "fraud's rollback is verifying 1.0.0 with all traffic on it and cannot be aborted: "
        "wait for its verification to end, or `backout rollback fraud --emergency --to VERSION` "
        "moves all traffic to another release now"
    )


def test_promote_skips_the_remaining_steps(live: Cli) -> None:
    ok(live("deploy", f"{MODEL}@1.1.0"))
    assert ok(live("promote", MODEL)) == "fraud rollout: completing (1.1.0=100%)\n"
    assert error(live("promote", MODEL), 1) == (
        "fraud@1.1.0 already takes all traffic and is completing: nothing left to promote"
    )


def test_promote_json(live: Cli) -> None:
    ok(live("deploy", f"{MODEL}@1.1.0"))
    d = doc(live, "promote", MODEL)
    assert (d["phase"], d["weights"]) == ("completing", {"1.1.0": 100.0})


def test_pause_and_resume(live: Cli) -> None:
    ok(live("deploy", f"{MODEL}@1.1.0"))
    assert ok(live("pause", MODEL)) == "fraud rollout: paused (1.0.0=95% 1.1.0=5%)\n"
    assert ok(live("pause", MODEL)) == "fraud rollout: paused (1.0.0=95% 1.1.0=5%)\n"
    assert ok(live("resume", MODEL)) == "fraud rollout: rolling-out (1.0.0=95% 1.1.0=5%)\n"
    assert error(live("resume", MODEL), 1) == (
        "fraud is rolling-out, not paused or awaiting approval"
    )
    assert kinds(live)[-3:] == ["phase.paused", "traffic.applied", "phase.rolling-out"]


def test_pause_json(live: Cli) -> None:
    ok(live("deploy", f"{MODEL}@1.1.0"))
    d = doc(live, "pause", MODEL, "--reason", "lunch")
    assert (d["phase"], d["state"]["paused_from"]) == ("paused", "rolling-out")


def test_pause_without_an_operation_is_one_error(live: Cli) -> None:
    assert error(live("pause", MODEL), 1) == "fraud has no rollout or rollback in progress"


def test_unfreeze_of_a_model_that_is_not_frozen_is_one_error(live: Cli) -> None:
    assert error(live("unfreeze", MODEL, "--reason", "just in case"), 1) == "fraud is not frozen"


# -- status and history ----------------------------------------------------------------------


def _tick_with_traffic(cli: Cli, tmp_path: Path) -> None:
    """One second of healthy traffic on both releases, then one controller tick."""
    store = open_store(cli.base[1], create=True)
    try:
        now = time.time()  # after the rollout started: the gate reads batches since then
        batches = []
        for v in ("1.0.0", "1.1.0"):
            b = Batch(MODEL, v, start=now, end=now + 1, requests=100, predictions=100)
            b.latency = {latency_bucket(0.005): 100}
            b.outputs = {"0": 50, "1": 50}
            batches.append(b)
        write_batches(store, batches, "test")
        registry = Registry(store, LocalBlobStore(tmp_path / "artifacts"))
        Controller(store, registry).tick(MODEL)
    finally:
        store.dispose()


def test_status_shows_the_operation_its_phase_and_its_last_gate(live: Cli, tmp_path: Path) -> None:
    ok(live("deploy", f"{MODEL}@1.1.0"))
    _tick_with_traffic(live, tmp_path)
    d = doc(live, "status", MODEL)
    op = d["operation"]
    assert (op["kind"], op["phase"], op["step"], op["steps"]) == (
        "rollout", "rolling-out", 0, [5.0, 25.0, 50.0, 100.0],
    )  # fmt: skip
    gate = op["state"]["last_gate"]
    assert gate["verdict"] == "continue" and gate["step"] == 0
    assert [j["judge"] for j in gate["judgements"]] == [
        "error_rate", "latency", "tail_latency", "integrity",
    ]  # fmt: skip
    assert d["frozen"] is None and d["routes"] == "fraud: 1.0.0=95% 1.1.0=5%"
    text = re.sub(r"\d+(\.\d+)? s in step", "N s in step", ok(live("status", MODEL)))
    lines = text.splitlines()
    assert lines[:3] == [
        "fraud: 1.0.0=95% 1.1.0=5%  (generation 2)",
        "rollout 1.0.0 → 1.1.0: rolling-out, step 1 of 4, N s in step",
        f"  gate ({gate['alpha']:g} family-wise): {gate['verdict']}",
    ]
    judged = [line.split()[:2] for line in lines[3:7]]
    assert judged == [[j["judge"], j["verdict"]] for j in gate["judgements"]]
    assert lines[7].split() == ["release", "weight", "requests/60s", "errors", "p50", "ms", "p99", "ms"]  # fmt: skip
    assert lines[8].split()[:4] == ["1.0.0", "95%", "100", "0.00%"]
    assert lines[9].split()[:4] == ["1.1.0", "5%", "100", "0.00%"]


def test_status_without_an_operation(live: Cli) -> None:
    out = ok(live("status", MODEL))
    assert out == (
        "fraud: 1.0.0=100%  (generation 1)\n"
        " release  weight  requests/60s  errors  p50 ms  p99 ms \n"
        " 1.0.0      100%             0       -       -       - \n"
    )
    d = doc(live, "status", MODEL)
    assert d["operation"] is None and d["frozen"] is None
    assert error(live("status", "nope")).startswith("model 'nope' has no live traffic")


def test_history_lists_the_timeline_of_a_model(live: Cli) -> None:
    ok(live("deploy", f"{MODEL}@1.1.0"))
    ok(live("pause", MODEL, "--reason", "lunch"))
    assert kinds(live) == [
        "release.registered", "release.registered", "release.registered",
        "load.pass", "load.pass", "load.pass",
        "deploy.first", "release.marked-good",
        "compat.pass", "replay.skipped", "traffic.applied", "rollout.started",
        "phase.paused",
    ]  # fmt: skip
    last = doc(live, "history", MODEL, "--limit", "1")["events"]
    assert len(last) == 1 and last[0]["reason"] == "lunch" and last[0]["actor"] == "ana"
    assert last[0]["data"]["from"] == "rolling-out" and last[0]["data"]["to"] == "paused"
    lines = ok(live("history", MODEL, "--limit", "1")).splitlines()
    assert lines[0].split() == ["#", "at", "(UTC)", "model", "event", "actor", "reason"]
    assert lines[1].split()[3:] == ["fraud", "phase.paused", "ana", "lunch"]


def test_history_verify_checks_the_chain(live: Cli) -> None:
    ok(live("deploy", f"{MODEL}@1.1.0"))
    out = ok(live("history", MODEL, "--verify"))
    assert out.splitlines()[-1] == "chain verified: 12 event(s), hashes intact"
    assert doc(live, "history", "--verify")["chain"] == {"ok": True, "problems": []}


# -- traffic ---------------------------------------------------------------------------------


def test_traffic_sets_the_route_table(live: Cli) -> None:
    out = ok(live("traffic", MODEL, "1.0.0=90", "1.1.0=10", "--reason", "try"))
    assert out == "fraud: 1.0.0=90% 1.1.0=10% (generation 2)\n"
    d = doc(live, "traffic", MODEL, "1.0.0=100")
    assert d["weights"] == {"1.0.0": 100.0} and d["generation"] == 3


@pytest.mark.parametrize(
    ("weights", "code", "message"),
    [
        (["1.0.0=50", "1.1.0=40"], 1,
         "weights must sum to 100% but 1.0.0=50%, 1.1.0=40% sum to 90%"),
        (["1.0.0=50", "9.9.9=50"], 1,
         "release fraud@9.9.9 is not registered (registered versions: 1.2.0, 1.1.0, 1.0.0)"),
        (["1.0.0:50"], 2, "weight '1.0.0:50' must look like 1.4.0=90"),
        (["1.0.0=half"], 2, "'1.0.0=half': 'half' is not a percentage"),
    ],
)  # fmt: skip
def test_traffic_refuses_bad_weights(
    live: Cli, weights: list[str], code: int, message: str
) -> None:
    assert error(live("traffic", MODEL, *weights), code) == message
    assert doc(live, "status", MODEL)["routes"] == "fraud: 1.0.0=100%"


def test_traffic_is_refused_during_a_rollout_unless_forced(live: Cli) -> None:
    ok(live("deploy", f"{MODEL}@1.1.0"))
    assert error(live("traffic", MODEL, "1.0.0=100"), 1) == (
        "fraud has a rollout in progress (rolling-out): traffic set by hand would fight it; "
        "`backout pause` it first or pass --force (which pauses it)"
    )
    out = ok(live("traffic", MODEL, "1.0.0=100", "--force", "--reason", "hotfix"))
    assert out == "fraud: 1.0.0=100% (generation 3)\n"
    events = doc(live, "history", MODEL)["events"]
    assert [e["kind"] for e in events[-2:]] == ["phase.paused", "traffic.set"]
    assert events[-2]["reason"] == "traffic forced by hand: 1.0.0=100"
    assert doc(live, "status", MODEL)["operation"]["state"]["forced"] is True


def test_forced_traffic_with_bad_weights_does_not_pause_the_rollout(live: Cli) -> None:
    ok(live("deploy", f"{MODEL}@1.1.0"))
    assert error(live("traffic", MODEL, "1.0.0=50", "--force")).startswith(
        "weights must sum to 100%"
    )
    assert doc(live, "status", MODEL)["operation"]["phase"] == "rolling-out"


# -- policy check ----------------------------------------------------------------------------


def test_policy_check_prints_the_effective_policy(cli: Cli, tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("rollout:\n  steps: [10, 100]\n  bake: 1m\n")
    out = ok(cli("policy", "check", str(good)))
    assert "rollout:\n  steps: [10, 100]\n  bake: 1m\n  min_requests: 200\n" in out
    d = doc(cli, "policy", "check", str(good))
    assert d["rollout"]["steps"] == [10.0, 100.0] and d["rollout"]["bake"] == "1m"
    assert d["rollback"]["mode"] == "staged"


def test_policy_check_names_field_value_and_line(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("rollout:\n  steps: [10, 100]\n  bake: soon\nrollback:\n  mode: sideways\n")
    code, out, err = cli("policy", "check", str(bad))
    assert (code, out) == (2, "")
    assert err == (
        f"error: {bad}:3: rollout.bake: must be a duration such as 30s, 5m, 1h, 250ms, 1m30s "
        "or a number of seconds (got 'soon')\n"
        f"error: {bad}:5: rollback.mode: must be one of emergency, staged (got 'sideways')\n"
    )
    bad.write_text("rollout:\n  bake: soon\n")
    assert error(cli("policy", "check", str(bad)), 2) == (
        f"{bad}:2: rollout.bake: must be a duration such as 30s, 5m, 1h, 250ms, 1m30s "
        "or a number of seconds (got 'soon')"
    )


# -- consumers -------------------------------------------------------------------------------


def test_consumers_add_list_remove(cli: Cli, tmp_path: Path) -> None:
    f = tmp_path / "checkout.yaml"
    f.write_text(
        "name: checkout\nmodel: fraud\nowner: payments\n"
        "sends:\n  amount: number\n  country: string\nreads:\n  score: {}\n"
    )
    assert ok(cli("consumers", "list", MODEL)) == (
        "fraud has no registered consumers: add one with `backout consumers add FILE`\n"
    )
    assert ok(cli("consumers", "add", str(f))) == "consumer checkout of fraud registered\n"
    assert ok(cli("consumers", "add", str(f))) == "consumer checkout of fraud updated\n"
    assert ok(cli("consumers", "list", MODEL)) == (
        " consumer  owner     sends            reads \n"
        " checkout  payments  amount, country  score \n"
    )
    listed = cli.json("consumers", "list", MODEL)
    assert isinstance(listed, list) and [c["name"] for c in listed] == ["checkout"]
    assert (
        ok(cli("consumers", "remove", MODEL, "checkout")) == "consumer checkout of fraud removed\n"
    )
    assert error(cli("consumers", "remove", MODEL, "checkout")) == (
        "'checkout' is not a registered consumer of fraud"
    )


def test_a_malformed_consumer_file_is_one_error(cli: Cli, tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("name: checkout\nmodel: fraud\nsends: [amount]\n")
    assert error(cli("consumers", "add", str(f)), 2) == (
        f"{f}:3: sends: must be a mapping of fields"
    )


# -- compat, replay, drill, report -----------------------------------------------------------


def _contract(tmp_path: Path, name: str, required: list[str]) -> Path:
    props = {f: {"type": "number"} for f in ("amount", "age")}
    doc = {"input": {"type": "object", "properties": props, "required": required}}
    p = tmp_path / name
    p.write_bytes(orjson.dumps(doc))
    return p


def test_compat_exits_0_when_compatible_and_1_when_breaking(cli: Cli, tmp_path: Path) -> None:
    art = tmp_path / "m.bin"
    art.write_bytes(b"m")
    old = _contract(tmp_path, "old.json", ["amount"])
    new = _contract(tmp_path, "new.json", ["amount", "age"])
    for version, contract in (("2.0.0", old), ("2.1.0", new)):
        ok(cli("release", "register", MODEL, version, "-a", str(art), "--contract", str(contract)))
    assert ok(cli("compat", f"{MODEL}@1.0.0", f"{MODEL}@1.1.0")) == (
        "fraud@1.1.0 can take fraud@1.0.0's traffic: no breaking changes\n"
    )
    code, out, _ = cli("compat", f"{MODEL}@2.0.0", f"{MODEL}@2.1.0")
    assert code == 1 and "breaking" in out.splitlines()[0] and "age" in out
    d = cli("compat", f"{MODEL}@2.0.0", f"{MODEL}@2.1.0", "--json")
    assert d[0] == 1 and orjson.loads(d[1])["compatible"] is False
    assert error(cli("compat", f"{MODEL}@1.0.0", "other@1.0.0"), 2) == (
        "fraud@1.0.0 and other@1.0.0 are releases of different models"
    )


def test_replay_without_captures_is_one_error(live: Cli) -> None:
    assert error(live("replay", f"{MODEL}@1.0.0")) == (
        "no captured requests for fraud: the gateway captures a sample of live traffic "
        "(policy capture.rate) — serve some traffic first"
    )


def test_drill_history_without_drills(live: Cli) -> None:
    assert ok(live("drill", MODEL, "--history")) == (
        "no drills of fraud yet: run one with `backout drill fraud --fault errors=5%`\n"
    )
    assert live.json("drill", MODEL, "--history") == []


def test_report_last_without_an_incident_is_one_error(live: Cli) -> None:
    assert error(live("report", MODEL, "--last")) == (
        "model 'fraud' has had no rollback and no freeze, so there is no incident to report: "
        "see its operations with `backout history fraud`"
    )
    assert error(live("report", MODEL), 2) == (
        "'fraud' is not an incident id: give one (`backout report 12`) or name the model "
        "with --last (`backout report fraud --last`)"
    )
