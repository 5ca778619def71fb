"""Three gateway replicas on one PostgreSQL store: cutovers by NOTIFY, and a store outage.

    .venv/bin/python benchmarks/replicas.py            # full run (~2 min), writes RESULTS.md
    .venv/bin/python benchmarks/replicas.py --quick    # a short smoke run
    .venv/bin/python benchmarks/replicas.py --no-write # print the section, keep RESULTS.md

A throwaway PostgreSQL server (``tests/postgres_server.py``) on 127.0.0.1 holds the store;
three ``backout serve --gateway-only --workers 1`` processes on their own ports serve two
iris releases (scikit-learn), as replicas on three hosts would.

- **Cutovers**: each replica is loaded at a fixed rate by its own ``openloop.py`` process
  (which logs who answered with which release, on the system-wide monotonic clock); this
  process moves 100% of traffic between the releases 50 times with
  ``Deployments.set_traffic``. A cutover's time runs from the commit returning to the
  first answer of the new release from the *last* replica to switch.
- **Outage**: a ``backout serve --controller-only`` process runs a staged rollback; once its
  first step has passed, PostgreSQL is stopped for 10 s under a fixed-rate load on every
  replica and then started again. Counted: failed requests, whether (and how soon) the
  controller goes on with the rollback, and the telemetry lost: the requests answered
  against the requests the store's telemetry counts once the replicas caught up, and the
  batches the replicas say they dropped (their bound is 10,000 per worker).

Every process is stopped by its process group at the end; every load run is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.postgres_server
from _results import write_section
from gateway import JSON_BODY, WORK, Server, openloop_argv, pctl, switch_times
from tests.postgres_server import PostgresServer, free_port

from backout.control.controller import Controller
from backout.control.lease import current
from backout.control.policy import parse_policy
from backout.proof.contracts import infer_sklearn_contract
from backout.registry.artifacts import LocalBlobStore
from backout.registry.manifest import Runtime, RuntimeKind
from backout.registry.releases import Registry
from backout.store import Store, audit, open_store
from backout.telemetry.batches import read_batches
from backout.traffic.deployments import Deployments

MODEL = "iris"
VERSIONS = ("1.0.0", "1.1.0")
REPLICAS = 3
PROBE_CONNECTIONS = 4
SWITCH_TARGET_MS = 100.0
POLICY = """
rollback:
  mode: staged
  steps: [25, 50, 100]
  bake: 3s
  verification: {duration: 2s, min_requests: 40}
triggers: []
"""


@dataclass(frozen=True)
class Plan:
    cutovers: int
    interval_s: float
    outage_s: float
    rate: int  # requests/s per replica during the outage
    probe_rate: int  # requests/s per replica during the cutovers (the probe is the load)


FULL = Plan(cutovers=50, interval_s=0.3, outage_s=10.0, rate=100, probe_rate=200)
QUICK = Plan(cutovers=10, interval_s=0.3, outage_s=3.0, rate=50, probe_rate=200)


# -- set-up -----------------------------------------------------------------------------------


def make_store(url: str, home: Path) -> tuple[Store, Registry]:
    """Two nearly identical iris releases (so the rollback's gates pass), both known-good."""
    x, y = load_iris(return_X_y=True)
    x = np.asarray(x, dtype=np.float64)
    store = open_store(url, create=True)
    registry = Registry(store, LocalBlobStore(home / "artifacts"))
    for version, c in zip(VERSIONS, (1.0, 0.98), strict=True):
        path = home / f"iris-{version}.joblib"
        joblib.dump(LogisticRegression(C=c, max_iter=500).fit(x, y), path)
        registry.register(
            MODEL, version, [path], runtime=Runtime(kind=RuntimeKind.SKLEARN),
            contract=infer_sklearn_contract(joblib.load(path)), actor="bench",
        )  # fmt: skip
        registry.mark_good(f"{MODEL}@{version}", actor="bench", reason="benchmark")
    Deployments(store, registry).set_traffic(MODEL, {VERSIONS[0]: 100}, actor="bench")
    return store, registry


def backout_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "backout", *args]


def start(name: str, argv: list[str], env: dict[str, str], port: int = 0) -> Server:
    log = WORK / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv, cwd=WORK, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    return Server(name, port, "/models/iris/predict", JSON_BODY, proc, log)


