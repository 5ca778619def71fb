"""Fixtures for the runtime tests: tiny real models, a real upstream server (the blob store
is the shared ``blobs`` of ``tests/conftest.py``)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Coroutine, Iterator
from typing import Any, Protocol, TypeVar

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from backout.registry.artifacts import LocalBlobStore
from backout.registry.manifest import Artifact, ReleaseManifest, Runtime, RuntimeKind
from tests import models
from tests.loopback import serve

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one coroutine to completion (the tests need no async plug-in)."""
    return asyncio.run(coro)


class MakeRelease(Protocol):
    def __call__(
        self,
        kind: RuntimeKind,
        files: dict[str, bytes],
        options: dict[str, Any] | None = None,
        config: dict[str, Any] | None = None,
        version: str = "1.0.0",
    ) -> ReleaseManifest: ...


@pytest.fixture
def make_release(blobs: LocalBlobStore) -> MakeRelease:
    """Store ``files`` as blobs and return a manifest of model ``iris`` naming them."""

    def make(
        kind: RuntimeKind,
        files: dict[str, bytes],
        options: dict[str, Any] | None = None,
        config: dict[str, Any] | None = None,
        version: str = "1.0.0",
    ) -> ReleaseManifest:
        arts = []
        for name, data in files.items():
            digest, size = blobs.put_bytes(data)
            arts.append(Artifact(path=name, sha256=digest, size=size))
        return ReleaseManifest(
            model="iris",
            version=version,
            artifacts=tuple(arts),
            runtime=Runtime(kind=kind, options=options or {}),
            config=config or {},
        )

    return make


@pytest.fixture(scope="session")
def iris() -> tuple[np.ndarray, np.ndarray]:
    return models.iris()


@pytest.fixture(scope="session")
def iris_model(iris: tuple[np.ndarray, np.ndarray]) -> LogisticRegression:
    x, y = iris
    return LogisticRegression(max_iter=500).fit(x, y)


@pytest.fixture(scope="session")
def iris_joblib(iris_model: LogisticRegression) -> bytes:
    buf = io.BytesIO()
    joblib.dump(iris_model, buf)
    return buf.getvalue()


@pytest.fixture(scope="session")
def iris_onnx(iris_model: LogisticRegression, iris: tuple[np.ndarray, np.ndarray]) -> bytes:
    from skl2onnx import to_onnx

    onx = to_onnx(iris_model, iris[0][:1].astype(np.float32), options={"zipmap": False})
    return bytes(onx.SerializeToString())


# --- a real Open Inference Protocol upstream on 127.0.0.1 ---------------------------------

_META = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}],
}


async def _metadata(request: Request) -> JSONResponse:
    name = request.path_params["name"]
    if name not in ("double", "slow", "broken"):
        return JSONResponse({"error": f"model {name} not found"}, status_code=404)
    return JSONResponse({"name": name, **_META})


async def _infer(request: Request) -> JSONResponse:
    name = request.path_params["name"]
    body = await request.json()
    (t,) = body["inputs"]
    if t["datatype"] != "FP32":
        return JSONResponse({"error": f"input x must be FP32, got {t['datatype']}"}, 400)
    if name == "slow":
        await asyncio.sleep(2.0)  # slower than the timeouts the tests set, on purpose
    if name == "broken":
        return JSONResponse({"error": "model exploded"}, status_code=500)
    y = [2 * v for v in t["data"]]
    out = {"name": "y", "shape": t["shape"], "datatype": "FP32", "data": y}
    return JSONResponse({"model_name": name, "outputs": [out]})


@pytest.fixture(scope="session")
def upstream() -> Iterator[str]:
    """Base URL of a Starlette OIP server run by uvicorn in a thread on a free local port."""
    app = Starlette(
        routes=[
            Route("/v2/models/{name}", _metadata),
            Route("/v2/models/{name}/infer", _infer, methods=["POST"]),
        ]
    )
    with serve(app, ws="none", lifespan="off", http="h11", loop="asyncio", timeout=10) as url:
        yield url
