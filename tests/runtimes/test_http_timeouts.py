"""An HTTP upstream that never answers, or answers a byte at a time, fails within the
release's timeout as a whole, not per read."""

from __future__ import annotations

import time

import numpy as np
import pytest

from backout.errors import RuntimeLoadError
from backout.registry.artifacts import LocalBlobStore
from backout.registry.manifest import RuntimeKind
from backout.runtimes import UpstreamTimeout, load_release
from tests.runtimes.conftest import MakeRelease, run
from tests.silent import silent_server, trickle_server

SECRET = "PLANTEDhook42token"


@pytest.mark.timeout(30)
def test_an_http_upstream_that_trickles_its_answer_times_out_as_a_whole(
    make_release: MakeRelease, blobs: LocalBlobStore
) -> None:
    with trickle_server(interval_s=0.05) as port:
        options = {
            "url": f"http://127.0.0.1:{port}",
            "inputs": ["x"],
            "outputs": ["y"],
            "timeout_s": 0.5,
        }
        predictor = load_release(make_release(RuntimeKind.HTTP, {}, options), blobs, timeout_s=5)
        started = time.monotonic()

        async def infer() -> None:
            try:
                await predictor.infer({"x": np.ones((1, 2))})
            finally:
                await predictor.aclose()

        with pytest.raises(UpstreamTimeout, match=r"did not answer within 0\.5 s"):
            run(infer())
        assert time.monotonic() - started < 1.5


@pytest.mark.timeout(30)
def test_an_http_upstream_whose_metadata_never_comes_refuses_the_load_in_time(
    make_release: MakeRelease, blobs: LocalBlobStore
) -> None:
    with silent_server() as port:
        options = {"url": f"http://127.0.0.1:{port}/?token={SECRET}"}
        started = time.monotonic()
        with pytest.raises(RuntimeLoadError) as info:
            load_release(make_release(RuntimeKind.HTTP, {}, options), blobs, timeout_s=1)
        assert time.monotonic() - started < 3
    assert SECRET not in str(info.value)
