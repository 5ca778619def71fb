"""End to end behind a real Traefik: a regressed canary is detected from a real Prometheus
scraping Traefik, and the controller rolls it back — with the Traefik router and the
Prometheus telemetry named in the model's policy, as a user configures them."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from backout.control.controller import Controller
from backout.control.policy import parse_policy
from backout.traffic.traefik import TraefikRouter
from tests.proxy_servers import PrometheusServer, TraefikServer
from tests.traffic.backends import Load, iris_backends

POLICY = """
rollout:
  steps: [50, 100]
  bake: 60s
  min_requests: 50
  gate: {judges: [{judge: error_rate}]}
rollback:
  mode: emergency
  verification: {duration: 5s, min_requests: 20}
completion: {rollback: 5s}
triggers:
  - {name: error-rate, kind: error_rate, window: 10s, min_requests: 20, max_rate: 0.1}
capture: {rate: 0}
replay: {allowed: false}
"""


def test_a_regressed_canary_behind_traefik_is_detected_from_prometheus_and_rolled_back(
    tmp_path: Path,
) -> None:
    with (
        iris_backends(tmp_path) as releases,
        TraefikServer() as traefik,
        PrometheusServer([f"127.0.0.1:{traefik.api_port}"]) as prom,
    ):
        backends = ", ".join(f"'{v}': '{url}'" for (_, v), url in releases.urls.items())
        policy = POLICY + (
            f"router: {{kind: traefik, api: '{traefik.api_url}', web: '{traefik.web_url}', "
            f"config_dir: '{traefik.config_dir}', backends: {{{backends}}}}}\n"
            f"telemetry: {{kind: prometheus, url: '{prom.url}'}}\n"
        )
        ctl = Controller(releases.store, releases.registry)  # both from the policy
        ctl.set_policy("iris", parse_policy(policy), source="test", actor="test")
        router = ctl.router_for("iris")
        assert isinstance(router, TraefikRouter) and router.web_url == traefik.web_url
        ctl.deploy("iris", "1.0.0", actor="test")  # the first release: live, known-good
        stop = threading.Event()
        loop = threading.Thread(target=ctl.run, args=(stop,), kwargs={"interval": 0.25})
        with Load(traefik.web_url) as load:
            loop.start()
            try:
                releases.regress("1.1.0", errors=0.4)
                deployed = time.time()
                ctl.deploy("iris", "1.1.0", actor="ana")
                deadline = time.monotonic() + 60
                while ctl.operations("iris", limit=1)[0].kind != "rollback":
                    assert time.monotonic() < deadline, "the regressed canary was not rolled back"
                    time.sleep(0.2)
                rollback = ctl.operations("iris", limit=1)[0]
                detected = rollback.started_at - deployed
                # Either the step's gate or the error-rate trigger catches it first; both read
                # the canary's errors from Prometheus.
                assert rollback.reason.startswith(("trigger: error rate", "gate failed"))
                while router.served("iris") != {"1.0.0": 100.0}:  # pushed after the commit
                    assert time.monotonic() < deadline, "Traefik never served the rollback"
                    time.sleep(0.05)
                time.sleep(1.0)  # requests in flight at the switch keep their release
                after = time.time()
                time.sleep(2.0)
                assert load.answered_since(after) == {"iris@1.0.0"}
            finally:
                stop.set()
                loop.join(30)
        failed = [s for _, s, release in load.log if s != 200 and release != "iris@1.1.0"]
        assert failed == [], load.failures[:5]  # only the regressed canary's own errors failed
        assert 0 < detected < 30
        ctl.close()
