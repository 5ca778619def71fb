"""The gateway against a bare Starlette app and MLServer: throughput, added latency, cutover.

    .venv/bin/python benchmarks/gateway.py            # full run, writes benchmarks/RESULTS.md
    .venv/bin/python benchmarks/gateway.py --quick    # a short smoke run
    .venv/bin/python benchmarks/gateway.py --no-write # print the section, keep RESULTS.md

Every server runs on 127.0.0.1 with 2 uvicorn workers, httptools, uvloop where installed and
no uvicorn access log, and answers an iris LogisticRegression (scikit-learn, joblib):

- **bare**: ``benchmarks/bare_app.py``, the floor: the model called in-process, nothing else;
- **gateway**: ``backout serve`` with two releases at 90/10, telemetry on, a routing key
  (``x-backout-key``) that differs per request; once with ``--no-access-log`` and once with
  the structured access log on (its default), written to a file;
- **MLServer** 1.7.1 with mlserver-sklearn, in its own virtual environment under
  ``benchmarks/.work/`` (created here when missing), ``parallel_workers: 2``.

Throughput comes from wrk (Debian's package, installed by ``scripts/ensure-wrk.sh``) with a
Lua script (``wrk_post.lua``) for the POST body and the per-request key: 16 connections,
2 threads. Latency at a fixed 500 requests/s comes from ``openloop.py`` (why it is
hand-written is said there). The cutover runs wrk at full load, probes with ``openloop.py``
(which logs which worker answered with which release), and moves 100% of traffic between
the two releases again and again with ``Deployments.set_traffic`` from this process.
Every figure is the median of several runs, the targets interleaved run by run so that a
noisy neighbour hurts all of them alike. All servers are stopped, by process group, at the
end; every load run is bounded in time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).parent))
from _results import write_section

from backout.proof.contracts import infer_sklearn_contract
from backout.registry.artifacts import LocalBlobStore
from backout.registry.manifest import Runtime, RuntimeKind
from backout.registry.releases import Registry
from backout.store import Store, open_store
from backout.traffic.deployments import Deployments

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work"
MLSERVER_VENV = WORK / "mlserver-venv"
# MLServer 1.7.1's inference workers call asyncio.get_event_loop() before setting a loop,
# which uvloop 0.22 and later refuse (RuntimeError): pin the last uvloop that allows it.
MLSERVER_PINS = ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop<0.22"]
BIN = Path(sys.executable).parent
ROW = [5.1, 3.5, 1.4, 0.2]
JSON_BODY = json.dumps({"instances": [ROW]})
V2_BODY = json.dumps(
    {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": ROW}]}
)
VERSIONS = ("1.0.0", "1.1.0")
CONNECTIONS = 16
WRK_THREADS = 2
WORKERS = 2
FIXED_RATE = 500
PROBE_CONNECTIONS = 8


@dataclass(frozen=True)
class Plan:
    """How long and how often each measurement runs."""

    runs: int
    wrk_seconds: float
    latency_seconds: float
    cutovers: int
    cutover_interval_s: float


FULL = Plan(runs=3, wrk_seconds=10.0, latency_seconds=12.0, cutovers=100, cutover_interval_s=0.25)
QUICK = Plan(runs=1, wrk_seconds=2.0, latency_seconds=3.0, cutovers=10, cutover_interval_s=0.2)


# -- processes --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A server process started in its own process group, stopped by that group's id."""

    name: str
    port: int
    path: str  # the inference route
    body: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server's whole process tree so far (Linux /proc)."""
        total = 0.0
        ticks = os.sysconf("SC_CLK_TCK")
        pending = [self.proc.pid]
        while pending:
            pid = pending.pop()
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / ticks
                for task in Path(f"/proc/{pid}/task").iterdir():
                    pending += [int(c) for c in (task / "children").read_text().split()]
            except (OSError, IndexError, ValueError):  # a process that just exited
                continue
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


def start_server(
    name: str, argv: list[str], *, port: int, path: str, body: str, env: dict[str, str]
) -> Server:
    log = WORK / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv, cwd=WORK, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    server = Server(name, port, path, body, proc, log)
    try:
        wait_until_answering(server, timeout=120)
    except Exception:
        server.stop()
        raise
    return server