def wait_answering(server: Server, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited:\n{server.log.read_text()[-2000:]}")
        try:
            req = urllib.request.Request(server.url, data=JSON_BODY.encode(),
                                         headers={"Content-Type": "application/json"})  # fmt: skip
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{server.name} did not answer within {timeout:.0f} s")


def state(server: Server) -> dict[str, Any]:
    url = f"http://127.0.0.1:{server.port}/backout/state"
    with urllib.request.urlopen(url, timeout=5) as r:
        doc: dict[str, Any] = json.loads(r.read())
    return doc


def stored_requests(store: Store) -> int:
    return sum(b.requests for bs in read_batches(store, MODEL).values() for b in bs)


# -- the cutovers -------------------------------------------------------------------------------


def cutovers(replicas: list[Server], deployments: Deployments, plan: Plan) -> dict[str, Any]:
    # Each cutover takes its interval plus the write itself (tens of ms, more on a busy
    # machine): the probes run long enough to see the last one.
    span = plan.cutovers * (plan.interval_s + 0.3) + 3.0
    probes, logs = [], []
    for r in replicas:
        log = WORK / f"{r.name}-probe.log"
        logs.append(log)
        argv = openloop_argv(r, rate=plan.probe_rate, seconds=span, connections=PROBE_CONNECTIONS,
                             log=log)  # fmt: skip
        probes.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True))  # fmt: skip
    writes: list[tuple[int, int, str]] = []
    try:
        time.sleep(1.0)
        for i in range(plan.cutovers):
            target = VERSIONS[(i + 1) % 2]
            t = time.monotonic_ns()
            deployments.set_traffic(MODEL, {target: 100}, actor="bench", verify=False)
            writes.append((t, time.monotonic_ns(), target))
            time.sleep(plan.interval_s)
        docs = [json.loads(p.communicate(timeout=span + 30)[0]) for p in probes]
    finally:
        for p in probes:
            if p.poll() is None:
                p.kill()
                p.wait()
    answers: list[tuple[int, str, str]] = []
    for log in logs:
        for line in log.read_text().splitlines():
            ns, status, worker, release = line.split(" ")
            if status.startswith("2"):
                answers.append((int(ns), worker, release.split("@", 1)[-1]))
    answers.sort()
    workers = sorted({w for _, w, _ in answers})
    switches, _, unobserved = switch_times(writes, answers, workers)
    failed = sum(d["sent"] - d["ok"] for d in docs)  # errors and unanswered
    sent = sum(d["sent"] for d in docs)
    return {"switches_ms": [s * 1000 for s in switches], "unobserved": unobserved,
            "workers": len(workers), "failed": failed, "answered": len(answers), "sent": sent,
            "writes_ms": [(done - called) / 1e6 for called, done, _ in writes]}  # fmt: skip


# -- the outage ---------------------------------------------------------------------------------


def outage(
    pg: PostgresServer, store: Store, registry: Registry, replicas: list[Server],
    controller: Server, plan: Plan,
) -> dict[str, Any]:  # fmt: skip
    deployments = Deployments(store, registry)
    deployments.set_traffic(MODEL, {VERSIONS[1]: 100}, actor="bench")
    ctl = Controller(store, registry, actor="bench")
    ctl.set_policy(MODEL, parse_policy(POLICY), source="benchmark", actor="bench")
    span = plan.outage_s + 25.0
    before = stored_requests(store)
    loads = [
        subprocess.Popen(openloop_argv(r, rate=plan.rate, seconds=span, connections=4),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for r in replicas
    ]  # fmt: skip
    result: dict[str, Any] = {}
    try:
        time.sleep(1.0)
        op = ctl.rollback(MODEL, actor="bench", to=VERSIONS[0], reason="benchmark: outage")
        deadline = time.monotonic() + 30

        def events() -> list[audit.Event]:
            with store.read() as conn:
                return audit.list_events(conn, MODEL)

        while not any(e.kind == "phase.rolling-back" and e.data.get("operation") == op.id
                      and e.data.get("event") == "rollback-step-passed" for e in events()):  # fmt: skip
            if time.monotonic() > deadline:
                raise RuntimeError("the rollback's first step did not pass within 30 s")
            time.sleep(0.1)
        mid = ctl.operation(op.id)
        result["step_at_stop"] = f"step {mid.step + 1} of {len(mid.policy.rollback.steps)}"
        store.dispose()
        pg.halt()
        stopped = time.time()
        time.sleep(plan.outage_s)
        pg.resume()
        started = time.time()
        result["stopped_s"] = started - stopped
        deadline = time.monotonic() + 60
        while True:
            try:
                done = ctl.operation(op.id)
                if done.ended_at is not None:
                    break
            except Exception:  # the store is coming back
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"rollback {op.id} did not end within 60 s of the restart")
            time.sleep(0.2)
        after = [e for e in events() if e.at.timestamp() > started and e.actor == "controller"]
        result["outcome"] = done.outcome
        result["resumed_s"] = after[0].at.timestamp() - started if after else None
        result["ended_s"] = (done.ended_at or started) - started
        docs = [json.loads(p.communicate(timeout=span + 30)[0]) for p in loads]
    finally:
        for p in loads:
            if p.poll() is None:
                p.kill()
                p.wait()
    time.sleep(2.5)  # the replicas' last flush
    answered = sum(d["ok"] for d in docs)
    result["load"] = docs
    result["failed"] = sum(d["sent"] - d["ok"] for d in docs)  # errors and unanswered
    result["answered"] = answered
    result["stored"] = stored_requests(store) - before
    result["dropped"] = sum(state(r)["telemetry_dropped"]["batches"] for r in replicas)
    held = current(store)
    result["leader"] = None if held is None else f"{held.holder} (generation {held.generation})"
    return result


