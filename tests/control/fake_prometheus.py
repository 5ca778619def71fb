"""A stand-in for Prometheus's query API on loopback, answering as told: an empty result,
garbage, or an error page. For the controller's fault tests (the real Prometheus is in
tests/telemetry)."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route


@dataclass
class FakePrometheus:
    """``mode``: ``empty`` (a matrix with no series), ``garbage`` (HTML), ``error`` (a 503)."""

    mode: str = "empty"
    queries: list[str] = field(default_factory=list)

    def app(self) -> Starlette:
        async def query(request: Request) -> Response:
            self.queries.append(request.query_params.get("query", ""))
            if self.mode == "garbage":
                return PlainTextResponse("<html>not a query result</html>")
            if self.mode == "error":
                return JSONResponse({"status": "error", "error": "overloaded"}, status_code=503)
            return JSONResponse(
                {"status": "success", "data": {"resultType": "matrix", "result": []}}
            )

        return Starlette(routes=[Route("/api/v1/query", query)])
