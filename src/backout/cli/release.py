"""Command line for releases: register, sign, list, show, verify, mark-good, mark-bad,
clear-bad, quarantine, delete.

Mounted on the ``backout`` app by :mod:`backout.cli.main`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from backout.cli.output import JsonOpt, err, out, print_json, settings, short
from backout.errors import ConfigError
from backout.registry.manifest import Contract, Lineage, RollbackPlan, RuntimeKind

release_app = typer.Typer(
    help="Register, list, show, verify and mark releases.", no_args_is_help=True
)


# -- release -------------------------------------------------------------------------------


def _read_json_file(path: Path, what: str) -> Any:
    from backout.configfile import MAX_JSON_BYTES, read_text_file

    text = read_text_file(path, what=f"{what} file", limit=MAX_JSON_BYTES)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{what} file {str(path)!r} is not valid JSON: {exc}") from exc


def _load_contract(path: Path) -> Contract:
    from backout.errors import InvalidContract

    data = _read_json_file(path, "contract")
    if not isinstance(data, dict) or not set(data) <= {"input", "output"}:
        raise InvalidContract(
            f"contract file {str(path)!r} must be a JSON object with 'input' and/or 'output' "
            "JSON Schemas"
        )
    return Contract(**data)


@release_app.command("register")
def release_register(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model name, e.g. fraud.")],
    version: Annotated[str, typer.Argument(help="Version: semver (1.4.0) or a safe tag.")],
    artifact: Annotated[
        list[Path], typer.Option("--artifact", "-a", help="A file of the release (repeatable).")
    ],
    runtime: Annotated[
        RuntimeKind, typer.Option(help="How the artifacts are served.")
    ] = RuntimeKind.SKLEARN,
    runtime_option: Annotated[
        list[str] | None,
        typer.Option("--runtime-option", "-o", help="KEY=VALUE for the runtime (repeatable)."),
    ] = None,
    contract: Annotated[
        Path | None, typer.Option(help="JSON file with input/output JSON Schemas.")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="JSON file with the release's config.")
    ] = None,
    changelog: Annotated[str, typer.Option(help="What changed in this release.")] = "",
    rollback_plan: Annotated[str, typer.Option(help="What to do if this release misbehaves.")] = "",
    rollback_target: Annotated[
        str | None, typer.Option(help="Default rollback target version.")
    ] = None,
    owner: Annotated[str, typer.Option(help="Who owns this release.")] = "",
    dataset: Annotated[str | None, typer.Option(help="Training data reference.")] = None,
    dataset_digest: Annotated[str | None, typer.Option(help="Training data digest.")] = None,
    code: Annotated[str | None, typer.Option(help="Code reference, e.g. a git commit.")] = None,
    parent: Annotated[str | None, typer.Option(help="The release this one replaces.")] = None,
    sign: Annotated[
        Path | None,
        typer.Option("--sign", help="Sign the manifest with this Ed25519 private key file."),
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Register MODEL@VERSION from its artifact files. Registered releases never change."""
    from backout.registry.manifest import Runtime
    from backout.registry.signing import load_private_key, require_trusted

    s = settings(ctx)
    # The key is read and checked before anything is registered: a bad or untrusted key
    # changes nothing.
    signer = load_private_key(sign) if sign is not None else None
    if signer is not None and s.remote() is None:
        with s.store().read() as conn:
            require_trusted(conn, signer)
    options: dict[str, Any] = {}
    for item in runtime_option or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--runtime-option {item!r} must look like KEY=VALUE")
        options[key] = value
    # The files are read and checked before the store is opened.
    contract_doc = _load_contract(contract) if contract else None
    config_doc = _read_json_file(config, "config") if config else None
    if s.remote() is not None:
        lineage = Lineage(dataset=dataset, dataset_digest=dataset_digest, code=code, parent=parent)
        _register_remote(s, model, version, artifact, {
            "runtime": runtime.value, "runtime_options": options,
            "contract": contract_doc.model_dump(mode="json") if contract_doc else None,
            "config": config_doc, "changelog": changelog, "rollback_plan": rollback_plan,
            "rollback_target": rollback_target, "owner": owner,
            "lineage": lineage.model_dump(mode="json")}, signer, json)  # fmt: skip
        return
    result = s.registry().register(
        model,
        version,
        artifact,
        runtime=Runtime(kind=runtime, options=options),
        contract=contract_doc,
        config=config_doc,
        changelog=changelog,
        rollback_plan=RollbackPlan(text=rollback_plan, target=rollback_target),
        lineage=Lineage(dataset=dataset, dataset_digest=dataset_digest, code=code, parent=parent),
        owner=owner,
        actor=s.actor,
    )
    rel = result.release
    signed = None
    if signer is not None:
        from backout.registry.signing import sign_release

        signed = sign_release(s.store(), rel.ref, signer, actor=s.actor)
    if json:
        extra = {"signature": signed.to_dict()} if signed else {}
        print_json({"created": result.created, **rel.to_dict(), **extra})
        return
    verb = "registered" if result.created else "already registered with identical content"
    out.print(
        f"{rel.ref} {verb}  manifest sha256:{rel.digest[:12]}…  {len(rel.manifest.artifacts)} artifact(s)"
        + (f"  signed by {signed.key}" if signed else "")
    )


