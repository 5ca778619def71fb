"""Callers for the tour: POST fraud predictions to a running gateway at a steady rate.

    python examples/tour/traffic.py [--url http://127.0.0.1:8000] [--rate 40] [--seconds 300]

Each request carries a routing key (``x-backout-key``, a made-up customer), so a customer
stays on one release while a rollout or a rollback moves the weights. Prints one line of
counts per 10 seconds (answers by status and by release) and stops after ``--seconds``.
"""

from __future__ import annotations

import argparse
import collections
import random
import time

import httpx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--rate", type=float, default=40.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--model", default="fraud")
    args = parser.parse_args()
    rng = random.Random(14)
    counts: collections.Counter[str] = collections.Counter()
    start = next_report = time.monotonic()
    sent = 0
    with httpx.Client(base_url=args.url, timeout=5.0) as client:
        while (now := time.monotonic()) - start < args.seconds:
            row = [round(rng.gauss(1.0, 1.0), 3), round(rng.gauss(2.0, 1.5), 3),
                   round(rng.gauss(4.0, 2.0), 3)]  # fmt: skip
            try:
                r = client.post(
                    f"/models/{args.model}/predict",
                    json={"instances": [row]},
                    headers={"x-backout-key": f"customer-{rng.randrange(5000)}"},
                )
                counts[f"{r.status_code} {r.headers.get('x-backout-release', '-')}"] += 1
            except httpx.HTTPError as exc:
                counts[type(exc).__name__] += 1
            sent += 1
            if now >= next_report:
                print(" · ".join(f"{k}: {v}" for k, v in sorted(counts.items())), flush=True)
                next_report = now + 10
            # Keep the average rate: sleep until this request's slot in the schedule.
            time.sleep(max(0.0, start + sent / args.rate - time.monotonic()))
    print("done:", " · ".join(f"{k}: {v}" for k, v in sorted(counts.items())), flush=True)


if __name__ == "__main__":
    main()
