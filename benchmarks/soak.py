"""Soak: ``backout serve`` under a steady load for 30 minutes, a rollout or a rollback every minute.

    .venv/bin/python benchmarks/soak.py                # 30 minutes at 200 requests/s, RESULTS.md
    .venv/bin/python benchmarks/soak.py --minutes 5    # a shorter run
    .venv/bin/python benchmarks/soak.py --minutes 0.5 --period 10 --bucket 5 --window 0.1 \\
        --rate 40 --no-write --json /tmp/soak.json     # a smoke run (what the test does)

Set-up: a temporary SQLite store with two iris LogisticRegressions, both registered and
known-good, 1.0.0 live at 100%, and ``python -m backout serve --workers 2`` on 127.0.0.1
(real processes, real HTTP, a real model; the controller runs beside the gateway).

Load: ``openloop.py`` in a process of its own, at ``--rate`` requests per second on a fixed
schedule (open loop), 32 keep-alive connections, one log line per answer. Each request is due
at a fixed time whatever the server does; its latency is counted from when it was *due*, so a
stalled server is charged for the requests it delayed, and a send that starts more than 5 ms
after its due time is counted as late (the load generator, or the machine, falling behind).
Every non-2xx answer and every request with no answer is a failed request. (An async httpx
client in this process was tried first: on this shared 2-core machine it could not hold
200 requests/s; once a few hundred requests queued in its pool it fell further behind every
second, and the run measured the client, not the server.)

Changes: every ``--period`` seconds, alternately, ``backout deploy iris@1.1.0`` (a staged
rollout, 50% then 100%) and ``backout rollback iris --to 1.0.0 --emergency``, run as a user
runs them: the CLI in a process of its own on the same store; the controller in ``serve``
moves the traffic.

Measured: the RSS of every process of ``serve`` (the supervisor and its workers, psutil)
every 10 s; per ``--bucket`` (a minute): requests, failed, late sends, p50/p99/max latency,
RSS, the store's size on disk (retention at its defaults), events written and the load
average. Targets: RSS growth at most 10% from the end of the first ``--window`` minutes (5)
to the end; p99 of the last window within 20% of the first; 0 failed requests.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parent))
from _results import machine, write_section
from gateway import JSON_BODY, VERSIONS, Server, free_port, make_models, start_server

from backout.control.controller import Controller
from backout.control.operations import Operations
from backout.proof.contracts import infer_sklearn_contract
from backout.registry.artifacts import LocalBlobStore
from backout.registry.manifest import Runtime, RuntimeKind
from backout.registry.releases import Registry
from backout.store import open_store, schema

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
CONNECTIONS = 32
MODEL = "iris"
LATE_S = 0.005  # a send starting later than this after its due time counts as late
TIMEOUT_S = 10.0
SAMPLE_S = 10.0  # RSS and store size are sampled this often
RSS_GROWTH_MAX = 0.10
P99_RATIO_MAX = 1.20

# Gates that judge correctness (errors, integrity), not latency: the soak is about what a
# steady stream of changes does to the processes, and a latency gate on a shared, loaded
# machine would abort rollouts for reasons that have nothing to do with the soak.
POLICY = """
rollout:
  steps: [50, 100]
  bake: %(bake)s
  min_requests: 10
  gate: {judges: [{judge: error_rate}, {judge: integrity}]}
rollback:
  mode: emergency
  verification: {duration: %(bake)s, min_requests: 10}