def wait_until_answering(server: Server, *, timeout: float) -> None:
    """Block until the model itself answers 200 (a health route is not enough)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            tail = server.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}:\n{tail}")
        request = urllib.request.Request(
            server.url, data=server.body.encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=2) as r:
                if r.status == 200:
                    # A few more, so every worker has loaded and answered once.
                    for _ in range(20):
                        with urllib.request.urlopen(request, timeout=2):
                            pass
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise RuntimeError(f"{server.name} did not answer within {timeout:.0f} s: {last}")


def loop_name() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "auto"
    return "uvloop"


# -- set-up -----------------------------------------------------------------------------------


def make_models(folder: Path) -> dict[str, Path]:
    """Two iris LogisticRegressions (different C), saved with joblib."""
    x, y = load_iris(return_X_y=True)
    x = np.asarray(x, dtype=np.float64)
    paths = {}
    for version, c in zip(VERSIONS, (1.0, 0.01), strict=True):
        model = LogisticRegression(C=c, max_iter=500).fit(x, y)
        paths[version] = folder / f"iris-{version}.joblib"
        joblib.dump(model, paths[version])
    return paths


def make_store(home: Path, models: dict[str, Path]) -> tuple[Store, Deployments]:
    """Both releases registered with their contracts, known-good, at 90/10."""
    store = open_store(f"sqlite:///{home / 'backout.db'}", create=True)
    registry = Registry(store, LocalBlobStore(home / "artifacts"))
    for version, path in models.items():
        registry.register(
            "iris", version, [path], runtime=Runtime(kind=RuntimeKind.SKLEARN),
            contract=infer_sklearn_contract(joblib.load(path)), actor="bench",
        )  # fmt: skip
        # Rollback points stay warm: the cutover moves between two releases that are both
        # loaded in every worker, as a rollback to a known-good release does.
        registry.mark_good(f"iris@{version}", actor="bench", reason="benchmark")
    deployments = Deployments(store, registry)
    deployments.set_traffic("iris", {VERSIONS[0]: 90, VERSIONS[1]: 10}, actor="bench")
    return store, deployments


def ensure_wrk() -> str:
    subprocess.run(["bash", str(ROOT / "scripts" / "ensure-wrk.sh")], check=True)
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is still missing after scripts/ensure-wrk.sh")
    return wrk


def ensure_mlserver() -> Path:
    """MLServer's own virtual environment, used by nothing but this benchmark."""
    mlserver = MLSERVER_VENV / "bin" / "mlserver"
    stamp = MLSERVER_VENV / "backout-pins.txt"
    if not mlserver.exists() or not stamp.exists() or stamp.read_text() != " ".join(MLSERVER_PINS):
        print("setting up MLServer's environment in", MLSERVER_VENV, file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(MLSERVER_VENV)], check=True)
        subprocess.run(
            [str(MLSERVER_VENV / "bin" / "pip"), "install", "-q", *MLSERVER_PINS], check=True
        )
        stamp.write_text(" ".join(MLSERVER_PINS))
    return mlserver


def start_bare(model: Path) -> Server:
    port = free_port()
    argv = [
        str(BIN / "python"), "-m", "uvicorn", "bare_app:app", "--app-dir", str(HERE),
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(WORKERS),
        "--http", "httptools", "--loop", loop_name(), "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    return start_server(
        "bare", argv, port=port, path="/predict", body=JSON_BODY, env={"BENCH_MODEL": str(model)}
    )


def start_gateway(name: str, home: Path, *, access_log: bool, oip: bool = False) -> Server:
    port = free_port()
    argv = [
        str(BIN / "backout"), "serve", "--port", str(port), "--workers", str(WORKERS),
        "--access-log" if access_log else "--no-access-log",
    ]  # fmt: skip
    env = {
        "BACKOUT_STORE": f"sqlite:///{home / 'backout.db'}",
        "BACKOUT_ARTIFACTS": str(home / "artifacts"),
    }
    path, body = ("/v2/models/iris/infer", V2_BODY) if oip else ("/models/iris/predict", JSON_BODY)
    return start_server(name, [*argv], port=port, path=path, body=body, env=env)


