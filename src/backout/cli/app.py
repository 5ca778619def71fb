"""The ``backout`` command line (Typer and Rich).

Every command that prints data takes ``--json``. Errors print one line that says what was
wrong and how to fix it, and exit non-zero; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import getpass
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import click
import orjson
import typer
from rich.console import Console
from rich.table import Table

from backout.errors import BackoutError, ConfigError

app = typer.Typer(
    name="backout",
    help="The safe way back for machine-learning models: releases, traffic, rollouts, rollbacks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


@dataclass
class Settings:
    """Global options, shared by every command through the Typer context."""

    store_url: str | None = None
    artifacts: Path | None = None
    actor: str = "unknown"
    debug: bool = False
    _cache: dict[str, Any] = field(default_factory=dict)

    def home(self) -> Path:
        return Path(os.environ.get("BACKOUT_HOME", ".backout"))

    def artifacts_root(self) -> Path:
        if self.artifacts is not None:
            return self.artifacts
        env = os.environ.get("BACKOUT_ARTIFACTS")
        return Path(env) if env else self.home() / "artifacts"

    def url(self) -> str:
        from backout.store import default_url

        return self.store_url or os.environ.get("BACKOUT_STORE") or default_url(self.home())

    def store(self) -> Any:
        if "store" not in self._cache:
            from backout.store import open_store

            self._cache["store"] = open_store(self.url())
        return self._cache["store"]

    def close(self) -> None:
        """Release database connections (called when the command's context closes)."""
        store = self._cache.pop("store", None)
        if store is not None:
            store.dispose()

    def deployments(self) -> Any:
        if "deployments" not in self._cache:
            from backout.traffic.deployments import Deployments

            self._cache["deployments"] = Deployments(self.store(), self.registry())
        return self._cache["deployments"]

    def controller(self) -> Any:
        if "controller" not in self._cache:
            from backout.control.controller import Controller

            self._cache["controller"] = Controller(self.store(), self.registry(), actor=self.actor)
        return self._cache["controller"]

    def registry(self) -> Any:
        if "registry" not in self._cache:
            from backout.registry.artifacts import LocalBlobStore
            from backout.registry.releases import Registry

            self._cache["registry"] = Registry(self.store(), LocalBlobStore(self.artifacts_root()))
        return self._cache["registry"]


def _settings(ctx: typer.Context) -> Settings:
    obj = ctx.find_root().obj
    assert isinstance(obj, Settings)
    return obj


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


@app.callback()
def _root(
    ctx: typer.Context,
    store: Annotated[
        str | None,
        typer.Option(
            "--store", envvar="BACKOUT_STORE", help="Store URL (default: SQLite under .backout/)."
        ),
    ] = None,
    artifacts: Annotated[
        Path | None,
        typer.Option("--artifacts", envvar="BACKOUT_ARTIFACTS", help="Artifact folder."),
    ] = None,
    actor: Annotated[
        str | None,
        typer.Option("--actor", envvar="BACKOUT_ACTOR", help="Who is acting, for the audit log."),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    """backout keeps every model release, serves traffic between them, and rolls back safely."""
    ctx.obj = Settings(store_url=store, artifacts=artifacts, actor=actor or _whoami(), debug=debug)
    ctx.call_on_close(ctx.obj.close)


def _short(text: str, n: int = 48) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _whoami() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in containers without a passwd entry
        return "unknown"


# -- init ----------------------------------------------------------------------------------


@app.command()
def init(ctx: typer.Context, json: JsonOpt = False) -> None:
    """Create (or migrate) the store and the artifact folder."""
    from backout.store import redact_url

    s = _settings(ctx)
    store = s.store()
    s.artifacts_root().mkdir(parents=True, exist_ok=True)
    info = {"store": redact_url(store.url), "artifacts": str(s.artifacts_root())}
    if json:
        _print_json(info)
    else:
        out.print(f"store      {info['store']}\nartifacts  {info['artifacts']}\nready.")


# -- traffic -------------------------------------------------------------------------------


def _split(item: str, sep: str, what: str, example: str) -> tuple[str, str]:
    left, found, right = item.partition(sep)
    if not found or not left or not right:
        raise ConfigError(f"{what} {item!r} must look like {example}")
    return left, right


def _percent(value: str, item: str) -> float:
    try:
        return float(value.rstrip("%"))
    except ValueError as exc:
        raise ConfigError(f"{item!r}: {value!r} is not a percentage") from exc


@app.command()
def traffic(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model name.")],
    weights: Annotated[
        list[str], typer.Argument(help="VERSION=PERCENT for each release; they sum to 100.")
    ],
    shadow: Annotated[
        str | None, typer.Option(help="VERSION:PERCENT mirrored to a shadow release (0 to stop).")
    ] = None,
    pin: Annotated[
        list[str] | None,
        typer.Option(
            help="KEY=VERSION: requests with this routing key always go to VERSION (repeatable)."
        ),
    ] = None,
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")] = "",
    force: Annotated[
        bool, typer.Option("--force", help="Override a running rollout or rollback (pauses it).")
    ] = False,
    json: JsonOpt = False,
) -> None:
    """Set a model's traffic by hand: a new route table, validated and recorded."""
    from backout.traffic.deployments import describe

    s = _settings(ctx)
    parsed = {}
    for item in weights:
        version, pct = _split(item, "=", "weight", "1.4.0=90")
        parsed[version] = _percent(pct, item)
    shadow_spec = None
    if shadow is not None:
        version, pct = _split(shadow, ":", "--shadow", "1.5.0:10")
        shadow_spec = (version, _percent(pct, shadow))
    pins = dict(_split(p, "=", "--pin", "acme=1.4.0") for p in pin) if pin else None
    ctl = s.controller()
    ctl._refuse_if_frozen(model)
    # Bad input is refused before anything else: --force must not pause a rollout for a
    # route change that is then rejected.
    s.deployments().check_traffic(model, parsed, shadow=shadow_spec, pins=pins)
    op = ctl.active(model)
    if op is not None and op.phase.value != "paused":
        from backout.errors import OperationInProgress

        if not force:
            raise OperationInProgress(
                f"{model} has a {op.kind} in progress ({op.phase.value}): traffic set by hand would "
                "fight it; `backout pause` it first or pass --force (which pauses it)"
            )
        ctl.pause(
            model, actor=s.actor, reason=f"traffic forced by hand: {' '.join(weights)}", forced=True
        )
    table = s.deployments().set_traffic(
        model, parsed, shadow=shadow_spec, pins=pins, actor=s.actor, reason=reason
    )
    if json:
        _print_json(table.to_dict() | {"weights": {v: w / 100 for v, w in table.weights.items()}})
    else:
        out.print(f"{describe(table)} (generation {table.generation})")


@app.command()
def deploy(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="MODEL@VERSION to deploy.")],
    policy: Annotated[
        Path | None,
        typer.Option(help="Policy file (YAML) to run the rollout by; kept as the model's policy."),
    ] = None,
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")] = "",
    json: JsonOpt = False,
) -> None:
    """Roll a release out in gated steps (on a model with nothing live: make it live)."""
    from backout.registry.manifest import parse_ref

    s = _settings(ctx)
    model, version = parse_ref(ref)
    ctl = s.controller()
    pol = None
    if policy is not None:
        from backout.control.policy import load_policy

        pol = load_policy(policy)
        ctl.set_policy(model, pol, source=str(policy), actor=s.actor)
    op = ctl.deploy(model, version, actor=s.actor, policy=pol, reason=reason)
    if json:
        _print_json(op.to_dict())
    elif op.phase.value == "succeeded":
        out.print(f"{ref} is live at 100% (first release of {model}; marked known-good)")
    else:
        out.print(
            f"rollout of {ref} started: {_weights(op.weights)} — watch it with `backout status {model}`"
        )


def _weights(weights: dict[str, float]) -> str:
    return " ".join(f"{v}={w:g}%" for v, w in weights.items())


@app.command()
def rollback(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model to roll back.")],
    to: Annotated[
        str | None,
        typer.Option(
            "--to", help="Target version (default: the policy's, usually the last known-good)."
        ),
    ] = None,
    emergency: Annotated[
        bool, typer.Option("--emergency", help="All traffic to the target in one step.")
    ] = False,
    staged: Annotated[
        bool,
        typer.Option("--staged", help="Step back behind gates even if the policy says emergency."),
    ] = False,
    reason: Annotated[
        str, typer.Option(help="Why, for the audit log and the incident report.")
    ] = "",
    json: JsonOpt = False,
) -> None:
    """Roll MODEL back to a known-good release, then verify it."""
    if emergency and staged:
        raise ConfigError("--emergency and --staged contradict each other: pick one")
    s = _settings(ctx)
    op = s.controller().rollback(
        model,
        actor=s.actor,
        to=to,
        emergency=True if emergency else (False if staged else None),
        reason=reason,
    )
    if json:
        _print_json(op.to_dict())
    else:
        mode = op.state.get("mode", "")
        out.print(
            f"{mode} rollback of {model} from {op.stable} to {op.target} started: {_weights(op.weights)} ({op.phase.value})"
        )
        if op.state.get("warm"):
            out.print(op.state["warm"])


def _op_command(name: str, doc: str) -> None:
    def command(
        ctx: typer.Context,
        model: Annotated[str, typer.Argument(help="Model name.")],
        reason: Annotated[str, typer.Option(help="Why, for the audit log.")] = "",
        json: JsonOpt = False,
    ) -> None:
        s = _settings(ctx)
        op = getattr(s.controller(), name)(model, actor=s.actor, reason=reason)
        if json:
            _print_json(op.to_dict())
        else:
            out.print(f"{model} {op.kind}: {op.phase.value} ({_weights(op.weights)})")

    command.__doc__ = doc
    app.command(name)(command)


_op_command("abort", "Stop the rollout or rollback: traffic returns to where it started.")
_op_command("promote", "Skip a rollout's remaining steps: the candidate takes 100% and completes.")
_op_command("pause", "Hold the rollout or rollback where it is.")
_op_command("resume", "Resume a paused operation, or approve one awaiting a decision.")


@app.command()
def unfreeze(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model name.")],
    reason: Annotated[str, typer.Option(help="Why it is safe to move traffic again.")],
) -> None:
    """Lift a freeze. Only this command does."""
    s = _settings(ctx)
    s.controller().unfreeze(model, actor=s.actor, reason=reason)
    out.print(f"{model} is no longer frozen")


# -- serve ---------------------------------------------------------------------------------


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Worker processes (default: one per core).")
    ] = None,
    max_body_bytes: Annotated[
        int, typer.Option(min=1, help="Largest request body accepted (413 above).")
    ] = 1 << 20,
    warm_rollback_points: Annotated[
        int, typer.Option(min=0, help="Known-good releases per model kept loaded.")
    ] = 2,
    access_log: Annotated[
        bool, typer.Option(help="Write a structured access log line per request to stderr.")
    ] = True,
    controller: Annotated[
        bool, typer.Option(help="Run the controller beside the gateway (one acts per store).")
    ] = True,
) -> None:
    """Run the gateway (N worker processes) and the controller beside it."""
    import tempfile

    import uvicorn

    s = _settings(ctx)
    s.store()  # migrate once here, before the workers start
    s.close()
    os.environ["BACKOUT_STORE"] = s.url()
    os.environ["BACKOUT_ARTIFACTS"] = str(s.artifacts_root().resolve())
    os.environ["BACKOUT_MAX_BODY_BYTES"] = str(max_body_bytes)
    os.environ["BACKOUT_WARM_ROLLBACK_POINTS"] = str(warm_rollback_points)
    os.environ["BACKOUT_ACCESS_LOG"] = "1" if access_log else ""
    metrics_dir = tempfile.mkdtemp(prefix="backout-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    n = workers or os.cpu_count() or 1
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "auto"
    err.print(
        f"backout gateway on http://{host}:{port} with {n} worker(s); store {_redacted(s.url())}"
    )
    stop = threading.Event()
    if controller:
        from backout.control.controller import Controller

        ctl = Controller(s.store(), s.registry(), actor="controller")
        threading.Thread(
            target=ctl.run, args=(stop,), name="backout-controller", daemon=True
        ).start()
    try:
        uvicorn.run(
            "backout.serving.app:create_app", factory=True, host=host, port=port, workers=n,
            http="httptools", loop=loop, access_log=False, log_level="warning",
        )  # fmt: skip
    finally:
        import shutil

        stop.set()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _redacted(url: str) -> str:
    from backout.store import redact_url

    return redact_url(url)


# -- status --------------------------------------------------------------------------------


@app.command()
def status(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Argument(help="Only this model.")] = None,
    window: Annotated[float, typer.Option(help="Seconds of telemetry to summarise.")] = 60.0,
    json: JsonOpt = False,
) -> None:
    """Live state: route table, and each release's traffic over the last WINDOW seconds."""
    import time as _time

    from backout.telemetry.batches import latency_quantile, read_batches, sum_batches
    from backout.traffic.deployments import describe

    s = _settings(ctx)
    dep = s.deployments()
    models = [model] if model else dep.models()
    docs = []
    for m in models:
        table = dep.require(m)
        since = _time.time() - window
        per_release = {
            v: sum_batches(bs) for v, bs in read_batches(s.store(), m, since=since).items()
        }
        releases = []
        for v in sorted(set(table.weights) | set(per_release)):
            b = per_release.get(v)
            releases.append({
                "version": v,
                "weight": table.weights.get(v, 0) / 100,
                "requests": b.requests if b else 0,
                "error_rate": (b.error_count / b.requests) if b and b.requests else None,
                "p50_ms": latency_quantile(b.latency, 0.5) * 1000 if b and b.latency else None,
                "p99_ms": latency_quantile(b.latency, 0.99) * 1000 if b and b.latency else None,
            })  # fmt: skip
        ctl = s.controller()
        op = ctl.active(m)
        op_doc = None
        if op is not None:
            steps = op.policy.rollout.steps if op.kind == "rollout" else op.policy.rollback.steps
            op_doc = op.to_dict() | {
                "seconds_in_step": round(_time.time() - op.step_started_at, 1),
                "steps": list(steps),
            }
        docs.append(
            {
                "model": m,
                "generation": table.generation,
                "routes": describe(table),
                "table": table.to_dict(),
                "releases": releases,
                "operation": op_doc,
                "frozen": ctl.frozen(m),
            }
        )
    if json:
        _print_json(docs if model is None else docs[0])
        return
    for d in docs:
        out.print(f"[bold]{d['routes']}[/bold]  (generation {d['generation']})")
        if d["frozen"]:
            out.print(
                f"[bold red]FROZEN[/bold red]: {d['frozen']} — lift with `backout unfreeze {d['model']} --reason ...`"
            )
        op = d["operation"]
        if op:
            out.print(
                f"{op['kind']} {op['stable']} → {op['target']}: [bold]{op['phase']}[/bold], step {op['step'] + 1} of "
                f"{len(op['steps'])}, {op['seconds_in_step']:g} s in step"
            )
            gate = op["state"].get("last_gate")
            if gate:
                out.print(f"  gate ({gate['alpha']:g} family-wise): [bold]{gate['verdict']}[/bold]")
                for j in gate.get("judgements", []):
                    out.print(f"    {j['judge']:<14} {j['verdict']:<12} {j['summary']}")
        t = Table(box=None, header_style="bold")
        for col in ("release", "weight", f"requests/{window:g}s", "errors", "p50 ms", "p99 ms"):
            t.add_column(col, justify="right" if col != "release" else "left")
        for r in d["releases"]:
            t.add_row(
                r["version"], f"{r['weight']:g}%", f"{r['requests']:,}",
                "-" if r["error_rate"] is None else f"{r['error_rate']:.2%}",
                "-" if r["p50_ms"] is None else f"{r['p50_ms']:.2f}",
                "-" if r["p99_ms"] is None else f"{r['p99_ms']:.2f}",
            )  # fmt: skip
        out.print(t)


