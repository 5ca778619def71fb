"""Decision rights: break-glass (allowed, recorded as a bypass, notified) and approvals
(asked by one person, decided by another, never by the one who asked)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from backout.api import tokens
from backout.api.app import create_app
from backout.api.roles import make_grant
from backout.store import audit, schema
from tests.api.world import Template, app_for, close_app, copy_store, make_template
from tests.loopback import serve

pytestmark = pytest.mark.databases("sqlite")

POLICY = """
approval: {rollout: true, rollback_not_known_good: true}
notifications: {webhooks: ["http://127.0.0.1:9/hooks/oncall"]}
escalation:
  contacts: [{name: ana, email: ana@example.test}]
"""


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    return make_template(tmp_path_factory.mktemp("api-decisions"))


class World:
    """One test's API, its client and a token per person."""

    def __init__(self, app: Any, client: httpx.Client) -> None:
        self.app, self.client = app, client
        self.store = app.state.backout.store
        self.tokens: dict[str, str] = {}
        people = {"rita": "responder:iris*", "rob": "releaser:iris*", "ada": "approver:*",
                  "abe": "approver:*", "root": "admin:*", "rex": "releaser:*"}  # fmt: skip
        for name, grant in people.items():
            role, _, models = grant.partition(":")
            self.tokens[name] = tokens.create(self.store, [make_grant(role, [models])],
                                              actor="setup", name=name).token  # fmt: skip

    def call(self, who: str, method: str, path: str, body: Any = None) -> httpx.Response:
        return self.client.request(method, path, json=body,
                                   headers={"Authorization": f"Bearer {self.tokens[who]}"})  # fmt: skip

    def events(self, kind: str) -> list[audit.Event]:
        with self.store.read() as conn:
            return audit.list_events(conn, None, kinds=[kind])

    def outbox(self, kind: str) -> list[Any]:
        with self.store.read() as conn:
            return list(conn.execute(sa.select(schema.outbox).where(schema.outbox.c.kind == kind)))


@pytest.fixture
def world(template: Template, tmp_path: Path) -> Iterator[World]:
    app = app_for(template, copy_store(template, f"dec-{tmp_path.name}"))
    with serve(app, lifespan="off") as url, httpx.Client(base_url=f"{url}/api/v1") as c:
        w = World(app, c)
        assert w.call("root", "PUT", "/models/iris/policy", {"policy": POLICY}).status_code == 200
        yield w
    close_app(app)


