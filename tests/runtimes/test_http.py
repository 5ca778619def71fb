"""HTTP upstream runtime against a real Starlette OIP server on 127.0.0.1."""

from __future__ import annotations

import socket
from typing import Any

import numpy as np
import pytest

from backout.errors import RuntimeLoadError
from backout.registry.artifacts import LocalBlobStore
from backout.registry.manifest import RuntimeKind
from backout.runtimes import Predictor, UpstreamError, UpstreamTimeout, load_release
from tests.runtimes.conftest import MakeRelease, run


def _load(make_release: MakeRelease, blobs: LocalBlobStore, **options: Any) -> Predictor:
    return load_release(make_release(RuntimeKind.HTTP, {}, options), blobs, timeout_s=5)


async def _infer_then_close(predictor: Predictor, x: np.ndarray) -> dict[str, np.ndarray]:
    try:
        return await predictor.infer({"x": x})
    finally:
        await predictor.aclose()


def test_upstream_predicts_with_names_from_its_metadata(
    make_release: MakeRelease, blobs: LocalBlobStore, upstream: str
) -> None:
    predictor = _load(make_release, blobs, url=upstream, model="double")
    assert (predictor.input_names, predictor.output_names) == (["x"], ["y"])
    # float64 in: the runtime sends the FP32 the upstream declared, or it would answer 400.
    out = run(_infer_then_close(predictor, np.array([[1.0, 2.0], [3.0, 4.0]])))
    np.testing.assert_array_equal(out["y"], [[2.0, 4.0], [6.0, 8.0]])
    assert out["y"].dtype == np.float32
    assert predictor.memory_bytes() == 0


def test_upstream_timeout_raises_upstream_timeout(
    make_release: MakeRelease, blobs: LocalBlobStore, upstream: str
) -> None:
    predictor = _load(make_release, blobs, url=upstream, model="slow", timeout_s=0.2)
    with pytest.raises(UpstreamTimeout, match=r"did not answer within 0\.2 s") as e:
        run(_infer_then_close(predictor, np.ones((1, 2))))
    assert e.value.http_status == 504 and e.value.retriable


def test_upstream_500_raises_upstream_error_with_its_message(
    make_release: MakeRelease, blobs: LocalBlobStore, upstream: str
) -> None:
    predictor = _load(make_release, blobs, url=upstream, model="broken")
    with pytest.raises(UpstreamError, match=r"answered 500: model exploded") as e:
        run(_infer_then_close(predictor, np.ones((1, 2))))
    assert e.value.http_status == 502 and not isinstance(e.value, UpstreamTimeout)


def test_unknown_upstream_model_refuses_load(
    make_release: MakeRelease, blobs: LocalBlobStore, upstream: str
) -> None:
    with pytest.raises(RuntimeLoadError, match=r"answered 404.*model nope not found"):
        _load(make_release, blobs, url=upstream, model="nope")


def test_unreachable_upstream_refuses_load(
    make_release: MakeRelease, blobs: LocalBlobStore
) -> None:
    # A port just bound and released again: nothing listens there, the connection is refused.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(RuntimeLoadError, match=r"cannot be reached"):
        _load(make_release, blobs, url=f"http://127.0.0.1:{port}", model="double")
