"""Operations, started and steered: deploy, rollback, abort, promote, pause, resume, freeze,
unfreeze.

For the releaser and the on-call responder: each is one call into the controller, printed
as one line (or the operation as JSON).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from backout.cli.output import JsonOpt, out, print_json, settings
from backout.errors import ConfigError


def deploy(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="MODEL@VERSION to deploy.")],
    policy: Annotated[
        Path | None,
        typer.Option(help="Policy file (YAML) to run the rollout by; kept as the model's policy."),
    ] = None,
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")] = "",
    override_bad: Annotated[
        bool,
        typer.Option(
            "--override-bad",
            help="Deploy a release marked bad anyway (needs --reason; recorded in the audit log).",
        ),
    ] = False,
    json: JsonOpt = False,
) -> None:
    """Roll a release out in gated steps (on a model with nothing live: make it live)."""
    from backout.registry.manifest import parse_ref

    s = settings(ctx)
    model, version = parse_ref(ref)
    pol = None
    if policy is not None:  # the file is checked before the store is opened
        from backout.control.policy import load_policy

        pol = load_policy(policy)
    if (remote := s.remote()) is not None:
        body = {"version": version, "reason": reason, "override_bad": override_bad,
                "policy": policy.read_text(encoding="utf-8") if policy is not None else None}  # fmt: skip
        op = remote.post(f"/models/{model}/deploy", body)
    else:
        ctl = s.controller()
        if pol is not None:
            ctl.set_policy(model, pol, source=str(policy), actor=s.actor)
        op = ctl.deploy(
            model, version, actor=s.actor, policy=pol, reason=reason, override_bad=override_bad
        ).to_dict()
    if _waiting(op, json):
        return
    if json:
        print_json(op)
    elif op["phase"] == "succeeded":
        out.print(f"{ref} is live at 100% (first release of {model}; marked known-good)")
    else:
        out.print(
            f"rollout of {ref} started: {_weights(op['weights'])} — watch it with `backout status {model}`"
        )


def _waiting(doc: dict[str, Any], json: bool) -> bool:
    """Print an action the policy holds for an approver (remote mode): True if it is one."""
    req = doc.get("approval")
    if req is None:
        return False
    if json:
        print_json(doc)
    else:
        out.print(
            f"waiting for an approver: approval request {req['id']} ({req['why']}); an approver "
            f"decides it with POST /api/v1/models/{req['model']}/approvals/{req['id']}/approve"
        )
    return True


def _weights(weights: dict[str, float]) -> str:
    """``1.0.0=90% 1.1.0=10%``."""
    return " ".join(f"{v}={w:g}%" for v, w in weights.items())


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
    s = settings(ctx)
    mode = "emergency" if emergency else ("staged" if staged else None)
    if (remote := s.remote()) is not None:
        op = remote.post(f"/models/{model}/rollback", {"to": to, "mode": mode, "reason": reason})
    else:
        op = (
            s.controller()
            .rollback(
                model,
                actor=s.actor,
                to=to,
                emergency=True if emergency else (False if staged else None),
                reason=reason,
            )
            .to_dict()
        )
    if _waiting(op, json):
        return
    if json:
        print_json(op)
    else:
        out.print(
            f"{op['state']['mode']} rollback of {model} from {op['stable']} to {op['target']} started: {_weights(op['weights'])} ({op['phase']})"
        )
        if op["state"]["warm"]:
            out.print(op["state"]["warm"])


def _op_command(name: str, doc: str) -> Callable[..., None]:
    """The command ``name``: one call of the controller method of that name."""

    def command(
        ctx: typer.Context,
        model: Annotated[str, typer.Argument(help="Model name.")],
        reason: Annotated[str, typer.Option(help="Why, for the audit log.")] = "",
        json: JsonOpt = False,
    ) -> None:
        s = settings(ctx)
        if (remote := s.remote()) is not None:
            op = remote.post(f"/models/{model}/{name}", {"reason": reason})
        else:
            op = getattr(s.controller(), name)(model, actor=s.actor, reason=reason).to_dict()
        if _waiting(op, json):
            return
        if json:
            print_json(op)
        else:
            out.print(f"{model} {op['kind']}: {op['phase']} ({_weights(op['weights'])})")

    command.__doc__ = doc
    return command


abort = _op_command("abort", "Stop the rollout or rollback: traffic returns to where it started.")
promote = _op_command(
    "promote", "Skip a rollout's remaining steps: the candidate takes 100% and completes."
)
pause = _op_command("pause", "Hold the rollout or rollback where it is.")
resume = _op_command("resume", "Resume a paused operation, or approve one awaiting a decision.")


def unfreeze(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model name.")],
    reason: Annotated[str, typer.Option(help="Why it is safe to move traffic again.")],
) -> None:
    """Lift a freeze. Only this command does."""
    s = settings(ctx)
    if (remote := s.remote()) is not None:
        hint = remote.post(f"/models/{model}/unfreeze", {"reason": reason})["hint"]
    else:
        s.controller().unfreeze(model, actor=s.actor, reason=reason)
        hint = s.controller().split_hint(model)
    out.print(f"{model} is no longer frozen" + (f"; {hint}" if hint else ""))


def freeze(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model name.")],
    reason: Annotated[str, typer.Option(help="Why every traffic change must halt.")],
) -> None:
    """Freeze a model: halt every traffic change (a running operation holds) until unfreeze."""
    s = settings(ctx)
    if (remote := s.remote()) is not None:
        remote.post(f"/models/{model}/freeze", {"reason": reason})
    else:
        s.controller().freeze_by_hand(model, actor=s.actor, reason=reason)
    out.print(f"{model} is frozen: lift it with `backout unfreeze {model} --reason ...`")
