"""The controller steering a real Traefik: a Traefik that goes down holds the rollout still,
is recorded once in the model's timeline, and the rollout moves on when it is back."""

from __future__ import annotations

from pathlib import Path

from backout.control.controller import Controller
from backout.control.phases import Phase
from backout.store import audit
from backout.traffic.traefik import TraefikRouter
from tests.control.world import POLICY, make_world
from tests.proxy_servers import TraefikServer

NO_CAPTURE = "capture: {rate: 0}\nreplay: {allowed: false}\n"


def test_a_down_traefik_moves_no_step_and_is_recorded_once(tmp_path: Path) -> None:
    w = make_world(tmp_path, POLICY + NO_CAPTURE)
    with TraefikServer() as traefik:
        # No request is sent in this test: the backends only need to be named.
        router = TraefikRouter(
            traefik.api_url,
            traefik.config_dir,
            lambda m, v: "http://127.0.0.1:9",
            web_url=traefik.web_url,
        )
        w.controller = Controller(
            w.store, w.registry, notifier=w.notifier, clock=w.clock, router=router, prober=w.prober
        )
        w.controller.deploy("iris", "1.1.0", actor="ana")
        assert router.served("iris") == {"1.0.0": 90, "1.1.0": 10}  # verified after the commit
        traefik.stop()
        w.run(40)  # well past the 10 s bake: the step would have moved on
        op = w.op()
        assert op is not None and op.phase == Phase.ROLLING_OUT and op.step == 0
        with w.store.read() as conn:
            errors = [e for e in audit.list_events(conn, "iris") if e.kind == "router.error"]
        assert len(errors) == 1  # one event for the outage, not one per tick
        assert "router traefik: Traefik's API at" in errors[0].reason
        assert "cannot be reached" in errors[0].reason and "\n" not in errors[0].reason
        traefik.start()  # the same ports and folder: Traefik reads the last file again
        w.run_until(lambda: w.weights() == {"1.0.0": 50, "1.1.0": 50}, limit=60)
        w.run(1)
        assert router.served("iris") == {"1.0.0": 50, "1.1.0": 50}
        assert w.event_kinds().count("router.recovered") == 1
        router.close()
    w.check_invariants()
