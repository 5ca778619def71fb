"""The public status page: ``/status`` (HTML), ``/status/feed.atom`` and ``/status/summary.json``.

For the users and partners of the services that call the models; no login. One component per
model, or per consumer-facing service a policy names, in Statuspage's vocabulary; the open
and recent incidents with their updates. Everything comes from the store through
:mod:`backout.control.statuspage`, and only public words are shown: component names, statuses,
incident titles and messages (from the policy's templates or an incident commander).
Everything is escaped: the HTML by Jinja2's autoescape, the feed by the XML serialiser.

The summary is computed at most once a second, however many people are looking.
"""

from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from backout.api.pages import HEADERS, page
from backout.api.state import ApiState, state_of

__all__ = ["routes", "summary"]

routes = APIRouter(tags=["status page"])
CACHE_S = 1.0
_lock = threading.Lock()


def summary(st: ApiState) -> dict[str, Any]:
    """The public summary, cached for :data:`CACHE_S` per API process."""
    from backout.control.statuspage import public_summary

    now = time.monotonic()
    cached = st.extra.get("status_summary")
    if cached is not None and now - cached[0] < CACHE_S:
        return dict(cached[1])
    with _lock:
        doc = public_summary(st.store, page=str(st.extra.get("status_page_name", "backout")))
        st.extra["status_summary"] = (time.monotonic(), doc)
    return doc


@routes.get("/status", response_class=HTMLResponse, summary="The public status page",
             include_in_schema=False)  # fmt: skip
def status_html(request: Request) -> HTMLResponse:
    doc = summary(state_of(request))
    return page("status.html", s=doc)


@routes.get("/status/summary.json", summary="The public status, shaped like Statuspage's")
def status_json(request: Request) -> JSONResponse:
    return JSONResponse(summary(state_of(request)), headers={"Cache-Control": "no-cache"})


ATOM = "http://www.w3.org/2005/Atom"


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")


@routes.get("/status/feed.atom", summary="The incidents' updates as an Atom feed",
             response_class=Response,
             responses={200: {"content": {"application/atom+xml": {}}, "description": "Atom"}})  # fmt: skip
def status_feed(request: Request) -> Response:
    doc = summary(state_of(request))
    base = str(request.base_url).rstrip("/")
    ET.register_namespace("", ATOM)
    feed = ET.Element(f"{{{ATOM}}}feed")
    ET.SubElement(feed, f"{{{ATOM}}}title").text = f"{doc['page']['name']} status"
    ET.SubElement(feed, f"{{{ATOM}}}id").text = f"{base}/status"
    ET.SubElement(feed, f"{{{ATOM}}}link", href=f"{base}/status")
    ET.SubElement(feed, f"{{{ATOM}}}link", rel="self", href=f"{base}/status/feed.atom")
    ET.SubElement(feed, f"{{{ATOM}}}updated").text = _iso(doc["page"]["updated_at"])
    ET.SubElement(ET.SubElement(feed, f"{{{ATOM}}}author"), f"{{{ATOM}}}name").text = doc["page"][
        "name"
    ]
    entries = [(u, inc) for inc in doc["incidents"] for u in inc["updates"]]
    for u, inc in sorted(entries, key=lambda e: -e[0]["at"])[:100]:
        entry = ET.SubElement(feed, f"{{{ATOM}}}entry")
        ET.SubElement(entry, f"{{{ATOM}}}title").text = f"{inc['title']}: {u['status']}"
        ET.SubElement(entry, f"{{{ATOM}}}id").text = f"{base}/status#incident-{inc['id']}-{u['id']}"
        ET.SubElement(entry, f"{{{ATOM}}}link", href=f"{base}/status#incident-{inc['id']}")
        ET.SubElement(entry, f"{{{ATOM}}}updated").text = _iso(u["at"])
        ET.SubElement(entry, f"{{{ATOM}}}content", type="text").text = u["message"]
    body = ET.tostring(feed, encoding="utf-8", xml_declaration=True)
    return Response(body, media_type="application/atom+xml", headers=HEADERS)