# -- report -------------------------------------------------------------------------------------


def report(cut: dict[str, Any], out: dict[str, Any], plan: Plan) -> str:
    sw = cut["switches_ms"]
    p50, p99 = pctl(sw, 0.5), pctl(sw, 0.99)
    lost = out["answered"] - out["stored"]
    ok = lambda c: "met" if c else "**NOT met**"  # noqa: E731
    lines = [
        f"{REPLICAS} replicas (`backout serve --gateway-only --workers 1`) on one PostgreSQL "
        f"store; {plan.cutovers} cutovers of 100% between two releases, one every "
        f"{plan.interval_s:g} s, each replica under {plan.probe_rate} requests/s (open loop, "
        f"{PROBE_CONNECTIONS} connections, every answer logged with the release that gave it); "
        f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (2 cores "
        "shared with other work: the figures include waiting for a core).",
        "",
        "| measure | median | p99 | max | target |",
        "| --- | ---: | ---: | ---: | --- |",
        f"| commit → every replica answers with the new release (ms) | {p50:.1f} | {p99:.1f} | "
        f"{max(sw, default=float('nan')):.1f} | p99 ≤ {SWITCH_TARGET_MS:g}: "
        f"{ok(p99 <= SWITCH_TARGET_MS)} |",
        f"| the route change's commit itself (ms) | {pctl(cut['writes_ms'], 0.5):.1f} | "
        f"{pctl(cut['writes_ms'], 0.99):.1f} | {max(cut['writes_ms']):.1f} | — |",
        "",
        "Each route change's notification carries the new route state (read once by the "
        "writer, inside the write), and the replicas apply it without reading the store; the "
        "commit's time includes that read.",
        "",
        f"Failed requests over the cutovers: **{cut['failed']}** of {cut['answered']:,} answered "
        f"(target 0: {ok(cut['failed'] == 0)}); cutovers some replica did not show "
        f"(no answer before the next one): {cut['unobserved']}.",
        "",
        f"PostgreSQL stopped for {out['stopped_s']:.1f} s during a staged rollback "
        f"({out['step_at_stop']}), {plan.rate} requests/s on each replica:",
        "",
        "| measure | figure | target |",
        "| --- | ---: | --- |",
        f"| failed data-path requests | {out['failed']} of {out['answered']:,} | 0: "
        f"{ok(out['failed'] == 0)} |",
        f"| the controller's first decision after the restart | "
        f"{out['resumed_s'] if out['resumed_s'] is None else round(out['resumed_s'], 2)} s | "
        "resumes the running operation: "
        f"{ok(out['resumed_s'] is not None)} |",
        f"| the rollback's outcome ({out['ended_s']:.1f} s after the restart) | "
        f"{out['outcome']} | rolled-back: {ok(out['outcome'] == 'rolled-back')} |",
        f"| requests answered but not in the store's telemetry | {lost} | "
        f"within the bound (10,000 batches per worker, dropped oldest first): "
        f"{ok(out['dropped'] == 0 and lost <= 0)} |",
        f"| batches the replicas dropped | {out['dropped']} | — |",
        "",
        f"Leader after the outage: {out['leader']}. The replicas served their last route "
        "table through the outage (fail-static) and wrote the telemetry they held once the "
        "store answered again; the controller renewed its own lease (same generation) and went "
        "on from the stored step.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    plan = QUICK if args.quick else FULL
    WORK.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="backout-replicas-"))
    pg = PostgresServer().start()
    servers: list[Server] = []
    try:
        url = pg.create_database()
        store, registry = make_store(url, home)
        env = {"BACKOUT_STORE": url, "BACKOUT_ARTIFACTS": str(home / "artifacts"),
               "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}  # fmt: skip
        replicas = []
        for i in range(REPLICAS):
            port = free_port()
            argv = backout_argv("serve", "--gateway-only", "--workers", "1", "--host",
                                "127.0.0.1", "--port", str(port), "--no-access-log")  # fmt: skip
            replicas.append(start(f"replica-{i}", argv, env, port))
        servers += replicas
        for r in replicas:
            wait_answering(r)
        cut = cutovers(replicas, Deployments(store, registry), plan)
        controller = start("controller", backout_argv("serve", "--controller-only"), env)
        servers.append(controller)
        time.sleep(3.0)  # it imports, takes the lease and warms the rollback points
        out = outage(pg, store, registry, replicas, controller, plan)
        store.dispose()
    finally:
        for s in servers:
            s.stop()
        pg.stop()
    body = report(cut, out, plan)
    print(body)
    if not args.no_write:
        write_section("replicas", "Gateway replicas on PostgreSQL: cutovers and a store outage",
                      body)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
