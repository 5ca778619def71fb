"""A process for the outbox's crash tests: queue a notice and die, or deliver and be killed.

``tests/control/test_outbox_crash.py`` runs ``python tests/control/outbox_process.py MODE
STORE_URL WEBHOOK_URL``:

- ``enqueue``: writes an event and its notice (to WEBHOOK_URL) in one transaction, prints
  ``committed`` and then waits, never sending — the test kills it with SIGKILL there;
- ``deliver``: runs the outbox's delivery until nothing is pending, then prints ``done``
  (the test may kill it while a send is in flight).
"""

from __future__ import annotations

import sys
import time

from backout.control.alerts import Alerts
from backout.control.outbox import Outbox
from backout.control.policy import parse_policy
from backout.store import audit, open_store


def main(mode: str, url: str, webhook: str) -> None:
    store = open_store(url)
    if mode == "enqueue":
        policy = parse_policy(f"notifications:\n  webhooks: [{webhook!r}]\n")
        with store.write() as conn:
            audit.append(conn, "freeze", model="fraud", actor="test", reason="both unhealthy")
            Alerts(store, actor="test").notify(
                "freeze",
                "fraud",
                "fraud is frozen",
                "both unhealthy",
                7,
                policy=policy,
                severity="critical",
                conn=conn,
            )
        print("committed", flush=True)
        time.sleep(120)
    elif mode == "deliver":
        # A short claim: a send cut short by a kill is retried by the next process in ~1 s.
        outbox = Outbox(store, claim_s=1.0, backoff=0.05, max_backoff=0.2)
        while outbox.items("pending"):
            outbox.deliver_due()
            time.sleep(0.05)
        print("done", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