def _register_remote(s: Any, model: str, version: str, files: list[Path], body: dict[str, Any],
                     signer: Any, json: bool) -> None:  # fmt: skip
    """``release register`` through the control API: the files go up in base64, and the
    manifest digest the API answers is signed here, where the private key is."""
    import base64

    from backout.errors import ArtifactError
    from backout.registry.signing import RELEASE_CONTEXT, key_id

    arts = []
    for f in files:
        if not f.exists():
            raise ArtifactError(f"artifact {str(f)!r} does not exist: check the path")
        try:
            data = f.read_bytes()
        except OSError as exc:
            raise ArtifactError(f"artifact {str(f)!r} cannot be read: {exc.strerror}") from exc
        arts.append({"path": f.name, "content_b64": base64.b64encode(data).decode()})
    doc = s.remote().put(f"/models/{model}/releases/{version}", body | {"artifacts": arts})
    signed = None
    if signer is not None:
        sig = signer.sign(RELEASE_CONTEXT + doc["digest"].encode()).hex()
        signed = s.remote().post(f"/models/{model}/releases/{version}/signatures",
                                 {"key_id": key_id(signer.public_key()), "signature": sig})  # fmt: skip
    if json:
        print_json(doc | ({"signature": signed} if signed else {}))
        return
    verb = "registered" if doc["created"] else "already registered with identical content"
    out.print(
        f"{doc['ref']} {verb}  manifest sha256:{doc['digest'][:12]}…  {len(doc['manifest']['artifacts'])} artifact(s)"
        + (f"  signed by {signed['key']}" if signed else "")
    )


@release_app.command("sign")
def release_sign(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="MODEL@VERSION")],
    key: Annotated[Path, typer.Option("--key", help="Ed25519 private key file.")],
    json: JsonOpt = False,
) -> None:
    """Sign a registered release's manifest digest with a trusted key."""
    from backout.registry.signing import load_private_key, sign_release

    s = settings(ctx)
    if (remote := s.remote()) is not None:  # signed here, where the private key is
        from backout.registry.manifest import parse_ref
        from backout.registry.signing import RELEASE_CONTEXT, key_id

        model, version = parse_ref(ref)
        signer = load_private_key(key)
        digest = remote.get(f"/models/{model}/releases/{version}")["digest"]
        doc = remote.post(f"/models/{model}/releases/{version}/signatures",
                          {"key_id": key_id(signer.public_key()),
                           "signature": signer.sign(RELEASE_CONTEXT + digest.encode()).hex()})  # fmt: skip
    else:
        doc = sign_release(s.store(), ref, load_private_key(key), actor=s.actor).to_dict()
    if json:
        print_json(doc)
    else:
        out.print(
            f"{doc['ref']} signed by trusted key {doc['key']}  manifest sha256:{doc['digest'][:12]}…"
        )


