"""The way back: from every state a responder can reach, a command they may run puts all of
the model's traffic on one known-good release (finding 4 of the tour, as a class)."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backout.control.phases import Phase
from backout.errors import BackoutError, Conflict
from backout.store import audit
from tests.control.world import World, make_world, restart

VERSIONS = ("1.0.0", "1.1.0", "1.2.0")


def frozen_mid_rollout(tmp_path: Path) -> World:
    """The tour's state: 1.1.0 failed at its first step and the way back was refused, so the
    model froze with 1.0.0 (known-good) on 90% and the bad release on 10%."""
    w = make_world(tmp_path)
    w.controller.deploy("iris", "1.1.0", actor="ana")
    w.run(2)
    op = w.op()
    assert op is not None and op.phase == Phase.ROLLING_OUT
    w.controller.freeze(op, "gate failed; and no safe rollback: the replay refused 1.0.0", {})
    assert w.controller.frozen("iris") and w.weights() == {"1.0.0": 90.0, "1.1.0": 10.0}
    return w


def on_one_known_good(w: World) -> bool:
    weights = w.weights()
    if len(weights) != 1:
        return False
    (version,) = weights
    return w.registry.get(f"iris@{version}").known_good


def test_an_emergency_rollback_by_hand_works_while_frozen_and_says_it_broke_the_glass(
    tmp_path: Path,
) -> None:
    w = frozen_mid_rollout(tmp_path)
    op = w.controller.rollback("iris", actor="bo", emergency=True, reason="customers failing")
    assert op.target == "1.0.0" and op.phase == Phase.VERIFYING
    assert w.weights() == {"1.0.0": 100.0} and not w.controller.frozen("iris")
    assert op.state.lifted_freeze is not None
    with w.store.read() as conn:
        lifted = audit.latest(conn, "iris", ["freeze.lifted"])
    assert lifted is not None and lifted.data["break_glass"] is True and lifted.actor == "bo"
    assert w.controller.operation(op.id - 1).outcome == "aborted"  # the frozen rollout ended
    w.run(40)
    assert w.last_op().outcome == "rolled-back" and w.weights() == {"1.0.0": 100.0}


def test_other_commands_while_frozen_name_the_emergency_rollback(tmp_path: Path) -> None:
    w = frozen_mid_rollout(tmp_path)
    for command in (
        lambda: w.controller.rollback("iris", actor="bo"),
        lambda: w.controller.deploy("iris", "1.2.0", actor="bo"),
        lambda: w.controller.abort("iris", actor="bo"),
        lambda: w.controller.set_traffic("iris", {"1.0.0": 100}, actor="bo", force=True),
    ):
        with pytest.raises(BackoutError, match=r"`backout rollback iris --emergency`"):
            command()
    assert w.weights() == {"1.0.0": 90.0, "1.1.0": 10.0}


def test_after_unfreeze_the_known_good_release_carrying_most_traffic_takes_the_rest(
    tmp_path: Path,
) -> None:
    w = frozen_mid_rollout(tmp_path)
    w.controller.unfreeze("iris", actor="bo", reason="looked at it")
    hint = w.controller.split_hint("iris")
    assert (
        hint
        == "its traffic is split (1.0.0=90% 1.1.0=10%): `backout rollback iris` puts all of it on 1.0.0"
    )
    with pytest.raises(
        Conflict,
        match=r"no rollout or rollback in progress; its traffic is split .*`backout rollback iris`",
    ):
        w.controller.abort("iris", actor="bo")  # fmt: skip
    op = w.controller.rollback("iris", actor="bo")  # no "no known-good release"
    assert op.target == "1.0.0" and op.stable == "1.1.0"
    assert w.weights() == {"1.0.0": 100.0}


def test_a_staged_rollback_to_the_release_carrying_most_traffic_is_not_refused(
    tmp_path: Path,
) -> None:
    w = frozen_mid_rollout(tmp_path)
    w.controller.unfreeze("iris", actor="bo", reason="looked at it")
    op = w.controller.rollback("iris", actor="bo", to="1.0.0", emergency=False)
    assert op.target == "1.0.0" and op.stable == "1.1.0" and w.weights() == {"1.0.0": 100.0}
    w.run(40)
    assert w.last_op().outcome == "rolled-back" and on_one_known_good(w)


def test_an_emergency_rollback_by_hand_takes_over_a_staged_rollback(tmp_path: Path) -> None:
    w = make_world(tmp_path)
    w.controller.deploy("iris", "1.1.0", actor="ana")
    w.controller.promote("iris", actor="ana")
    w.run(2)
    w.controller.rollback("iris", actor="ana", emergency=False)
    assert w.weights() == {"1.1.0": 50.0, "1.0.0": 50.0}
    op = w.controller.rollback("iris", actor="bo", emergency=True)
    assert op.phase == Phase.VERIFYING and w.weights() == {"1.0.0": 100.0}


ABORT_STATES: dict[str, Callable[[World], None]] = {
    "rolling-out": lambda w: w.controller.deploy("iris", "1.1.0", actor="a"),
    "completing": lambda w: (w.controller.deploy("iris", "1.1.0", actor="a"), w.controller.promote("iris", actor="a")),
    "paused": lambda w: (w.controller.deploy("iris", "1.1.0", actor="a"), w.controller.pause("iris", actor="a")),
    "rolling-back": lambda w: (w.controller.deploy("iris", "1.1.0", actor="a"),
                               w.controller.promote("iris", actor="a"), w.run(2),
                               w.controller.rollback("iris", actor="a", emergency=False)),
    "verifying": lambda w: (w.controller.deploy("iris", "1.1.0", actor="a"), w.run(2),
                            w.controller.rollback("iris", actor="a", emergency=True)),
    "paused-verifying": lambda w: (w.controller.deploy("iris", "1.1.0", actor="a"), w.run(2),
                                   w.controller.rollback("iris", actor="a", emergency=True),
                                   w.controller.pause("iris", actor="a")),
    "frozen": lambda w: (w.controller.deploy("iris", "1.1.0", actor="a"), w.run(2),
                         w.controller.freeze(w.op(), "test", {})),  # type: ignore[arg-type]
    "idle": lambda w: None,
}  # fmt: skip


@pytest.mark.parametrize("state", sorted(ABORT_STATES))
def test_abort_works_in_every_non_terminal_phase_or_names_the_command_to_run(
    tmp_path: Path, state: str
) -> None:
    w = make_world(tmp_path)
    ABORT_STATES[state](w)
    try:
        w.controller.abort("iris", actor="bo")
    except Conflict as exc:
        assert "`backout " in exc.message or exc.message.endswith("nothing to abort"), exc.message
    else:
        assert w.op() is None


# -- the property ----------------------------------------------------------------------------

ACTIONS = st.one_of(
    st.tuples(st.just("deploy"), st.sampled_from(VERSIONS[1:])),
    st.tuples(st.just("rollback"), st.sampled_from([True, False, None]), st.sampled_from([None, *VERSIONS])),
    st.tuples(st.sampled_from(["abort", "pause", "resume", "promote", "unfreeze", "freeze", "restart"])),
    st.tuples(st.just("traffic"), st.sampled_from(VERSIONS), st.sampled_from([1, 10, 50, 99, 100])),
    st.tuples(st.just("health"), st.sampled_from(VERSIONS), st.booleans()),
    st.tuples(st.just("tick"), st.integers(min_value=1, max_value=40)),
)  # fmt: skip


def act(w: World, action: tuple[object, ...]) -> None:
    c = w.controller
    match action:
        case ("deploy", v):
            c.deploy("iris", str(v), actor="fuzz")
        case ("rollback", emergency, to):
            c.rollback("iris", actor="fuzz", emergency=emergency, to=to)  # type: ignore[arg-type]
        case ("traffic", v, pct):
            weights = (
                {"1.0.0": 100 - int(pct), str(v): int(pct)} if v != "1.0.0" else {"1.0.0": 100}
            )  # type: ignore[call-overload]
            c.set_traffic(
                "iris", {k: w_ for k, w_ in weights.items() if w_}, actor="fuzz", force=True
            )
        case ("health", v, bad):
            w.set_health(str(v), error_rate=0.5 if bad else 0.0)
        case ("tick", n):
            w.run(int(n))  # type: ignore[call-overload]
        case ("freeze",):
            op = w.op()
            if op is not None and op.phase not in (Phase.FROZEN,):
                c.freeze(op, "fuzz: both unhealthy", {})
            elif op is None:
                c.freeze_model("iris", "fuzz: no safe way back", {})
        case ("restart",):
            restart(w)
        case ("unfreeze",):
            c.unfreeze("iris", actor="fuzz", reason="fuzz")
        case (name,):
            getattr(c, str(name))("iris", actor="fuzz")


def settled(w: World) -> bool:
    """All traffic on one known-good release, nothing frozen, and nothing about to move it."""
    op = w.op()
    held = op is None or (op.kind == "rollback" and op.phase == Phase.VERIFYING)
    return on_one_known_good(w) and not w.controller.frozen("iris") and held


# What a responder may run, in the order the runbook says.
RESPONDER: list[tuple[str, Callable[[World], object]]] = [
    ("rollback --emergency", lambda w: w.controller.rollback("iris", actor="oncall", emergency=True)),
    ("abort", lambda w: w.controller.abort("iris", actor="oncall")),
    ("resume", lambda w: w.controller.resume("iris", actor="oncall")),
    ("unfreeze", lambda w: w.controller.unfreeze("iris", actor="oncall", reason="oncall")),
    ("rollback", lambda w: w.controller.rollback("iris", actor="oncall")),
]  # fmt: skip


def respond(w: World) -> list[str]:
    """Run the responder's commands until the model is settled; what was run, in order."""
    ran: list[str] = []
    for _ in range(6):
        if settled(w):
            return ran
        for name, command in RESPONDER:
            try:
                command(w)
            except BackoutError:
                continue
            ran.append(name)
            break
        else:
            break
    assert settled(w), (ran, w.weights(), w.op(), w.controller.frozen("iris"))
    return ran


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ACTIONS, min_size=1, max_size=12))
def test_from_every_reached_state_the_responder_commands_end_on_one_known_good_release(
    actions: list[tuple[object, ...]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        w = make_world(Path(tmp))
        for action in actions:
            with contextlib.suppress(BackoutError):  # a refused command changes nothing
                act(w, action)
            w.check_invariants()
        respond(w)
        # Once settled it stays settled: healthy releases, the verification runs its course.
        for v in VERSIONS:
            w.set_health(v, error_rate=0.0)
        w.run(60)
        assert on_one_known_good(w), (w.weights(), w.last_op())
        w.store.dispose()
