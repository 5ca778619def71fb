"""A model's router and telemetry come from its policy: the controller builds them, refuses
what the router cannot carry, and treats a metric system that is down, answers garbage or
answers nothing as trouble or missing data — never as health, never as a crash."""

from __future__ import annotations

from pathlib import Path

import pytest

from backout.control.controller import Controller
from backout.control.drills import run_drill
from backout.control.phases import Phase
from backout.control.policy import parse_policy
from backout.control.routing import fill, slug
from backout.errors import PolicyError, UnsupportedByRouter
from backout.store import audit
from backout.telemetry.prometheus import PrometheusTelemetry
from backout.traffic.faults import parse_fault
from backout.traffic.traefik import TraefikRouter
from tests.cli.runner import Cli
from tests.control.fake_prometheus import FakePrometheus
from tests.control.world import POLICY, World, make_world
from tests.loopback import serve
from tests.postgres_server import free_port

NO_CAPTURE = "capture: {rate: 0}\nreplay: {allowed: false}\n"


def traefik_section(config_dir: Path, api: str = "http://127.0.0.1:9") -> str:
    return (
        f"router: {{kind: traefik, api: '{api}', config_dir: '{config_dir}', "
        "backend: 'http://127.0.0.1:9/{model}/{slug}'}\n"
    )


def prometheus_section(url: str) -> str:
    return f"telemetry: {{kind: prometheus, url: '{url}', matchers: 'job=\"traefik\"'}}\n"


def events(w: World, kind: str) -> list[audit.Event]:
    with w.store.read() as conn:
        return [e for e in audit.list_events(conn, "iris") if e.kind == kind]


def test_backend_templates_fill_model_version_and_a_kubernetes_safe_slug() -> None:
    assert slug("1.4.0-RC1+build.7") == "1-4-0-rc1-build-7"
    assert fill("http://{model}-{slug}:8000", "fraud", "1.4.0") == "http://fraud-1-4-0:8000"
    with pytest.raises(PolicyError, match=r"router.backend: uses \{host\}"):
        parse_policy(
            "router: {kind: traefik, api: 'http://t:8081', config_dir: /x, backend: '{host}'}"
        )
    with pytest.raises(PolicyError, match="name each release's backend"):
        parse_policy("router: {kind: traefik, api: 'http://t:8081', config_dir: /x}")
    with pytest.raises(
        PolicyError, match=r"telemetry\.prefix: .* must be the Traefik router's prefix"
    ):
        parse_policy(
            "router: {kind: traefik, api: 'http://t:8081', config_dir: /x, backend: 'http://b', "
            "prefix: bk}\ntelemetry: {kind: prometheus, url: 'http://p:9090'}\n"
        )
    with pytest.raises(PolicyError, match=r"telemetry\.matchers: must be label matchers"):
        parse_policy(
            "telemetry: {kind: prometheus, url: 'http://p:9090', matchers: 'a=\"b\"} or up{'}"
        )


def test_the_controller_builds_each_models_router_and_telemetry_from_its_policy(
    tmp_path: Path,
) -> None:
    w = make_world(tmp_path, POLICY + NO_CAPTURE)
    policy = parse_policy(
        POLICY + NO_CAPTURE + traefik_section(tmp_path) + prometheus_section("http://127.0.0.1:9")
    )
    w.controller.set_policy("iris", policy, source="test", actor="test")
    router = w.controller.router_for("iris")
    assert isinstance(router, TraefikRouter) and router.api_url == "http://127.0.0.1:9"
    assert router.backend("iris", "1.1.0") == "http://127.0.0.1:9/iris/1-1-0"
    assert w.controller.router_for("iris") is router  # kept while the section is the same
    telemetry = w.controller.telemetry_for("iris")
    assert isinstance(telemetry, PrometheusTelemetry) and telemetry.matchers == 'job="traefik"'
    assert w.controller.router_kind("iris") == ("traefik", router.capabilities)
    w.controller.close()


def test_a_policy_that_needs_capture_is_refused_for_a_model_behind_traefik(tmp_path: Path) -> None:
    w = make_world(tmp_path)
    policy = parse_policy(POLICY + traefik_section(tmp_path))  # capture and replay on
    with pytest.raises(UnsupportedByRouter) as caught:
        w.controller.set_policy("iris", policy, source="test", actor="test")
    assert caught.value.message.startswith("the policy cannot run on the traefik router: ")
    assert "Traefik forwards requests without recording them for replay" in caught.value.message


def test_a_drill_is_refused_for_a_model_behind_an_external_router(tmp_path: Path) -> None:
    w = make_world(tmp_path, POLICY + NO_CAPTURE + traefik_section(tmp_path))
    with pytest.raises(UnsupportedByRouter) as caught:
        run_drill(w.store, w.registry, "iris", parse_fault("errors=5%"), actor="ana", timeout=1)
    assert caught.value.message == (
        "a drill needs the fault-injection capability, and iris's traffic goes through the "
        "traefik router (Traefik injects no faults into a release's answers): rehearse on a "
        "model served by backout's gateway, or inject the fault in the model server itself"
    )
    w.controller.close()