def start_mlserver(mlserver: Path, model: Path) -> Server:
    folder = WORK / "mlserver"
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "iris").mkdir(parents=True)
    port = free_port()
    settings = {
        "host": "127.0.0.1", "http_port": port, "grpc_port": free_port(),
        "metrics_port": free_port(), "parallel_workers": WORKERS, "debug": False,
        "metrics_dir": str(folder / ".metrics"),
    }  # fmt: skip
    (folder / "settings.json").write_text(json.dumps(settings))
    model_settings = {
        "name": "iris",
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": str(model)},
    }
    (folder / "iris" / "model-settings.json").write_text(json.dumps(model_settings))
    return start_server(
        "mlserver", [str(mlserver), "start", str(folder)], port=port,
        path="/v2/models/iris/infer", body=V2_BODY, env={},
    )  # fmt: skip


# -- load -------------------------------------------------------------------------------------


def wrk(binary: str, server: Server, seconds: float, *, keys: bool = True) -> dict[str, Any]:
    """One wrk run: 16 connections, 2 threads; the JSON summary of wrk_post.lua."""
    argv = [
        binary, f"-t{WRK_THREADS}", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "--timeout", "5s",
        "-s", str(HERE / "wrk_post.lua"), server.url,
    ]  # fmt: skip
    env = {**os.environ, "BENCH_BODY": server.body, "BENCH_KEYS": "1" if keys else "0"}
    out = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=seconds + 30, check=True
    )
    for line in out.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            doc: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
            doc["rps"] = doc["requests"] / (doc["duration_us"] / 1e6)
            doc["failed"] = sum(doc[k] for k in ("connect", "read", "write", "status", "timeout"))
            return doc
    raise RuntimeError(f"wrk printed no summary:\n{out.stdout}\n{out.stderr}")


def openloop_argv(
    server: Server, *, rate: int, seconds: float, connections: int, log: Path | None = None
) -> list[str]:
    argv = [
        str(BIN / "python"), str(HERE / "openloop.py"), "--port", str(server.port),
        "--path", server.path, "--body", server.body, "--rate", str(rate),
        "--duration", f"{seconds:g}", "--connections", str(connections),
    ]  # fmt: skip
    if log is not None:
        argv += ["--log", str(log), "--warmup", "0"]
    return argv


def openloop(server: Server, *, rate: int, seconds: float) -> dict[str, Any]:
    argv = openloop_argv(server, rate=rate, seconds=seconds, connections=8)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=True)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


# -- measurements -----------------------------------------------------------------------------


@dataclass
class Samples:
    """Every run's figures for one server."""

    throughput: list[dict[str, Any]] = field(default_factory=list)
    latency: list[dict[str, Any]] = field(default_factory=list)

    def med(self, kind: str, key: str) -> float:
        runs = self.throughput if kind == "throughput" else self.latency
        return float(statistics.median(r[key] for r in runs))

    def failed(self) -> int:
        wrk_failed = sum(int(r["failed"]) for r in self.throughput)
        return wrk_failed + sum(int(r["non_2xx"]) + int(r["socket_errors"]) for r in self.latency)


def measure(
    wrk_bin: str, servers: list[Server], plan: Plan, *, latency_of: set[str]
) -> dict[str, Samples]:
    samples = {s.name: Samples() for s in servers}
    for run in range(plan.runs):
        for s in servers:
            wrk(wrk_bin, s, min(2.0, plan.wrk_seconds))  # warm-up, not counted
            cpu = s.cpu_seconds()
            r = wrk(wrk_bin, s, plan.wrk_seconds)
            r["cpu_us"] = (s.cpu_seconds() - cpu) / max(1, r["requests"]) * 1e6
            samples[s.name].throughput.append(r)
            print(
                f"run {run + 1} {s.name}: {r['rps']:,.0f} req/s, {r['cpu_us']:.0f} µs CPU/request",
                file=sys.stderr,
            )
        for s in servers:
            if s.name in latency_of:
                r = openloop(s, rate=FIXED_RATE, seconds=plan.latency_seconds)
                samples[s.name].latency.append(r)
                print(
                    f"run {run + 1} {s.name} at {FIXED_RATE}/s: p50 {r['p50_us']:.0f} µs, "
                    f"p99 {r['p99_us']:.0f} µs",
                    file=sys.stderr,
                )
    return samples