# -- history -------------------------------------------------------------------------------


@app.command()
def history(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Argument(help="Only this model's events.")] = None,
    verify: Annotated[
        bool, typer.Option("--verify", help="Check the hash chain of the whole log.")
    ] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the newest N events.")] = None,
    json: JsonOpt = False,
) -> None:
    """The audit log: who did what, when and why. --verify checks its hash chain."""
    from backout.store import audit

    store = _settings(ctx).store()
    with store.read() as conn:
        events = audit.list_events(conn, model)
        problems = audit.verify_chain(conn) if verify else []
    if limit is not None:
        events = events[-limit:]
    if json:
        doc: dict[str, Any] = {"events": [e.to_dict() for e in events]}
        if verify:
            doc["chain"] = {
                "ok": not problems,
                "problems": [{"seq": p.seq, "problem": p.problem} for p in problems],
            }
        _print_json(doc)
    else:
        t = Table(box=None, header_style="bold")
        for col in ("#", "at (UTC)", "model", "event", "actor", "reason"):
            t.add_column(col)
        for e in events:
            t.add_row(
                str(e.seq),
                f"{e.at:%Y-%m-%d %H:%M:%S}",
                e.model or "",
                e.kind,
                e.actor,
                _short(e.reason, 60),
            )
        out.print(t)
        if verify:
            if problems:
                for p in problems:
                    err.print(f"event {p.seq}: {p.problem}")
            else:
                out.print(f"chain verified: {len(events)} event(s), hashes intact")
    if problems:
        raise typer.Exit(1)


# Commands that live in their own modules: proof (consumers, compat, replay, drill, demo),
# policy check, and incident reports.
from backout.cli import proof, release  # noqa: E402, F401
from backout.cli.policy import policy_app  # noqa: E402
from backout.cli.report import report_command  # noqa: E402

app.add_typer(policy_app, name="policy")
app.command("report")(report_command)

# -- entry point ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: run the app and turn errors into one line and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        rc = app(args=args, prog_name="backout", standalone_mode=False)
    except BackoutError as exc:
        if debug:
            raise
        err.print(f"error: {exc.message}", markup=False)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        err.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    sys.exit(rc if isinstance(rc, int) else 0)