def test_a_down_prometheus_is_recorded_once_and_moves_nothing(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    w = make_world(tmp_path, POLICY + NO_CAPTURE + prometheus_section(url))
    w.controller.deploy("iris", "1.1.0", actor="ana")
    w.run(40)  # past the bake and the missing-data wait: silence must not look like health
    op = w.op()
    assert op is not None and op.phase == Phase.ROLLING_OUT and op.step == 0
    assert w.weights() == {"1.0.0": 90, "1.1.0": 10}
    errors = events(w, "telemetry.error")
    assert len(errors) == 1 and "controller.error" not in w.event_kinds()
    assert errors[0].reason.startswith(f"telemetry: Prometheus at {url} cannot be reached")
    assert errors[0].reason.endswith(
        "nothing is decided and traffic holds still until it can be read"
    )
    w.controller.close()


def test_a_prometheus_answering_garbage_is_trouble_and_its_recovery_is_recorded(
    tmp_path: Path,
) -> None:
    fake = FakePrometheus(mode="garbage")
    with serve(fake.app()) as url:
        w = make_world(tmp_path, POLICY + NO_CAPTURE + prometheus_section(url))
        w.controller.deploy("iris", "1.1.0", actor="ana")
        w.run(5)
        fake.mode = "error"
        w.run(5)
        [garbage, refused] = events(w, "telemetry.error")
        assert "something that is not JSON" in garbage.reason
        assert "refused the query (503): 'overloaded'" in refused.reason
        fake.mode = "empty"
        w.run(2)
        w.controller.close()
    assert w.event_kinds().count("telemetry.recovered") == 1
    op = w.op()
    assert op is not None and op.step == 0 and w.weights() == {"1.0.0": 90, "1.1.0": 10}
    assert fake.queries and all('job="traefik"' in q for q in fake.queries)


def test_a_query_that_returns_nothing_is_missing_data_and_the_policy_decides(
    tmp_path: Path,
) -> None:
    """The store holds healthy traffic, but the policy judges from Prometheus, which has none:
    on_missing_data (ask) pauses for a person; the rollout never moves on silence."""
    fake = FakePrometheus(mode="empty")
    with serve(fake.app()) as url:
        w = make_world(tmp_path, POLICY + NO_CAPTURE + prometheus_section(url))
        w.controller.deploy("iris", "1.1.0", actor="ana")
        w.run(29)
        op = w.op()
        assert op is not None and op.phase == Phase.ROLLING_OUT and op.step == 0
        w.run(3)  # missing_data_after: 30s
        w.controller.close()
    op = w.op()
    assert op is not None and op.phase == Phase.AWAITING_APPROVAL and op.step == 0
    [asked] = events(w, "phase.awaiting-approval")
    assert asked.reason.startswith("no traffic reached 1.1.0 for 30 s: waiting for a human")
    assert w.weights() == {"1.0.0": 90, "1.1.0": 10}
    assert "telemetry.error" not in w.event_kinds()


def test_status_shows_a_down_router_and_a_down_prometheus_in_one_line_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api, prom = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    w = make_world(
        tmp_path, POLICY + NO_CAPTURE + traefik_section(tmp_path, api) + prometheus_section(prom)
    )
    cli = Cli(capsys, str(w.store.url), tmp_path)
    code, out, err = cli("status", "iris")
    assert code == 0 and err == ""
    lines = out.splitlines()
    router = [line for line in lines if line.startswith("router traefik: ")]
    assert router == [
        f"router traefik: ERROR Traefik's API at {api} cannot be reached (ConnectError): is "
        "Traefik running with --api? (traffic holds still)"
    ]
    telemetry = [line for line in lines if line.startswith("telemetry prometheus: ")]
    assert len(telemetry) == 1 and f"Prometheus at {prom} cannot be reached" in telemetry[0]
    doc = cli.json("status", "iris")
    assert isinstance(doc, dict)
    assert doc["router"]["kind"] == "traefik" and "cannot be reached" in doc["router"]["error"]
    assert doc["telemetry"]["kind"] == "prometheus" and doc["telemetry"]["error"]
    w.controller.close()


def test_a_policy_check_reads_the_router_from_the_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from backout.cli import main

    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "router: {kind: gateway-api, namespace: models, route: iris, backend: 'iris-{slug}'}\n"
    )
    with pytest.raises(SystemExit) as code:
        main(["policy", "check", str(policy)])
    err = capsys.readouterr().err
    assert code.value.code == 2 and err.startswith(
        "error: the policy cannot run on the gateway-api router: capture.rate: 0.01 needs the "
        "capture capability (the Gateway forwards requests without recording them for replay)"
    )
    policy.write_text(policy.read_text() + NO_CAPTURE)
    with pytest.raises(SystemExit) as code:
        main(["policy", "check", str(policy)])
    out = capsys.readouterr().out
    assert code.value.code == 0 and "router:\n  kind: gateway-api\n" in out


def test_a_controller_given_a_router_uses_it_whatever_the_policy_says(tmp_path: Path) -> None:
    w = make_world(tmp_path, POLICY + NO_CAPTURE + traefik_section(tmp_path))
    fixed = Controller(w.store, w.registry, clock=w.clock, router=w.controller.router)
    assert fixed.router_for("iris") is w.controller.router
    assert fixed.router_kind("iris")[0] == "gateway"
