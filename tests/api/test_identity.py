"""Identity: API tokens (shown once, stored as a hash, revoked, expired) and OIDC JWTs
verified against a JWKS, with a claim mapped to roles."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from backout.api import tokens
from backout.api.oidc import OidcConfig
from backout.api.roles import make_grant
from backout.store import schema
from tests.api.world import Template, app_for, close_app, copy_store, make_template
from tests.cli.runner import Cli
from tests.loopback import serve

pytestmark = pytest.mark.databases("sqlite")

ISSUER, AUDIENCE = "https://login.example.test/", "backout"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    return make_template(tmp_path_factory.mktemp("api-identity"))


@pytest.fixture
def api(template: Template, tmp_path: Path) -> Iterator[tuple[Any, httpx.Client]]:
    app = app_for(template, copy_store(template, f"id-{tmp_path.name}"))
    with serve(app, lifespan="off") as url, httpx.Client(base_url=f"{url}/api/v1") as c:
        yield app, c
    close_app(app)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- API tokens ---------------------------------------------------------------------------


def test_a_token_is_stored_only_as_a_hash_and_listed_without_its_secret(api: Any) -> None:
    app, c = api
    store = app.state.backout.store
    admin = tokens.create(store, [make_grant("admin", ["*"])], actor="setup", name="root")
    made = c.post("/tokens", json={"name": "ana", "grants": [{"role": "responder", "models": ["iris*"]}],
                                   "expires_in_s": 3600}, headers=bearer(admin.token))  # fmt: skip
    assert made.status_code == 201, made.text
    secret = made.json()["token"]
    assert secret.startswith("bko_") and made.json()["grants"] == [
        {"role": "responder", "models": ["iris*"]}
    ]
    with store.read() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.select(schema.api_tokens))]
        events = [dict(r._mapping) for r in conn.execute(sa.select(schema.events))]
    stored = json.dumps([rows, events], default=str)
    assert secret not in stored and secret[13:] not in stored
    listed = c.get("/tokens", headers=bearer(admin.token))
    assert listed.status_code == 200 and secret[13:] not in listed.text
    assert {t["name"]: t["status"] for t in listed.json()}.items() >= {
        "ana": "active",
        "root": "active",
    }.items()
    assert c.get("/whoami", headers=bearer(secret)).json()["name"] == "ana"


def test_a_revoked_or_expired_token_is_refused_with_401(api: Any) -> None:
    app, c = api
    store = app.state.backout.store
    gone = tokens.create(store, [make_grant("viewer", ["*"])], actor="setup", name="gone")
    old = tokens.create(store, [make_grant("viewer", ["*"])], actor="setup", name="old",
                        expires_in=60, now=time.time() - 120)  # fmt: skip
    assert c.get("/status", headers=bearer(gone.token)).status_code == 200
    tokens.revoke(store, gone.info.id, actor="setup")
    for t, why in ((gone, "revoked"), (old, "expired")):
        resp = c.get("/status", headers=bearer(t.token))
        assert resp.status_code == 401
        assert resp.json()["error"]["message"] == (
            f"token {t.info.id} ({t.info.name}) is {why}: ask an admin for a new one"
        )


def test_tokens_never_reach_the_log_or_the_audit_events(
    api: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app, c = api
    store = app.state.backout.store
    caplog.set_level(logging.DEBUG)
    t = tokens.create(store, [make_grant("viewer", ["iris*"])], actor="setup", name="v")
    c.post("/models/fraud/freeze", json={"reason": f"leak {t.token}"}, headers=bearer(t.token))
    c.get("/models/iris/status", headers=bearer(t.token + "x"))
    logging.getLogger("backout.test").warning("token in a log line: %s", t.token)
    secret = t.token[13:]
    with store.read() as conn:
        dump = json.dumps(
            [dict(r._mapping) for r in conn.execute(sa.select(schema.events))], default=str
        )
    assert secret not in dump and secret not in caplog.text
    assert f"bko_{t.info.id}_***" in caplog.text


def test_the_first_admin_token_is_created_locally_and_shown_once(
    template: Template, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = Cli(capsys, copy_store(template, "cli-tokens"), tmp_path)
    code, out, err = cli("token", "create", "--name", "root")
    assert code == 0, err
    token, line = out.splitlines()
    assert token.startswith("bko_")
    assert line.endswith("admin:*; expires never. It is shown only now: keep it in a secret store.")
    code, out, _ = cli(
        "token", "create", "--role", "responder", "--models", "iris*", "--expires", "30d"
    )
    doc = cli.json("token", "list")
    assert isinstance(doc, list) and next(d["grants"] for d in doc) == [
        {"role": "responder", "models": ["iris*"]}
    ]
    assert all("token" not in d for d in doc)
    code, _, err = cli("token", "create", "--role", "boss")
    assert (code, err) == (
        2,
        "error: unknown role 'boss': choose one of viewer, responder, releaser, approver, admin\n",
    )
    code, out, _ = cli("token", "revoke", doc[0]["id"])
    assert out == f"token {doc[0]['id']} ({doc[0]['name']}) is revoked\n"


# -- OIDC ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys() -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return {"key": key, "jwks": {"keys": [jwk | {"kid": "k1", "use": "sig", "alg": "RS256"}]}}


def sign(keys: dict[str, Any], *, kid: str = "k1", **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "u-1", "email": "ana@example.test",
            "iat": now, "exp": now + 300, "groups": ["sre"]} | claims  # fmt: skip
    return jwt.encode(body, keys["key"], algorithm="RS256", headers={"kid": kid})


@pytest.fixture
def jwks_server(keys: dict[str, Any]) -> Iterator[dict[str, Any]]:
    hits = {"n": 0}

    async def jwks(request: Any) -> JSONResponse:
        hits["n"] += 1
        return JSONResponse(keys["jwks"])

    with serve(Starlette(routes=[Route("/jwks.json", jwks)]), lifespan="off") as url:
        yield {"url": f"{url}/jwks.json", "hits": hits}


def test_oidc_tokens_are_verified_against_the_jwks_and_their_groups_give_roles(
    template: Template, keys: dict[str, Any], jwks_server: dict[str, Any]
) -> None:
    config = OidcConfig(issuer=ISSUER, audience=AUDIENCE, jwks=jwks_server["url"], name_claim="email",
                        roles={"sre": ["responder:iris*"], "ml": ["releaser:*", "viewer:*"]})  # fmt: skip
    app = app_for(template, copy_store(template, "oidc"), oidc=config)
    try:
        with serve(app, lifespan="off") as url, httpx.Client(base_url=f"{url}/api/v1") as c:
            me = c.get("/whoami", headers=bearer(sign(keys)))
            assert me.status_code == 200, me.text
            assert me.json() | {"rights": None} == {
                "name": "ana@example.test", "via": "oidc:u-1", "rights": None,
                "grants": [{"role": "responder", "models": ["iris*"]}],
            }  # fmt: skip
            denied = c.put("/models/iris/traffic", json={"weights": {"1.0.0": 100}},
                           headers=bearer(sign(keys)))  # fmt: skip
            assert denied.status_code == 403 and denied.json()["error"]["right"] == "traffic"
            ml = c.get("/whoami", headers=bearer(sign(keys, groups=["ml"], sub="u-2"))).json()
            assert [g["role"] for g in ml["grants"]] == ["releaser", "viewer"]
            assert jwks_server["hits"]["n"] == 1  # fetched once, then cached
            for bad, why in (
                (sign(keys, aud="other"), "the JWT was refused: Audience doesn't match"),
                (sign(keys, iss="https://evil.test/"), "the JWT was refused: Invalid issuer"),
                (sign(keys, exp=int(time.time()) - 3600), "the JWT has expired: sign in again"),
                (sign(keys, kid="k9"), "the JWT's key id 'k9' is not in the identity provider's JWKS"),
                ("e30.e30.e30", "the JWT was refused: Algorithm not specified"),
            ):  # fmt: skip
                resp = c.get("/whoami", headers=bearer(bad))
                assert resp.status_code == 401, resp.text
                assert resp.json()["error"]["message"] == why
            other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            forged = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": int(time.time()) + 60},
                                other, algorithm="RS256", headers={"kid": "k1"})  # fmt: skip
            resp = c.get("/whoami", headers=bearer(forged))
            assert resp.status_code == 401
            assert (
                resp.json()["error"]["message"]
                == "the JWT was refused: Signature verification failed"
            )
    finally:
        close_app(app)


def test_a_jwks_file_works_too(template: Template, keys: dict[str, Any], tmp_path: Path) -> None:
    f = tmp_path / "jwks.json"
    f.write_text(json.dumps(keys["jwks"]))
    config = OidcConfig(issuer=ISSUER, audience=AUDIENCE, jwks=str(f), roles={"sre": ["viewer"]})
    app = app_for(template, copy_store(template, "oidc-file"), oidc=config)
    try:
        with serve(app, lifespan="off") as url:
            resp = httpx.get(f"{url}/api/v1/models/fraud/status", headers=bearer(sign(keys)))
            assert resp.status_code == 200, resp.text
    finally:
        close_app(app)


def test_an_oidc_config_file_is_read_and_refused_in_one_line(tmp_path: Path) -> None:
    from backout.api.oidc import load_oidc_config
    from backout.errors import ConfigError

    f = tmp_path / "oidc.yaml"
    f.write_text(
        f"issuer: {ISSUER}\naudience: backout\njwks: /keys.json\nroles:\n  sre: ['responder:iris*']\n"
    )
    cfg = load_oidc_config(f)
    assert cfg.grants_for(["sre", "other"]) == (make_grant("responder", ["iris*"]),)
    f.write_text(
        f"issuer: {ISSUER}\naudience: backout\njwks: /k.json\nroles: {{sre: ['boss:*']}}\n"
    )
    with pytest.raises(
        ConfigError,
        match=r"^OIDC config '.*': roles.sre: unknown role 'boss': choose one of viewer, responder",
    ):
        load_oidc_config(f)
    f.write_text("issuer: x\njwks: /k.json\n")
    with pytest.raises(ConfigError, match=r"^OIDC config '.*oidc.yaml': audience: Field required$"):
        load_oidc_config(f)