completion: {rollout: %(bake)s}
triggers: []
replay: {max_latency_ratio: 1000, min_agreement: 0}
"""


@dataclass
class Bucket:
    """What one bucket of the run (a minute) saw; latencies by due time."""

    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    requests: int = 0
    failed: int = 0
    late: int = 0


@dataclass
class Sample:
    t: float  # seconds since the load started
    rss: int  # bytes, all of serve's processes
    processes: int
    store_bytes: int
    events: int
    load1: float


@dataclass
class Change:
    t: float
    command: str
    rc: int
    seconds: float
    message: str


@dataclass
class Soak:
    args: argparse.Namespace
    server: Server
    db: Path
    env: dict[str, str]
    start: float = 0.0  # monotonic seconds when request 0 was due
    anchored: bool = False
    buckets: dict[int, Bucket] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)  # "kind: outcome" -> operations

    def bucket(self, t: float) -> Bucket:
        return self.buckets.setdefault(int(t // self.args.bucket), Bucket())


# -- set-up -----------------------------------------------------------------------------------


def make_home(home: Path) -> Path:
    """Both releases registered and known-good (so both stay warm), 1.0.0 live at 100%."""
    import joblib

    models = make_models(home)
    db = home / "backout.db"
    store = open_store(f"sqlite:///{db}", create=True)
    registry = Registry(store, LocalBlobStore(home / "artifacts"))
    for version, path in models.items():
        registry.register(
            MODEL, version, [path], runtime=Runtime(kind=RuntimeKind.SKLEARN),
            contract=infer_sklearn_contract(joblib.load(path)), actor="soak",
        )  # fmt: skip
        registry.mark_good(f"{MODEL}@{version}", actor="soak", reason="benchmark")
    Controller(store, registry, actor="soak").deployments.set_traffic(
        MODEL, {VERSIONS[0]: 100}, actor="soak"
    )
    store.dispose()
    return db


def start_serve(home: Path, env: dict[str, str]) -> Server:
    port = free_port()
    argv = [str(BIN / "python"), "-m", "backout", "serve", "--port", str(port),
            "--workers", "2", "--no-access-log"]  # fmt: skip
    return start_server(
        "soak-serve", argv, port=port, path=f"/models/{MODEL}/predict", body=JSON_BODY, env=env
    )


# -- the run ---------------------------------------------------------------------------------


class LoadLog:
    """Reads openloop.py's per-response log as it grows: ``done status worker release sent
    due`` (monotonic nanoseconds, the clock every process on the machine shares)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.rest = b""

    def read_into(self, soak: Soak) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        self.offset += len(chunk)
        data = self.rest + chunk
        lines = data.split(b"\n")
        self.rest = lines.pop()  # a line not yet written whole
        rows = []
        for line in lines:
            done, status, _worker, _release, sent, due = line.split(b" ")
            rows.append((int(done), int(status), int(sent), int(due)))
        if rows and not soak.anchored:
            # Request 0 was due exactly when the load started: bucket by the load's clock.
            soak.start = min(r[3] for r in rows) / 1e9
            soak.anchored = True
        for done, status, sent, due in rows:
            b = soak.bucket(due / 1e9 - soak.start)
            b.requests += 1
            if (sent - due) / 1e9 > LATE_S:
                b.late += 1
            if 200 <= status < 300:
                b.latencies.append((done - due) / 1e9)
            else:
                b.failed += 1
                name = f"HTTP {status}"
                soak.failures[name] = soak.failures.get(name, 0) + 1


def start_load(soak: Soak, log: Path) -> subprocess.Popen[str]:
    a = soak.args
    argv = [str(BIN / "python"), str(HERE / "openloop.py"), "--port", str(soak.server.port),
            "--path", soak.server.path, "--body", JSON_BODY, "--rate", str(a.rate),
            "--duration", f"{a.minutes * 60:g}", "--connections", str(CONNECTIONS),
            "--drain", f"{TIMEOUT_S:g}", "--warmup", "0", "--log", str(log), "--log-sent",
            "--log-due"]  # fmt: skip
    err = open(log.with_suffix(".err"), "wb")  # noqa: SIM115  # closed with the process
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True)
    err.close()
    return proc


def progress(soak: Soak, i: int) -> None:
    """One line per finished bucket on stderr, so a long run can be watched."""
    b = soak.buckets.get(i, Bucket())
    last = soak.samples[-1] if soak.samples else None
    print(
        f"[soak] bucket {i}: {b.requests} requests, {b.failed} failed, {b.late} late, "
        f"p50 {pctl(b.latencies, 0.5) * 1000:.1f} ms, p99 {pctl(b.latencies, 0.99) * 1000:.1f} "
        f"ms; RSS {last.rss / 2**20 if last else 0:.0f} MiB in {last.processes if last else 0} "
        f"processes, store {last.store_bytes / 2**20 if last else 0:.2f} MiB, "
        f"load {os.getloadavg()[0]:.2f}",
        file=sys.stderr, flush=True,
    )  # fmt: skip


