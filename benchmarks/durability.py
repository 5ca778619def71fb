"""What durability costs: the outbox on a decision's transaction, delivery, and pruning.

    .venv/bin/python benchmarks/durability.py            # full run (~1 min), writes RESULTS.md
    .venv/bin/python benchmarks/durability.py --quick    # a short smoke run
    .venv/bin/python benchmarks/durability.py --no-write # print the section, keep RESULTS.md

On the embedded default (a SQLite file in a temporary folder):

- **Outbox on the decision path**: the wall time of a write transaction that appends one
  event, against one that also queues its notice for one webhook (what every controller
  decision now does), median over many transactions, measured alternately.
- **Delivery**: notices queued, then delivered by :class:`backout.control.outbox.Outbox` to a
  webhook receiver on 127.0.0.1 that answers 200 at once; notices per second.
- **Pruning**: telemetry rows and events a year and more old, pruned in the controller's
  batches (5,000 rows per kind per call, one transaction each); the longest call is how long
  the store's write lock is held at once, the number a tick could wait behind. Then the time
  to verify the remaining chain from its signed checkpoint.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _results import write_section

from backout.control.notify import Notice
from backout.control.outbox import Outbox, WebhookSender, enqueue
from backout.control.policy import NoticeKind
from backout.store import Store, audit, open_store, retention, schema

DAY = 86400.0


class Receiver:
    """A webhook receiver on 127.0.0.1 that answers 200 at once and counts."""

    def __init__(self) -> None:
        self.count = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["content-length"]))
                receiver.count += 1
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def notice(i: int) -> Notice:
    return Notice(kind=NoticeKind.PHASE, model="fraud", title=f"fraud rollout: step {i}")


def decision_cost(store: Store, n: int, url: str) -> tuple[float, float]:
    """Median ms of a transaction with one event, and with one event and its notice."""
    plain: list[float] = []
    queued: list[float] = []
    for i in range(n):
        t0 = time.perf_counter()
        with store.write() as conn:
            audit.append(conn, "phase.rolling-out", model="fraud", actor="bench")
        plain.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with store.write() as conn:
            audit.append(conn, "phase.rolling-out", model="fraud", actor="bench")
            enqueue(conn, notice(i), webhooks=[url], now=time.time())
        queued.append(time.perf_counter() - t0)
    return statistics.median(plain) * 1000, statistics.median(queued) * 1000


def delivery_rate(store: Store, receiver: Receiver) -> tuple[int, float]:
    outbox = Outbox(store, senders={"webhook": WebhookSender(timeout=5)}, batch=200)
    pending = len(outbox.items("pending"))
    t0 = time.perf_counter()
    while outbox.deliver_due():
        pass
    took = time.perf_counter() - t0
    outbox.close()
    return pending, pending / took


def fill_old(store: Store, telemetry: int, events: int, now: float) -> None:
    old = now - 500 * DAY
    with store.write() as conn:
        rows = [{"model": "fraud", "version": "1.0.0", "start": old + i, "end": old + i + 1,
                 "worker": "w", "data": {"requests": 100}} for i in range(telemetry)]  # fmt: skip
        for i in range(0, len(rows), 5000):
            conn.execute(schema.telemetry.insert(), rows[i : i + 5000])
    with store.write() as conn:
        for i in range(events):
            audit.append(conn, "note", model="fraud", actor="bench",
                         at=datetime.fromtimestamp(old + i, UTC))  # fmt: skip


def pruning(store: Store, now: float) -> tuple[int, int, float, float, int]:
    """(telemetry pruned, events pruned, total s, longest call s, calls)."""
    calls: list[float] = []
    tel = ev = 0
    t0 = time.perf_counter()
    while True:
        t1 = time.perf_counter()
        report = retention.prune(store, now=now, batch=5000)
        calls.append(time.perf_counter() - t1)
        tel += report.telemetry
        ev += report.events
        if not report.more:
            break
    return tel, ev, time.perf_counter() - t0, max(calls), len(calls)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a short smoke run")
    ap.add_argument("--no-write", action="store_true", help="print, keep RESULTS.md")
    args = ap.parse_args()
    n_tx, n_tel, n_ev = (100, 20_000, 5_000) if args.quick else (1000, 200_000, 50_000)
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{Path(tmp) / 'bench.db'}", create=True)
        receiver = Receiver()
        try:
            plain_ms, queued_ms = decision_cost(store, n_tx, receiver.url)
            delivered, rate = delivery_rate(store, receiver)
            with store.write() as conn:  # start the pruning measurement from a clean slate
                conn.execute(schema.events.delete())
                conn.execute(schema.meta.delete().where(schema.meta.c.key == "events.head"))
            now = time.time()
            fill_old(store, n_tel, n_ev, now)
            tel, ev, total_s, longest_s, calls = pruning(store, now)
            t0 = time.perf_counter()
            with store.read() as conn:
                problems = audit.verify_chain(conn)
            verify_ms = (time.perf_counter() - t0) * 1000
        finally:
            receiver.stop()
            store.dispose()
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    body = f"""\
SQLite file in a temporary folder; {n_tx:,} transactions of each kind, measured alternately.
Machine load (1, 5, 15 min) before: {load_before}; after: {load_after} (a shared machine).

| what | figure |
| --- | ---: |
| write transaction: one event | {plain_ms:.2f} ms |
| write transaction: one event + its notice queued in the outbox | {queued_ms:.2f} ms |
| outbox delivery to a loopback webhook ({delivered:,} notices) | {rate:,.0f} notices/s |
| pruning {tel:,} telemetry rows and {ev:,} events, {calls} call(s) of 5,000 per kind | {total_s:.2f} s |
| longest single pruning call (write lock held) | {longest_s * 1000:.0f} ms |
| `history --verify` of the rest from the signed checkpoint | {verify_ms:.1f} ms |

- the outbox adds **{queued_ms - plain_ms:.2f} ms** to a decision's transaction
- chain after pruning: {"intact" if not problems else f"{len(problems)} problem(s)"}
"""
    print(body)
    if not args.no_write and not args.quick:
        write_section("durability", "Durability: outbox and retention", body)


if __name__ == "__main__":
    main()
