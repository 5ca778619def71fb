"""Signed releases: trusted keys, signing, verification, and refusal where signatures are
required (deploy, rollback target, the gateway's warm pool)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from backout.control.controller import Controller
from backout.control.policy import Policy, Signing
from backout.errors import KeyFileError, SignatureInvalid, UnknownKey
from backout.registry import signing
from backout.registry.releases import Registry
from backout.serving.pool import WarmPool
from backout.store import Store, audit, open_store, schema
from tests.cli.runner import Cli
from tests.models import register_iris


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], store_url: str, tmp_path: Path) -> Cli:
    open_store(store_url, create=True).dispose()  # as `backout init` does
    return Cli(capsys, store_url, tmp_path)


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "release.key"
    signing.generate_key(path)
    return path


def trust(store: Store, key: Path, name: str = "ci") -> signing.TrustedKey:
    pub = signing.load_public_key(key.with_name(key.name + ".pub"))
    return signing.Keyring(store).add(name, pub, actor="admin")


def one_line_error(code: int, err: str) -> str:
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# -- key files ------------------------------------------------------------------------------


def test_generated_keys_are_owner_only_and_load_back(key: Path) -> None:
    assert key.stat().st_mode & 0o777 == 0o600
    private = signing.load_private_key(key)
    public = signing.load_public_key(key.with_name("release.key.pub"))
    assert signing.public_hex(private.public_key()) == signing.public_hex(public)


def test_openssh_and_hex_public_keys_are_accepted(key: Path, tmp_path: Path) -> None:
    private = signing.load_private_key(key)
    ssh = tmp_path / "id.pub"
    ssh.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
    )
    hexfile = tmp_path / "hex.pub"
    hexfile.write_text(signing.public_hex(private.public_key()) + "\n")
    assert signing.key_id(signing.load_public_key(ssh)) == signing.key_id(private.public_key())
    assert signing.key_id(signing.load_public_key(hexfile)) == signing.key_id(private.public_key())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot be read"),
        (b"", "not a PEM or OpenSSH private key"),
        (b"\x00\xff random bytes" * 10, "not a PEM or OpenSSH private key"),
        ("rsa", "not Ed25519"),
        ("encrypted", "is encrypted"),
        (b"x" * 100_000, "not a key file"),
    ],
)
def test_bad_private_key_files_are_refused_in_one_line(
    tmp_path: Path, content: bytes | str | None, message: str
) -> None:
    path = tmp_path / "bad.key"
    if content == "rsa":
        k = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        content = k.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    elif content == "encrypted":
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        content = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    if isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(KeyFileError, match=message) as info:
        signing.load_private_key(path)
    assert "\n" not in info.value.message


def test_a_private_key_given_as_public_is_refused(key: Path) -> None:
    with pytest.raises(KeyFileError, match="is a private key: register its public half"):
        signing.load_public_key(key)


def test_garbage_public_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.pub"
    path.write_text("ssh-ed25519 not-base64!!")
    with pytest.raises(KeyFileError, match="is not a public key"):
        signing.load_public_key(path)


# -- keyring ------------------------------------------------------------------------------


def test_keys_add_list_remove_from_the_command_line(cli: Cli, key: Path) -> None:
    code, out, err = cli("keys", "add", "release-ci", str(key) + ".pub")
    assert code == 0, err
    kid = signing.key_id(signing.load_private_key(key).public_key())
    assert out == f"trusted key release-ci (id {kid})\n"
    code, out, _ = cli("keys", "list", "--json")
    assert [k["name"] for k in orjson.loads(out)] == ["release-ci"]
    code, out, _ = cli("keys", "remove", "release-ci")
    assert out == f"key release-ci (id {kid}) is no longer trusted\n"
    code, out, _ = cli("keys", "list")
    assert out == "no trusted keys: add one with `backout keys add NAME FILE.pub`\n"
    line = one_line_error(*cli("keys", "remove", "release-ci")[::2])
    assert line == (
        "error: no trusted key 'release-ci' (trusted: none): "
        "add one with `backout keys add NAME FILE.pub`"
    )


def test_adding_a_private_key_file_is_one_line(cli: Cli, key: Path) -> None:
    code, _, err = cli("keys", "add", "ci", str(key))
    assert "is a private key: register its public half" in one_line_error(code, err)


def test_one_name_cannot_hold_two_keys(store: Store, key: Path, tmp_path: Path) -> None:
    trust(store, key, "ci")
    other = tmp_path / "other.key"
    signing.generate_key(other)
    with pytest.raises(Exception, match="a different key is already named 'ci'"):
        trust(store, other, "ci")


# -- signing and verifying ----------------------------------------------------------------


def test_register_sign_and_verify(cli: Cli, store: Store, key: Path, artifact: Path) -> None:
    trust(store, key, "ci")
    code, out, err = cli(
        "release", "register", "m", "1.0.0", "-a", str(artifact), "--sign", str(key)
    )
    assert code == 0, err
    assert out.rstrip().endswith("signed by ci")
    code, out, err = cli("release", "verify", "m@1.0.0")
    assert code == 0, err
    assert out.splitlines()[-1] == "signature: valid, by trusted key ci"
    with store.read() as conn:
        events = [e.kind for e in audit.list_events(conn, "m")]
    assert events[-2:] == ["release.registered", "release.signed"]


def test_an_untrusted_key_registers_nothing(
    cli: Cli, store: Store, key: Path, artifact: Path
) -> None:
    code, _, err = cli("release", "register", "m", "1.0.0", "-a", str(artifact), "--sign", str(key))
    assert "is not a trusted key: an admin adds it with `backout keys add" in one_line_error(
        code, err
    )
    code, out, _ = cli("release", "list", "--json")
    assert orjson.loads(out) == []


def test_a_bad_key_file_registers_nothing(cli: Cli, tmp_path: Path, artifact: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("not a key")
    code, _, err = cli("release", "register", "m", "1.0.0", "-a", str(artifact), "--sign", str(bad))
    assert "is not a PEM or OpenSSH private key" in one_line_error(code, err)
    assert orjson.loads(cli("release", "list", "--json")[1]) == []


def test_a_tampered_signature_fails_verify(
    cli: Cli, store: Store, key: Path, artifact: Path
) -> None:
    trust(store, key)
    cli("release", "register", "m", "1.0.0", "-a", str(artifact), "--sign", str(key))
    S = schema.release_signatures
    with store.write() as conn:
        sig = conn.execute(sa.select(S.c.signature)).scalar_one()
        flipped = ("0" if sig[0] != "0" else "1") + sig[1:]
        conn.execute(S.update().values(signature=flipped))
    code, _, err = cli("release", "verify", "m@1.0.0")
    assert code == 1
    assert "signature: invalid: m@1.0.0: the signature by key ci does not match its manifest" in err
    check = signing.check_release(store, "m@1.0.0")
    assert check.status == "invalid"


def test_a_tampered_manifest_breaks_its_signature(
    store: Store, registry: Registry, key: Path, artifact: Path
) -> None:
    trust(store, key)
    registry.register("m", "1.0.0", [artifact], actor="t", changelog="v1")
    signing.sign_release(store, "m@1.0.0", signing.load_private_key(key), actor="t")
    R = schema.releases
    with store.write() as conn:
        body = conn.execute(sa.select(R.c.manifest)).scalar_one()
        conn.execute(R.update().values(manifest=body.replace('"v1"', '"v2"')))
    assert signing.check_release(store, "m@1.0.0").status == "invalid"


def test_a_removed_key_no_longer_counts(
    store: Store, registry: Registry, key: Path, artifact: Path
) -> None:
    trust(store, key, "ci")
    registry.register("m", "1.0.0", [artifact], actor="t")
    assert signing.sign_release(store, "m@1.0.0", signing.load_private_key(key), actor="t").ok
    signing.Keyring(store).remove("ci", actor="admin")
    check = signing.check_release(store, "m@1.0.0")
    assert (check.status, check.key) == ("untrusted", "ci")
    with pytest.raises(UnknownKey):
        signing.sign_release(store, "m@1.0.0", signing.load_private_key(key), actor="t")


def test_unsigned_verify_passes_quietly_unless_required(cli: Cli, artifact: Path) -> None:
    cli("release", "register", "m", "1.0.0", "-a", str(artifact))
    code, out, _ = cli("release", "verify", "m@1.0.0")
    assert (code, out) == (0, "m@1.0.0 verified: manifest and 1 artifact(s) match their digests\n")
    code, out, _ = cli("release", "verify", "m@1.0.0", "--json")
    assert orjson.loads(out)["signature"]["status"] == "unsigned"


# -- refusal where signatures are required ------------------------------------------------

REQUIRED = Policy(signing=Signing(required=True))


def test_deploy_refuses_an_unsigned_release_when_required(
    store: Store, registry: Registry, tmp_path: Path
) -> None:
    register_iris(registry, tmp_path / "m", "1.0.0")
    ctl = Controller(store, registry)
    with pytest.raises(SignatureInvalid) as info:
        ctl.deploy("iris", "1.0.0", actor="t", policy=REQUIRED)
    assert info.value.message == (
        "iris@1.0.0 cannot be deployed: iris@1.0.0 is not signed: sign it with "
        "`backout release sign iris@1.0.0 --key FILE` (the policy requires signed releases)"
    )
    assert ctl.deployments.get("iris") is None


def test_rollback_refuses_an_unsigned_target_when_required(
    store: Store, registry: Registry, tmp_path: Path, key: Path
) -> None:
    trust(store, key)
    register_iris(registry, tmp_path / "m", "1.0.0")
    register_iris(registry, tmp_path / "m", "2.0.0", c=0.5)
    signing.sign_release(store, "iris@2.0.0", signing.load_private_key(key), actor="t")
    ctl = Controller(store, registry)
    ctl.deploy("iris", "1.0.0", actor="t")  # before signatures were required
    ctl.set_policy("iris", REQUIRED, source="test", actor="t")
    ctl.deploy("iris", "2.0.0", actor="t")  # signed: allowed
    with pytest.raises(
        SignatureInvalid, match=r"rollback target iris@1\.0\.0 refused: iris@1\.0\.0 is not signed"
    ):
        ctl.rollback("iris", actor="t", to="1.0.0", emergency=True)


def test_the_gateway_refuses_to_load_an_unsigned_release_when_required(
    store: Store, registry: Registry, tmp_path: Path, key: Path
) -> None:
    trust(store, key)
    register_iris(registry, tmp_path / "m", "1.0.0")
    register_iris(registry, tmp_path / "m", "2.0.0", c=0.5)
    signing.sign_release(store, "iris@2.0.0", signing.load_private_key(key), actor="t")
    Controller(store, registry).set_policy("iris", REQUIRED, source="test", actor="t")
    pool = WarmPool(registry, registry.blobs)

    async def load() -> dict[tuple[str, str], str]:
        try:
            return await pool.ensure([("iris", "1.0.0"), ("iris", "2.0.0")])
        finally:
            await pool.aclose()

    failed = asyncio.run(load())
    assert list(failed) == [("iris", "1.0.0")]
    assert failed[("iris", "1.0.0")].startswith("not loaded: iris@1.0.0 is not signed")


def test_verify_fails_an_unsigned_release_whose_policy_requires_signing(
    cli: Cli, store: Store, registry: Registry, artifact: Path
) -> None:
    cli("release", "register", "m", "1.0.0", "-a", str(artifact))
    Controller(store, registry).set_policy("m", REQUIRED, source="test", actor="t")
    code, _, err = cli("release", "verify", "m@1.0.0")
    assert code == 1
    assert err == (
        "signature: unsigned: m@1.0.0 is not signed: sign it with "
        "`backout release sign m@1.0.0 --key FILE`\n"
    )


def test_an_automatic_rollback_to_an_unsigned_release_freezes_instead(
    store: Store, registry: Registry, tmp_path: Path, key: Path
) -> None:
    """A trigger or a failed gate with no signed way back calls people; it never loops."""
    trust(store, key)
    register_iris(registry, tmp_path / "m", "1.0.0")
    register_iris(registry, tmp_path / "m", "2.0.0", c=0.5)
    signing.sign_release(store, "iris@2.0.0", signing.load_private_key(key), actor="t")
    ctl = Controller(store, registry)
    ctl.deploy("iris", "1.0.0", actor="t")
    ctl.set_policy("iris", REQUIRED, source="test", actor="t")
    op = ctl.deploy("iris", "2.0.0", actor="t")
    ctl.auto_rollback(op, "gate failed at step 1", {})
    why = ctl.frozen("iris")
    assert why is not None
    assert why.startswith(
        "gate failed at step 1; and no safe rollback: rollback target iris@1.0.0 refused: iris@1.0.0 is not signed"
    )
