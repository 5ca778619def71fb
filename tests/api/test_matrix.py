"""The authorisation matrix: every endpoint × every role × a model in and out of scope.

Generated from one table, :data:`ENDPOINTS`: each row is a call and the rights any one of
which allows it. For every role (scoped to ``iris*``, and to every model) and both models,
exactly the calls the role table allows succeed — 2xx, or a domain 4xx such as 404 or
409, never 401 or 403 — and every other answers 403 naming the missing right and is
recorded in the audit log as ``access.denied`` with the caller as actor. Without a token,
or with an unknown one, every endpoint answers 401.
"""

from __future__ import annotations

import base64
import fnmatch
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from backout.api.roles import ROLES, Right, Role
from backout.store import audit
from tests.api.world import (
    MODELS,
    SCOPES,
    Switchboard,
    Template,
    app_for,
    close_app,
    copy_store,
    make_template,
)
from tests.loopback import serve

pytestmark = [pytest.mark.databases("sqlite"), pytest.mark.slow]

R = Right
ART = {"path": "model.bin", "content_b64": base64.b64encode(b"new weights").decode()}
CONSUMER = "name: web\nmodel: {model}\nsends: {{}}\nreads: {{}}\n"


@dataclass(frozen=True, eq=False)
class Endpoint:
    """One call, and the rights any one of which allows it.

    ``scope``: ``model`` (checked on the model in the path), ``store`` (a right over the
    whole store: only a grant on ``*`` holds it) or ``any`` (every authenticated caller;
    lists are filtered instead).
    """

    method: str
    path: str
    rights: frozenset[Right]
    body: Any = None
    scope: str = "model"
    names: frozenset[Right] = frozenset()  # what a refusal may name besides ``rights``

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def E(method: str, path: str, *rights: Right, body: Any = None, scope: str = "model",
      names: frozenset[Right] = frozenset()) -> Endpoint:  # fmt: skip
    return Endpoint(method, path, frozenset(rights), body, scope, names)


