"""The control API's records on every database: tokens and approval requests."""

from __future__ import annotations

from pathlib import Path

import pytest

from backout.api import approvals, tokens
from backout.api.auth import Principal
from backout.api.roles import make_grant, parse_grant
from backout.api.state import ApiState
from backout.control.controller import Controller
from backout.errors import Conflict, Forbidden, NotFound, Unauthenticated
from backout.registry.releases import Registry
from backout.store import Store


def test_tokens_are_created_found_and_revoked(store: Store) -> None:
    issued = tokens.create(store, [parse_grant("responder:iris*,fraud")], actor="root", name="ana",
                           expires_in=3600)  # fmt: skip
    found = tokens.lookup(store, issued.token)
    assert (found.id, found.name, found.grants) == (
        issued.info.id,
        "ana",
        (make_grant("responder", ["iris*", "fraud"]),),
    )
    with pytest.raises(Unauthenticated, match=f"unknown token {found.id}"):
        tokens.lookup(store, issued.token[:-2] + "zz")
    assert tokens.revoke(store, found.id, actor="root").status(0) == "revoked"
    with pytest.raises(Unauthenticated, match="is revoked"):
        tokens.lookup(store, issued.token)
    with pytest.raises(NotFound, match="no token 'nope'"):
        tokens.revoke(store, "nope", actor="root")
    assert [t.name for t in tokens.list_tokens(store)] == ["ana"]


def test_an_approval_request_is_decided_once_and_never_by_its_asker(store: Store, registry: Registry,
                                                                      tmp_path: Path) -> None:  # fmt: skip
    ctl = Controller(store, registry)
    st = ApiState(store, registry, ctl, tmp_path, tmp_path)
    rob = Principal("rob", (make_grant("releaser", ["*"]),), "token:1")
    ada = Principal("ada", (make_grant("approver", ["*"]),), "token:2")
    req = approvals.ask(st, "iris", "promote", {"reason": "go"}, "the policy says so", rob)
    assert req["status"] == "pending" and approvals.list_approvals(
        st, ["iris"], status="pending"
    ) == [req]
    with pytest.raises(Forbidden, match="never approves their own request"):
        approvals.decide(st, "iris", req["id"], rob, approve=True)
    assert approvals.decide(st, "iris", req["id"], ada, approve=False)["status"] == "denied"
    with pytest.raises(Conflict, match="is denied already"):
        approvals.decide(st, "iris", req["id"], ada, approve=True)
    with pytest.raises(NotFound):
        approvals.get(st, "fraud", req["id"])
    ctl.close()
