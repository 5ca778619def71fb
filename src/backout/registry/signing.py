"""Signed releases: trusted Ed25519 keys, signatures over manifest digests, and their check.

For the admin who decides which keys may vouch for a release (``backout keys add``), the
releaser who signs one (``backout release register --sign KEY``), and everything that lets
a release take traffic: a policy with ``signing: {required: true}`` makes deploy, rollback
and the gateway's warm pool refuse a release without a valid signature from a trusted key.

What is signed is the release's manifest digest (the SHA-256 of its canonical manifest, which
names every artifact's digest), prefixed with a fixed context string so a signature made for
a release can never pass as one for anything else (an event-log checkpoint, say). The digest
is recomputed from the stored manifest at every check: a signature is never trusted over a
digest the store merely claims.

Key files: private keys as PEM (PKCS#8, unencrypted) or OpenSSH; public keys as PEM, OpenSSH
(``ssh-ed25519 AAAA...``) or 64 hex characters. ``generate_key`` writes a new pair.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy.engine import Connection

from backout.errors import Conflict, KeyFileError, SignatureInvalid, UnknownKey
from backout.registry.manifest import parse_ref
from backout.store import Store, as_utc, audit, schema

__all__ = [
    "RELEASE_CONTEXT",
    "Keyring",
    "SignatureCheck",
    "TrustedKey",
    "add_signature",
    "check_release",
    "generate_key",
    "key_id",
    "load_private_key",
    "load_public_key",
    "public_hex",
    "require_signed",
    "require_trusted",
    "sign_release",
    "signature_required",
]

K = schema.signing_keys
S = schema.release_signatures
RELEASE_CONTEXT = b"backout release manifest sha256:"
_MAX_KEY_FILE = 64 * 1024  # a key file is a few hundred bytes; refuse to read a big one


def public_hex(key: Ed25519PublicKey) -> str:
    """The key's 32 raw bytes, as hex: how keys are stored and compared."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def key_id(key: Ed25519PublicKey | str) -> str:
    """A short, stable name derived from the key itself (16 hex characters)."""
    raw = bytes.fromhex(key) if isinstance(key, str) else bytes.fromhex(public_hex(key))
    return hashlib.sha256(raw).hexdigest()[:16]


