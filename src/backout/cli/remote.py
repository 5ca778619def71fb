"""The command line's remote mode: commands asked of a control API instead of a store.

For ``--server URL`` (or ``BACKOUT_SERVER``) with ``BACKOUT_TOKEN``: :class:`Remote` calls
``/api/v1`` with the token, returns the JSON answer, and turns an error answer back into
the same :class:`~backout.errors.BackoutError` a local command raises, so the command
prints the same one line and exits with the same code.
"""

from __future__ import annotations

import os
from typing import Any

import httpx

from backout import errors
from backout.errors import BackoutError, ConfigError

__all__ = ["Remote", "error_from"]


def _classes() -> dict[str, type[BackoutError]]:
    from backout.api.app import error_code

    found: dict[str, type[BackoutError]] = {}
    for value in vars(errors).values():
        if isinstance(value, type) and issubclass(value, BackoutError):
            found[error_code(value.__new__(value))] = value
    return found


def error_from(status: int, body: Any) -> BackoutError:
    """The error an API answer stands for (by its code; else by its status)."""
    detail = body.get("error") if isinstance(body, dict) else None
    if not isinstance(detail, dict):
        return BackoutError(f"the API answered {status} without a backout error")
    code, message = str(detail.get("code", "")), str(detail.get("message", ""))
    cls = _classes().get(code)
    if cls is None:
        cls = {401: errors.Unauthenticated, 403: errors.Forbidden, 404: errors.NotFound,
               409: errors.Conflict, 422: errors.ValidationError}.get(status, BackoutError)  # fmt: skip
    exc = cls.__new__(cls)
    BackoutError.__init__(exc, message)
    if isinstance(exc, errors.Forbidden):
        exc.right = str(detail.get("right") or "")
    return exc


class Remote:
    """A client of one control API, with one token."""

    def __init__(self, server: str, token: str | None = None, *, timeout: float = 60.0) -> None:
        server = server.rstrip("/")
        if not server.startswith(("http://", "https://")):
            raise ConfigError(
                f"--server {server!r} must be an http(s) URL such as http://127.0.0.1:8001"
            )
        self.server = server
        token = token if token is not None else os.environ.get("BACKOUT_TOKEN", "")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=f"{server}/api/v1", headers=headers, timeout=timeout)

    def request(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        """The JSON answer of ``method path`` (``params`` in the query, None ones left out)."""
        query = {k: v for k, v in params.items() if v is not None}
        try:
            resp = self.client.request(method, path, json=body, params=query)
        except httpx.HTTPError as exc:
            raise errors.StoreUnavailable(
                f"cannot reach the control API at {self.server}: {type(exc).__name__}: {exc}"
            ) from exc
        try:
            doc = resp.json()
        except ValueError:
            doc = None
        if resp.status_code >= 400:
            raise error_from(resp.status_code, doc)
        return doc

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, **params)

    def post(self, path: str, body: Any = None, **params: Any) -> Any:
        return self.request("POST", path, body, **params)

    def put(self, path: str, body: Any = None) -> Any:
        return self.request("PUT", path, body)

    def delete(self, path: str, **params: Any) -> Any:
        return self.request("DELETE", path, **params)

    def close(self) -> None:
        self.client.close()
