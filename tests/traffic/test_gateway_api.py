"""The Gateway API router: the HTTPRoute rules it renders (valid against the Gateway API's
published schema), weights applied and verified by reading the route and its status back,
and every failure of the API or the Gateway a one-line RouterError that holds traffic."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiException

from backout.control.controller import Controller
from backout.control.phases import Phase
from backout.control.policy import parse_policy
from backout.control.routing import GatewayApiRouting, build_router
from backout.errors import RouterError
from backout.traffic.gateway_api import (
    GENERATION_ANNOTATION,
    GatewayApiRouter,
    httproute,
    httproute_rules,
)
from backout.traffic.routes import BUCKETS, RouteTable, Shadow
from tests.control.world import POLICY, make_world
from tests.deploy.schemas import httproute_validator
from tests.postgres_server import free_port
from tests.traffic.fake_kubernetes import FakeCustomObjects, example_route

NO_CAPTURE = "capture: {rate: 0}\nreplay: {allowed: false}\n"


def service(model: str, version: str) -> str:
    return f"{model}-{version.replace('.', '-')}"


def table(weights: dict[str, int], generation: int = 7, **kw: Any) -> RouteTable:
    """A table from basis points per version, in contiguous ranges."""
    ranges, at = {}, 0
    for v, w in weights.items():
        ranges[v] = ((at, at + w),)
        at += w
    assert at == BUCKETS
    return RouteTable("iris", generation, ranges, **kw)


def router(api: FakeCustomObjects, **kw: Any) -> GatewayApiRouter:
    return GatewayApiRouter(api, namespace="models", route="iris", model="iris",
                            backends=service, settle_s=kw.pop("settle_s", 1.0), poll_s=0.01, **kw)  # fmt: skip


@pytest.fixture
def api() -> FakeCustomObjects:
    return FakeCustomObjects(routes={("models", "iris"): example_route()})


def test_rules_pin_by_header_and_path_then_keys_then_the_weighted_split() -> None:
    t = table({"1.0.0": 9000, "1.1.0": 1000}, pins={"k1": "1.1.0"}, shadow=Shadow("1.2.0", 250))
    rules = httproute_rules(t, service, 8000)
    assert [r["name"] for r in rules] == [
        "pin-0-1-0-0", "pin-1-1-1-0", "pin-2-1-2-0", "key-1-1-1-0", "split",
    ]  # fmt: skip
    pin = rules[1]
    assert pin["backendRefs"] == [{"kind": "Service", "name": "iris-1-1-0", "port": 8000}]
    assert pin["matches"] == [
        {"path": {"type": "PathPrefix", "value": "/models/iris"},
         "headers": [{"type": "Exact", "name": "x-backout-version", "value": "1.1.0"}]},
        {"path": {"type": "PathPrefix", "value": "/v2/models/iris"},
         "headers": [{"type": "Exact", "name": "x-backout-version", "value": "1.1.0"}]},
        {"path": {"type": "PathPrefix", "value": "/models/iris/versions/1.1.0"}},
        {"path": {"type": "PathPrefix", "value": "/v2/models/iris/versions/1.1.0"}},
    ]  # fmt: skip
    assert rules[3]["matches"][0]["headers"] == [
        {"type": "Exact", "name": "x-backout-key", "value": "k1"}
    ]
    split = rules[-1]
    assert split["backendRefs"] == [
        {"kind": "Service", "name": "iris-1-0-0", "port": 8000, "weight": 9000},
        {"kind": "Service", "name": "iris-1-1-0", "port": 8000, "weight": 1000},
    ]
    stamp, mirror = split["filters"]
    assert stamp["responseHeaderModifier"]["set"] == [
        {"name": "x-backout-generation", "value": "7"}
    ]
    assert mirror == {
        "type": "RequestMirror",
        "requestMirror": {
            "backendRef": {"kind": "Service", "name": "iris-1-2-0", "port": 8000},
            "fraction": {"numerator": 250, "denominator": 10_000},
        },
    }


@pytest.mark.parametrize(
    "t",
    [
        table({"1.0.0": 10_000}),
        table({"1.0.0": 5000, "1.1.0": 5000}, pins={"a": "1.0.0", "b'\"`": "1.1.0"}),
        table({"1.0.0": 9999, "1.1.0-RC.1+b7": 1}, shadow=Shadow("1.1.0-RC.1+b7", 10_000)),
    ],
    ids=["one", "pins", "odd-version-and-shadow"],
)
def test_rendered_routes_are_valid_httproutes_by_the_published_schema(t: RouteTable) -> None:
    route = httproute(t, "iris", "models", service=lambda m, v: f"{m}-{v.lower().replace('.', '-').replace('+', '-')}",
                      port=8000, parent_refs=[{"name": "models-gateway"}])  # fmt: skip
    errors = sorted(e.message for e in httproute_validator().iter_errors(route))
    assert errors == []


def test_too_many_rules_or_keys_are_refused_before_anything_is_written() -> None:
    many = {f"1.{i}.0": 625 for i in range(16)}
    with pytest.raises(RouterError, match="needs 17 HTTPRoute rules, more than the 16"):
        httproute_rules(table(many), service, 8000)
    keys = {f"k{i}": "1.0.0" for i in range(33)}
    with pytest.raises(
        RouterError, match=r"33 keys pinned to iris@1\.0\.0: an HTTPRoute rule holds at most 32"
    ):
        httproute_rules(table({"1.0.0": 10_000}, pins=keys), service, 8000)


def test_apply_patches_only_the_rules_and_served_reads_them_back(api: FakeCustomObjects) -> None:
    r = router(api)
    assert r.served("iris") is None  # the user's route, not yet written by backout
    r.apply(table({"1.0.0": 9000, "1.1.0": 1000}))
    assert r.served("iris") == {"1.0.0": 90.0, "1.1.0": 10.0}
    stored = api.routes[("models", "iris")]
    assert stored["spec"]["parentRefs"] == [{"name": "models-gateway", "namespace": "gateways"}]
    assert stored["spec"]["hostnames"] == ["models.example.net"]
    assert stored["metadata"]["annotations"][GENERATION_ANNOTATION] == "7"
    assert set(api.patches[0]) == {"metadata", "spec"} and set(api.patches[0]["spec"]) == {"rules"}
    assert sorted(e.message for e in httproute_validator().iter_errors(stored)) == []


def test_a_route_no_gateway_has_accepted_serves_nothing_verified(api: FakeCustomObjects) -> None:
    api.accept = False
    r = router(api, settle_s=0.2)
    with pytest.raises(RouterError) as caught:
        r.apply(table({"1.0.0": 10_000}))
    assert caught.value.message == (
        "no Gateway controller accepted generation 7 of HTTPRoute models/iris within 0.2 s: "
        "check its parentRefs and `kubectl describe httproute`"
    )
    assert r.served("iris") is None
    api.reconcile("models", "iris")
    assert r.served("iris") == {"1.0.0": 100.0}


def test_every_parent_must_accept_the_new_generation_before_it_counts(
    api: FakeCustomObjects,
) -> None:
    r = router(api)
    r.apply(table({"1.0.0": 10_000}, generation=7))
    stored = api.routes[("models", "iris")]
    second = copy.deepcopy(stored["status"]["parents"][0])
    second["controllerName"] = "example.net/another-gateway"
    for c in second["conditions"]:
        c["observedGeneration"] -= 1  # still on the route's previous generation
    stored["status"]["parents"].append(second)
    assert r.served("iris") is None
    for c in second["conditions"]:
        c["observedGeneration"] += 1
    assert r.served("iris") == {"1.0.0": 100.0}


def test_an_old_refusal_does_not_count_against_a_new_generation(api: FakeCustomObjects) -> None:
    r = router(api)
    api.refuse = ("Accepted", "NotAllowedByListeners", "no listener allows this namespace")
    with pytest.raises(RouterError, match="NotAllowedByListeners"):
        r.apply(table({"1.0.0": 10_000}, generation=7))
    api.refuse, api.accept = None, False
    stored = api.routes[("models", "iris")]
    stored["metadata"]["generation"] += 1  # a new spec the Gateway has not looked at yet
    assert r.served("iris") is None  # waiting, not failing on the old refusal


def test_a_gateway_that_refuses_the_route_is_a_router_error_with_its_reason(
    api: FakeCustomObjects,
) -> None:
    api.refuse = ("ResolvedRefs", "BackendNotFound", "service iris-1-1-0 not found")
    with pytest.raises(RouterError) as caught:
        router(api).apply(table({"1.0.0": 5000, "1.1.0": 5000}))
    assert caught.value.message == (
        "HTTPRoute models/iris is not ResolvedRefs by example.net/gateway-controller: "
        "BackendNotFound service iris-1-1-0 not found"
    )


@pytest.mark.parametrize(
    ("fail", "message"),
    [
        (ApiException(status=404, reason="Not Found"),
         "HTTPRoute models/iris does not exist: create it with its parentRefs "
         "(deploy/kubernetes/httproute.yaml); backout sets only its rules"),
        (ApiException(status=403, reason="Forbidden"),
         "the Kubernetes API refused to read HTTPRoute models/iris (403): give the controller's "
         "ServiceAccount a Role that may get and patch httproutes"),
        (ApiException(status=500, reason="Internal Server Error"),
         "the Kubernetes API answered 500 Internal Server Error to read HTTPRoute models/iris"),
        (ConnectionRefusedError(111, "refused"),
         "the Kubernetes API cannot be reached to read HTTPRoute models/iris (ConnectionRefusedError)"),
    ],
    ids=["missing", "forbidden", "server-error", "down"],
)  # fmt: skip
def test_kubernetes_api_failures_are_one_line_router_errors(
    api: FakeCustomObjects, fail: Exception, message: str
) -> None:
    api.fail = fail
    for call in (lambda r: r.served("iris"), lambda r: r.apply(table({"1.0.0": 10_000}))):
        with pytest.raises(RouterError) as caught:
            call(router(api))
        assert caught.value.message == message


def test_a_route_whose_split_names_another_service_is_refused(api: FakeCustomObjects) -> None:
    r = router(api)
    r.apply(table({"1.0.0": 10_000}))
    api.routes[("models", "iris")]["spec"]["rules"][-1]["backendRefs"][0]["name"] = "intruder"
    with pytest.raises(RouterError, match="splits to Service 'intruder', which is not a release"):
        r.served("iris")


def test_the_controller_steers_the_route_and_holds_still_while_the_api_is_down(
    tmp_path: Path, api: FakeCustomObjects
) -> None:
    w = make_world(tmp_path, POLICY + NO_CAPTURE)
    r = router(api)
    w.controller = Controller(w.store, w.registry, notifier=w.notifier, clock=w.clock, router=r,
                              prober=w.prober)  # fmt: skip
    w.controller.deploy("iris", "1.1.0", actor="ana")
    assert r.served("iris") == {"1.0.0": 90.0, "1.1.0": 10.0}
    api.fail = ConnectionRefusedError(111, "refused")
    w.run(40)
    op = w.op()
    assert op is not None and op.phase == Phase.ROLLING_OUT and op.step == 0
    assert w.event_kinds().count("router.error") == 1
    api.fail = None
    w.run_until(lambda: w.weights() == {"1.0.0": 50, "1.1.0": 50}, limit=60)
    w.run(1)
    assert r.served("iris") == {"1.0.0": 50.0, "1.1.0": 50.0}
    assert w.event_kinds().count("router.recovered") == 1
    w.check_invariants()


def test_a_policy_names_the_route_and_a_missing_kubeconfig_is_a_router_error(
    tmp_path: Path,
) -> None:
    policy = parse_policy(
        "router: {kind: gateway-api, namespace: models, route: iris, backend: 'iris-{slug}', "
        f"kubeconfig: '{tmp_path / 'nope'}'}}\n" + NO_CAPTURE
    )
    assert isinstance(policy.router, GatewayApiRouting)
    assert policy.router.backend_for("iris", "1.4.0") == "iris-1-4-0"
    w = make_world(tmp_path, POLICY + NO_CAPTURE)
    with pytest.raises(
        RouterError, match="cannot set up the gateway-api router: no Kubernetes configuration"
    ):
        build_router(policy.router, "iris", w.deployments)


def test_the_real_client_against_an_api_server_that_is_down_is_a_router_error(
    tmp_path: Path,
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    port = free_port()
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: here\n"
        f"clusters: [{{name: here, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n"
        "users: [{name: me, user: {token: t}}]\n"
        "contexts: [{name: here, context: {cluster: here, user: me}}]\n"
    )
    policy = parse_policy(
        "router: {kind: gateway-api, namespace: models, route: iris, backend: 'iris-{slug}', "
        f"kubeconfig: '{kubeconfig}', settle: 1s}}\n" + NO_CAPTURE
    )
    w = make_world(tmp_path, POLICY + NO_CAPTURE)
    assert isinstance(policy.router, GatewayApiRouting)
    r = build_router(policy.router, "iris", w.deployments)
    with pytest.raises(RouterError) as caught:
        r.served("iris")
    assert caught.value.message.startswith(
        "the Kubernetes API cannot be reached to read HTTPRoute models/iris ("
    )
    assert isinstance(r, GatewayApiRouter)
    r.close()


def test_the_real_client_patches_by_merge_patch_and_reads_errors_back(
    tmp_path: Path, api: FakeCustomObjects
) -> None:
    """The official client, over HTTP, against a stand-in for the API server's two calls."""
    from tests.loopback import serve
    from tests.traffic.fake_kubernetes import api_server

    content_types: list[str] = []
    with serve(api_server(api, content_types)) as url:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: here\n"
            f"clusters: [{{name: here, cluster: {{server: '{url}'}}}}]\n"
            "users: [{name: me, user: {token: t}}]\n"
            "contexts: [{name: here, context: {cluster: here, user: me}}]\n"
        )
        policy = parse_policy(
            "router: {kind: gateway-api, namespace: models, route: iris, backend: 'iris-{slug}', "
            f"kubeconfig: '{kubeconfig}', settle: 2s}}\n" + NO_CAPTURE
        )
        assert isinstance(policy.router, GatewayApiRouting)
        w = make_world(tmp_path, POLICY + NO_CAPTURE)
        r = build_router(policy.router, "iris", w.deployments)
        r.apply(table({"1.0.0": 9000, "1.1.0": 1000}, pins={"k": "1.1.0"}))
        assert r.served("iris") == {"1.0.0": 90.0, "1.1.0": 10.0}
        assert content_types == ["application/merge-patch+json"]
        assert api.routes[("models", "iris")]["spec"]["hostnames"] == ["models.example.net"]
        api.fail = ApiException(status=403, reason="Forbidden")
        with pytest.raises(RouterError, match=r"refused to read HTTPRoute models/iris \(403\)"):
            r.served("iris")
        assert isinstance(r, GatewayApiRouter)
        r.close()


