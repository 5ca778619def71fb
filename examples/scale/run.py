"""backout beyond one machine, on this machine: replicas, failover, Traefik and Prometheus.

    python examples/scale/run.py              # about a minute; prints the story, stops everything
    python examples/scale/run.py --json FILE  # also writes the outcome as JSON (what the test reads)
    python examples/scale/run.py --isolation ports   # replicas on host ports, no namespaces

It starts, each as a process of its own, all on a loopback:

- a throwaway PostgreSQL server (the store every other process shares),
- an S3 endpoint (moto's server mode) holding the artifacts,
- three gateway replicas (``backout serve --gateway-only``), each with its own artifact
  cache, as three hosts would have, and — where ``ip netns`` works — each in a network
  namespace of its own (its own 127.0.0.1:8000, joined to the host's loopback by
  ``netns_relay.py``), else on its own host port (``--isolation ports`` asks for that),
- two controllers (``backout serve --controller-only --lease 5``): one leads, one waits,
- Traefik in front of the replicas, as a plain load balancer (round robin, health-checked on
  ``/v2/health/ready``): this is mode (a) of the README, backout's own gateways carry the
  traffic and steer it; mode (b), backout steering Traefik's weights across per-release
  backends, is what ``benchmarks/traefik.py`` runs,
- Prometheus scraping Traefik and the replicas' ``/metrics`` every second.

Then it registers two real scikit-learn releases into S3 — ``iris@1.0.0`` and ``iris@1.1.0``,
which log-transforms its inputs and so fails on the -1 a sensor sends when it has no reading
(the load-and-answer check before traffic passes: the contract's sample holds no -1) —
deploys the good one, and rolls out the regressed one under a bounded load through Traefik.
The gate catches it; during the staged rollback the leading controller is killed with
SIGKILL and the other takes over and finishes it. It prints the story with its timings and
stops every process it started (also on Ctrl-C or a failure).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))  # tests.postgres_server: the throwaway PostgreSQL server

from procs import Proc, Procs, wait_for  # noqa: E402

MODEL = "iris"
GOOD, BAD = "1.0.0", "1.1.0"
REPLICAS = 3
CONTROLLERS = 2
LEASE_S = 5.0
NS_PORT = 8000  # every replica's port inside its own network namespace
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "scale-example", "AWS_SECRET_ACCESS_KEY": "scale-example",
               "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip  # moto accepts any
POLICY = """
rollout:
  steps: [25, 50, 100]
  bake: 30s
  min_requests: 40
  gate: {judges: [{judge: error_rate}]}
rollback:
  mode: staged
  steps: [85, 95, 100]
  bake: 3s
  verification: {duration: 3s, min_requests: 20}
triggers:
  - {name: error-rate, kind: error_rate, window: 5s, min_requests: 20, max_rate: 0.05}