ENDPOINTS: list[Endpoint] = [
    E("GET", "/whoami", scope="any"),
    E("GET", "/status", scope="any"),
    E("GET", "/models/{model}/status", R.READ),
    E("GET", "/history", R.READ, scope="store"),
    E("GET", "/models/{model}/history", R.READ),
    E("GET", "/models/{model}/operations", R.READ),
    E("POST", "/models/{model}/deploy", R.DEPLOY, body={"version": "1.1.0"}),
    E("POST", "/models/{model}/rollback", R.ROLLBACK, R.DEPLOY, body={"to": "1.0.0"}),
    # To a release that is not known-good: the releaser's right. Out of scope, where the
    # caller may not see whether the target is known-good, the refusal names "rollback".
    E(
        "POST",
        "/models/{model}/rollback",
        R.DEPLOY,
        body={"to": "1.1.0", "mode": "emergency"},
        names=frozenset({R.ROLLBACK}),
    ),
    E("POST", "/models/{model}/promote", R.PROMOTE),
    E("POST", "/models/{model}/abort", R.ABORT),
    E("POST", "/models/{model}/pause", R.PAUSE),
    E("POST", "/models/{model}/resume", R.PAUSE),
    E("POST", "/models/{model}/approve", R.APPROVE),
    E("POST", "/models/{model}/freeze", R.FREEZE, body={"reason": "matrix"}),
    E("POST", "/models/{model}/unfreeze", R.FREEZE, body={"reason": "matrix"}),
    E("GET", "/approvals", scope="any"),
    E("GET", "/models/{model}/approvals", R.READ),
    E("POST", "/models/{model}/approvals/1/approve", R.APPROVE),
    E("POST", "/models/{model}/approvals/1/deny", R.APPROVE),
    E("GET", "/models/{model}/traffic", R.READ),
    E("PUT", "/models/{model}/traffic", R.TRAFFIC, body={"weights": {"1.0.0": 90, "1.1.0": 10}}),
    E("GET", "/releases", scope="any"),
    E("GET", "/models/{model}/releases", R.READ),
    E("GET", "/models/{model}/releases/1.0.0", R.READ),
    E("GET", "/models/{model}/releases/1.0.0/verify", R.READ),
    E("PUT", "/models/{model}/releases/2.0.0", R.REGISTER, body={"artifacts": [ART]}),
    E(
        "POST",
        "/models/{model}/releases/1.1.0/signatures",
        R.REGISTER,
        body={"key_id": "0" * 16, "signature": "0" * 128},
    ),
    E("POST", "/models/{model}/releases/1.1.0/mark-good", R.APPROVE),
    E(
        "POST",
        "/models/{model}/releases/1.1.0/mark-bad",
        R.ROLLBACK,
        R.APPROVE,
        body={"reason": "matrix"},
    ),
    E("POST", "/models/{model}/releases/1.1.0/clear-bad", R.APPROVE, body={"reason": "matrix"}),
    E("GET", "/incidents", scope="any"),
    E("GET", "/incidents?model={model}", R.READ),
    E("GET", "/incidents/1", scope="any"),  # none yet: 404 to every caller
    E("POST", "/models/{model}/releases/1.1.0/quarantine", R.QUARANTINE, body={"reason": "matrix"}),
    E("DELETE", "/models/{model}/releases/1.1.0?reason=matrix", R.REGISTER),
    E("GET", "/models/{model}/consumers", R.READ),
    E("POST", "/models/{model}/consumers", R.CONSUMERS, body={"contract": CONSUMER}),
    E("DELETE", "/models/{model}/consumers/web", R.CONSUMERS),
    E("GET", "/models/{model}/compat?live=1.0.0&target=1.1.0", R.READ),
    E("POST", "/models/{model}/replay", R.REPLAY, body={"version": "1.1.0"}),
    E("GET", "/models/{model}/drills", R.READ),
    E("POST", "/models/{model}/drills", R.DRILL, body={"fault": "errors=5%", "release": "9.9.9"}),
    E("GET", "/models/{model}/incidents", R.READ),
    E("GET", "/models/{model}/incidents/1", R.READ),
    E("GET", "/models/{model}/incidents/1/report.html", R.READ),
    E("GET", "/models/{model}/incidents/1/report.md", R.READ),
    E("GET", "/models/{model}/incident", R.READ),
    E(
        "POST",
        "/models/{model}/incident/updates",
        R.ROLLBACK,
        body={"status": "identified", "message": "matrix"},
    ),
    E("GET", "/models/{model}/policy", R.READ),
    E(
        "PUT",
        "/models/{model}/policy",
        R.POLICIES,
        body={"policy": "rollout: {steps: [50, 100]}\n"},
    ),
    E("GET", "/tokens", R.TOKENS, scope="store"),
    E("POST", "/tokens", R.TOKENS, body={"grants": [{"role": "viewer"}]}, scope="store"),
    E("DELETE", "/tokens/ffffffff", R.TOKENS, scope="store"),
    E("GET", "/keys", R.KEYS, scope="store"),
    E("POST", "/keys", R.KEYS, body={"name": "matrix", "public_key": "ab" * 32}, scope="store"),
    E("DELETE", "/keys/nokey", R.KEYS, scope="store"),
    E("GET", "/retention", R.RETENTION, scope="store"),
    E("PUT", "/retention", R.RETENTION, body={"telemetry": "7d"}, scope="store"),
    E("POST", "/retention/prune", R.RETENTION, body={"dry_run": True}, scope="store"),
    # By id alone: the model is looked up first; out of scope it is 404, as a missing one.
    E("GET", "/reports/1", scope="any"),
    E("GET", "/models/{model}/report", R.READ),
]

COUNTS: Counter[str] = Counter()


def scopes_for(e: Endpoint) -> tuple[str, ...]:
    """The grants each role is tried with: on ``iris*`` (``iris`` in scope, ``fraud`` out),
    and for a right over the whole store also on ``*``."""
    return SCOPES if e.scope == "store" else SCOPES[:1]


def allowed(e: Endpoint, role: Role, scope: str, model: str) -> bool:
    """What the role table says: the expectation, computed apart from the code under test."""
    if e.scope == "any":
        return True
    if not e.rights & ROLES[role]:
        return False
    return scope == "*" if e.scope == "store" else fnmatch.fnmatchcase(model, scope)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    return make_template(tmp_path_factory.mktemp("api-matrix"))


@pytest.fixture(scope="module")
def board() -> Iterator[tuple[Switchboard, httpx.Client]]:
    sb = Switchboard()
    with serve(sb, lifespan="off") as url, httpx.Client(base_url=f"{url}/api/v1", timeout=30) as c:
        yield sb, c


def _body(e: Endpoint, model: str) -> Any:
    if e.body is None:
        return None
    if "contract" in e.body:
        return {"contract": CONSUMER.format(model=model)}
    return e.body


def _last_event(app: Any) -> audit.Event | None:
    with app.state.backout.store.read() as conn:
        events = audit.list_events(conn, None, newest_first=True, limit=1)
    return events[0] if events else None


