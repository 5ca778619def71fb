"""The command line's remote mode: the same commands against the control API print what
they print against the store, and fail with the same one line."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from backout.api import tokens
from backout.api.roles import make_grant
from backout.cli import main
from backout.store import open_store
from tests.api.world import Template, app_for, close_app, copy_store, make_template
from tests.cli.runner import Cli
from tests.loopback import serve

pytestmark = [pytest.mark.databases("sqlite"), pytest.mark.slow]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    return make_template(tmp_path_factory.mktemp("api-remote"), real=True)


class RemoteCli(Cli):
    """The command line with ``--server`` (the token in ``BACKOUT_TOKEN``)."""

    def __init__(self, capsys: pytest.CaptureFixture[str], server: str) -> None:
        self.capsys = capsys
        self.base = ["--server", server]


@pytest.fixture
def pair(template: Template, tmp_path: Path, capsys: pytest.CaptureFixture[str],
         monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Cli, Cli]]:  # fmt: skip
    """The same world twice: one copy used through the store, one through the API."""
    local_url, remote_url = copy_store(template, "local"), copy_store(template, "remote")
    store = open_store(remote_url)
    grants = [make_grant(r, ["*"]) for r in ("responder", "releaser", "approver", "admin")]
    token = tokens.create(store, grants, actor="setup", name="ana").token
    store.dispose()
    monkeypatch.setenv("BACKOUT_TOKEN", token)
    app = app_for(template, remote_url)
    with serve(app, lifespan="off") as url:
        local = Cli(capsys, local_url, tmp_path)
        local.base[3] = str(template.artifacts)
        yield local, RemoteCli(capsys, url)
    close_app(app)


def same(text: str) -> str:
    """What may differ between two runs: times and hashes (a manifest holds its time)."""
    text = re.sub(r"\d+(\.\d+)? s in step", "N s in step", text)
    text = re.sub(r"(time to \w+ +)\d+(\.\d+)? s", r"\1N s", text)  # measured on each side's clock
    text = re.sub(r"sha256:[0-9a-f]{12,64}", "sha256:DIGEST", text)
    return re.sub(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d(:\d\d(\.\d+)?)?(\+00:00)?", "TIME", text)


@pytest.mark.parametrize(
    "steps",
    [
        [("release", "list"), ("release", "list", "iris", "--known-good"), ("status",),
         ("release", "show", "iris@1.0.0"), ("release", "show", "iris@9.9.9")],
        [("release", "register", "fraud", "3.0.0", "--artifact", "MODEL", "--changelog", "same bytes"),
         ("release", "show", "fraud@3.0.0"), ("release", "mark-good", "fraud@3.0.0"),
         ("release", "register", "fraud", "3.0.0", "--artifact", "MODEL"),
         ("consumers", "add", "CONSUMER"), ("consumers", "list", "iris"), ("consumers", "add", "CONSUMER"),
         ("consumers", "remove", "iris", "web"), ("consumers", "list", "iris"),
         ("consumers", "remove", "iris", "web"), ("compat", "iris@1.0.0", "iris@1.1.0"),
         ("compat", "iris@1.0.0", "fraud@1.1.0")],
        [("deploy", "iris@1.1.0"), ("pause", "iris"), ("resume", "iris"), ("abort", "iris"),
         ("status", "iris")],
        [("traffic", "iris", "1.0.0=90", "1.1.0=10"), ("rollback", "iris", "--emergency"),
         ("status", "fraud")],
        [("freeze", "fraud", "--reason", "upstream data broken"), ("deploy", "fraud@1.1.0"),
         ("unfreeze", "fraud", "--reason", "fixed"), ("rollback", "nope")],
        [("release", "verify", "iris@1.0.0"), ("release", "verify", "iris@9.9.9"),
         ("release", "mark-bad", "fraud@1.1.0", "--reason", "wrong answers"),
         ("release", "list", "fraud"), ("release", "clear-bad", "fraud@1.1.0", "--reason", "fixed"),
         ("release", "quarantine", "fraud@1.1.0", "--reason", "leaks"),
         ("release", "quarantine", "fraud@1.1.0", "--lift"),
         ("release", "delete", "fraud@1.1.0", "--reason", "never used", "--yes"),
         ("release", "delete", "fraud@1.0.0", "--reason", "it served", "--yes")],
        [("traffic", "iris", "1.0.0=90", "1.1.0=10"), ("rollback", "iris", "--emergency"),
         ("incident", "list"), ("incident", "list", "iris", "--open"), ("incident", "show", "1"),
         ("incident", "show", "99")],
        [("replay", "iris@1.1.0"), ("replay", "iris@1.1.0", "--since", "10m"),
         ("drill", "iris", "--history"), ("drill", "iris")],
    ],
    ids=["reads", "register", "rollout", "traffic-rollback", "freeze-errors", "release-actions",
         "incidents", "proof"],
)  # fmt: skip
def test_remote_commands_print_what_local_ones_print(
    pair: tuple[Cli, Cli], steps: list[tuple[str, ...]], template: Template
) -> None:
    local, remote = pair
    consumer = template.folder / "web.yaml"
    consumer.write_text("name: web\nmodel: iris\nowner: shop\nsends: {}\nreads: {}\n")
    files = {"MODEL": str(template.folder / "model-1.0.0.bin"), "CONSUMER": str(consumer)}
    for step in [tuple(files.get(a, a) for a in s) for s in steps]:
        want, got = local(*step), remote(*step)
        assert (got[0], same(got[1]), same(got[2])) == (want[0], same(want[1]), same(want[2])), step


def test_remote_json_is_the_local_json(pair: tuple[Cli, Cli]) -> None:
    local, remote = pair
    for step in (
        ("deploy", "iris@1.1.0"),
        ("traffic", "fraud", "1.0.0=100"),
        ("release", "list"),
    ):
        want, got = local(*step, "--json"), remote(*step, "--json")
        assert got[0] == want[0] == 0
        assert strip(same(got[1])) == strip(same(want[1])), step


def strip(text: str) -> str:
    """JSON without the times of day, which differ from run to run."""
    return re.sub(r'"(started_at|step_started_at|updated_at|created_at|at)": [0-9.e+]+', "", text)


def test_a_refusal_by_the_api_is_one_line_and_exit_code(template: Template, capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    url = copy_store(template, "refusals")
    store = open_store(url)
    monkeypatch.setenv("BACKOUT_TOKEN", tokens.create(store, [make_grant("viewer", ["iris*"])],
                                                      actor="setup", name="vic").token)  # fmt: skip
    store.dispose()
    app = app_for(template, url)
    with serve(app, lifespan="off") as server:
        cli = RemoteCli(capsys, server)
        assert cli("rollback", "iris") == (
            1,
            "",
            "error: vic (viewer:iris*) lacks the 'rollback' right on iris\n",
        )
        monkeypatch.setenv("BACKOUT_TOKEN", "bko_00000000_" + "x" * 43)
        assert cli("status") == (
            1,
            "",
            "error: unknown token 00000000: ask an admin for a valid one\n",
        )
    close_app(app)
    code, _, err = RemoteCli(capsys, "http://127.0.0.1:9")("status")
    assert code == 2 and err.startswith(
        "error: cannot reach the control API at http://127.0.0.1:9: ConnectError"
    )
    assert main is not None


@pytest.mark.parametrize(
    "steps",
    [
        [("keys", "list"), ("keys", "add", "ci", "PUB"), ("keys", "add", "ci", "PUB"),
         ("keys", "list"), ("keys", "add", "other", "PRIVATE"),
         ("keys", "remove", "ci", "--reason", "rotated"), ("keys", "list", "--removed"),
         ("keys", "remove", "nokey")],
        [("retention", "show"), ("retention", "set", "--telemetry", "7d", "--outbox", "forever"),
         ("retention", "show"), ("retention", "set", "--events", "soon"), ("retention", "set"),
         ("retention", "prune", "--dry-run"), ("retention", "prune"),
         ("retention", "prune", "--key", "PRIVATE")],
        [("report", "iris", "--last"), ("traffic", "iris", "1.0.0=90", "1.1.0=10"),
         ("rollback", "iris", "--emergency"), ("report", "iris", "--last", "--out", "OUT"),
         ("report", "1", "--out", "OUT"), ("report", "999"), ("report", "iris")],
    ],
    ids=["keys", "retention", "report"],
)  # fmt: skip
def test_remote_admin_commands_print_what_local_ones_print(
    pair: tuple[Cli, Cli], steps: list[tuple[str, ...]], tmp_path: Path
) -> None:
    local, remote = pair
    key = tmp_path / "ci.key"
    local("keys", "generate", str(key))
    files = {"PUB": f"{key}.pub", "PRIVATE": str(key), "OUT": str(tmp_path / "reports")}
    for step in [tuple(files.get(a, a) for a in s) for s in steps]:
        want, got = local(*step), remote(*step)
        if step == ("retention", "prune", "--key", str(key)):  # the key stays where it is
            assert got[0] == 2 and "--key signs where the store is" in got[2]
            continue
        assert (got[0], same(got[1]), same(got[2])) == (want[0], same(want[1]), same(want[2])), step


def test_remote_report_json_and_files_are_the_local_ones(
    pair: tuple[Cli, Cli], tmp_path: Path
) -> None:
    local, remote = pair
    for cli in pair:
        assert cli("traffic", "iris", "1.0.0=90", "1.1.0=10")[0] == 0
        assert cli("rollback", "iris", "--emergency")[0] == 0
    want = local.json("report", "iris", "--last", "--out", str(tmp_path / "local"))
    got = remote.json("report", "iris", "--last", "--out", str(tmp_path / "remote"))
    assert isinstance(want, dict) and isinstance(got, dict)
    assert got["report"]["id"] == want["report"]["id"]
    assert got["report"].keys() == want["report"].keys()
    assert (
        Path(got["markdown"]).read_text().splitlines()[0]
        == Path(want["markdown"]).read_text().splitlines()[0]
    )
    assert "<html" in Path(got["html"]).read_text()


def test_a_report_of_a_model_out_of_scope_is_not_found(
    pair: tuple[Cli, Cli], monkeypatch: pytest.MonkeyPatch, template: Template
) -> None:
    """Asked by id, an incident of a model the caller may not read answers as a missing one."""
    _, remote = pair
    assert remote("traffic", "fraud", "1.0.0=90", "1.1.0=10")[0] == 0
    assert remote("rollback", "fraud", "--emergency")[0] == 0
    doc = remote.json("report", "fraud", "--last", "--out", str(template.folder / "r"))
    assert isinstance(doc, dict)
    incident = str(doc["report"]["id"])
    store = open_store(f"sqlite:///{template.folder / 'remote.db'}")  # the pair's remote copy
    token = tokens.create(store, [make_grant("viewer", ["iris*"])], actor="setup", name="vic").token
    store.dispose()
    monkeypatch.setenv("BACKOUT_TOKEN", token)
    missing = remote("report", "99999")
    code, out, err = remote("report", incident)
    assert (code, out) == (missing[0], "") and err == missing[2].replace("99999", incident)
    code, _, err = remote("report", "fraud", "--last")
    assert code == 1 and "lacks the 'read' right on fraud" in err