@release_app.command("list")
def release_list(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Argument(help="Only this model.")] = None,
    known_good: Annotated[
        bool, typer.Option("--known-good", help="Only known-good releases.")
    ] = False,
    owner: Annotated[str | None, typer.Option(help="Only releases of this owner.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many.")] = None,
    json: JsonOpt = False,
) -> None:
    """List releases, newest first."""
    from datetime import datetime

    s = settings(ctx)
    if (remote := s.remote()) is not None:
        docs = remote.get(f"/models/{model}/releases" if model else "/releases",
                          known_good="true" if known_good else None, owner=owner, limit=limit)  # fmt: skip
    else:
        rels = s.registry().list(
            model, owner=owner, known_good=True if known_good else None, limit=limit
        )
        docs = [r.to_dict() for r in rels]
    if json:
        print_json(docs)
        return
    if not docs:
        out.print(
            "no releases"
            + (f" of {model}" if model else "")
            + ": register one with `backout release register`"
        )
        return
    t = Table(box=None, header_style="bold")
    for col in ("release", "runtime", "mark", "served", "registered", "owner", "changelog"):
        t.add_column(col)
    for d in docs:
        m = d["manifest"]
        t.add_row(
            d["ref"],
            m["runtime"]["kind"],
            mark_cell(d),
            "yes" if d["first_served_at"] else "",
            f"{datetime.fromisoformat(d['registered_at']):%Y-%m-%d %H:%M}",
            m["owner"],
            short(m["changelog"]),
        )
    out.print(t)
    for d in docs:
        if d.get("bad"):
            out.print(f"{d['ref']} is marked bad: {bad_line(d['bad'])}")


def mark_cell(rel: dict[str, Any]) -> str:
    """The mark column of a release table: ``known-good``, ``bad (op 7)``, ``bad (by hand)``,
    ``quarantined``, or empty (the evidence of a bad mark is printed under the table)."""
    bad = rel.get("bad")
    if bad:
        return (
            f"bad (op {bad['operation']})" if bad.get("operation") is not None else "bad (by hand)"
        )
    if rel.get("quarantined"):
        return "quarantined"
    return "known-good" if rel.get("known_good") else ""


def bad_line(mark: dict[str, Any]) -> str:
    """``<evidence> (operation 7, by controller 2026-12-01 10:40 UTC)``."""
    by = f"operation {mark['operation']}, " if mark.get("operation") is not None else ""
    return f"{mark['evidence']} ({by}by {mark['actor']} {mark['at'][:16].replace('T', ' ')} UTC)"


