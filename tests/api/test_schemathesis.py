"""Schemathesis against the control API's OpenAPI: no server error, no answer that breaks
the schema, for every operation (a few generated examples each, to stay fast).

The calls carry a token holding every role on every model, so they reach past the
authorisation checks into the commands themselves.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from backout.api import tokens
from backout.api.roles import Role, make_grant
from tests.api.world import app_for, close_app, copy_store, make_template
from tests.loopback import serve

pytestmark = [pytest.mark.databases("sqlite"), pytest.mark.slow]

CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance,
          content_type_conformance]  # fmt: skip


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    folder: Path = tmp_path_factory.mktemp("api-fuzz")
    template = make_template(folder)
    app = app_for(template, copy_store(template, "fuzz"))
    token = tokens.create(app.state.backout.store, [make_grant(r.value, ["*"]) for r in Role],
                          actor="setup", name="fuzzer").token  # fmt: skip
    with serve(app, lifespan="off") as url:
        doc = httpx.get(f"{url}/api/v1/openapi.json").json()
        yield {"url": url, "doc": doc, "token": token}
    close_app(app)


def fuzz(schema: Any, headers: dict[str, str], *, max_examples: int,
         path: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Run a few generated cases of every operation; the summary, with every failure.

    ``path``: path parameters to also try as given (a model that exists), besides
    generated ones."""
    summary: dict[str, Any] = {"operations": 0, "calls": 0, "statuses": {}, "failures": []}
    for result in schema.get_all_operations():
        op = result.ok()
        summary["operations"] += 1
        run_operation(op, headers, summary, max_examples, None)
        names = {
            p.name
            for p in op.iter_parameters()
            if getattr(p.location, "value", p.location) == "path"
        }
        if path and names:
            fixed = {k: v for k, v in path.items() if k in names}
            run_operation(op, headers, summary, max_examples, fixed)
    return summary


def run_operation(op: Any, headers: dict[str, str], summary: dict[str, Any], n: int,
                  path: dict[str, str] | None) -> None:  # fmt: skip
    from hypothesis import given

    @given(case=op.as_strategy(path_parameters=path))
    @settings(max_examples=n, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    def run(case: Any) -> None:
        summary["calls"] += 1
        try:
            resp = case.call_and_validate(headers=headers, checks=CHECKS)
        except Exception as exc:  # a check failed: keep it, go on with the others
            summary["failures"].append(f"{op.label}: {type(exc).__name__}: {str(exc)[:600]}")
            return
        key = str(resp.status_code)
        summary["statuses"][key] = summary["statuses"].get(key, 0) + 1

    run()


def test_control_api_conforms(served: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    schema = schemathesis.openapi.from_dict(served["doc"])
    schema.config.update(base_url=served["url"])
    summary = fuzz(schema, {"Authorization": f"Bearer {served['token']}"}, max_examples=6)
    with capsys.disabled():
        print(f"\nschemathesis /api/v1: {summary['operations']} operations, {summary['calls']} "
              f"calls, statuses {dict(sorted(summary['statuses'].items()))}, "
              f"{len(summary['failures'])} failures")  # fmt: skip
    assert not summary["failures"], "\n".join(summary["failures"])
