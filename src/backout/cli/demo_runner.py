"""``backout demo``: the main job end to end, on the embedded default, in about two minutes.

It trains four small scikit-learn models on the iris data set, registers them, starts the
gateway and the controller on loopback, drives traffic from several consumers (routing keys,
one pinned to a release), and then tells the story: a good rollout completes; a regressed
release is caught by the judges and rolled back in stages; a release whose contract would
break callers is refused; a drill injects errors and the policy recovers. It ends with the
status, the timeline, time to detect and to recover, failed requests per consumer, and the
incident report. Everything it starts, it stops (unless ``--keep``).
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from backout.control.controller import Controller
from backout.control.policy import parse_policy
from backout.errors import BackoutError
from backout.proof.consumers import ConsumerContract, register_consumer
from backout.proof.contracts import infer_sklearn_contract
from backout.registry.artifacts import LocalBlobStore
from backout.registry.manifest import Lineage, RollbackPlan, Runtime, RuntimeKind
from backout.registry.releases import Registry
from backout.store import audit, open_store

MODEL = "iris"
FIELDS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]

POLICY = """
owners: [ml-platform@example.com]
rollout:
  steps: [20, 50, 100]
  # Long enough for the latency judge's first-minute blocks of three seconds (valid when
  # neighbouring seconds are correlated) to settle a step.
  bake: 20s
  min_requests: 150
  on_inconclusive: rollback
  # Judges that compare with the same-time baseline: a busy machine slows both releases
  # alike, so it neither hides a regression nor fakes one (an absolute budget would).
  gate:
    alpha: 0.01
    judges:
      - {judge: error_rate}
      - {judge: latency}
      - {judge: drift}
      - {judge: integrity}
rollback:
  mode: staged
  steps: [90, 100]
  bake: 4s
  verification: {duration: 6s, min_requests: 40}
completion: {rollout: 6s}
triggers:
  - {name: error-rate, kind: error_rate, max_rate: 0.02, window: 5s, min_requests: 30, mode: emergency}
  - {name: integrity, kind: integrity, window: 5s, min_requests: 1}
  - {name: p99-latency, kind: latency, quantile: 0.99, max_ms: 2000, window: 5s, min_requests: 30}
escalation:
  after: 2m
  contacts: [{name: on-call, email: oncall@example.com}]