capture: {rate: 0}
replay: {allowed: false}
"""
ROW = [5.1, 3.5, 1.4, 0.2]
MISSING_ROW = [5.0, 3.4, 1.5, -1.0]  # a sensor with no reading sends -1: log1p(-1) is -inf
MISSING_SHARE = 10  # one request in ten


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=30)


def netns_usable() -> tuple[bool, str]:
    """Whether ``ip netns`` works here (a namespace can be made, used and deleted), and why not."""
    if shutil.which("ip") is None:
        return False, "`ip` is not installed"
    name = f"backout-probe-{os.getpid()}"
    made = ip("netns", "add", name)
    if made.returncode != 0:
        return False, f"`ip netns add` is refused here ({made.stderr.strip() or 'no reason'})"
    try:
        up = ip("-n", name, "link", "set", "lo", "up")
        if up.returncode != 0:
            return False, f"a namespace's loopback cannot be brought up ({up.stderr.strip()})"
    finally:
        ip("netns", "delete", name)
    return True, "`ip netns` is usable here"


@dataclass
class Isolation:
    """Where the replicas run: each in a network namespace of its own, or on host ports."""

    mode: str  # auto | netns | ports, as asked
    netns: bool = False  # as decided
    why: str = ""
    namespaces: list[str] = field(default_factory=list)  # made by the example, deleted by it
    deleted: list[str] = field(default_factory=list)

    def add(self, name: str) -> None:
        for args in (("netns", "add", name), ("-n", name, "link", "set", "lo", "up")):
            done = ip(*args)
            if done.returncode != 0:
                raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
            if args[1] == "add":
                self.namespaces.append(name)

    def delete_all(self) -> None:
        self.deleted.extend(self.namespaces)
        for name in self.namespaces:
            ip("netns", "delete", name)
        self.namespaces.clear()


# -- load -------------------------------------------------------------------------------------


@dataclass
class Load:
    """A bounded load through Traefik: one request every ``interval`` s per thread, for at
    most ``limit`` s; one request in ten carries a missing reading (-1)."""

    url: str
    threads: int = 2
    interval: float = 0.02
    limit: float = 150.0
    log: list[tuple[float, int, str]] = field(default_factory=list)  # (sent, status, release)
    stop: threading.Event = field(default_factory=threading.Event)
    workers: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        for i in range(self.threads):
            t = threading.Thread(target=self._run, args=(i,), daemon=True, name=f"load-{i}")
            t.start()
            self.workers.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.workers:
            t.join(15)

    def _run(self, seed: int) -> None:
        end = time.monotonic() + self.limit
        n = seed
        with httpx.Client(timeout=10) as c:
            while not self.stop.is_set() and time.monotonic() < end:
                n += 1
                row = MISSING_ROW if n % MISSING_SHARE == 0 else ROW
                sent = time.time()
                try:
                    r = c.post(f"{self.url}/models/{MODEL}/predict", json={"instances": [row]})
                    self.log.append((sent, r.status_code, r.headers.get("x-backout-release", "")))
                except httpx.HTTPError:
                    self.log.append((sent, 0, ""))
                self.stop.wait(self.interval)

    def since(self, t: float) -> set[str]:
        return {release for sent, _, release in list(self.log) if sent >= t}


# -- the pieces ---------------------------------------------------------------------------------


def train(folder: Path) -> dict[str, Path]:
    """The two releases, as joblib files: a logistic regression, and the same behind a log
    transform (a feature change that breaks on the -1 of a missing reading)."""
    import joblib
    import numpy as np
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    x, y = load_iris(return_X_y=True)
    x = np.asarray(x, dtype=np.float64)
    models = {
        GOOD: LogisticRegression(C=1.0, max_iter=500).fit(x, y),
        BAD: make_pipeline(FunctionTransformer(np.log1p), LogisticRegression(max_iter=500)).fit(
            x, y
        ),
    }
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for version, model in models.items():
        out[version] = folder / f"iris-{version}.joblib"
        joblib.dump(model, out[version])
    return out


def prometheus_config(path: Path, traefik_api: str, replicas: list[str]) -> None:
    path.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: traefik\n    static_configs: [{{targets: ['{traefik_api}']}}]\n"
        "  - job_name: backout\n"
        f"    static_configs: [{{targets: [{', '.join(repr(r) for r in replicas)}]}}]\n"
    )


def traefik_config(path: Path, replicas: list[str]) -> None:
    """Traefik as a plain load balancer over the replicas; backout steers behind it."""
    servers = "".join(f"          - url: http://{r}\n" for r in replicas)
    path.write_text(
        "http:\n"
        "  routers:\n"
        "    backout:\n"
        "      rule: PathPrefix(`/`)\n"
        "      entryPoints: [web]\n"
        "      service: replicas\n"
        "  services:\n"
        "    replicas:\n"
        "      loadBalancer:\n"
        "        healthCheck: {path: /v2/health/ready, interval: 1s, timeout: 1s}\n"
        "        servers:\n" + servers
    )


def answers(url: str) -> bool:
    r = httpx.post(f"{url}/models/{MODEL}/predict", json={"instances": [ROW]}, timeout=3)
    return r.status_code == 200


def said_ready(proc: Proc) -> bool:
    return "ready" in proc.tail()


def promql(url: str, query: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{url}/api/v1/query", params={"query": query}, timeout=5)
    result: list[dict[str, Any]] = r.json()["data"]["result"]
    return result


# -- the story -----------------------------------------------------------------------------------


class Story:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.lines: list[str] = []

    def say(self, text: str) -> None:
        line = f"[{time.monotonic() - self.t0:5.1f} s] {text}"
        self.lines.append(line)
        print(line, flush=True)


def run(work: Path, story: Story, procs: Procs, isolation: Isolation, out: dict[str, Any]) -> None:
    from tests.postgres_server import PostgresServer

    from backout.control.controller import Controller
    from backout.control.lease import current
    from backout.control.policy import parse_policy
    from backout.proof.contracts import infer_sklearn_contract
    from backout.registry.manifest import Runtime, RuntimeKind
    from backout.registry.objectstore import open_blobs
    from backout.registry.releases import Registry
    from backout.store import audit, open_store
    from backout.traffic.traefik import find_traefik, static_args

    usable, why = netns_usable() if isolation.mode != "ports" else (False, "--isolation ports")
    if isolation.mode == "netns" and not usable:
        raise RuntimeError(f"--isolation netns, but {why}")
    isolation.netns, isolation.why = usable, why
    out["replica_isolation"] = "netns" if usable else "loopback-ports"
    if usable:
        story.say(f"replicas: each in a network namespace of its own ({why}), listening on "
                  "its own 127.0.0.1:8000, joined to the host's loopback by a relay")  # fmt: skip
    else:
        story.say(f"replicas: each on its own 127.0.0.1 port ({why})")

    pg = PostgresServer().start()
    try:
        pid_file = pg.data / "postmaster.pid"
        procs.note(int(pid_file.read_text().split()[0]))
        url = pg.create_database()
        story.say(f"PostgreSQL on 127.0.0.1:{pg.port} (the store all processes share)")

        s3_port = free_port()
        s3 = f"http://127.0.0.1:{s3_port}"
        env = {**CREDENTIALS, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
               "PYTHONPATH": str(ROOT / "src")}  # fmt: skip
        moto = procs.start("s3", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                  "-p", str(s3_port)], env=env)  # fmt: skip
        for k, v in CREDENTIALS.items():
            os.environ.setdefault(k, v)  # this process registers into S3 too
        artifacts = "s3://backout-models/releases"
        wait_for("the S3 endpoint", lambda: httpx.get(s3, timeout=1).status_code < 500,
                 limit=30, proc=moto)  # fmt: skip
        import boto3

        boto3.client("s3", endpoint_url=s3, region_name="us-east-1").create_bucket(
            Bucket="backout-models"
        )
        story.say(f"S3 endpoint (moto) on {s3}, artifacts at {artifacts}")

        store = open_store(url, create=True)
        blobs = open_blobs(artifacts, endpoint=s3, cache_dir=work / "cache-cli")
        registry = Registry(store, blobs)

        # Everything else starts at once; the registration below overlaps their start-up.
        ports = [free_port() for _ in range(REPLICAS)]
        replicas = [f"127.0.0.1:{p}" for p in ports]
        base = [sys.executable, "-m", "backout", "--store", url, "--artifacts", artifacts,
                "--s3-endpoint", s3]  # fmt: skip
        gateways: list[Proc] = []
        relays: list[Proc] = []
        for i, port in enumerate(ports):
            inner, prefix = port, []
            if isolation.netns:
                # The replica's 127.0.0.1 is its namespace's own: the relay carries Traefik's
                # and Prometheus's connections in, and the replica's to PostgreSQL and S3 out.
                ns = f"backout-scale-{os.getpid()}-{i}"
                isolation.add(ns)
                relays.append(procs.start(f"relay-{i}", [
                    sys.executable, str(HERE / "netns_relay.py"), ns, "--expose",
                    f"{port}:{NS_PORT}", "--reach", str(pg.port), "--reach", str(s3_port),
                ]))  # fmt: skip
                inner, prefix = NS_PORT, ["ip", "netns", "exec", ns]
            argv = [*prefix, *base, "--artifact-cache", str(work / f"replica-{i}" / "cache"),
                    "serve", "--gateway-only", "--workers", "1", "--host", "127.0.0.1",
                    "--port", str(inner), "--no-access-log"]  # fmt: skip
            gateways.append(procs.start(f"replica-{i}", argv, env=env, cwd=work))
        controllers: dict[int, Proc] = {}
        for i in range(CONTROLLERS):
            argv = [*base, "--artifact-cache", str(work / f"controller-{i}" / "cache"), "serve",
                    "--controller-only", "--lease", f"{LEASE_S:g}"]  # fmt: skip
            p = procs.start(f"controller-{i}", argv, env=env, cwd=work)
            controllers[p.pid] = p
        dynamic = work / "traefik"
        dynamic.mkdir()
        traefik_config(dynamic / "replicas.yaml", replicas)
        web, api = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        traefik = procs.start("traefik", [find_traefik(), *static_args(
            web=web, api=api, config_dir=dynamic)])  # fmt: skip
        prom_port = free_port()
        prom_url = f"http://127.0.0.1:{prom_port}"
        prometheus_config(work / "prometheus.yml", api, replicas)
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed: run `make prometheus` "
                               "(bash scripts/ensure-prometheus.sh)")  # fmt: skip
        prom = procs.start("prometheus", [
            binary, f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn",
        ])  # fmt: skip

        files = train(work / "models")
        for version, path in files.items():
            import joblib

            registry.register(MODEL, version, [path], runtime=Runtime(kind=RuntimeKind.SKLEARN),
                              contract=infer_sklearn_contract(joblib.load(path)),
                              actor="ana")  # fmt: skip
        story.say(f"registered {MODEL}@{GOOD} and {MODEL}@{BAD} (scikit-learn) into S3")
        ctl = Controller(store, registry, actor="ana")
        ctl.set_policy(MODEL, parse_policy(POLICY), source="examples/scale", actor="ana")
        ctl.deploy(MODEL, GOOD, actor="ana")  # the first release goes live at once
        story.say(f"deployed {MODEL}@{GOOD}: live on 100%")

        for relay in relays:
            wait_for(f"{relay.name} listening", partial(said_ready, relay), limit=30, proc=relay)
        for g, r in zip(gateways, replicas, strict=True):
            wait_for(f"{g.name} answering", partial(answers, f"http://{r}"), limit=120, proc=g,
                     every=0.2)  # fmt: skip
        where = ""
        if isolation.netns:  # the kernel's word for where each replica runs
            found = [ip("netns", "identify", str(g.pid)).stdout.strip() for g in gateways]
            out["replica_namespaces"] = found
            where = " (relays into namespaces " + ", ".join(found) + ")"
        story.say(f"{REPLICAS} gateway replicas answer with {MODEL}@{GOOD} at "
                  + ", ".join(replicas) + where)  # fmt: skip
        wait_for("Traefik answering", lambda: answers(f"http://{web}"), limit=60, proc=traefik)
        story.say(f"Traefik on {web} balances over the replicas (API and metrics on {api})")
        held = wait_for("a controller taking the lease",
                        lambda: (h := current(store)) is not None and h.live(time.time()) and h,
                        limit=60)  # fmt: skip
        leader = controllers[int(held.holder.rsplit(":", 1)[1])]
        story.say(f"controllers: {leader.name} leads (lease {LEASE_S:g} s), the other waits")
        wait_for("Prometheus scraping", lambda: len(promql(prom_url, "up == 1")) == REPLICAS + 1,
                 limit=60, proc=prom, every=0.3)  # fmt: skip
        story.say(f"Prometheus on {prom_url} scrapes Traefik and the {REPLICAS} replicas")
        procs.note_descendants()

        with Load(f"http://{web}") as load:
            time.sleep(2.0)
            deployed = time.time()
            rollout = ctl.deploy(MODEL, BAD, actor="ana", reason="log-scaled features")
            story.say(f"rollout of {MODEL}@{BAD} under load (steps 25/50/100): the deploy "
                      f"took {time.time() - deployed:.1f} s (it loads and probes the release)")  # fmt: skip

            def rolled_back() -> Any:
                ops = ctl.operations(MODEL, limit=1)
                return ops and ops[0].kind == "rollback" and ops[0]

            rollback = wait_for("the regression being caught", rolled_back, limit=90)
            detected = rollback.started_at - rollout.started_at
            out["detect_s"] = detected
            story.say(f"caught {detected:.1f} s after the canary took traffic: {rollback.reason}")

            def step_passed() -> bool:
                with store.read() as conn:
                    events = audit.list_events(conn, MODEL, kinds=["phase.rolling-back"])
                return any(e.data.get("operation") == rollback.id
                           and e.data.get("event") == "rollback-step-passed" for e in events)  # fmt: skip

            wait_for("the rollback's first step", step_passed, limit=60, every=0.05)
            held = current(store)
            assert held is not None
            leader = controllers[int(held.holder.rsplit(":", 1)[1])]
            killed = time.time()
            procs.kill9(leader)
            story.say(f"rollback step 1 passed; kill -9 {leader.name} (pid {leader.pid}), "
                      f"the leader, mid-rollback")  # fmt: skip

            def taken_over() -> Any:
                h = current(store)
                return h is not None and h.holder != held.holder and h

            new = wait_for("the standby taking over", taken_over, limit=LEASE_S + 30)
            takeover = time.time() - killed
            out["takeover_s"] = takeover
            heir = controllers[int(new.holder.rsplit(":", 1)[1])]
            story.say(f"{heir.name} took the lease {takeover:.1f} s later "
                      f"(generation {new.generation}) and goes on from the stored step")  # fmt: skip

            def ended() -> Any:
                op = ctl.operation(rollback.id)
                return op.ended_at is not None and op

            done = wait_for("the rollback ending", ended, limit=60)
            out["outcome"] = done.outcome
            out["rollout_outcome"] = ctl.operation(rollout.id).outcome
            out["recover_s"] = (done.ended_at or 0) - rollback.started_at
            story.say(f"rollback {done.outcome} {out['recover_s']:.1f} s after it started; "
                      f"{MODEL}@{BAD} ended {out['rollout_outcome']}")  # fmt: skip
            time.sleep(1.0)
            after = time.time()
            time.sleep(2.0)
            out["served_after"] = sorted(load.since(after))
        log = list(load.log)
        canary = [s for _, s, rel in log if s != 200 and rel == f"{MODEL}@{BAD}"]
        failed = [s for _, s, rel in log if s != 200 and rel != f"{MODEL}@{BAD}"]
        out.update(requests=len(log), failed=len(failed), canary_errors=len(canary))
        story.say(f"load: {len(log)} requests through Traefik; {len(canary)} failed on the "
                  f"regressed canary itself (the regression), {len(failed)} failed otherwise")  # fmt: skip
        by_service = promql(prom_url, "sum by (service) (traefik_service_requests_total)")
        by_replica = promql(prom_url, "sum by (instance) (backout_requests_total)")
        out["prometheus_replicas"] = {r["metric"].get("instance", ""): float(r["value"][1])
                                      for r in by_replica}  # fmt: skip
        story.say("Prometheus: Traefik counted " + ", ".join(
            f"{r['metric'].get('service', '?')}={float(r['value'][1]):.0f}" for r in by_service
        ) + "; replicas answered " + ", ".join(
            f"{k}={v:.0f}" for k, v in sorted(out["prometheus_replicas"].items())))  # fmt: skip
        ctl.close()
        store.dispose()
    finally:
        procs.stop_all()
        pg.stop()
        isolation.delete_all()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, help="write the outcome here as JSON")
    p.add_argument("--keep-logs", action="store_true", help="keep the processes' logs folder")
    p.add_argument("--isolation", choices=["auto", "netns", "ports"], default="auto",
                   help="replicas in network namespaces of their own (auto: when `ip netns` "
                   "works here) or on host loopback ports")  # fmt: skip
    args = p.parse_args(argv)
    # SIGTERM (a test's timeout, a supervisor) stops everything as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    work = Path(tempfile.mkdtemp(prefix="backout-scale-"))
    logs = work / "logs"
    logs.mkdir()
    story, procs = Story(), Procs(logs)
    out: dict[str, Any] = {"ok": False}
    code = 1
    isolation = Isolation(args.isolation)
    try:
        run(work, story, procs, isolation, out)
        out["ok"] = True
        code = 0
    except KeyboardInterrupt:
        story.say("interrupted: stopping everything")
        code = 130
    except Exception as exc:  # the story ends with the reason, after everything is stopped
        out["error"] = str(exc)
        story.say(f"failed: {exc}")
    finally:
        procs.stop_all()
        isolation.delete_all()
        out["namespaces_deleted"] = isolation.deleted
        out["alive_after"] = procs.alive()
        out["pids"] = sorted(procs.seen)
        story.say(f"stopped {len(procs.started)} process groups ({len(procs.seen)} pids); "
                  f"still running: {out['alive_after'] or 'none'}")  # fmt: skip
        if args.json:
            args.json.write_text(json.dumps(out, indent=2))
        if args.keep_logs or not out["ok"]:
            print(f"logs: {logs}")
        else:
            with contextlib.suppress(OSError):
                shutil.rmtree(work)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