def _read_key_file(path: Path, what: str) -> bytes:
    try:
        if path.stat().st_size > _MAX_KEY_FILE:
            raise KeyFileError(
                f"{what} file {str(path)!r} is {path.stat().st_size:,} bytes: not a key file "
                f"(an Ed25519 key file is under {_MAX_KEY_FILE // 1024} KB)"
            )
        return path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{what} file {str(path)!r} cannot be read: {exc.strerror}") from exc


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM (PKCS#8) or OpenSSH file."""
    data = _read_key_file(path, "private key")
    hint = "make one with `backout keys generate FILE`"
    try:
        if b"OPENSSH PRIVATE KEY" in data:
            key: Any = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:  # a passphrase-protected key
        raise KeyFileError(
            f"private key file {str(path)!r} is encrypted: give an unencrypted copy ({hint})"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(
            f"private key file {str(path)!r} is not a PEM or OpenSSH private key ({hint})"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(
            f"private key file {str(path)!r} holds a {type(key).__name__.removeprefix('_')} "
            f"key, not Ed25519 ({hint})"
        )
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM, OpenSSH (``ssh-ed25519 ...``) or 64-hex file."""
    data = _read_key_file(path, "public key")
    text = data.strip()
    hint = "give the .pub file `backout keys generate` wrote, or an ssh-ed25519 public key"
    if b"PRIVATE KEY" in data:
        raise KeyFileError(
            f"{str(path)!r} is a private key: register its public half instead ({hint})"
        )
    try:
        if text.startswith(b"ssh-"):
            key: Any = serialization.load_ssh_public_key(text)
        elif text.startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(text)
        else:
            key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(text.decode("ascii")))
    except (ValueError, UnicodeDecodeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"public key file {str(path)!r} is not a public key ({hint})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(
            f"public key file {str(path)!r} holds a {type(key).__name__.removeprefix('_')} "
            f"key, not Ed25519 ({hint})"
        )
    return key


def generate_key(path: Path) -> Path:
    """Write a new private key to ``path`` (owner-only) and its public half to ``path.pub``."""
    if path.exists():
        raise KeyFileError(f"{str(path)!r} already exists: choose another file name")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pub_path = path.with_name(path.name + ".pub")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        pub_path.write_bytes(pub)
    except OSError as exc:
        raise KeyFileError(f"cannot write key file {str(path)!r}: {exc.strerror}") from exc
    return pub_path


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """A public key an admin registered, by name."""

    id: str
    name: str
    public_key: str  # hex
    added_at: datetime
    added_by: str
    removed_at: datetime | None

    @property
    def active(self) -> bool:
        return self.removed_at is None

    def verifier(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(self.public_key))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "public_key": self.public_key,
            "added_at": self.added_at.isoformat(),
            "added_by": self.added_by,
            "removed_at": self.removed_at.isoformat() if self.removed_at else None,
        }


def _key(row: Any) -> TrustedKey:
    return TrustedKey(
        id=row.id,
        name=row.name,
        public_key=row.public_key,
        added_at=as_utc(row.added_at),
        added_by=row.added_by,
        removed_at=as_utc(row.removed_at) if row.removed_at else None,
    )


class Keyring:
    """The trusted public keys of a store: add, list, remove (removal keeps the history)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def add(self, name: str, key: Ed25519PublicKey, *, actor: str) -> TrustedKey:
        """Trust ``key`` under ``name``; re-adding a removed key trusts it again."""
        name = name.strip()
        if not name or len(name) > 128 or not name.isprintable():
            raise KeyFileError(f"key name {name!r} must be 1 to 128 printable characters")
        hexkey, kid = public_hex(key), key_id(key)
        now = datetime.now(UTC)
        with self.store.write() as conn:
            same_name = conn.execute(sa.select(K).where(K.c.name == name)).first()
            same_key = conn.execute(sa.select(K).where(K.c.id == kid)).first()
            if same_name is not None and same_name.id != kid:
                raise Conflict(
                    f"a different key is already named {name!r} (id {same_name.id}): "
                    "choose another name, or remove that key first"
                )
            if same_key is not None and same_key.removed_at is None:
                raise Conflict(f"this key is already trusted as {same_key.name!r} (id {kid})")
            if same_key is not None:
                conn.execute(K.update().where(K.c.id == kid).values(name=name, removed_at=None))
            else:
                conn.execute(
                    K.insert().values(
                        id=kid, name=name, public_key=hexkey, added_at=now, added_by=actor
                    )
                )
            audit.append(
                conn,
                "key.added",
                model=None,
                actor=actor,
                reason=f"trusted key {name}",
                data={"key_id": kid, "name": name, "public_key": hexkey},
            )
        return self.require(kid)

    def remove(self, name_or_id: str, *, actor: str, reason: str = "") -> TrustedKey:
        """Stop trusting a key: signatures it made no longer count."""
        with self.store.write() as conn:
            key = self._find(conn, name_or_id)
            if key is None or not key.active:
                raise UnknownKey(self._unknown(conn, name_or_id))
            conn.execute(K.update().where(K.c.id == key.id).values(removed_at=datetime.now(UTC)))
            audit.append(
                conn,
                "key.removed",
                model=None,
                actor=actor,
                reason=reason or f"no longer trusted: {key.name}",
                data={"key_id": key.id, "name": key.name},
            )
        return self.require(key.id, active=False)

    def list(self, *, include_removed: bool = False) -> list[TrustedKey]:
        with self.store.read() as conn:
            keys = [_key(r) for r in conn.execute(sa.select(K).order_by(K.c.added_at, K.c.id))]
        return [k for k in keys if include_removed or k.active]

    def require(self, name_or_id: str, *, active: bool = True) -> TrustedKey:
        with self.store.read() as conn:
            key = self._find(conn, name_or_id)
            if key is None or (active and not key.active):
                raise UnknownKey(self._unknown(conn, name_or_id))
        return key

    @staticmethod
    def _find(conn: Connection, name_or_id: str) -> TrustedKey | None:
        row = conn.execute(
            sa.select(K).where(sa.or_(K.c.name == name_or_id, K.c.id == name_or_id))
        ).first()
        return _key(row) if row is not None else None

    @staticmethod
    def _unknown(conn: Connection, name_or_id: str) -> str:
        names = conn.execute(
            sa.select(K.c.name).where(K.c.removed_at.is_(None)).order_by(K.c.name)
        ).scalars()
        return (
            f"no trusted key {name_or_id!r} (trusted: {', '.join(names) or 'none'}): "
            "add one with `backout keys add NAME FILE.pub`"
        )


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    """What the signatures of one release are worth."""

    ref: str
    digest: str
    status: str  # valid | unsigned | untrusted | invalid
    key: str | None  # the name of the key that signed validly, or the first one seen
    detail: str

    @property
    def ok(self) -> bool:
        return self.status == "valid"

    def to_dict(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "digest": self.digest,
            "status": self.status,
            "key": self.key,
            "detail": self.detail,
        }


def _manifest_digest(conn: Connection, model: str, version: str) -> str:
    R = schema.releases
    body = conn.execute(
        sa.select(R.c.manifest).where(R.c.model == model, R.c.version == version)
    ).scalar()
    if body is None:
        from backout.errors import ReleaseNotFound

        raise ReleaseNotFound(
            f"release {model}@{version} is not registered: see `backout release list {model}`"
        )
    # Recomputed from the stored manifest, never read from the digest column: the signature
    # must vouch for the bytes that will be served.
    return hashlib.sha256(body.encode()).hexdigest()


def require_trusted(conn: Connection, key: Ed25519PrivateKey) -> TrustedKey:
    """The trusted key whose private half ``key`` is; :class:`UnknownKey` if there is none."""
    kid = key_id(key.public_key())
    trusted = Keyring._find(conn, kid)
    if trusted is None or not trusted.active:
        raise UnknownKey(
            f"the private key's public half (id {kid}) is not a trusted key: an admin adds "
            "it with `backout keys add NAME FILE.pub`"
        )
    return trusted


def sign_release(store: Store, ref: str, key: Ed25519PrivateKey, *, actor: str) -> SignatureCheck:
    """Sign ``ref``'s manifest digest with ``key``, whose public half must be trusted."""
    model, version = parse_ref(ref)
    with store.read() as conn:
        kid = require_trusted(conn, key).id
        digest = _manifest_digest(conn, model, version)
    return add_signature(
        store, ref, kid, key.sign(RELEASE_CONTEXT + digest.encode()).hex(), actor=actor
    )


def add_signature(
    store: Store, ref: str, kid: str, signature: str, *, actor: str
) -> SignatureCheck:
    """Record a signature made elsewhere (by whoever holds the private key) over ``ref``'s
    manifest digest, once it verifies with the trusted key ``kid``."""
    model, version = parse_ref(ref)
    with store.write() as conn:
        trusted = Keyring._find(conn, kid)
        if trusted is None or not trusted.active:
            raise UnknownKey(
                f"key {kid!r} is not a trusted key: an admin adds it with `backout keys add NAME FILE.pub`"
            )
        digest = _manifest_digest(conn, model, version)
        try:
            trusted.verifier().verify(bytes.fromhex(signature), RELEASE_CONTEXT + digest.encode())
        except (InvalidSignature, ValueError):
            raise SignatureInvalid(
                f"the signature does not verify with key {trusted.name} over {ref}'s manifest "
                f"sha256:{digest[:12]}…: sign that digest with the key's private half"
            ) from None
        conn.execute(
            S.delete().where(S.c.model == model, S.c.version == version, S.c.key_id == trusted.id)
        )
        conn.execute(
            S.insert().values(
                model=model,
                version=version,
                key_id=trusted.id,
                digest=digest,
                signature=signature,
                signed_at=datetime.now(UTC),
                signed_by=actor,
            )
        )
        audit.append(
            conn,
            "release.signed",
            model=model,
            actor=actor,
            reason=f"signed by key {trusted.name}",
            data={"version": version, "key_id": trusted.id, "digest": digest},
        )
    return check_release(store, ref)


def check_release(store: Store | Connection, ref: str) -> SignatureCheck:
    """Whether ``ref`` carries a valid signature from a trusted key, and if not, why."""
    if isinstance(store, Store):
        with store.read() as conn:
            return check_release(conn, ref)
    conn = store
    model, version = parse_ref(ref)
    digest = _manifest_digest(conn, model, version)
    rows = conn.execute(
        sa.select(S, K.c.name, K.c.public_key, K.c.removed_at)
        .join(K, K.c.id == S.c.key_id, isouter=True)
        .where(S.c.model == model, S.c.version == version)
        .order_by(S.c.signed_at)
    ).all()
    if not rows:
        return SignatureCheck(
            ref,
            digest,
            "unsigned",
            None,
            f"{ref} is not signed: sign it with `backout release sign {ref} --key FILE`",
        )
    worst: SignatureCheck | None = None
    for r in rows:
        if r.public_key is None or r.removed_at is not None:
            why = "was removed" if r.public_key is not None else "is unknown"
            worst = worst or SignatureCheck(
                ref,
                digest,
                "untrusted",
                r.name or r.key_id,
                f"{ref} is signed only by key {r.name or r.key_id}, which {why}: "
                "sign it with a trusted key",
            )
            continue
        try:
            verifier = Ed25519PublicKey.from_public_bytes(bytes.fromhex(r.public_key))
            verifier.verify(bytes.fromhex(r.signature), RELEASE_CONTEXT + digest.encode())
        except (InvalidSignature, ValueError):
            worst = SignatureCheck(
                ref,
                digest,
                "invalid",
                r.name,
                f"{ref}: the signature by key {r.name} does not match its manifest "
                f"sha256:{digest[:12]}… (tampered manifest or signature): "
                "re-register the release from its files and sign it again",
            )
            continue
        return SignatureCheck(
            ref, digest, "valid", r.name, f"{ref} is signed by trusted key {r.name}"
        )
    assert worst is not None
    return worst


def signature_required(conn: Connection, model: str) -> bool:
    """Whether ``model``'s stored policy requires signed releases (``signing.required``).

    Read from the policy document as stored, so that the gateway — which does not parse
    policies — enforces the same rule as the controller.
    """
    P = schema.policies
    doc = conn.execute(sa.select(P.c.policy).where(P.c.model == model)).scalar()
    signing = (doc or {}).get("signing") or {}
    return bool(signing.get("required", False))


def require_signed(
    store: Store | Connection, ref: str, *, required: bool | None = None, why: str = ""
) -> SignatureCheck | None:
    """Raise :class:`SignatureInvalid` when ``ref`` must be signed and is not validly.

    ``required`` None: as the model's stored policy says. Returns the check when it ran.
    """
    if isinstance(store, Store):
        with store.read() as conn:
            return require_signed(conn, ref, required=required, why=why)
    if required is None:
        required = signature_required(store, parse_ref(ref)[0])
    if not required:
        return None
    check = check_release(store, ref)
    if not check.ok:
        raise SignatureInvalid(
            f"{why + ': ' if why else ''}{check.detail} (the policy requires signed releases)"
        )
    return check