@pytest.mark.parametrize("e", ENDPOINTS, ids=str)
def test_exactly_the_allowed_calls_pass(
    e: Endpoint, template: Template, board: tuple[Switchboard, httpx.Client], tmp_path: Path
) -> None:
    sb, client = board
    shared = app_for(template, copy_store(template, f"shared-{abs(hash(str(e)))}"))
    wrong: list[str] = []
    try:
        models = MODELS if e.scope == "model" else MODELS[:1]
        for role in Role:
            for scope in scopes_for(e):
                name, token = template.tokens[(role, scope)]
                for model in models:
                    path = e.path.format(model=model)
                    ok = allowed(e, role, scope, model)
                    # A call that may change the store gets a world of its own.
                    own = ok and e.method != "GET"
                    app = app_for(template, copy_store(template, "own")) if own else shared
                    try:
                        with sb.using(app):
                            resp = client.request(e.method, path, json=_body(e, model),
                                                  headers={"Authorization": f"Bearer {token}"})  # fmt: skip
                        case = f"{role.value}:{scope} {e.method} {path} -> {resp.status_code} {resp.text[:200]}"
                        if ok:
                            COUNTS["allowed"] += 1
                            if resp.status_code in (401, 403) or resp.status_code >= 500:
                                wrong.append("should pass: " + case)
                        else:
                            COUNTS["denied"] += 1
                            err = resp.json().get("error", {}) if resp.status_code == 403 else {}
                            last = _last_event(app)
                            if resp.status_code != 403 or err.get("right") not in {
                                r.value for r in e.rights | e.names
                            }:
                                wrong.append("should be 403 naming the right: " + case)
                            elif last is None or last.kind != "access.denied" or last.actor != name:
                                wrong.append(
                                    f"not audited ({last.kind if last else None}): " + case
                                )
                    finally:
                        if own:
                            close_app(app)
    finally:
        close_app(shared)
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("e", ENDPOINTS, ids=str)
def test_no_token_or_an_unknown_one_is_401(
    e: Endpoint, template: Template, board: tuple[Switchboard, httpx.Client]
) -> None:
    sb, client = board
    app = app_for(template, copy_store(template, "anon"))
    try:
        with sb.using(app):
            path = e.path.format(model="iris")
            for headers in ({}, {"Authorization": "Bearer bko_00000000_" + "x" * 43}):
                resp = client.request(e.method, path, json=_body(e, "iris"), headers=headers)
                COUNTS["unauthenticated"] += 1
                assert resp.status_code == 401, (headers, resp.text)
                assert resp.json()["error"]["code"] == "unauthenticated"
                assert "x" * 20 not in resp.text  # the token is never repeated
                last = _last_event(app)
                assert last is not None and last.kind == "access.unauthenticated"
    finally:
        close_app(app)


def test_the_table_covers_every_operation_of_the_api(template: Template) -> None:
    """A new route without a row here would go untested: every operation has one."""
    app = app_for(template, copy_store(template, "openapi"))
    try:
        doc = app.openapi()
    finally:
        close_app(app)
    rows = [(e.method, e.path.format(model="iris").split("?")[0]) for e in ENDPOINTS]
    missing = []
    for path, ops in doc["paths"].items():
        if not path.startswith("/api/v1/"):
            continue  # the public status page needs no token
        pattern = re.compile(
            "^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(path[len("/api/v1") :])) + "$"
        )
        for method in ops:
            if not any(m == method.upper() and pattern.match(p) for m, p in rows):
                missing.append(f"{method.upper()} {path}")
    assert not missing, "rows missing from ENDPOINTS: " + ", ".join(missing)


def test_matrix_counts(capsys: pytest.CaptureFixture[str]) -> None:
    """Every case of the table ran: the counts the matrix reports."""
    total = sum(
        (len(MODELS) if e.scope == "model" else 1) * len(Role) * len(scopes_for(e))
        for e in ENDPOINTS
    )
    if COUNTS["allowed"] + COUNTS["denied"] == 0:
        pytest.skip("the matrix did not run in this session (run the whole module)")
    assert COUNTS["allowed"] + COUNTS["denied"] == total
    assert COUNTS["unauthenticated"] == 2 * len(ENDPOINTS)
    with capsys.disabled():
        print(f"\nauthorisation matrix: {len(ENDPOINTS)} endpoints × {len(Role)} roles × "
              f"a model in and out of scope (store-wide rights: scoped and unscoped) = {total} cases: "
              f"{COUNTS['allowed']} allowed, {COUNTS['denied']} denied (403, audited); "
              f"{COUNTS['unauthenticated']} unauthenticated (401)")  # fmt: skip
