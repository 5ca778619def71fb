"""Controller failover: kill -9 the leader, again and again; how soon does another act?

    .venv/bin/python benchmarks/failover.py            # 20 kills per database, writes RESULTS.md
    .venv/bin/python benchmarks/failover.py --quick    # a short smoke run
    .venv/bin/python benchmarks/failover.py --no-write # print the section, keep RESULTS.md

Two controller processes run on one store (SQLite, then a throwaway PostgreSQL server), each
forked by the fork server of ``tests/control/crash_controller.py``: a real
:meth:`Controller.run` on the real clock with the default tick (0.5 s) and lease (5 s),
whose every tick is preceded by the telemetry a gateway would have flushed. This process
keeps a rollout or a staged rollback in progress at all times and, every few seconds,
kills the leader with SIGKILL and starts a new standby.

Per kill: the time from the kill to the new leader taking the lease (it ticks in the same
loop iteration: that is when deciding resumes), how much of the dead leader's lease was
left, and the time to the new leader's first recorded decision when one was due. After
every kill the crash tests' invariants are checked, and at the end every operation must
have reached a terminal phase. Target: p99 of kill → acting ≤ the lease + 1 s.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests: the crash tests' world
from _results import write_section
from tests.control.test_controller_crash import MODEL, POLICY, check_invariants, make_site
from tests.postgres_server import PostgresServer

from backout.control.lease import current
from backout.control.policy import parse_policy
from backout.store import audit

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "control" / "crash_controller.py"
LEASE_S = 5.0
INTERVAL_S = 0.5
STAGED = POLICY.replace(
    "  steps: [50, 100]\n  bake: 1s\n  verification",
    "  steps: [34, 67, 100]\n  bake: 1s\n  verification",
)


@dataclass
class Controllers:
    """The fork server: one JSON line in, one controller process out (its pid)."""

    server: subprocess.Popen[bytes]
    logs: Path
    pids: list[int]

    @classmethod
    def start_server(cls, logs: Path) -> Controllers:
        logs.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
        server = subprocess.Popen([sys.executable, str(SCRIPT)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, env=env)  # fmt: skip
        assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
        return cls(server, logs, [])

    def start(self, url: str, artifacts: Path, health: Path, holder: str, seed: int) -> int:
        cfg = {"store": url, "artifacts": str(artifacts), "health": str(health),
               "log": str(self.logs / f"{holder}.log"), "holder": holder, "seed": seed,
               "interval": INTERVAL_S, "lease": LEASE_S}  # fmt: skip
        assert self.server.stdin is not None and self.server.stdout is not None
        self.server.stdin.write(orjson.dumps(cfg) + b"\n")
        self.server.stdin.flush()
        pid = int(self.server.stdout.readline())
        self.pids.append(pid)
        return pid

    def close(self) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert self.server.stdin is not None and self.server.stdout is not None
        self.server.stdin.close()
        self.server.wait(timeout=10)
        self.server.stdout.close()


def kill9(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.002)


def wait(pred: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.01)
    raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")


def keep_busy(site: Any) -> None:
    """An operation in progress: a rollout of 1.1.0, or a staged rollback to 1.0.0."""
    if site.active() is not None:
        return
    live = site.ops.deployments.require(MODEL).weights
    if live.get("1.1.0", 0) == 10_000:
        site.command("rollback", to="1.0.0", reason="benchmark")
    else:
        site.command("deploy", version="1.1.0")


def run(database: str, url: str, tmp: Path, kills: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    site = make_site(tmp / database, url)
    site.ops.set_policy(MODEL, parse_policy(STAGED), source="benchmark", actor="bench")
    ctl = Controllers.start_server(tmp / f"{database}-logs")
    artifacts = tmp / database / "artifacts"
    leaders: dict[str, int] = {}
    n = 0

    def spawn() -> str:
        nonlocal n
        n += 1
        holder = f"ctl-{n}"
        leaders[holder] = ctl.start(site.url, artifacts, site.health_file, holder, seed + n)
        return holder

    rows: list[dict[str, Any]] = []
    try:
        first = spawn()
        wait(lambda: (le := current(site.store)) and le.holder == first, 30, "the first lease")
        spawn()
        for _ in range(kills):
            keep_busy(site)
            time.sleep(rng.uniform(1.0, 2.0))  # on purpose: a kill at a random moment of a tick
            keep_busy(site)
            held = current(site.store)
            assert held is not None
            kill9(leaders[held.holder])
            killed = time.time()
            check_invariants(site.store)  # nobody is halfway through a tick now
            new = wait(lambda h=held.holder: (le := current(site.store)) and le.holder != h
                       and le, LEASE_S + 10, "a takeover")  # fmt: skip
            spawn()  # the next standby

            def decided(h: str = new.holder) -> audit.Event | None:
                with site.store.read() as conn:
                    return next((e for e in audit.list_events(conn, MODEL)
                                 if e.actor == h), None)  # fmt: skip

            event = None
            with contextlib.suppress(RuntimeError):
                event = wait(decided, 5.0, "a decision")
            rows.append({
                "acting_s": (new.acquired_at or 0) - killed,
                "lease_left_s": held.expires_at - killed,
                "decision_s": None if event is None else event.at.timestamp() - killed,
                "generation": (held.generation, new.generation),
            })  # fmt: skip
        wait(lambda: site.active() is None, 60, "the last operation to end")
        check_invariants(site.store, final=True)
        ops = site.operations()
    finally:
        ctl.close()
        site.store.dispose()
    return {"rows": rows, "operations": len(ops) - 1,
            "outcomes": sorted({o.outcome or "" for o in ops[1:]})}  # fmt: skip


def pctl(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def report(results: dict[str, dict[str, Any]], kills: int) -> str:
    target = LEASE_S + 1.0
    lines = [
        f"Two controller processes on one store, tick {INTERVAL_S:g} s, lease {LEASE_S:g} s; "
        f"{kills} kills -9 of the leader per database, each 1 to 2 s after the previous "
        "takeover, with a rollout or a staged rollback always in progress; load average "
        f"before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}.",
        "",
        "| database | kill → new leader acting, median (s) | p99 (s) | max (s) | lease left at the "
        "kill, median (s) | kill → first decision recorded, median (s) | target p99 ≤ "
        f"{target:g} s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for db, res in results.items():
        acting = [r["acting_s"] for r in res["rows"]]
        left = [r["lease_left_s"] for r in res["rows"]]
        decided = [r["decision_s"] for r in res["rows"] if r["decision_s"] is not None]
        p99 = pctl(acting, 0.99)
        lines.append(
            f"| {db} | {statistics.median(acting):.2f} | {p99:.2f} | {max(acting):.2f} | "
            f"{statistics.median(left):.2f} | "
            f"{statistics.median(decided):.2f} ({len(decided)} of {len(acting)}) | "
            f"{'met' if p99 <= target else '**NOT met**'} |"
        )
    lines.append("")
    for db, res in results.items():
        gens = [r["generation"] for r in res["rows"]]
        fenced = all(b == a + 1 for a, b in gens)
        lines.append(
            f"- {db}: {res['operations']} operations, all ended ({', '.join(res['outcomes'])}); "
            f"the crash tests' invariants held after every kill; each takeover advanced the "
            f"fencing generation by one: {'yes' if fenced else '**no**'}."
        )
    lines += [
        "",
        "The new leader takes the lease at its first ask after the dead one's lease ran out, "
        "so kill → acting is the lease left at the kill (up to the lease, less the time since "
        "the last renewal) plus up to one tick interval; it ticks in the same loop iteration. "
        "A decision is recorded only when one is due (a bake ending, a step to take), which is "
        "why the last column is longer and not always there.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--kills", type=int, default=None)
    args = p.parse_args(argv)
    kills = args.kills or (3 if args.quick else 20)
    tmp = Path(tempfile.mkdtemp(prefix="backout-failover-"))
    results: dict[str, dict[str, Any]] = {}
    results["sqlite"] = run("sqlite", f"sqlite:///{tmp / 'store.db'}", tmp, kills, 1)
    pg = PostgresServer().start()
    try:
        results["postgresql"] = run("postgresql", pg.create_database(), tmp, kills, 2)
    finally:
        pg.stop()
    body = report(results, kills)
    print(body)
    if not args.no_write:
        write_section("failover", "Controller failover: kill -9 of the leader", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