def rss(server: Server) -> tuple[int, int]:
    """(total RSS in bytes, number of processes) of the server and all its descendants: the
    supervisor (with the controller), its workers and multiprocessing's resource tracker.
    A release's load-and-answer probe (a short-lived child of the controller, present only
    while a deploy or rollback checks its target) is left out, so a sample that happens to
    catch one does not look like growth."""
    try:
        root = psutil.Process(server.proc.pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    total = n = 0
    for p in procs:
        try:
            if "probe_main" in " ".join(p.cmdline()):
                continue
            total += p.memory_info().rss
            n += 1
        except psutil.NoSuchProcess:  # a process that just exited
            continue
    return total, n


def store_size(db: Path) -> int:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if p.is_file())


def sample(soak: Soak, engine: sa.Engine) -> None:
    total, n = rss(soak.server)
    with engine.connect() as conn:
        events = int(conn.execute(sa.select(sa.func.count()).select_from(schema.events))
                     .scalar_one())  # fmt: skip
    soak.samples.append(Sample(time.monotonic() - soak.start, total, n, store_size(soak.db),
                               events, os.getloadavg()[0]))  # fmt: skip


def changes(soak: Soak, policy: Path, stop: threading.Event) -> None:
    """A rollout, then a rollback, then a rollout... every ``period`` seconds."""
    n = 0
    while True:
        due = soak.start + (n + 1) * soak.args.period
        if due >= soak.start + soak.args.minutes * 60 - 1:
            return
        if stop.wait(max(0.0, due - time.monotonic())):
            return
        if n % 2 == 0:
            argv = ["deploy", f"{MODEL}@{VERSIONS[1]}", "--policy", str(policy)]
        else:
            argv = ["rollback", MODEL, "--to", VERSIONS[0], "--emergency", "--reason", "soak"]
        began = time.monotonic()
        done = subprocess.run([str(BIN / "python"), "-m", "backout", *argv], env=soak.env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        lines = done.stderr.strip().splitlines()
        soak.changes.append(Change(began - soak.start, " ".join(argv[:2]), done.returncode,
                                   time.monotonic() - began, lines[-1] if lines else ""))  # fmt: skip
        n += 1


def run(soak: Soak, policy: Path, work: Path) -> dict[str, Any]:
    """The load, the changes and the sampling, until the load has sent everything; the load
    generator's own summary."""
    engine = sa.create_engine(f"sqlite:///{soak.db}")
    log = work / "load.log"
    reader = LoadLog(log)
    stop = threading.Event()
    soak.start = time.monotonic() + 0.15  # until the log tells the load's own start
    load = start_load(soak, log)
    changer = threading.Thread(target=changes, args=(soak, policy, stop), daemon=True)
    changer.start()
    shown = 0
    next_sample = time.monotonic()
    try:
        while load.poll() is None:
            if time.monotonic() >= next_sample:
                sample(soak, engine)
                next_sample += SAMPLE_S
            reader.read_into(soak)
            current = int((time.monotonic() - soak.start) // soak.args.bucket)
            while shown < current - 1 or (shown < current and soak.buckets.get(current)):
                progress(soak, shown)
                shown += 1
            time.sleep(0.5)
        sample(soak, engine)
        reader.read_into(soak)
        out, _ = load.communicate()
        if load.returncode != 0:
            raise RuntimeError(f"the load generator failed: {log.with_suffix('.err').read_text()}")
        summary: dict[str, Any] = json.loads(out)
        for i in range(shown, len(soak.buckets)):
            progress(soak, i)
        return summary
    finally:
        stop.set()
        if load.poll() is None:
            load.terminate()
            load.wait(30)
        changer.join(130)
        engine.dispose()


def outcomes(db: Path) -> dict[str, int]:
    """How the run's rollouts and rollbacks ended, as the store says."""
    store = open_store(f"sqlite:///{db}")
    try:
        ops = Operations(store).recent(MODEL, limit=100_000)
    finally:
        store.dispose()
    counts: dict[str, int] = {}
    for op in ops:
        key = f"{op.kind}: {op.outcome or op.phase.value}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


# -- figures ----------------------------------------------------------------------------------


def pctl(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarize(
    soak: Soak,
    summary: dict[str, Any],
    load_before: tuple[float, ...],
    load_after: tuple[float, ...],
) -> dict[str, Any]:
    a = soak.args
    span = a.minutes * 60
    window = min(a.window * 60, span / 3)
    rows = []
    for i in sorted(soak.buckets):
        b = soak.buckets[i]
        t0, t1 = i * a.bucket, (i + 1) * a.bucket
        # The newest sample taken by the bucket's end (samples come every 10 s).
        upto = [s for s in soak.samples if s.t <= t1 + 1] or soak.samples[:1]
        last = upto[-1] if upto else None
        rows.append({
            "bucket": i, "start_s": t0, "requests": b.requests, "failed": b.failed,
            "late": b.late, "p50_ms": pctl(b.latencies, 0.5) * 1000,
            "p99_ms": pctl(b.latencies, 0.99) * 1000, "max_ms": max(b.latencies, default=0) * 1000,
            "rss_mib": last.rss / 2**20 if last else None,
            "store_mib": last.store_bytes / 2**20 if last else None,
            "events": last.events if last else None,
            "load1": last.load1 if last else None,
            # A change is due on a bucket's boundary and starts a few ms either side of it.
            "changes": [c.command for c in soak.changes if t0 <= c.t + 0.5 < t1],
        })  # fmt: skip

    def lat(lo: float, hi: float) -> list[float]:
        out: list[float] = []
        for i, b in soak.buckets.items():
            if lo <= i * a.bucket and (i + 1) * a.bucket <= hi + 1e-9:
                out += b.latencies
        return out

    first, last = lat(0, window), lat(span - window, span)
    p99_first, p99_last = pctl(first, 0.99) * 1000, pctl(last, 0.99) * 1000
    # RSS at the end of the first window (the samples of its last minute, or the last one
    # before it on a short run) against the samples of the run's last minute.
    tail = min(60.0, window)
    ref = [s.rss for s in soak.samples if window - tail <= s.t <= window + 1e-9]
    ref = ref or [s.rss for s in soak.samples if s.t <= window][-1:]
    end = [s.rss for s in soak.samples if s.t >= span - tail]
    rss_ref = statistics.mean(ref) if ref else float("nan")
    rss_end = statistics.mean(end) if end else float("nan")
    growth = rss_end / rss_ref - 1 if ref and end else float("nan")
    # The load generator's count is the truth: it also counts requests that got no answer.
    failed = int(summary["non_2xx"]) + int(summary["socket_errors"])
    requests = int(summary["sent"])
    if summary["socket_errors"]:
        soak.failures["no answer"] = int(summary["socket_errors"])
    ops = [c for c in soak.changes if c.rc == 0]
    events = [s.events for s in soak.samples]
    return {
        "minutes": a.minutes, "rate": a.rate, "period_s": a.period, "bucket_s": a.bucket,
        "window_s": window, "machine": machine(), "load_before": list(load_before),
        "load_after": list(load_after),
        "load_during": {"mean": statistics.mean(s.load1 for s in soak.samples),
                        "max": max(s.load1 for s in soak.samples)},
        "requests": requests, "failed": failed, "failures": soak.failures,
        "late": sum(b.late for b in soak.buckets.values()),
        "rows": rows, "changes": [asdict(c) for c in soak.changes], "outcomes": soak.outcomes,
        "samples": [asdict(s) for s in soak.samples],
        "events_per_change": (events[-1] - events[0]) / len(ops) if ops and events else None,
        "targets": {
            "rss_growth": {"value": growth, "first_mib": rss_ref / 2**20,
                           "end_mib": rss_end / 2**20, "max": RSS_GROWTH_MAX,
                           "met": growth <= RSS_GROWTH_MAX},
            "p99_ratio": {"value": p99_last / p99_first if first and last else float("nan"),
                          "first_ms": p99_first, "last_ms": p99_last, "max": P99_RATIO_MAX,
                          "met": bool(first and last and p99_last <= P99_RATIO_MAX * p99_first)},
            "failed": {"value": failed, "max": 0, "met": failed == 0},
        },
    }  # fmt: skip


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def report(doc: dict[str, Any]) -> str:
    t = doc["targets"]
    window_min = doc["window_s"] / 60
    lines = [
        f"{doc['minutes']:g} minutes at {doc['rate']} requests/s (open loop, openloop.py, "
        f"{CONNECTIONS} connections, latency from each request's due time), "
        f"`backout serve --workers 2` on SQLite; "
        f"`deploy` (staged, 50% → 100%) and `rollback --emergency` alternately every "
        f"{doc['period_s']:g} s through the CLI: {len(doc['changes'])} changes, "
        f"{sum(1 for c in doc['changes'] if c['rc'] == 0)} succeeded.",
        f"Machine load (1, 5, 15 min) before: {' '.join(f'{x:.2f}' for x in doc['load_before'])}; "
        f"during (1 min): mean {doc['load_during']['mean']:.2f}, max "
        f"{doc['load_during']['max']:.2f}; after: "
        f"{' '.join(f'{x:.2f}' for x in doc['load_after'])} (2 cores, shared).",
        "",
        "| minute | requests | failed | late sends | p50 (ms) | p99 (ms) | max (ms) | RSS (MiB) "
        "| store (MiB) | events | load | changes |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in doc["rows"]:
        lines.append(
            f"| {r['start_s'] / 60:.4g} | {r['requests']:,} | {r['failed']} | {r['late']} | "
            f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.0f} | {r['rss_mib']:.1f} | "
            f"{r['store_mib']:.2f} | {r['events']} | {r['load1']:.2f} | "
            f"{', '.join(r['changes']) or '-'} |"
        )
    per = doc["events_per_change"]
    lines += [
        "",
        f"Requests: {doc['requests']:,}; failed {doc['failed']} ({doc['failures'] or 'none'}); "
        f"late sends {doc['late']:,}. Events per change: "
        f"{'-' if per is None else f'{per:.1f}'}. Operations as the store ended them: "
        f"{', '.join(f'{k} {v}' for k, v in doc['outcomes'].items()) or 'none'}.",
        "",
        "Targets:",
        "",
        f"- RSS growth from the end of the first {window_min:g} minutes to the end ≤ 10%: "
        f"**{t['rss_growth']['value'] * 100:+.1f}%** ({t['rss_growth']['first_mib']:.1f} → "
        f"{t['rss_growth']['end_mib']:.1f} MiB): {verdict(t['rss_growth']['met'])}",
        f"- p99 of the last {window_min:g} minutes within 20% of the first: "
        f"**{t['p99_ratio']['last_ms']:.1f} ms vs {t['p99_ratio']['first_ms']:.1f} ms "
        f"(×{t['p99_ratio']['value']:.2f})**: {verdict(t['p99_ratio']['met'])}",
        f"- failed requests = 0: **{t['failed']['value']}**: {verdict(t['failed']['met'])}",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30.0, help="length of the run")
    p.add_argument("--rate", type=int, default=200, help="requests per second")
    p.add_argument("--period", type=float, default=60.0, help="seconds between changes")
    p.add_argument("--bucket", type=float, default=60.0, help="seconds per row of figures")
    p.add_argument("--window", type=float, default=5.0, help="minutes compared, first vs last")
    p.add_argument("--json", type=Path, help="also write the figures here as JSON")
    p.add_argument("--no-write", action="store_true", help="print the section, keep RESULTS.md")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="backout-soak-") as tmp:
        home = Path(tmp)
        db = make_home(home)
        env = {**os.environ, "BACKOUT_STORE": f"sqlite:///{db}",
               "BACKOUT_ARTIFACTS": str(home / "artifacts"), "BACKOUT_ACTOR": "soak"}  # fmt: skip
        policy = home / "policy.yaml"
        bake = f"{max(1.0, args.period / 12):g}s"
        policy.write_text(POLICY % {"bake": bake})
        server = start_serve(home, env)
        soak = Soak(args, server, db, env)
        load_before = os.getloadavg()
        # SIGTERM ends the run like Ctrl-C, so the server is stopped on the way out.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            summary = run(soak, policy, home)
        finally:
            server.stop()
        soak.outcomes = outcomes(db)
        doc = summarize(soak, summary, load_before, os.getloadavg())
    text = report(doc)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1, default=str))
    if not args.no_write:
        write_section("soak", "Soak: 30 minutes of load with a change every minute", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
