"""Hostile text through an incident report: it reads as written and adds no markup.

People write actors, reasons, contacts and consumer names; judges and triggers write
summaries. All of it reaches the report. The report is rendered here as a reader's tools
render it — the Markdown by a CommonMark parser with GitHub's tables and strikethrough,
the HTML by the standard library's parser — and every tag and attribute is checked.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt

from backout.registry.artifacts import LocalBlobStore
from backout.registry.releases import Registry
from backout.reports.builder import build_report
from backout.reports.model import IncidentReport
from backout.reports.writer import render_html, render_markdown
from backout.store import Store, audit, open_store, schema

HOSTILE = (
    '<script>alert("x")</script> [click](javascript:alert(1)) ![i](http://e.test/x.png) '
    "<img src=x onerror=alert(1)> **bold** _em_ | a | b | ~~gone~~ &amp; `code` "
    "<https://e.test/auto> \n# heading\n1. item\n> quote\n- dash\n====\n"
)
T0 = 1_717_000_000.0


def _flat(text: str) -> str:
    return " ".join(text.split())


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text, of an HTML document."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    @classmethod
    def of(cls, html: str) -> Tags:
        parser = cls()
        parser.feed(html)
        parser.close()
        return parser

    def names(self) -> list[str]:
        return [t for t, _ in self.tags]

    def all_text(self) -> str:
        return _flat("".join(self.text))


@pytest.fixture
def report(tmp_path: Path) -> Iterator[IncidentReport]:
    """A rollback whose every person-written or data-written word is ``HOSTILE``."""
    store: Store = open_store(f"sqlite:///{tmp_path / 'store.db'}", create=True)
    registry = Registry(store, LocalBlobStore(tmp_path / "artifacts"))
    art = tmp_path / "m.bin"
    art.write_bytes(b"weights")
    for v in ("1.4.0", "1.5.0"):
        registry.register("fraud", v, [art], owner=HOSTILE, changelog=HOSTILE)
    gate = {"verdict": "fail", "summary": HOSTILE,
            "judgements": [{"judge": HOSTILE, "verdict": "fail", "summary": HOSTILE,
                            "estimate": 3.0, "lower": 2.0, "upper": 4.0, "tolerance": 1.5}]}  # fmt: skip

    def event(conn: Any, t: float, event_kind: str, **data: Any) -> None:
        at = datetime.fromtimestamp(t, UTC)
        audit.append(
            conn, event_kind, model="fraud", actor=HOSTILE, reason=HOSTILE, data=data, at=at
        )

    with store.write() as conn:
        op = conn.execute(
            schema.operations.insert().values(
                model="fraud", kind="rollback", phase="frozen", outcome="frozen", step=0,
                stable="1.5.0", target="1.4.0", weights={"1.4.0": 100.0}, policy={},
                state={"trigger": {"gate": gate}, "mode": "emergency", "warm": HOSTILE},
                actor=HOSTILE, reason=HOSTILE, started_at=T0, step_started_at=T0,
                updated_at=T0 + 30, ended_at=T0 + 30,
            )
        ).inserted_primary_key[0]  # fmt: skip
        event(conn, T0, "rollback.started", operation=op, target="1.4.0", mode="emergency",
              trigger={"gate": gate}, warm=HOSTILE, **{"from": "1.5.0"})  # fmt: skip
        event(conn, T0, "traffic.applied", operation=op, weights={"1.4.0": 100.0})
        event(conn, T0 + 1, "compat.checked", operation=op, verdict="fail", summary=HOSTILE,
              consumers=[HOSTILE], note=HOSTILE)  # fmt: skip
        event(conn, T0 + 2, "replay.checked", operation=op, verdict="fail", summary=HOSTILE)
        event(conn, T0 + 3, "escalation", operation=op, contact=HOSTILE)
        event(conn, T0 + 4, "phase.frozen", operation=op, kind="rollback", to="frozen",
              evidence={"note": HOSTILE, "verdict": "fail", "judgements": gate["judgements"]})  # fmt: skip
        event(conn, T0 + 5, "something.new", operation=op, summary=HOSTILE)
    try:
        yield build_report(store, int(op))
    finally:
        store.dispose()


def test_the_hostile_text_reaches_every_part_of_the_report(report: IncidentReport) -> None:
    """The fixture is hostile where it matters: else the checks below prove nothing."""
    assert HOSTILE in report.actor and HOSTILE in report.trigger.summary
    assert any(HOSTILE in d.detail for d in report.timeline)
    assert any(HOSTILE in d.title for d in report.timeline)  # the escalation's contact
    assert any(HOSTILE in q for q in report.questions)
    assert HOSTILE in report.summary


def test_the_markdown_renders_as_written_with_no_markup_of_its_own(
    report: IncidentReport,
) -> None:
    md = render_markdown(report)
    html = MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(md)
    doc = Tags.of(html)
    names = doc.names()
    assert not {"script", "a", "img", "em", "s", "del", "blockquote", "h3", "hr"} & set(names)
    assert names.count("h1") == 1 and names.count("h2") == 4
    assert names.count("table") == 1 and names.count("tr") == 2
    assert names.count("td") == 5  # pipes in the text made no cell
    # Every list item is one decision, finding or question; the text made no list.
    assert names.count("ol") == 1 and names.count("ul") == 3
    assert all(not attrs for tag, attrs in doc.tags if tag not in ("th", "td"))
    text = doc.all_text()
    assert text.count(_flat(HOSTILE)) >= 8  # reads exactly as written, wherever it appears
    for line in md.splitlines():
        assert not line.startswith(("#", ">", "=")) or line.startswith(("# Incident", "## "))


def test_the_html_renders_as_written_with_no_markup_of_its_own(report: IncidentReport) -> None:
    doc = Tags.of(render_html(report))
    assert not {"script", "a", "iframe", "object", "embed", "form", "base", "link"} & set(
        doc.names()
    )
    for tag, attrs in doc.tags:
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
        if tag == "img":
            assert str(attrs["src"]).startswith("data:image/svg+xml;base64,")
    text = doc.all_text()
    assert text.count(_flat(HOSTILE)) >= 8
    assert re.search(r"<title>[^<]*</title>", render_html(report))
