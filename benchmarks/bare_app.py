"""The floor for the gateway benchmark: a bare Starlette app that calls the model in-process.

It does the least a real model server must do for the same answer as the gateway's JSON
route: read the body, parse JSON, build the matrix, call the scikit-learn model (``predict``
and ``predict_proba``, as the gateway's sklearn runtime does by default) and answer
``{"predictions": [{"label": ..., "probabilities": [...]}]}``. No routing, telemetry,
validation or logging. The model file comes from ``BENCH_MODEL``.

    BENCH_MODEL=iris.joblib uvicorn bare_app:app --app-dir benchmarks --workers 2 \\
        --http httptools --loop uvloop --no-access-log
"""

from __future__ import annotations

import os
from typing import Any

import joblib
import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

MODEL: Any = joblib.load(os.environ["BENCH_MODEL"])


async def predict(request: Request) -> Response:
    body = orjson.loads(await request.body())
    x = np.asarray(body["instances"], dtype=np.float64)
    labels = MODEL.predict(x).tolist()
    probabilities = MODEL.predict_proba(x).astype(np.float32).tolist()
    predictions = [
        {"label": label, "probabilities": p} for label, p in zip(labels, probabilities, strict=True)
    ]
    return Response(orjson.dumps({"predictions": predictions}), media_type="application/json")


async def health(request: Request) -> Response:
    return Response(b'{"live": true}', media_type="application/json")


app = Starlette(
    routes=[
        Route("/predict", predict, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
    ]
)
