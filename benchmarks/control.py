"""The control plane for people: dashboard freshness, status page, API reads under load.

    .venv/bin/python benchmarks/control.py            # full run, writes benchmarks/RESULTS.md
    .venv/bin/python benchmarks/control.py --quick    # a short smoke run
    .venv/bin/python benchmarks/control.py --no-write # print the section, keep RESULTS.md

One ``backout serve --workers 2 --no-access-log --admin-port PORT`` (the gateway, the
controller and the control API in its own process) on 127.0.0.1, over a SQLite store with
``iris`` (two LogisticRegressions at 90/10) and a few more models for the status page runs.
Measured, every target in one run:

1. **decision → dashboard**: this process makes a controller decision (``pause`` /
   ``resume`` of a rollout: a phase change committed with its event) while a dashboard's
   server-sent stream (``/dashboard/models/iris/stream``) is open; the time from the commit
   returning to the first stream message that carries the decision's event. p99 ≤ 1 s.
2. **rollback → status page**: a rollback starts (one model per run, so no run waits for
   another to end); ``/status/summary.json`` is polled every 20 ms until that model's
   component leaves "operational". ≤ 2 s.
3. **API reads under load**: wrk drives the gateway at full load (16 connections) while an
   open-loop reader calls ``GET /api/v1/models/iris/status`` at 50 requests/s; latency is
   measured from each request's scheduled time (no coordinated omission). p99 ≤ 50 ms.
4. **gateway with a dashboard open**: wrk throughput with one dashboard stream open against
   none, runs interleaved; the median ratio. Within 5%.

Everything started here is stopped here, by process group; every load run is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).parent))
from _results import write_section
from gateway import (
    BIN,
    JSON_BODY,
    WORK,
    WORKERS,
    Server,
    ensure_wrk,
    free_port,
    make_models,
    make_store,
    start_server,
    wrk,
)

from backout.api import tokens
from backout.api.roles import make_grant
from backout.control.controller import Controller
from backout.control.policy import parse_policy
from backout.registry.artifacts import LocalBlobStore
from backout.registry.releases import Registry
from backout.runtimes.probe import Probe
from backout.store import Store

# A rollout that never moves on by itself during the benchmark (its bake is long).
POLICY = parse_policy("""
rollout: {steps: [10, 100], bake: 1h, missing_data_after: 1h, on_missing_data: wait}
rollback: {mode: staged, steps: [95, 100], bake: 1h}
termination: {max_rollback_duration: 3h}
triggers: []
""")


@dataclass(frozen=True)
class Plan:
    decisions: int
    rollbacks: int
    read_seconds: float
    wrk_seconds: float
    runs: int


FULL = Plan(decisions=60, rollbacks=5, read_seconds=20.0, wrk_seconds=8.0, runs=3)
QUICK = Plan(decisions=10, rollbacks=2, read_seconds=4.0, wrk_seconds=2.0, runs=1)


def pctl(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def trusted(manifest: Any, blobs: Any, *, timeout_s: float) -> Probe:
    """The benchmark's releases are the gateway benchmark's iris models, known to answer:
    skip loading each in a process of its own before every decision (seconds apiece here)."""
    return Probe(manifest.ref, True, "answer", "benchmark releases: not probed again")


def setup(home: Path, extra_models: int) -> tuple[Store, Registry, Controller, str]:
    models = make_models(home)
    store, _ = make_store(home, models)
    registry = Registry(store, LocalBlobStore(home / "artifacts"))
    ctl = Controller(store, registry, actor="bench", prober=trusted)
    for i in range(extra_models):
        name = f"svc{i}"
        for version, path in models.items():
            registry.register(name, version, [path], actor="bench")
        ctl.set_policy(name, POLICY, source="bench", actor="bench")
        ctl.deploy(name, "1.0.0", actor="bench")
    ctl.set_policy("iris", POLICY, source="bench", actor="bench")
    token = tokens.create(store, [make_grant("responder", ["*"])], actor="bench", name="bench")
    return store, registry, ctl, token.token


def start(home: Path) -> tuple[Server, str]:
    port, admin = free_port(), free_port()
    argv = [str(BIN / "backout"), "serve", "--port", str(port), "--workers", str(WORKERS),
            "--no-access-log", "--admin-port", str(admin)]  # fmt: skip
    env = {"BACKOUT_STORE": f"sqlite:///{home / 'backout.db'}",
           "BACKOUT_ARTIFACTS": str(home / "artifacts")}  # fmt: skip
    server = start_server("control", argv, port=port, path="/models/iris/predict", body=JSON_BODY,
                          env=env)  # fmt: skip
    api = f"http://127.0.0.1:{admin}"
    deadline = time.monotonic() + 120
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{api}/status/summary.json", timeout=2).status_code == 200:
                return server, api
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"the control API did not answer; see {server.log}")
        time.sleep(0.2)


class Stream:
    """A dashboard's server-sent stream, read in a thread: (arrival, seq) of each message."""

    def __init__(self, api: str, token: str, model: str = "iris") -> None:
        self.url = f"{api}/dashboard/models/{model}/stream"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.seen: list[tuple[float, int]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.lock = threading.Lock()

    def __enter__(self) -> Stream:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.seen:
            if time.monotonic() > deadline:
                raise RuntimeError("the dashboard stream sent nothing in 60 s")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)

    def run(self) -> None:
        timeout = httpx.Timeout(10.0, read=30.0)
        with (
            httpx.Client(timeout=timeout) as client,
            client.stream("GET", self.url, headers=self.headers) as r,
        ):
            for line in r.iter_lines():
                if self.stop.is_set():
                    return
                if line.startswith("data:"):
                    seq = int(orjson.loads(line[5:])["seq"])
                    with self.lock:
                        self.seen.append((time.monotonic(), seq))

    def first_at_or_after(self, seq: int, since: float, timeout: float = 10.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for at, s in self.seen:
                    if s >= seq and at >= since:
                        return at
            time.sleep(0.005)
        return float("inf")


def latest_seq(store: Store) -> int:
    import sqlalchemy as sa

    from backout.store import schema

    with store.read() as conn:
        return int(conn.execute(sa.select(sa.func.max(schema.events.c.seq))).scalar() or 0)


def decisions(store: Store, ctl: Controller, api: str, token: str, n: int) -> list[float]:
    """Seconds from a decision's commit to the dashboard stream showing it."""
    ctl.deploy("iris", "1.1.0", actor="bench", reason="benchmark rollout")
    out = []
    with Stream(api, token) as stream:
        for i in range(n):
            time.sleep(0.3 + (i % 5) * 0.1)  # not in step with the stream's own second
            if i % 2 == 0:
                ctl.pause("iris", actor="bench", reason="benchmark")
            else:
                ctl.resume("iris", actor="bench", reason="benchmark")
            committed = time.monotonic()
            seq = latest_seq(store)
            out.append(stream.first_at_or_after(seq, committed) - committed)
    ctl.abort("iris", actor="bench", reason="benchmark done")
    return out


def status_page(ctl: Controller, api: str, n: int) -> list[float]:
    """Seconds from a rollback's start to the status page showing it."""
    out = []
    with httpx.Client(timeout=5) as client:
        for i in range(n):
            model = f"svc{i}"
            ctl.deploy(model, "1.1.0", actor="bench", reason="benchmark rollout")
            time.sleep(1.2)  # the page's cache holds the previous state at most a second
            ctl.rollback(model, actor="bench", reason="benchmark rollback")
            started = time.monotonic()
            while time.monotonic() - started < 10:
                doc = client.get(f"{api}/status/summary.json").json()
                status = {c["name"]: c["status"] for c in doc["components"]}
                if status.get(model, "operational") != "operational":
                    break
                time.sleep(0.02)
            out.append(time.monotonic() - started)
    return out


def reads_under_load(wrk_bin: str, server: Server, api: str, token: str, seconds: float,
                     path: str = "/api/v1/models/iris/status", *,
                     load: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """API reads at 50/s from ``openloop.py`` (its own process, latency from each request's
    scheduled time), while wrk loads the gateway (``load``) or with the gateway idle."""
    import subprocess

    result: dict[str, Any] = {}
    wrk_thread = threading.Thread(
        target=lambda: result.update(wrk(wrk_bin, server, seconds + 3)), daemon=True
    )
    if load:
        wrk_thread.start()
        time.sleep(1.0)
    port = api.rsplit(":", 1)[1]
    argv = [str(BIN / "python"), str(Path(__file__).parent / "openloop.py"), "--port", port,
            "--method", "GET", "--path", path, "--header", f"Authorization: Bearer {token}",
            "--rate", "50", "--duration", f"{seconds:g}", "--connections", "16", "--keys", "0",
            "--warmup", "1"]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=True)
    reads: dict[str, Any] = orjson.loads(out.stdout)
    if load:
        wrk_thread.join(seconds + 40)
    return reads, result


def in_process_status(store: Store, ctl: Controller) -> float:
    """The median seconds of one ``model_status`` call here (its cost, without the API)."""
    from backout.control.status import model_status

    times = []
    for _ in range(20):
        t = time.perf_counter()
        model_status(store, ctl, "iris", window=60)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def with_dashboard(
    wrk_bin: str, server: Server, api: str, token: str, plan: Plan
) -> tuple[list[float], list[float]]:
    """wrk throughput without and with a dashboard stream open, interleaved."""
    without, with_ = [], []
    for _ in range(plan.runs):
        without.append(wrk(wrk_bin, server, plan.wrk_seconds)["rps"])
        with Stream(api, token):
            with_.append(wrk(wrk_bin, server, plan.wrk_seconds)["rps"])
    return without, with_


def verdict(ok: bool) -> str:
    return "met" if ok else "**NOT met**"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a short smoke run")
    p.add_argument("--no-write", action="store_true", help="print, do not touch RESULTS.md")
    p.add_argument("--reads-only", action="store_true",
                   help="only the API reads (with and without gateway load); print them")  # fmt: skip
    args = p.parse_args(argv)
    plan = QUICK if args.quick else FULL
    wrk_bin = ensure_wrk()
    home = WORK / "control"
    import shutil

    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    load_before = os.getloadavg()
    store, _registry, ctl, token = setup(home, plan.rollbacks)
    server, api = start(home)
    try:
        if args.reads_only:
            for load_on in (True, False):
                for path in ("/api/v1/models/iris/status", "/api/v1/models/iris/incident"):
                    r, w = reads_under_load(wrk_bin, server, api, token, plan.read_seconds, path,
                                            load=load_on)  # fmt: skip
                    print(f"{path} load={load_on}: p50 {r['p50_us'] / 1000:.1f} ms, p99 "
                          f"{r['p99_us'] / 1000:.1f} ms, max {r['max_us'] / 1000:.1f} ms, "
                          f"errors {r['non_2xx'] + r['socket_errors']}, gateway "
                          f"{w.get('rps', 0):,.0f}/s; load {os.getloadavg()[0]:.2f}")  # fmt: skip
            return 0
        dec = decisions(store, ctl, api, token, plan.decisions)
        page = status_page(ctl, api, plan.rollbacks)
        light_path = "/api/v1/models/iris/incident"
        reads, load = reads_under_load(wrk_bin, server, api, token, plan.read_seconds)
        light, _ = reads_under_load(wrk_bin, server, api, token, plan.read_seconds, light_path)
        idle, _ = reads_under_load(wrk_bin, server, api, token, plan.read_seconds, load=False)
        idle_light, _ = reads_under_load(wrk_bin, server, api, token, plan.read_seconds,
                                         light_path, load=False)  # fmt: skip
        cost = in_process_status(store, ctl)
        without, with_ = with_dashboard(wrk_bin, server, api, token, plan)
    finally:
        server.stop()
        ctl.close()
        store.dispose()
    load_after = os.getloadavg()
    ratio = statistics.median(with_) / statistics.median(without)
    ms = [x * 1000 for x in dec]

    def row(what: str, r: dict[str, Any], target: bool) -> str:
        p99 = r["p99_us"] / 1000
        goal = f"p99 ≤ 50 ms: {verdict(p99 <= 50)}" if target else "(no gateway load: context)"
        return (f"| {what} | {r['p50_us'] / 1000:.1f} ms | {p99:.1f} ms | "
                f"{r['max_us'] / 1000:.1f} ms | {goal} |")  # fmt: skip

    def errors(r: dict[str, Any]) -> int:
        return int(r["non_2xx"] + r["socket_errors"])

    body = f"""One `backout serve --workers 2 --no-access-log --admin-port PORT` (gateway, controller, and the control API in its own process) over SQLite; {plan.decisions} decisions, {plan.rollbacks} rollbacks, {plan.read_seconds:g} s of reads under load, {plan.runs} throughput run(s) each way. Machine load (1, 5, 15 min) before: {" ".join(f"{x:.2f}" for x in load_before)}; after: {" ".join(f"{x:.2f}" for x in load_after)}.

| what | median | p99 | max | target |
| --- | ---: | ---: | ---: | --- |
| decision committed → dashboard stream shows it | {statistics.median(ms):.0f} ms | {pctl(ms, 0.99):.0f} ms | {max(ms):.0f} ms | p99 ≤ 1 s: {verdict(pctl(ms, 0.99) <= 1000)} |
| rollback started → status page shows it | {statistics.median(page) * 1000:.0f} ms | - | {max(page) * 1000:.0f} ms | ≤ 2 s: {verdict(max(page) <= 2.0)} |
{row("`GET /api/v1/models/iris/status` at 50/s, gateway under full load", reads, True)}
{row("`GET /api/v1/models/iris/incident` (a light read) at 50/s, the same load", light, True)}
{row("`GET /api/v1/models/iris/status` at 50/s, gateway idle", idle, False)}
{row("`GET /api/v1/models/iris/incident` at 50/s, gateway idle", idle_light, False)}

- reads from `openloop.py` in its own process (16 keep-alive connections, open loop: latency from each request's scheduled time); gateway under load: {load.get("rps", 0):,.0f} requests/s (wrk, 16 connections); API read errors: {errors(reads)} (light reads: {errors(light)}; gateway idle: {errors(idle)}, {errors(idle_light)})
- one `model_status` (what the status read does) in this process after the runs, no load of ours: median {cost * 1000:.1f} ms
- gateway throughput without a dashboard: {", ".join(f"{x:,.0f}" for x in without)} requests/s; with one dashboard stream open: {", ".join(f"{x:,.0f}" for x in with_)}; median ratio **{ratio:.3f}** (within 5%: {verdict(ratio >= 0.95)})

All processes share this machine's two cores with other work (see the load above): the timings include that contention, and under full gateway load the API process gets a share of a core at the scheduler's pace. What a read costs the API: a status read answered from the view cache (the store's generation unchanged, less than a second old) stays on the event loop; one computed afresh is one read transaction (`model_status` above, timed in this process after the runs). The "gateway idle" rows are the same reads with wrk off: the API's own latency on this machine.
"""
    print(body)
    if not args.no_write:
        write_section("control", "Control plane: dashboard, status page, API under load", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