def test_break_glass_lets_a_responder_set_traffic_recorded_and_notified(world: World) -> None:
    body = {"weights": {"1.0.0": 80, "1.1.0": 20}}
    refused = world.call("rita", "PUT", "/models/iris/traffic", body)
    assert refused.status_code == 403
    assert refused.json()["error"]["message"] == (
        "rita (responder:iris*) lacks the 'traffic' right on iris; a responder may use it with "
        "break_glass and a reason"
    )
    no_reason = world.call("rita", "PUT", "/models/iris/traffic", body | {"break_glass": True})
    assert no_reason.status_code == 422
    why = "1.0.0 leaks memory, shed 20% now"
    ok = world.call(
        "rita", "PUT", "/models/iris/traffic", body | {"break_glass": True, "reason": why}
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["weights"] == {"1.0.0": 80.0, "1.1.0": 20.0}
    [bypass] = world.events("access.bypass")
    assert (bypass.model, bypass.actor, bypass.data["right"]) == ("iris", "rita", "traffic")
    assert bypass.reason == (
        f"rita used break-glass for 'traffic' on iris: set traffic 1.0.0=80 1.1.0=20; reason: {why}"
    )
    assert [e for e in world.events("traffic.set") if e.model == "iris"][-1].actor == "rita"
    targets = sorted(r.target for r in world.outbox("bypass"))
    assert targets == ["ana@example.test", "http://127.0.0.1:9/hooks/oncall"]
    # Out of the responder's scope, break-glass is no way in.
    far = world.call(
        "rita", "PUT", "/models/fraud/traffic", body | {"break_glass": True, "reason": "x"}
    )
    assert far.status_code == 403


def test_a_rollout_the_policy_holds_waits_for_an_approver_who_is_not_the_asker(
    world: World,
) -> None:
    asked = world.call("rob", "POST", "/models/iris/deploy", {"version": "1.1.0", "reason": "new"})
    assert asked.status_code == 202, asked.text
    req = asked.json()["approval"]
    assert (req["status"], req["requested_by"], req["action"]) == ("pending", "rob", "deploy")
    assert world.call("rob", "GET", "/models/iris/status").json()["operation"] is None
    assert [r.target for r in world.outbox("approval")] == ["http://127.0.0.1:9/hooks/oncall"]
    path = f"/models/iris/approvals/{req['id']}"
    own = world.call("rob", "POST", f"{path}/approve")
    assert own.status_code == 403 and own.json()["error"]["right"] == "approve"
    # An approver who also releases may not approve what they asked for either.
    grants = [make_grant("releaser", ["iris*"]), make_grant("approver", ["*"])]
    world.tokens["rob"] = tokens.create(world.store, grants, actor="setup", name="rob").token
    self_approval = world.call("rob", "POST", f"{path}/approve")
    assert self_approval.status_code == 403
    assert "never approves their own request" in self_approval.json()["error"]["message"]
    assert world.events("access.denied")[-1].actor == "rob"
    done = world.call("ada", "POST", f"{path}/approve", {"reason": "looks fine"})
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "approved" and done.json()["decided_by"] == "ada"
    op = done.json()["operation"]
    assert (op["kind"], op["target"], op["actor"]) == ("rollout", "1.1.0", "rob")
    again = world.call("abe", "POST", f"{path}/approve")
    assert again.status_code == 409
    assert [e.actor for e in world.events("approval.approved")] == ["ada"]


def test_a_denied_request_never_runs(world: World) -> None:
    req = world.call("rob", "POST", "/models/iris/deploy", {"version": "1.1.0"}).json()["approval"]
    denied = world.call("abe", "POST", f"/models/iris/approvals/{req['id']}/deny", {"reason": "no"})
    assert denied.status_code == 200 and denied.json()["status"] == "denied"
    assert world.call("abe", "GET", "/models/iris/status").json()["operation"] is None
    assert world.call("ada", "GET", "/approvals?status=pending").json() == []


def test_a_rollback_to_a_release_not_known_good_needs_the_releaser_or_break_glass(
    world: World,
) -> None:
    body = {"to": "1.1.0", "mode": "emergency"}
    refused = world.call("rita", "POST", "/models/iris/rollback", body)
    assert refused.status_code == 403 and refused.json()["error"]["right"] == "deploy"
    glass = world.call("rita", "POST", "/models/iris/rollback",
                       body | {"break_glass": True, "reason": "1.0.0 is broken"})  # fmt: skip
    # The policy holds a rollback to a release that is not known-good for an approver.
    assert glass.status_code == 202, glass.text
    assert glass.json()["approval"]["params"]["known_good"] is False
    assert world.events("access.bypass")[-1].actor == "rita"


def test_a_responder_rolls_back_to_known_good_at_once(world: World) -> None:
    req = world.call("rex", "POST", "/models/iris/deploy", {"version": "1.1.0"}).json()["approval"]
    assert (
        world.call("ada", "POST", f"/models/iris/approvals/{req['id']}/approve").status_code == 200
    )
    back = world.call(
        "rita", "POST", "/models/iris/rollback", {"mode": "emergency", "reason": "errors"}
    )
    assert back.status_code == 200, back.text
    op = back.json()
    assert (op["kind"], op["target"], op["actor"]) == ("rollback", "1.0.0", "rita")
    assert op["weights"] == {"1.0.0": 100.0}
    assert (
        world.call("rita", "POST", "/models/iris/deploy", {"version": "1.1.0"}).status_code == 403
    )


def test_a_step_awaiting_approval_is_approved_by_another_person(tmp_path: Path) -> None:
    from tests.control.world import POLICY, make_world

    w = make_world(tmp_path, POLICY.replace("missing_data_after: 30s",
                                            "missing_data_after: 30s\n  on_missing_data: ask"))  # fmt: skip
    w.controller.deploy("iris", "1.1.0", actor="rob")
    w.rps = 0
    w.run(35)
    assert w.op().phase.value == "awaiting-approval"  # type: ignore[union-attr]
    app = create_app(f"sqlite:///{tmp_path / 'store.db'}", artifacts=tmp_path / "artifacts",
                     prober=w.prober)  # fmt: skip
    people = {n: tokens.create(w.store, [make_grant(r, ["*"])], actor="setup", name=n).token
              for n, r in (("rob", "approver"), ("ada", "approver"), ("rita", "responder"))}  # fmt: skip
    with serve(app, lifespan="off") as url, httpx.Client(base_url=f"{url}/api/v1") as c:

        def call(who: str, path: str) -> httpx.Response:
            return c.post(path, headers={"Authorization": f"Bearer {people[who]}"})

        assert call("rita", "/models/iris/approve").json()["error"]["right"] == "approve"
        own = call("rob", "/models/iris/resume")
        assert own.status_code == 403
        assert own.json()["error"]["message"] == (
            "rob started this rollout: an approver never approves their own request; ask another approver"
        )
        ok = call("ada", "/models/iris/approve")
        assert ok.status_code == 200, ok.text
        assert ok.json()["phase"] == "rolling-out"
    close_app(app)
    w.controller.close()
    w.store.dispose()
