"""The Traefik router against a real Traefik: weights written, verified through its API, and
real requests split, pinned and mirrored accordingly; a Traefik that is down or is not
Traefik is a one-line RouterError."""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backout.errors import RouterError
from backout.traffic.routes import BUCKETS, RouteTable, Shadow
from backout.traffic.traefik import TraefikRouter, dynamic_config
from tests.loopback import serve
from tests.proxy_servers import TraefikServer
from tests.traffic.backends import Releases, iris_backends, predict


def table(weights: dict[str, int], gen: int = 1, **kw: object) -> RouteTable:
    """A table from basis points per version, in contiguous ranges."""
    ranges, at = {}, 0
    for v, w in weights.items():
        ranges[v] = ((at, at + w),)
        at += w
    assert at == BUCKETS
    return RouteTable("iris", gen, ranges, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Releases]:
    with iris_backends(tmp_path_factory.mktemp("backends")) as r:
        yield r


@pytest.fixture(scope="module")
def traefik() -> Iterator[TraefikServer]:
    with TraefikServer() as t:
        yield t


@pytest.fixture
def router(traefik: TraefikServer, releases: Releases) -> Iterator[TraefikRouter]:
    r = TraefikRouter(traefik.api_url, traefik.config_dir, releases.urls, web_url=traefik.web_url)
    try:
        yield r
    finally:
        r.close()


def answered_by(base: str, n: int, **headers: str) -> collections.Counter[str]:
    with httpx.Client(timeout=10) as c:
        got = collections.Counter()
        for _ in range(n):
            r = predict(c, base, **headers)
            assert r.status_code == 200, r.text
            got[r.headers["x-backout-release"]] += 1
    return got


def test_the_configuration_splits_pins_and_mirrors_by_release_service() -> None:
    t = table({"1.0.0": 9000, "1.1.0": 1000}, shadow=Shadow("1.2.0", 250), pins={"k`1": "1.1.0"})
    config = dynamic_config(t, lambda m, v: f"http://{m}-{v}")["http"]
    assert config["services"]["backout.iris"] == {
        "weighted": {
            "services": [
                {"name": "backout.iris.1.0.0", "weight": 9000},
                {"name": "backout.iris.1.1.0", "weight": 1000},
            ]
        }
    }
    assert config["services"]["backout-mirror.iris"] == {
        "mirroring": {
            "service": "backout.iris",
            "mirrors": [{"name": "backout-shadow.iris.1.2.0", "percent": 2}],
        }
    }
    assert config["routers"]["backout.iris"]["service"] == "backout-mirror.iris"
    key_rule = config["routers"]["backout-key.iris.0"]["rule"]
    assert key_rule.endswith('Header("x-backout-key", "k`1")')  # any key, quoted safely


def test_applied_weights_are_verified_through_the_api_and_split_real_requests(
    router: TraefikRouter, traefik: TraefikServer
) -> None:
    router.apply(table({"1.0.0": 7000, "1.1.0": 3000}))
    assert router.served("iris") == {"1.0.0": 70.0, "1.1.0": 30.0}
    got = answered_by(traefik.web_url, 200)
    # Traefik's weighted round robin is smooth: 200 requests split 140/60 to within a few.
    assert abs(got["iris@1.1.0"] - 60) <= 6, got
    router.apply(table({"1.1.0": BUCKETS}, gen=2))
    assert router.served("iris") == {"1.1.0": 100.0}
    assert answered_by(traefik.web_url, 40) == {"iris@1.1.0": 40}
    assert not list(traefik.config_dir.glob(".*"))  # no temporary file left behind


def test_pins_by_header_key_and_path_reach_their_release(
    router: TraefikRouter, traefik: TraefikServer
) -> None:
    router.apply(table({"1.0.0": BUCKETS}, gen=3, pins={"vip": "1.1.0"}))
    base = traefik.web_url
    assert answered_by(base, 5, **{"x-backout-version": "1.1.0"}) == {"iris@1.1.0": 5}
    assert answered_by(base, 5, **{"x-backout-key": "vip"}) == {"iris@1.1.0": 5}
    assert answered_by(base, 5, **{"x-backout-key": "other"}) == {"iris@1.0.0": 5}
    with httpx.Client() as c:
        r = c.post(f"{base}/models/iris/versions/1.1.0/predict", json={"instances": [[1, 2, 3, 4]]})
    assert r.status_code == 200 and r.headers["x-backout-release"] == "iris@1.1.0"


def test_a_shadow_gets_mirrored_copies_on_its_own_service(
    router: TraefikRouter, traefik: TraefikServer
) -> None:
    router.apply(table({"1.0.0": BUCKETS}, gen=4, shadow=Shadow("1.1.0", BUCKETS)))
    assert answered_by(traefik.web_url, 10) == {"iris@1.0.0": 10}  # answers from live only
    shadow = 'traefik_service_requests_total{code="200",method="POST",protocol="http",service="backout-shadow.iris.1.1.0@file"} 10'
    deadline = time.monotonic() + 10  # copies are sent off the request path
    while shadow not in httpx.get(f"{traefik.api_url}/metrics").text:
        assert time.monotonic() < deadline, "the shadow got no mirrored copies"
        time.sleep(0.05)


def test_a_release_without_a_backend_is_refused_before_anything_is_written(
    router: TraefikRouter, traefik: TraefikServer
) -> None:
    before = router.path_for("iris").read_text() if router.path_for("iris").exists() else None
    with pytest.raises(RouterError, match=r"no backend for iris@9\.9\.9: run `backout serve"):
        router.apply(table({"9.9.9": BUCKETS}, gen=5))
    after = router.path_for("iris").read_text() if router.path_for("iris").exists() else None
    assert before == after


def test_a_model_traefik_has_never_been_given_is_served_nowhere(router: TraefikRouter) -> None:
    assert router.served("fraud") is None


def test_a_traefik_that_is_down_is_a_one_line_router_error(tmp_path: Path) -> None:
    from tests.postgres_server import free_port

    down = TraefikRouter(f"http://127.0.0.1:{free_port()}", tmp_path, {})
    with pytest.raises(RouterError) as caught:
        down.served("iris")
    down.close()
    assert "cannot be reached" in caught.value.message and "\n" not in caught.value.message


def test_an_address_that_answers_garbage_is_a_one_line_router_error(tmp_path: Path) -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hello(request: object) -> PlainTextResponse:
        return PlainTextResponse("<html>hello</html>")

    garbage = Starlette(routes=[Route("/{path:path}", hello)])
    with serve(garbage) as url:
        r = TraefikRouter(url, tmp_path, {})
        with pytest.raises(RouterError, match="not JSON") as caught:
            r.served("iris")
        r.close()
    assert "\n" not in caught.value.message


def test_a_file_traefik_does_not_take_is_a_router_error_not_a_silent_wait(
    traefik: TraefikServer, releases: Releases, tmp_path: Path
) -> None:
    """A folder Traefik does not watch (a wrong path in the settings) is named in one line."""
    r = TraefikRouter(traefik.api_url, tmp_path, releases.urls, settle_s=0.3)
    with pytest.raises(
        RouterError, match=r"did not take backout-iris\.yml within 0\.3 s"
    ) as caught:
        r.apply(table({"1.0.0": BUCKETS}, gen=99))
    r.close()
    assert "\n" not in caught.value.message