@release_app.command("show")
def release_show(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="MODEL@VERSION")],
    json: JsonOpt = False,
) -> None:
    """Show one release: manifest, artifacts, status and known-good history."""
    from datetime import datetime

    s = settings(ctx)
    if (remote := s.remote()) is not None:
        from backout.registry.manifest import parse_ref

        model, version = parse_ref(ref)
        doc = remote.get(f"/models/{model}/releases/{version}")
    else:
        reg = s.registry()
        rel = reg.get(ref)
        doc = {**rel.to_dict(), "marks": [m.to_dict() for m in reg.marks(ref)]}
    if json:
        print_json(doc)
        return
    m = doc["manifest"]
    rt, plan = m["runtime"], m["rollback_plan"]
    served = doc["first_served_at"]
    rows = [
        ("release", doc["ref"]),
        ("digest", f"sha256:{doc['digest']}"),
        ("runtime", rt["kind"] + (f" {rt['options']}" if rt["options"] else "")),
        ("owner", m["owner"] or "-"),
        ("registered", f"{datetime.fromisoformat(doc['registered_at']):%Y-%m-%d %H:%M:%S} UTC by {m['created_by'] or '-'}"),
        ("known-good", "yes" if doc["known_good"] else "no"),
        ("served", f"since {datetime.fromisoformat(served):%Y-%m-%d %H:%M} UTC" if served else "never"),
        ("quarantined", doc["quarantined"] or "no"),
        ("bad", bad_line(doc["bad"]) if doc.get("bad") else "no"),
        ("changelog", m["changelog"] or "-"),
        ("rollback plan", (plan["text"] or "-") + (f" (target {plan['target']})" if plan["target"] else "")),
        ("contract", ", ".join(k for k in ("input", "output") if (m["contract"] or {}).get(k)) or "none"),
        ("lineage", ", ".join(f"{k}={v}" for k, v in m["lineage"].items() if v) or "-"),
    ]  # fmt: skip
    t = Table(box=None, show_header=False)
    t.add_column(style="bold")
    t.add_column()
    for k, v in rows:
        t.add_row(k, v)
    out.print(t)
    a = Table(title="artifacts", box=None, header_style="bold", title_justify="left")
    for col in ("path", "sha256", "size"):
        a.add_column(col)
    for art in m["artifacts"]:
        a.add_row(art["path"], art["sha256"], f"{art['size']:,}")
    out.print(a)
    said = {"mark": "marked known-good", "unmark": "unmarked known-good", "bad": "marked bad",
            "clear-bad": "bad mark cleared"}  # fmt: skip
    for mark in doc["marks"]:
        what = said.get(mark["action"], mark["action"])
        at = datetime.fromisoformat(mark["at"])
        out.print(f"{at:%Y-%m-%d %H:%M} {what} by {mark['actor']}: {mark['reason']}")


@release_app.command("verify")
def release_verify(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="MODEL@VERSION")],
    json: JsonOpt = False,
) -> None:
    """Re-hash the manifest and every artifact, and check its signature. Exit 1 on any
    mismatch (naming the file), on a bad signature, or on none where the policy requires one."""
    from backout.registry.signing import check_release, signature_required

    s = settings(ctx)
    if (remote := s.remote()) is not None:  # re-hashed where the artifacts are
        from backout.registry.manifest import parse_ref

        model, version = parse_ref(ref)
        doc = remote.get(f"/models/{model}/releases/{version}/verify")
    else:
        report = s.registry().verify(ref)
        with s.store().read() as conn:
            check = check_release(conn, report.ref)
            required = signature_required(conn, check.ref.partition("@")[0])
        # An unsigned release fails only where signatures are required; a bad one always does.
        sig_ok = check.ok or (check.status == "unsigned" and not required)
        doc = {**report.to_dict(), "ok": report.ok and sig_ok,
               "signature": {**check.to_dict(), "required": required}}  # fmt: skip
    sig = doc["signature"]
    valid = sig["status"] == "valid"
    sig_ok = valid or (sig["status"] == "unsigned" and not sig["required"])
    if json:
        print_json(doc)
    elif not doc["problems"]:
        out.print(
            f"{doc['ref']} verified: manifest and {len(doc['checked']) - 1} artifact(s) match their digests"
        )
    else:
        for p in doc["problems"]:
            err.print(f"{doc['ref']}: {p}")
    if not json:
        # An unsigned release where none is required says nothing more.
        if valid:
            out.print(f"signature: valid, by trusted key {sig['key']}")
        elif not sig_ok:
            err.print(f"signature: {sig['status']}: {sig['detail']}", markup=False)
    if not doc["ok"]:
        raise typer.Exit(1)