capture: {rate: 0.25}
# The public status page names the service, not the model, and shows no release.
status_page: {component: Iris species API}
incident_commander: {rotation: [ana, bo], every: 7d}
review_every: 90d
# Loose on purpose: a strict replay (say min_agreement 0.95) refuses 1.1.0 before any
# traffic moves — the demo lets the canary through so the judges show their work live.
replay: {requests: 50, max_latency_ratio: 50, min_agreement: 0.6}
"""

CONSUMERS = [
    # name, share of traffic, routing key scheme, pinned route-table key
    ("checkout", 0.55, "user", None),
    ("garden-app", 0.35, "device", None),
    ("nightly-report", 0.10, None, "nightly-report"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- models ----------------------------------------------------------------------------------


def train(folder: Path) -> dict[str, tuple[Path, Any]]:
    """Four releases of the iris model, as files: two good, one regressed, one breaking."""
    import pandas as pd
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    data = load_iris()
    x = pd.DataFrame(data.data, columns=FIELDS)
    y = np.asarray(data.target_names)[data.target]
    rng = np.random.default_rng(0)
    noisy = y.copy()
    flip = rng.random(len(y)) < 0.35  # the regressed release learned from mislabelled data
    noisy[flip] = rng.choice(data.target_names, size=int(flip.sum()))
    wide = x.assign(petal_area=x.petal_length * x.petal_width)
    models = {
        "0.9.0": (LogisticRegression(C=0.5, max_iter=1000).fit(x, y), "baseline logistic regression"),
        "1.0.0": (LogisticRegression(C=2.0, max_iter=1000).fit(x, y), "retrained on fresh data"),
        "1.1.0": (RandomForestClassifier(n_estimators=120, random_state=0).fit(x, noisy),
                  "random forest: bigger, slower, trained on a bad label export"),
        "2.0.0": (LogisticRegression(max_iter=1000).fit(wide, y), "adds the petal_area feature"),
    }  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for version, (model, note) in models.items():
        path = folder / f"iris-{version}.joblib"
        joblib.dump(model, path)
        out[version] = (path, (model, note))
    return out


# -- traffic ---------------------------------------------------------------------------------


@dataclass
class Traffic:
    """Synthetic consumers calling the gateway at a steady rate, counting every outcome."""

    url: str
    rate: float = 100.0
    sent: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    by_release: Counter[str] = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)
    injected: Counter[str] = field(default_factory=Counter)  # failures a drill caused on purpose

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        from sklearn.datasets import load_iris

        rows = load_iris().data.tolist()
        rng = random.Random(1)
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
        async with httpx.AsyncClient(base_url=self.url, timeout=10, limits=limits) as client:
            interval = 1.0 / self.rate
            next_at = time.perf_counter()
            pending: set[asyncio.Task[None]] = set()
            while not self.stop.is_set():
                name, _, scheme, pin = rng.choices(CONSUMERS, weights=[c[1] for c in CONSUMERS])[0]
                key = pin or f"{scheme}-{rng.randrange(5000)}"
                instances = [
                    dict(zip(FIELDS, rng.choice(rows), strict=True))
                    for _ in range(rng.choice([1, 1, 1, 2, 4]))
                ]
                task = asyncio.create_task(self._call(client, name, key, instances))
                pending.add(task)
                task.add_done_callback(pending.discard)
                next_at += interval
                delay = next_at - time.perf_counter()
                if delay < -1.0:
                    # Starved for a while (a busy machine): drop the backlog instead of
                    # bursting it, and keep the steady rate from now on.
                    next_at = time.perf_counter()
                # Always yield, even when behind: without an await the loop would only ever
                # create tasks and never run them.
                await asyncio.sleep(max(delay, 0.0))
            if pending:
                await asyncio.wait(pending, timeout=10)

    async def _call(
        self, client: httpx.AsyncClient, name: str, key: str, instances: list[dict[str, float]]
    ) -> None:
        self.sent[name] += 1
        try:
            r = await client.post(f"/models/{MODEL}/predict", json={"instances": instances},
                                  headers={"x-backout-key": key, "x-request-id": f"{name}-{self.sent[name]}"})  # fmt: skip
        except httpx.HTTPError:
            self.failed[name] += 1
            return
        if r.status_code != 200:
            if "injected fault" in r.text:
                self.injected[name] += 1
            else:
                self.failed[name] += 1
            return
        self.by_release[r.headers.get("x-backout-release", "?")] += 1


# -- the story -------------------------------------------------------------------------------


class Demo:
    def __init__(self, console: Console, home: Path, keep: bool) -> None:
        self.console = console
        self.home = home
        self.keep = keep
        self.t0 = time.time()
        self.seen_seq = 0
        self.server: subprocess.Popen[bytes] | None = None
        self.traffic: Traffic | None = None
        self.admin: str | None = None  # the control API: dashboard and status page
        self.public_status: str | None = None

    def say(self, text: str, at: float | None = None) -> None:
        self.console.print(f"[dim]{(at or time.time()) - self.t0:6.1f}s[/dim]  {text}")

    def narrate(self) -> None:
        """Print the audit events that happened since the last call, as a timeline."""
        with self.store.read() as conn:
            events = audit.list_events(conn, MODEL, since_seq=self.seen_seq)
        skip = {"traffic.applied", "release.registered", "consumer.registered", "policy.set"}
        for e in events:
            self.seen_seq = e.seq
            if e.kind in skip and not (e.kind == "traffic.applied" and "rollback" in e.reason):
                continue  # the steps of a rollback are worth seeing; other traffic writes echo a phase
            style = (
                "red"
                if any(k in e.kind for k in ("fail", "rollback", "frozen", "drill"))
                else "cyan"
            )
            self.say(f"[{style}]{e.kind:<22}[/{style}] {escape(e.reason)}", at=e.at.timestamp())
        self.watch_status_page()

    def watch_status_page(self) -> None:
        """Say when the public status page changes, as a visitor would see it."""
        if self.admin is None:
            return
        try:
            doc = httpx.get(f"{self.admin}/status/summary.json", timeout=1).json()
        except (httpx.HTTPError, ValueError):
            return
        shown = "; ".join(f"{c['name']}: {c['status_label']}" for c in doc.get("components", []))
        open_incidents = [i for i in doc.get("incidents", []) if i.get("resolved_at") is None]
        if open_incidents:
            shown += f" (incident {open_incidents[0]['status']})"
        if shown and shown != self.public_status:
            self.public_status = shown
            style = "green" if "operational" in shown and not open_incidents else "magenta"
            self.say(f"[{style}]{'status page':<22}[/{style}] {escape(shown)}")

    def wait(self, what: str, done: Any, timeout: float = 90.0) -> None:
        deadline = time.time() + timeout
        with self.console.status(what):
            while not done():
                self.narrate()
                if time.time() > deadline:
                    raise BackoutError(f"demo: timed out waiting until {what}")
                time.sleep(0.25)
        self.narrate()

    def run(self) -> int:
        c = self.console
        if self.home.exists():
            shutil.rmtree(self.home)
        self.home.mkdir(parents=True)
        url = f"sqlite:///{self.home / 'backout.db'}"
        self.store = open_store(url, create=True)  # the demo's own, fresh workspace
        blobs = LocalBlobStore(self.home / "artifacts")
        self.registry = Registry(self.store, blobs)
        self.controller = Controller(self.store, self.registry, actor="demo")
        c.rule("[bold]backout demo[/bold]: the safe way back for ML models")
        self.say(f"workspace {self.home} (SQLite store, local artifact folder)")

        with c.status("training four iris models with scikit-learn"):
            trained = train(self.home / "models")
        contracts = {v: infer_sklearn_contract(m) for v, (_, (m, _)) in trained.items()}
        for version, (path, (_model, note)) in trained.items():
            self.registry.register(
                MODEL, version, [path], runtime=Runtime(kind=RuntimeKind.SKLEARN, options={}),
                contract=contracts[version], changelog=note, owner="ml-platform",
                rollback_plan=RollbackPlan(text="roll back to the last known-good", target=None),
                lineage=Lineage(dataset="sklearn:iris", code="demo"), actor="demo",
            )  # fmt: skip
            self.say(f"registered [bold]{MODEL}@{version}[/bold]: {note}")
        for name, _, _, _ in CONSUMERS:
            consumer = ConsumerContract.model_validate({
                "name": name, "model": MODEL, "owner": f"{name}-team", "sends": {f: "number" for f in FIELDS},
                "reads": {"label": {"enum": ["setosa", "versicolor", "virginica"]}},
            })  # fmt: skip
            register_consumer(self.store, consumer, actor="demo")
        self.say(
            "registered consumers: "
            + ", ".join(n for n, *_ in CONSUMERS)
            + " (fields they send and read)"
        )
        policy = parse_policy(POLICY)
        self.controller.set_policy(MODEL, policy, source="demo policy", actor="demo")
        self.controller.deploy(MODEL, "0.9.0", actor="demo")
        self.controller.deployments.set_traffic(MODEL, {"0.9.0": 100}, pins={"nightly-report": "0.9.0"},
                                                actor="demo", reason="nightly-report pins 0.9.0")  # fmt: skip
        self.say("0.9.0 is live at 100%; the nightly-report consumer is pinned to it")

        port, admin_port = _free_port(), _free_port()
        gateway = f"http://127.0.0.1:{port}"
        admin = f"http://127.0.0.1:{admin_port}"
        env = {
            **os.environ,
            "BACKOUT_STORE": url,
            "BACKOUT_ARTIFACTS": str(self.home / "artifacts"),
        }
        self.server = subprocess.Popen(
            [sys.executable, "-m", "backout", "serve", "--port", str(port), "--workers", "2", "--no-access-log",
             "--admin-port", str(admin_port)],
            env=env, stdout=subprocess.DEVNULL, stderr=open(self.home / "serve.log", "wb"),  # noqa: SIM115
            start_new_session=True,
        )  # fmt: skip
        self.wait("the gateway starts", lambda: _ready(gateway), timeout=60)
        self.say(f"gateway and controller running on {gateway} (2 workers) — pid {self.server.pid}")
        self.wait(
            "the control API starts", lambda: _ready(admin, "/status/summary.json"), timeout=60
        )
        self.admin = admin
        self.say(f"status page (public): [bold]{admin}/status[/bold]")
        self.say(
            f"dashboard: [bold]{admin}/dashboard[/bold] — log in with the token in {self.token_file()}"
        )
        self.traffic = Traffic(gateway)
        threading.Thread(target=self.traffic.run, name="demo-traffic", daemon=True).start()
        self.say(
            f"traffic: {self.traffic.rate:g} requests/s from {len(CONSUMERS)} consumers with routing keys"
        )
        time.sleep(4)

        c.rule("1. a good release rolls out in gated steps")
        self.controller.deploy(MODEL, "1.0.0", actor="demo", reason="retrained on fresh data")
        self.wait("1.0.0 rolls out", lambda: self._ended_op() is not None, timeout=150)
        if self._ended_op() != ("rollout", "1.0.0"):
            self.say(
                "[yellow]1.0.0 did not complete its rollout (see the timeline above); going on[/yellow]"
            )

        c.rule("2. a regressed release is caught and rolled back in stages")
        canary = self.controller.deploy(MODEL, "1.1.0", actor="demo", reason="bigger model")
        self.wait("the judges decide", lambda: self._ended_op() is not None, timeout=150)
        if (self._ended_op() or ("", ""))[0] != "rollback":
            self.say("[red]the judges did not catch 1.1.0[/red]: rolling back by hand")
            self.controller.rollback(
                MODEL, actor="demo", emergency=True, reason="missed by the judges"
            )
            self.wait("the rollback completes", lambda: self._ended_op() is not None, timeout=60)
        incident = self.controller.operations(MODEL, limit=1)[0]
        ttd = incident.started_at - canary.started_at  # first canary traffic → rollback started

        c.rule("3. a release that would break its callers is refused")
        try:
            self.controller.deploy(MODEL, "2.0.0", actor="demo", reason="new feature")
            self.say("[red]2.0.0 was not refused[/red]")
        except BackoutError as exc:
            self.say(f"[bold]refused[/bold]: {escape(exc.message)}")
        self.narrate()

        c.rule("4. a drill: inject 5% errors into the live release")
        from backout.control.drills import run_drill
        from backout.traffic.faults import parse_fault

        outcome: list[Any] = []
        runner = threading.Thread(
            target=lambda: outcome.append(run_drill(self.store, self.registry, MODEL, parse_fault("errors=5%"),
                                                    actor="demo", timeout=90)),
            name="demo-drill", daemon=True,
        )  # fmt: skip
        runner.start()
        self.wait("the policy responds to the drill", lambda: not runner.is_alive(), timeout=120)
        if not outcome:
            raise BackoutError("demo: the drill did not finish")
        drill = outcome[0]
        time.sleep(1)
        self.traffic.stop.set()
        time.sleep(1.5)
        self.summary(incident, ttd, drill)
        return 0

    def token_file(self) -> Path:
        """A token for the dashboard (admin and responder on every model), in an owner-only
        file: shown once, never printed."""
        from backout.api import tokens
        from backout.api.roles import make_grant

        grants = [make_grant(r, ["*"]) for r in ("viewer", "responder", "releaser", "admin")]
        issued = tokens.create(self.store, grants, actor="demo", name="demo-dashboard")
        path = self.home / "dashboard-token"
        path.touch(mode=0o600)
        path.write_text(issued.token + "\n")
        return path

    def _ended_op(self) -> tuple[str, str] | None:
        ops = self.controller.operations(MODEL, limit=1)
        if not ops or ops[0].ended_at is None:
            return None
        return ops[0].kind, (
            ops[0].target if ops[0].outcome in ("succeeded", "rolled-back") else "?"
        )

    def summary(self, incident: Any, ttd: float, drill: Any) -> None:
        c = self.console
        self.watch_status_page()
        c.rule("what happened")
        subprocess.run([sys.executable, "-m", "backout", "--store", f"sqlite:///{self.home / 'backout.db'}",
                        "status", MODEL], check=False)  # fmt: skip
        recovered = _full_time(self.store, incident)
        t = Table(
            title="incident: regressed canary", box=None, header_style="bold", title_justify="left"
        )
        t.add_column("measure")
        t.add_column("value", justify="right")
        t.add_row("time to detect (canary takes traffic → rollback started)", f"{ttd:.1f} s")
        t.add_row(
            "time to recover (rollback started → 100% on 1.0.0)",
            "-" if recovered is None else f"{recovered - incident.started_at:.1f} s",
        )
        t.add_row("outcome", incident.outcome or "-")
        c.print(t)
        d = Table(
            title="drill: errors=5% on the live release",
            box=None,
            header_style="bold",
            title_justify="left",
        )
        d.add_column("measure")
        d.add_column("value", justify="right")
        d.add_row(
            "time to detect",
            "-" if drill.time_to_detect is None else f"{drill.time_to_detect:.1f} s",
        )
        d.add_row(
            "time to recover",
            "-" if drill.time_to_recover is None else f"{drill.time_to_recover:.1f} s",
        )
        d.add_row("requests hit by the injected fault", f"{drill.affected}")
        d.add_row("completion criteria", "held" if drill.completion_held else "NOT met")
        c.print(d)
        assert self.traffic is not None
        f = Table(
            title="requests per consumer", box=None, header_style="bold", title_justify="left"
        )
        for col in ("consumer", "kind", "sent", "failed", "failed by the drill's fault"):
            f.add_column(col)
        for name, _, scheme, pin in CONSUMERS:
            f.add_row(name, "pinned to 0.9.0" if pin else f"keyed by {scheme}", f"{self.traffic.sent[name]:,}",
                      str(self.traffic.failed[name]), str(self.traffic.injected[name]))  # fmt: skip
        c.print(f)
        c.print(
            "answered by release: "
            + ", ".join(f"{k} {v:,}" for k, v in sorted(self.traffic.by_release.items()))
        )
        try:
            from backout.reports.builder import build_report
            from backout.reports.writer import write_report

            html, md = write_report(build_report(self.store, incident.id), self.home / "reports")
            c.print(f"incident report: [bold]{html}[/bold] (and {md.name})")
        except ImportError:
            c.print("incident report: not available in this build")
        c.print(f"timeline: `backout --store sqlite:///{self.home / 'backout.db'} history {MODEL}`")

    def close(self) -> None:
        if self.traffic is not None:
            self.traffic.stop.set()
        if self.server is not None and self.server.poll() is None:
            if self.keep:
                self.console.print(
                    f"services left running (--keep): gateway pid {self.server.pid}; stop it with `kill {self.server.pid}`"
                )
                if self.admin is not None:
                    self.console.print(
                        f"dashboard: {self.admin}/dashboard (token in {self.home / 'dashboard-token'}); "
                        f"status page: {self.admin}/status"
                    )
                return
            os.killpg(self.server.pid, signal.SIGTERM)
            try:
                self.server.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.server.pid, signal.SIGKILL)
                self.server.wait(5)


def _ready(url: str, path: str = "/v2/health/ready") -> bool:
    try:
        return httpx.get(f"{url}{path}", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _full_time(store: Any, op: Any) -> float | None:
    from backout.control.drills import full_on_target

    return full_on_target(store, MODEL, op.id, op.target)


def run_demo(console: Console, home: Path, *, keep: bool = False) -> int:
    demo = Demo(console, home, keep)
    try:
        return demo.run()
    finally:
        demo.close()
