"""Incident routes: a model's incidents (its rollbacks and freezes) and their reports.

For every reader of the model: the report as JSON, as a self-contained HTML page, or as
Markdown — the same report ``backout report`` writes.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Query
from fastapi.responses import HTMLResponse, PlainTextResponse

from backout.api.auth import Principal, require
from backout.api.roles import Right
from backout.api.routes.common import JSON_ERRORS, ModelName, router
from backout.api.state import ApiState, api_state
from backout.errors import NotFound

__all__ = ["routes"]

routes = router("incidents")
State = Annotated[ApiState, Depends(api_state)]
Reader = Annotated[Principal, Depends(require(Right.READ))]


class MarkdownResponse(PlainTextResponse):
    """A Markdown document."""

    media_type = "text/markdown"


def _report(st: ApiState, model: ModelName, incident: int) -> Any:
    from backout.reports.builder import build_report

    report = build_report(st.store, incident)
    if report.model != model:  # the model in the path is the one the right was checked on
        raise NotFound(
            f"incident {incident} is not one of {model}'s: list them at /models/{model}/incidents"
        )
    return report


@routes.get("/models/{model}/incidents", summary="A model's incidents, newest first")
def incidents(model: ModelName, principal: Reader, st: State,
              limit: Annotated[int, Query(ge=1, le=500)] = 20) -> list[dict[str, Any]]:  # fmt: skip
    from backout.reports.builder import incident_ids

    out = []
    for i in incident_ids(st.store, model, limit):
        op = st.controller.ops.get(i)
        if op is not None:
            out.append({"id": i, "kind": op.kind, "phase": op.phase.value, "outcome": op.outcome,
                        "stable": op.stable, "target": op.target, "started_at": op.started_at,
                        "ended_at": op.ended_at, "reason": op.reason,
                        "report": f"/api/v1/models/{model}/incidents/{i}/report.html"})  # fmt: skip
    return out


@routes.get("/models/{model}/incidents/{incident}", summary="An incident's report, as JSON")
def incident(model: ModelName, incident: int, principal: Reader, st: State) -> dict[str, Any]:
    return _report(st, model, incident).to_dict()  # type: ignore[no-any-return]


@routes.get("/models/{model}/incidents/{incident}/report.html", response_class=HTMLResponse, responses=JSON_ERRORS,
            summary="An incident's report: a self-contained HTML page")  # fmt: skip
def report_html(model: ModelName, incident: int, principal: Reader, st: State) -> HTMLResponse:
    from backout.reports.writer import render_html

    return HTMLResponse(render_html(_report(st, model, incident)))


@routes.get("/models/{model}/incidents/{incident}/report.md", response_class=MarkdownResponse, responses=JSON_ERRORS,
            summary="An incident's report: a Markdown summary")  # fmt: skip
def report_markdown(
    model: ModelName, incident: int, principal: Reader, st: State
) -> PlainTextResponse:
    from backout.reports.writer import render_markdown

    return PlainTextResponse(
        render_markdown(_report(st, model, incident)), media_type="text/markdown"
    )
