"""Replay throughput against a plain predict loop, and contract validation's share of the gateway.

    .venv/bin/python benchmarks/replay.py            # full run (~3 min), writes RESULTS.md
    .venv/bin/python benchmarks/replay.py --quick    # a short smoke run
    .venv/bin/python benchmarks/replay.py --no-write # print the sections, keep RESULTS.md
    .venv/bin/python benchmarks/replay.py --only replay|contract

**Replay** (issue 6: at least 2,000 captured requests/s in-process): an iris
LogisticRegression registered with its inferred contract in a temporary SQLite store, and a
capture log of single-instance requests written with :func:`backout.serving.capture.write_captures`
(the live answers come from the same model, so every replayed answer agrees). The figure is
the wall time of one :func:`backout.proof.replay.replay` call — reading the captures from the store,
loading and verifying the release, then decoding, validating (input and output contracts),
predicting and comparing every request — next to two plain loops over the same requests,
decoded beforehand, calling the same loaded estimator one request at a time: ``predict``
alone, and ``predict`` + ``predict_proba`` (what the scikit-learn runtime calls).

**Contract overhead** (issue 6: at most 5% of the gateway's cost per request): the gateway
benchmark's harness (``backout serve``, 2 workers, wrk with 16 connections and a new routing
key per request) against two stores that differ only in the release's contract: inferred
(the gateway validates every instance and every answer) or none. The two servers run side
by side and are measured alternately. Cost per request: 1 / wrk throughput, and the worker
processes' CPU time per request at a fixed open-loop rate (robust to other work on the
machine, which throughput is not).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import timeit
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import orjson
from sklearn.datasets import load_iris

sys.path.insert(0, str(Path(__file__).parent))
from _results import write_section
from gateway import WORK, Server, ensure_wrk, make_models, openloop, start_gateway, wrk

from backout.proof.contracts import infer_sklearn_contract
from backout.proof.replay import replay
from backout.registry.artifacts import LocalBlobStore
from backout.registry.manifest import Runtime, RuntimeKind
from backout.registry.releases import Registry
from backout.runtimes.tensors import outputs_to_predictions
from backout.serving.capture import write_captures
from backout.store import Store, open_store
from backout.traffic.deployments import Deployments

MODEL = "iris"
VERSION = "1.0.0"
TARGET_RPS = 2000.0
TARGET_SHARE = 0.05
CPU_RATE = 400  # requests/s for the CPU-time measurement: well below either server's limit


@dataclass(frozen=True)
class Plan:
    requests: int  # captured requests replayed per run
    runs: int
    wrk_seconds: float
    wrk_runs: int
    cpu_seconds: float


FULL = Plan(requests=5000, runs=5, wrk_seconds=6.0, wrk_runs=5, cpu_seconds=8.0)
QUICK = Plan(requests=1000, runs=3, wrk_seconds=2.0, wrk_runs=1, cpu_seconds=3.0)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# -- replay -----------------------------------------------------------------------------------


def capture_log(store: Store, path: Path, n: int) -> list[dict[str, Any]]:
    """``n`` captured single-instance requests with the answers the model gave them."""
    model = joblib.load(path)
    rows = load_iris().data.tolist()
    rng = random.Random(0)
    requests = [{"instances": [rng.choice(rows)]} for _ in range(n)]
    x = np.asarray([r["instances"][0] for r in requests], dtype=np.float64)
    # The answers, as the gateway would have recorded them: label and probabilities.
    answers = outputs_to_predictions(
        {
            "label": np.asarray(model.predict(x)),
            "probabilities": np.asarray(model.predict_proba(x), dtype=np.float32),
        }
    )
    now = time.time()
    captured = [
        {"model": MODEL, "version": VERSION, "at": now - n + i, "request_id": f"r{i}",
         "protocol": "json", "latency_ms": 0.5, "request": orjson.dumps(req).decode(),
         "response": orjson.dumps([ans]).decode(), "labels": None}
        for i, (req, ans) in enumerate(zip(requests, answers, strict=True))
    ]  # fmt: skip
    write_captures(store, captured, {MODEL: n})
    return requests


@dataclass
class ReplayRun:
    replay_rps: float  # whole replay() call: read, load, replay
    loop_rps: float  # replay()'s own loop (report.seconds)
    predict_rps: float
    predict_proba_rps: float
    agreement: float | None


def replay_runs(plan: Plan, work: Path) -> list[ReplayRun]:
    home = work / "replay"
    home.mkdir(parents=True)
    path = make_models(home)["1.0.0"]
    store = open_store(f"sqlite:///{home / 'backout.db'}", create=True)
    blobs = LocalBlobStore(home / "artifacts")
    registry = Registry(store, blobs)
    estimator = joblib.load(path)
    registry.register(
        MODEL, VERSION, [path], runtime=Runtime(kind=RuntimeKind.SKLEARN),
        contract=infer_sklearn_contract(estimator), actor="bench",
    )  # fmt: skip
    requests = capture_log(store, path, plan.requests)
    decoded = [np.asarray(r["instances"], dtype=np.float64) for r in requests]
    runs = []
    try:
        replay(store, registry, blobs, f"{MODEL}@{VERSION}", limit=100)  # warm imports
        for i in range(plan.runs):
            t0 = time.perf_counter()
            report = replay(store, registry, blobs, f"{MODEL}@{VERSION}", limit=plan.requests)
            wall = time.perf_counter() - t0
            if report.replayed != plan.requests or report.errors or report.rejected:
                raise RuntimeError(f"replay went wrong: {report.summary()}")
            t0 = time.perf_counter()
            for x in decoded:
                estimator.predict(x)
            plain = time.perf_counter() - t0
            t0 = time.perf_counter()
            for x in decoded:
                estimator.predict(x)
                estimator.predict_proba(x)
            both = time.perf_counter() - t0
            run = ReplayRun(
                replay_rps=plan.requests / wall,
                loop_rps=report.throughput_rps,
                predict_rps=plan.requests / plain,
                predict_proba_rps=plan.requests / both,
                agreement=report.agreement,
            )
            runs.append(run)
            print(
                f"replay run {i + 1}: replay {run.replay_rps:,.0f}/s (loop {run.loop_rps:,.0f}/s), "
                f"predict {run.predict_rps:,.0f}/s, predict+proba {run.predict_proba_rps:,.0f}/s, "
                f"load {load()}",
                file=sys.stderr,
            )
    finally:
        store.dispose()
    return runs


def replay_report(runs: list[ReplayRun], plan: Plan, load_before: str, load_after: str) -> str:
    def med(key: str) -> float:
        return float(statistics.median(getattr(r, key) for r in runs))

    rps = med("replay_rps")
    plain = med("predict_rps")
    both = med("predict_proba_rps")
    ratios = [r.replay_rps / r.predict_rps for r in runs]
    ratios_both = [r.replay_rps / r.predict_proba_rps for r in runs]
    return "\n".join(
        [
            f'{plan.requests:,} captured single-instance iris requests (`{{"instances": [[...]]}}`) '
            f"in a SQLite capture log, replayed in-process against the iris LogisticRegression "
            f"that answered them (its inferred contract checked on every input and answer). "
            f"Medians of {plan.runs} runs; machine load (1, 5, 15 min) before: {load_before}; "
            f"after: {load_after}.",
            "",
            "| what | requests/s |",
            "| --- | ---: |",
            f"| `replay()`, end to end (read captures, load and verify the release, replay) | "
            f"{rps:,.0f} |",
            f"| `replay()`'s own loop (decode, validate, predict, compare) | {med('loop_rps'):,.0f} |",
            f"| plain loop: `predict` one request at a time | {plain:,.0f} |",
            f"| plain loop: `predict` + `predict_proba` (what the runtime calls) | {both:,.0f} |",
            "",
            f"- replay / plain `predict` loop: **{statistics.median(ratios):.2f}** "
            f"(replay / `predict` + `predict_proba`: {statistics.median(ratios_both):.2f})",
            f"- replay ≥ {TARGET_RPS:,.0f} captured requests/s: **{rps:,.0f}/s**: "
            + ("met" if rps >= TARGET_RPS else "**NOT met**"),
            f"- agreement with the recorded answers: {runs[-1].agreement:.1%}"
            if runs[-1].agreement is not None
            else "- agreement: -",
        ]
    )


# -- contract overhead ------------------------------------------------------------------------


def contract_store(home: Path, model_path: Path, *, contract: bool) -> Store:
    store = open_store(f"sqlite:///{home / 'backout.db'}", create=True)
    registry = Registry(store, LocalBlobStore(home / "artifacts"))
    registry.register(
        MODEL, VERSION, [model_path], runtime=Runtime(kind=RuntimeKind.SKLEARN),
        contract=infer_sklearn_contract(joblib.load(model_path)) if contract else None,
        actor="bench",
    )  # fmt: skip
    Deployments(store, registry).set_traffic(MODEL, {VERSION: 100}, actor="bench")
    return store


def worker_cpu_seconds(server: Server) -> float:
    """User + system CPU seconds of the gateway's worker processes (the server's children).

    The parent runs the controller, which does not serve requests: it is left out.
    """
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    children: list[str] = []
    for task in Path(f"/proc/{server.proc.pid}/task").iterdir():  # any thread may have forked
        with contextlib.suppress(OSError):
            children += (task / "children").read_text().split()
    for pid in children:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone (a worker restarting): its time is lost to both servers alike
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def validation_us(model_path: Path) -> float:
    """µs the gateway spends validating one single-instance request and its answer.

    The same calls ``Gateway._inputs`` and ``Gateway._check_outputs`` make, on the same
    contract, best of five: the component cost, free of the noise of a whole server.
    """
    from backout.proof.contracts import compile_validator

    estimator = joblib.load(model_path)
    contract = infer_sklearn_contract(estimator)
    assert contract.input is not None and contract.output is not None
    check_in, check_out = compile_validator(contract.input), compile_validator(contract.output)
    instances = [[5.1, 3.5, 1.4, 0.2]]
    x = np.asarray(instances, dtype=np.float64)
    predictions = outputs_to_predictions(
        {
            "label": np.asarray(estimator.predict(x)),
            "probabilities": np.asarray(estimator.predict_proba(x), dtype=np.float32),
        }
    )

    def both() -> None:
        check_in.check_batch(instances)
        check_out.check_batch(predictions)

    n = 20_000
    return min(timeit.repeat(both, number=n, repeat=5)) / n * 1e6


@dataclass
class ContractSamples:
    """Per run: wrk throughput, and worker CPU µs per request at a fixed open-loop rate."""

    rps: list[float]
    cpu_us: list[float]
    validation_us: float = 0.0  # the component cost, with the contract


def contract_runs(plan: Plan, work: Path) -> dict[str, ContractSamples]:
    wrk_bin = ensure_wrk()
    WORK.mkdir(parents=True, exist_ok=True)
    model_path = make_models(work)["1.0.0"]
    stores = []
    servers: list[Server] = []
    out = {"with": ContractSamples([], []), "without": ContractSamples([], [])}
    out["with"].validation_us = validation_us(model_path)
    try:
        for name in ("with", "without"):
            home = work / f"contract-{name}"
            home.mkdir()
            stores.append(contract_store(home, model_path, contract=name == "with"))
            servers.append(start_gateway(f"contract-{name}", home, access_log=False))
        for run in range(plan.wrk_runs):
            # Alternate the order run by run, so a drift in machine load hurts both alike.
            order = servers if run % 2 == 0 else servers[::-1]
            for s in order:
                name = s.name.removeprefix("contract-")
                wrk(wrk_bin, s, 1.0)  # warm-up, not counted
                r = wrk(wrk_bin, s, plan.wrk_seconds)
                if r["failed"]:
                    raise RuntimeError(f"{s.name}: {r['failed']} requests failed")
                out[name].rps.append(float(r["rps"]))
                # CPU time per request barely depends on what else the machine runs, where
                # throughput depends on it directly: a fixed rate, and the workers' CPU clock.
                before = worker_cpu_seconds(s)
                o = openloop(s, rate=CPU_RATE, seconds=plan.cpu_seconds)
                used = worker_cpu_seconds(s) - before
                if o["non_2xx"] or o["socket_errors"]:
                    raise RuntimeError(f"{s.name}: requests failed at {CPU_RATE}/s: {o}")
                out[name].cpu_us.append(used / o["ok"] * 1e6)
                print(f"run {run + 1} {s.name}: {r['rps']:,.0f} req/s; "
                      f"{out[name].cpu_us[-1]:.0f} CPU µs per request at {CPU_RATE}/s; "
                      f"load {load()}", file=sys.stderr)  # fmt: skip
    finally:
        for s in servers:
            s.stop()
        for st in stores:
            st.dispose()
    return out


def contract_report(
    samples: dict[str, ContractSamples], plan: Plan, load_before: str, load_after: str
) -> str:
    w, wo = samples["with"], samples["without"]
    rps_with, rps_without = statistics.median(w.rps), statistics.median(wo.rps)
    cpu_with, cpu_without = statistics.median(w.cpu_us), statistics.median(wo.cpu_us)
    cpu_share = 1 - cpu_without / cpu_with
    rps_share = 1 - rps_with / rps_without  # of the cost per request (1/rps) with the contract
    paired_cpu = [1 - b / a for a, b in zip(w.cpu_us, wo.cpu_us, strict=True)]
    paired_rps = [1 - a / b for a, b in zip(w.rps, wo.rps, strict=True)]

    def runs(values: list[float], fmt: str) -> str:
        return ", ".join(format(v, fmt) for v in values)

    return "\n".join(
        [
            f"`backout serve --workers 2 --no-access-log` serving one iris release at 100%, "
            f"registered with its inferred contract (every instance and every answer validated) "
            f"or without one, both servers up side by side and measured alternately, "
            f"{plan.wrk_runs} runs. Cost per request measured two ways: (1) the gateway "
            f"benchmark's wrk set-up (16 connections, 2 threads, {plan.wrk_seconds:g} s, a new "
            f"routing key per request), cost = 1 / throughput; (2) `openloop.py` at a fixed "
            f"{CPU_RATE} requests/s for {plan.cpu_seconds:g} s, cost = the worker processes' "
            f"CPU time (user + system, from /proc) per answered request. Machine load "
            f"(1, 5, 15 min) before: {load_before}; after: {load_after}.",
            "",
            "| release | wrk requests/s | µs per request (1/throughput) | worker CPU µs per "
            "request |",
            "| --- | ---: | ---: | ---: |",
            f"| with contract | {rps_with:,.0f} | {1e6 / rps_with:,.0f} | {cpu_with:,.0f} |",
            f"| without contract | {rps_without:,.0f} | {1e6 / rps_without:,.0f} | "
            f"{cpu_without:,.0f} |",
            "",
            f"Run by run — wrk req/s with: {runs(w.rps, ',.0f')}; without: "
            f"{runs(wo.rps, ',.0f')}. CPU µs with: {runs(w.cpu_us, '.0f')}; without: "
            f"{runs(wo.cpu_us, '.0f')}.",
            "",
            f"- contract validation's share of the worker CPU per request (1 − without / with, "
            f"medians): **{cpu_share:.1%}** (run by run: "
            + ", ".join(f"{x:.1%}" for x in paired_cpu)
            + f"); target ≤ {TARGET_SHARE:.0%}: "
            + ("met" if cpu_share <= TARGET_SHARE else "**NOT met**"),
            f"- the same from wrk throughput (1 − with / without): {rps_share:.1%} (run by "
            "run: " + ", ".join(f"{x:.1%}" for x in paired_rps) + ")",
            f"- the component: validating the request's instance and the answer's prediction "
            f"with the compiled validators costs **{w.validation_us:.1f} µs** (in-process, best "
            f"of five), {w.validation_us / cpu_with:.2%} of the {cpu_with:,.0f} CPU µs a worker "
            "spends per request",
            "",
            "Reading them: other engineers' benchmarks share this machine's two cores. They "
            f"moved wrk's throughput of one and the same server from {min(w.rps + wo.rps):,.0f} "
            f"to {max(w.rps + wo.rps):,.0f} requests/s between runs, and the workers' CPU per "
            f"request from {min(w.cpu_us + wo.cpu_us):,.0f} to {max(w.cpu_us + wo.cpu_us):,.0f} "
            "µs: whole-server A/B figures cannot resolve 5% here (the run-by-run shares show "
            "it). The verdict is taken from the CPU medians; the component figure, which has no "
            "such noise, bounds what the contract can add and is the one to trust.",
        ]
    )


# -- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a short smoke run")
    p.add_argument("--no-write", action="store_true", help="print, do not touch RESULTS.md")
    p.add_argument("--only", choices=["replay", "contract"], help="one of the two measurements")
    args = p.parse_args(argv)
    plan = QUICK if args.quick else FULL
    work = Path(tempfile.mkdtemp(prefix="backout-replay-"))
    try:
        if args.only in (None, "replay"):
            before = load()
            body = replay_report(replay_runs(plan, work), plan, before, load())
            print(body + "\n")
            if not args.no_write:
                write_section("replay", "Replay: captured requests against a target", body)
        if args.only in (None, "contract"):
            before = load()
            body = contract_report(contract_runs(plan, work), plan, before, load())
            print(body)
            if not args.no_write:
                write_section("contract-overhead", "Contract validation in the gateway", body)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
