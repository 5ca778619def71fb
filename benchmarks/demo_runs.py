"""Demo runs: ``backout demo`` run again and again, counting what its judges decided each time.

    .venv/bin/python benchmarks/demo_runs.py              # 20 consecutive runs, RESULTS.md
    .venv/bin/python benchmarks/demo_runs.py --runs 3 --no-write

Each run is the whole demo as a newcomer runs it (``python -m backout demo``, a fresh
workspace, real gateway processes, real HTTP, real scikit-learn models, real judges on live
telemetry). After each run the demo's own store is read: the good release (1.0.0) must have
completed its rollout (a rollback from it is a false rollback), the regressed canary (1.1.0)
must have been rolled back by the gate at its first step, and nothing may have been rolled
back by hand. The counts are the result; the demo's wall time is reported next to them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _results import write_section

from backout.control.operations import Operation, Operations
from backout.store import open_store

GOOD, REGRESSED = "1.0.0", "1.1.0"


@dataclass
class RunResult:
    """What one demo run's store says its judges decided."""

    exit_code: int
    seconds: float
    good_completed: bool
    false_rollback: bool
    caught: bool
    caught_at_step: int | None
    by_hand: bool
    load: float = 0.0  # the machine's 1-minute load average when the run ended

    @property
    def ok(self) -> bool:
        return (
            self.exit_code == 0
            and self.good_completed
            and not self.false_rollback
            and self.caught
            and self.caught_at_step == 1
            and not self.by_hand
        )


def read_outcome(home: Path, exit_code: int, seconds: float) -> RunResult:
    """The decisions in a finished demo's store (``home/backout.db``)."""
    store = open_store(f"sqlite:///{home / 'backout.db'}")
    try:
        ops: list[Operation] = Operations(store).recent("iris", limit=100)
    finally:
        store.dispose()
    rollouts = {op.target: op for op in ops if op.kind == "rollout"}
    good, bad = rollouts.get(GOOD), rollouts.get(REGRESSED)
    # The demo's drill later injects errors into the live release on purpose: only the
    # rollbacks between the good rollout and the canary's deploy count against the good one.
    lo, hi = (good.id if good else 0), (bad.id if bad else 10**9)
    rollbacks = [op for op in ops if op.kind == "rollback"]
    from_good = [op for op in rollbacks if op.stable == GOOD and lo < op.id < hi]
    from_bad = [op for op in rollbacks if op.stable == REGRESSED and op.id > hi]
    caught = bool(from_bad) and from_bad[-1].actor != "demo"  # "demo" rolls back by hand
    step = (bad.step + 1) if bad is not None and caught else None
    return RunResult(
        exit_code=exit_code,
        seconds=seconds,
        good_completed=good is not None and good.outcome == "succeeded",
        false_rollback=bool(from_good),
        caught=caught,
        caught_at_step=step,
        by_hand=bool(from_bad) and not caught,
    )


def run_once(home: Path) -> RunResult:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "backout", "demo", "--home", str(home)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=900, check=False,
    )  # fmt: skip
    result = read_outcome(home, done.returncode, time.monotonic() - started)
    result.load = os.getloadavg()[0]
    return result


def report(results: list[RunResult]) -> str:
    n = len(results)
    good = sum(r.good_completed for r in results)
    false = sum(r.false_rollback for r in results)
    caught = sum(r.caught for r in results)
    first = sum(r.caught_at_step == 1 for r in results)
    secs = [r.seconds for r in results]
    target_met = false == 0 and first == n
    lines = [
        f"{n} consecutive runs of `backout demo` (fresh workspace each, SQLite, two gateway "
        "workers, live traffic). Each run's store is read afterwards.",
        "",
        "| measure | runs |",
        "|---|---|",
        f"| good release {GOOD} completed its rollout | {good} of {n} |",
        f"| false rollbacks of {GOOD} | {false} of {n} |",
        f"| regressed canary {REGRESSED} rolled back by the gate | {caught} of {n} |",
        f"| ... at its first step | {first} of {n} |",
        f"| runs that exited 0 | {sum(r.exit_code == 0 for r in results)} of {n} |",
        "",
        f"Wall time per run: median {statistics.median(secs):.0f} s, max {max(secs):.0f} s. "
        f"Load average (1 min) at the end of each run: median "
        f"{statistics.median(r.load for r in results):.2f}, max {max(r.load for r in results):.2f} "
        f"({os.cpu_count()} cores).",
        "",
        f"- {'met' if target_met else '**not met**'}: the regressed canary caught at its first "
        f"step in every run and no false rollback of the good release ({first} of {n} caught "
        f"at step 1, {false} false rollbacks)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--no-write", action="store_true", help="print, do not touch RESULTS.md")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="backout-demo-runs-"))
    results = []
    try:
        for i in range(args.runs):
            home = work / "demo"
            r = run_once(home)
            results.append(r)
            print(
                f"[demo {i + 1}/{args.runs}] exit {r.exit_code}, {r.seconds:.0f} s: "
                f"{GOOD} {'completed' if r.good_completed else 'NOT completed'}, "
                f"{'FALSE ROLLBACK' if r.false_rollback else 'no false rollback'}, "
                f"{REGRESSED} {'caught at step ' + str(r.caught_at_step) if r.caught else 'NOT caught'}; "
                f"load {r.load:.2f}",
                flush=True,
            )
            shutil.rmtree(home, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    body = report(results)
    print(body)
    if not args.no_write:
        write_section("demo-runs", "Demo: the judges' decisions over consecutive runs", body)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