@dataclass
class Cutover:
    switches: list[float]  # seconds from the commit to the last worker's first new answer
    from_call: list[float]  # the same from the start of the set_traffic call
    writes: list[float]  # seconds each set_traffic call took (reads, checks, commit)
    unobserved: int  # cutovers where some worker never answered with the new release
    workers: int
    wrk: dict[str, Any]
    probe: dict[str, Any]
    failed: int


def cutover(wrk_bin: str, server: Server, deployments: Deployments, plan: Plan) -> Cutover:
    """Flip 100% of traffic between the releases under load; when did every worker follow?"""
    deployments.set_traffic("iris", {VERSIONS[0]: 100}, actor="bench", verify=False)
    time.sleep(0.5)
    span = plan.cutovers * plan.cutover_interval_s + 2.0
    log = WORK / "cutover-probe.log"
    env = {**os.environ, "BENCH_BODY": server.body, "BENCH_KEYS": "1"}
    load = subprocess.Popen(
        [wrk_bin, f"-t{WRK_THREADS}", f"-c{CONNECTIONS}", f"-d{span + 1:.0f}s", "--timeout", "5s",
         "-s", str(HERE / "wrk_post.lua"), server.url],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    # The probe: closed loop on 8 connections (spread over the workers by the kernel), so
    # each worker answers one of its requests every few milliseconds without the probe
    # queueing requests of its own; it logs who answered with which release.
    probe = subprocess.Popen(
        openloop_argv(server, rate=0, seconds=span, connections=PROBE_CONNECTIONS, log=log),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    writes: list[tuple[int, int, str]] = []  # (write called, write committed, new release)
    try:
        time.sleep(1.0)
        for i in range(plan.cutovers):
            target = VERSIONS[(i + 1) % 2]
            t = time.monotonic_ns()
            deployments.set_traffic("iris", {target: 100}, actor="bench", verify=False)
            writes.append((t, time.monotonic_ns(), target))
            time.sleep(plan.cutover_interval_s)
        probe_out, _ = probe.communicate(timeout=span + 30)
        load_out, _ = load.communicate(timeout=span + 30)
    finally:
        for p in (probe, load):
            if p.poll() is None:
                p.kill()
                p.wait()
    probe_doc: dict[str, Any] = json.loads(probe_out)
    wrk_doc: dict[str, Any] = {}
    for line in load_out.splitlines():
        if line.startswith("WRK_JSON "):
            wrk_doc = json.loads(line.removeprefix("WRK_JSON "))
            wrk_doc["rps"] = wrk_doc["requests"] / (wrk_doc["duration_us"] / 1e6)
            wrk_doc["failed"] = sum(
                wrk_doc[k] for k in ("connect", "read", "write", "status", "timeout")
            )
    answers: list[tuple[int, str, str]] = []
    for line in log.read_text().splitlines():
        ns, status, worker, release = line.split(" ")
        if status.startswith("2"):
            answers.append((int(ns), worker, release.split("@", 1)[-1]))
    workers = sorted({w for _, w, _ in answers})
    switches, from_call, unobserved = switch_times(writes, answers, workers)
    failed = probe_doc["non_2xx"] + probe_doc["socket_errors"] + wrk_doc.get("failed", 1)
    took = [(done - called) / 1e9 for called, done, _ in writes]
    return Cutover(switches, from_call, took, unobserved, len(workers), wrk_doc, probe_doc, failed)


def switch_times(
    writes: list[tuple[int, int, str]], answers: list[tuple[int, str, str]], workers: list[str]
) -> tuple[list[float], list[float], int]:
    """Per write: seconds until every worker had answered once with the new release.

    Measured from the commit (when ``set_traffic`` returned) and from the call; an answer
    from the new release can only follow the commit, since before it all traffic was on the
    other release.
    """
    switches: list[float] = []
    from_call: list[float] = []
    unobserved = 0
    for i, (called, committed, target) in enumerate(writes):
        until = writes[i + 1][0] if i + 1 < len(writes) else 2**63
        first: dict[str, int] = {}
        for ns, worker, release in answers:
            if called < ns < until and release == target and worker not in first:
                first[worker] = ns
        if len(first) < len(workers):
            unobserved += 1
        else:
            last = max(first.values())
            switches.append(max(0, last - committed) / 1e9)
            from_call.append((last - called) / 1e9)
    return switches, from_call, unobserved


# -- report -----------------------------------------------------------------------------------


def pctl(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def verdict(ok: bool, busy: bool = False) -> str:
    """met / NOT met; on a busy machine a timing verdict is only a hint, and says so."""
    if busy:
        return "met, but inconclusive (busy machine)" if ok else "**NOT met** (busy machine)"
    return "met" if ok else "**NOT met**"


def per_run(a: Samples, b: Samples) -> str:
    ratios = [x["rps"] / y["rps"] for x, y in zip(a.throughput, b.throughput, strict=True)]
    return ", ".join(f"{r:.2f}" for r in ratios)


def report(
    samples: dict[str, Samples],
    cut: Cutover,
    plan: Plan,
    labels: dict[str, str],
    load: tuple[float, float],
) -> str:
    bare = samples["bare"]
    # Timing targets are judged only when the machine was not busy with other work before
    # the run (the load at the end includes this benchmark's own minute of load).
    busy = load[0] > 0.75 * (os.cpu_count() or 1)
    lines = [
        f"Load average of this machine (1 min) at the start and end of the run: {load[0]:.1f} "
        f"and {load[1]:.1f} on {os.cpu_count()} cores. Anything near or above the core count "
        "means other work competed for the CPU and the absolute figures are low and noisy; "
        "the CPU time per request (server processes only, from /proc) is far less sensitive "
        "to that, and its ratio is what the throughput ratio tends to on an idle machine "
        "(less the load generator's own share).",
        "",
        f"iris LogisticRegression (scikit-learn, joblib); every server on 127.0.0.1 with "
        f"{WORKERS} workers. Throughput: wrk, {CONNECTIONS} connections, {WRK_THREADS} threads, "
        f"{plan.wrk_seconds:g} s, POST body `{JSON_BODY}` (MLServer and the gateway's OIP row: "
        f"the same row as a V2 tensor), a new `x-backout-key` per request. Latency: open loop "
        f"at {FIXED_RATE} requests/s for {plan.latency_seconds:g} s (first second not counted), "
        f"8 keep-alive connections, measured from each request's scheduled send time. Medians "
        f"of {plan.runs} runs, servers interleaved within each run. The gateway serves two "
        "releases at 90/10 with telemetry on (batches to SQLite, Prometheus multiprocess).",
        "",
        "| server | requests/s | ratio to bare | server CPU µs per request | CPU ratio "
        "(bare / server) | p50 ms (wrk) | p99 ms (wrk) | failed |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, s in samples.items():
        rps = s.med("throughput", "rps")
        cpu = s.med("throughput", "cpu_us")
        lines.append(
            f"| {labels[name]} | {rps:,.0f} | {rps / bare.med('throughput', 'rps'):.2f} | "
            f"{cpu:.0f} | {bare.med('throughput', 'cpu_us') / cpu:.2f} | "
            f"{s.med('throughput', 'p50_us') / 1000:.2f} | {s.med('throughput', 'p99_us') / 1000:.2f} "
            f"| {sum(r['failed'] for r in s.throughput)} |"
        )
    lines += [
        "",
        f"At a fixed {FIXED_RATE} requests/s (open loop):",
        "",
        "| server | p50 ms | p99 ms | p99.9 ms | added p50 ms | added p99 ms | failed |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, s in samples.items():
        if not s.latency:
            continue
        p50, p99 = s.med("latency", "p50_us"), s.med("latency", "p99_us")
        lines.append(
            f"| {labels[name]} | {p50 / 1000:.3f} | {p99 / 1000:.3f} | "
            f"{s.med('latency', 'p999_us') / 1000:.3f} | "
            f"{added(s, bare, 'p50_us') / 1000:+.3f} | {added(s, bare, 'p99_us') / 1000:+.3f} | "
            f"{sum(r['non_2xx'] + r['socket_errors'] for r in s.latency)} |"
        )
    lines += [
        "",
        "Added latency is the median over runs of (server − bare) within the same run.",
        "",
        f"Cutover under load: wrk at full load ({CONNECTIONS} connections) on the gateway (access "
        f"log on, as `backout serve` runs by default) while this process moved 100% of traffic "
        f"between iris@{VERSIONS[0]} and iris@{VERSIONS[1]} {plan.cutovers} times, every "
        f"{plan.cutover_interval_s * 1000:.0f} ms, with `Deployments.set_traffic`; a closed-loop "
        f"probe ({PROBE_CONNECTIONS} more connections) logged which worker answered with which release "
        f"(`x-backout-worker`, `x-backout-release`). Switch time: from the commit of the "
        f"store write (when `set_traffic` returned) until every worker ({cut.workers} seen) had "
        f"answered a request with the new release; it includes that request's own latency "
        f'under load (probe p50 {cut.probe["p50_us"] / 1000:.1f} ms). "From the call" adds '
        f"the write itself (checks, route table, audit event, commit).",
        "",
        "| cutovers | seen in every worker | switch p50 ms | p99 ms | max ms | from the call: "
        "p50 ms | p99 ms | write p50 ms | requests (wrk + probe) | failed |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {plan.cutovers} | {len(cut.switches)} | {pctl(cut.switches, 0.5) * 1000:.1f} | "
        f"{pctl(cut.switches, 0.99) * 1000:.1f} | "
        f"{max(cut.switches, default=float('nan')) * 1000:.1f} | "
        f"{pctl(cut.from_call, 0.5) * 1000:.1f} | {pctl(cut.from_call, 0.99) * 1000:.1f} | "
        f"{pctl(cut.writes, 0.5) * 1000:.1f} | "
        f"{cut.wrk.get('requests', 0) + cut.probe['sent']:,} | {cut.failed} |",
    ]
    ratio = samples["gateway"].med("throughput", "rps") / bare.med("throughput", "rps")
    ratio_log = samples["gateway-log"].med("throughput", "rps") / bare.med("throughput", "rps")
    cpu_ratio = bare.med("throughput", "cpu_us") / samples["gateway"].med("throughput", "cpu_us")
    cpu_ratio_log = bare.med("throughput", "cpu_us") / samples["gateway-log"].med(
        "throughput", "cpu_us"
    )
    add50 = added(samples["gateway"], bare, "p50_us") / 1000
    add99 = added(samples["gateway"], bare, "p99_us") / 1000
    # A cutover that some worker never showed is as bad as a slow one: count it against p99.
    inf = [float("inf")] * cut.unobserved
    p99_switch = pctl(cut.switches + inf, 0.99) * 1000
    p99_call = pctl(cut.from_call + inf, 0.99) * 1000
    ml = samples.get("mlserver")
    lines += [
        "",
        "Targets:",
        "",
        f"- throughput gateway / bare ≥ 0.85 (no access log): **{ratio:.2f}** (runs: "
        f"{per_run(samples['gateway'], bare)}): {verdict(ratio >= 0.85, busy)}",
        f"- the same with the access log on: **{ratio_log:.2f}** (runs: "
        f"{per_run(samples['gateway-log'], bare)}): {verdict(ratio_log >= 0.85, busy)}",
        f"- (for reference, not the target) CPU per request, bare / gateway: "
        f"**{cpu_ratio:.2f}** without the access log, **{cpu_ratio_log:.2f}** with it",
        f"- added p50 at {FIXED_RATE}/s ≤ 0.2 ms: **{add50:.3f} ms**: {verdict(add50 <= 0.2, busy)}",
        f"- added p99 at {FIXED_RATE}/s ≤ 0.5 ms: **{add99:.3f} ms**: {verdict(add99 <= 0.5, busy)}",
        f"- cutover, requests failed = 0: **{cut.failed}**: {verdict(cut.failed == 0)}",
        f"- cutover, switch p99 ≤ 50 ms in every worker, from the commit: "
        f"**{p99_switch:.1f} ms** ({cut.unobserved} of {plan.cutovers} not seen in every "
        f"worker): {verdict(p99_switch <= 50, busy)}; from the start of the write call: "
        f"**{p99_call:.1f} ms**: {verdict(p99_call <= 50, busy)}",
    ]
    if ml is not None:
        ml_rps = ml.med("throughput", "rps")
        gw_rps = samples["gateway"].med("throughput", "rps")
        lines.append(
            f"- against MLServer 1.7.1: gateway {gw_rps:,.0f} req/s vs MLServer "
            f"{ml_rps:,.0f} req/s (**{gw_rps / ml_rps:.1f}×**); p99 at {FIXED_RATE}/s "
            f"{samples['gateway'].med('latency', 'p99_us') / 1000:.2f} ms vs "
            f"{ml.med('latency', 'p99_us') / 1000:.2f} ms"
        )
    lines += [
        "",
        "Notes: the bare app calls `predict` and `predict_proba`, as the gateway's sklearn "
        "runtime does, and answers the same JSON; MLServer's sklearn runtime calls `predict` "
        "only. All processes, the load generators included, share this machine's cores, and "
        "other work on it adds noise; the CPU time per request is the steadier figure.",
    ]
    return "\n".join(lines)


def added(s: Samples, bare: Samples, key: str) -> float:
    return float(
        statistics.median(a[key] - b[key] for a, b in zip(s.latency, bare.latency, strict=True))
    )


# -- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a short smoke run (about a minute)")
    p.add_argument("--no-write", action="store_true", help="print, do not touch RESULTS.md")
    p.add_argument("--runs", type=int, help="runs per figure (default 3; 1 with --quick)")
    p.add_argument("--no-mlserver", action="store_true", help="skip MLServer")
    args = p.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.runs:
        plan = Plan(args.runs, plan.wrk_seconds, plan.latency_seconds, plan.cutovers,
                    plan.cutover_interval_s)  # fmt: skip
    wrk_bin = ensure_wrk()
    with_mlserver = not args.no_mlserver and not args.quick
    mlserver = ensure_mlserver() if with_mlserver else None
    WORK.mkdir(parents=True, exist_ok=True)
    home = WORK / "gateway-home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    models = make_models(home)
    store, deployments = make_store(home, models)
    labels = {
        "bare": "bare Starlette (floor)",
        "gateway": "backout gateway, no access log",
        "gateway-log": "backout gateway, access log on",
        "gateway-oip": "backout gateway, OIP route (V2 body), no access log",
        "mlserver": "MLServer 1.7.1 (mlserver-sklearn)",
    }
    servers: list[Server] = []
    load_start = os.getloadavg()[0]
    try:
        servers.append(start_bare(models[VERSIONS[0]]))
        servers.append(start_gateway("gateway", home, access_log=False))
        servers.append(start_gateway("gateway-log", home, access_log=True))
        if not args.quick:
            servers.append(start_gateway("gateway-oip", home, access_log=False, oip=True))
        if mlserver is not None:
            servers.append(start_mlserver(mlserver, models[VERSIONS[0]]))
        latency_of = {"bare", "gateway", "gateway-log", "mlserver"}
        samples = measure(wrk_bin, servers, plan, latency_of=latency_of)
        by_name = {s.name: s for s in servers}
        cut = cutover(wrk_bin, by_name["gateway-log"], deployments, plan)
    finally:
        for s in servers:
            s.stop()
        store.dispose()
    body = report(samples, cut, plan, labels, (load_start, os.getloadavg()[0]))
    print(body)
    if not args.no_write:
        write_section("gateway", "Gateway: throughput, latency, cutover", body)
    failed = cut.failed + sum(s.failed() for s in samples.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