@release_app.command("mark-good")
def release_mark_good(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="MODEL@VERSION")],
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")] = "",
    unmark: Annotated[bool, typer.Option("--unmark", help="Remove the known-good mark.")] = False,
    json: JsonOpt = False,
) -> None:
    """Mark a release as a known-good rollback point (or remove the mark)."""
    s = settings(ctx)
    if (remote := s.remote()) is not None:
        from backout.registry.manifest import parse_ref

        model, version = parse_ref(ref)
        doc = remote.post(
            f"/models/{model}/releases/{version}/mark-good", {"reason": reason, "unmark": unmark}
        )
    else:
        # Through the controller: a release must load and answer before it becomes a rollback point.
        doc = s.controller().mark_good(ref, actor=s.actor, reason=reason, good=not unmark).to_dict()
    if json:
        print_json(doc)
    else:
        out.print(f"{doc['ref']} is {'now' if doc['known_good'] else 'no longer'} known-good")


@release_app.command("mark-bad")
def release_mark_bad(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="MODEL@VERSION")],
    reason: Annotated[str, typer.Option(help="Why, kept with the mark and in the audit log.")],
    json: JsonOpt = False,
) -> None:
    """Mark a release bad: no rollback targets it, and deploying it needs --override-bad."""
    s = settings(ctx)
    if (remote := s.remote()) is not None:
        doc = remote.post(_release_path(ref, "mark-bad"), {"reason": reason})
    else:
        doc = s.registry().mark_bad(ref, actor=s.actor, reason=reason).to_dict()
    if json:
        print_json(doc)
    else:
        bad = doc.get("bad") or {}
        out.print(f"{doc['ref']} is marked bad: {bad.get('evidence') or reason}")


@release_app.command("clear-bad")
def release_clear_bad(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="MODEL@VERSION")],
    reason: Annotated[str, typer.Option(help="Why it is safe again, for the audit log.")],
    json: JsonOpt = False,
) -> None:
    """Lift a release's bad mark. It is not known-good again until marked so."""
    s = settings(ctx)
    if (remote := s.remote()) is not None:
        doc = remote.post(_release_path(ref, "clear-bad"), {"reason": reason})
    else:
        doc = s.registry().clear_bad(ref, actor=s.actor, reason=reason).to_dict()
    if json:
        print_json(doc)
    else:
        out.print(
            f"{doc['ref']} is no longer marked bad (mark it known-good with `backout release mark-good {doc['ref']}` "
            "to make it a rollback point again)"
        )


@release_app.command("delete")
def release_delete(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="MODEL@VERSION")],
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")],
    yes: Annotated[bool, typer.Option("--yes", help="Confirm the deletion.")] = False,
) -> None:
    """Delete a release that has never served production traffic."""
    if not yes:
        raise ConfigError(f"deleting {ref} cannot be undone: add --yes to confirm")
    s = settings(ctx)
    if (remote := s.remote()) is not None:
        remote.delete(_release_path(ref), reason=reason)
    else:
        s.registry().delete(ref, actor=s.actor, reason=reason)
    out.print(f"{ref} deleted")


@release_app.command("quarantine")
def release_quarantine(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="MODEL@VERSION")],
    reason: Annotated[str, typer.Option(help="Why, for callers and the audit log.")] = "",
    lift: Annotated[
        bool, typer.Option("--lift", help="Allow the release to take traffic again.")
    ] = False,
    json: JsonOpt = False,
) -> None:
    """Bar a release from all traffic (pins to it get 409 with the reason), or lift the bar."""
    s = settings(ctx)
    if (remote := s.remote()) is not None:
        doc = remote.post(_release_path(ref, "quarantine"), {"reason": reason, "lift": lift})
    else:
        doc = s.registry().quarantine(ref, actor=s.actor, reason=reason, lift=lift).to_dict()
    if json:
        print_json(doc)
    else:
        out.print(
            f"{doc['ref']} is {'quarantined: ' + reason if doc['quarantined'] else 'no longer quarantined'}"
        )


def _release_path(ref: str, action: str = "") -> str:
    """``/models/M/releases/V[/action]`` of the control API, for ``MODEL@VERSION``."""
    from backout.registry.manifest import parse_ref

    model, version = parse_ref(ref)
    return f"/models/{model}/releases/{version}" + (f"/{action}" if action else "")