def test_with_the_gateways_address_the_data_plane_must_answer_with_the_new_table(
    api: FakeCustomObjects,
) -> None:
    """A route can be accepted before every Gateway replica serves it: the probe through the
    Gateway (its generation stamp on the model's path) is the data plane's own word."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from tests.loopback import serve

    answering = {"generation": "6", "host": ""}

    async def model(request: Request) -> JSONResponse:
        answering["host"] = request.headers["host"]
        return JSONResponse(
            {"name": "iris"}, headers={"x-backout-generation": answering["generation"]}
        )

    with serve(Starlette(routes=[Route("/v2/models/iris", model)])) as url:
        r = router(api, web_url=url, host="models.example.net", settle_s=0.3)
        with pytest.raises(
            RouterError, match="still answers iris with an older table than generation 7"
        ):
            r.apply(table({"1.0.0": 10_000}, generation=7))
        assert r.served("iris") is None  # accepted, but the data plane answers with 6
        answering["generation"] = "7"
        assert r.served("iris") == {"1.0.0": 100.0}
        assert answering["host"] == "models.example.net"
        r.close()
    down = router(api, web_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(
        RouterError, match=r"the Gateway at http://127\.0\.0\.1:\d+ cannot be reached"
    ):
        down.served("iris")
    down.close()
