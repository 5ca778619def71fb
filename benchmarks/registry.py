"""Register a 1 GB artifact: hashing throughput against sha256sum, and peak memory.

    .venv/bin/python benchmarks/registry.py [--size-mb 1024] [--runs 3]

Both tools read the same file from the page cache (it is read once first to warm it), and
each figure is the median of several runs. Peak memory is the maximum resident set of the
``backout release register`` process, next to that of an idle ``backout`` process (``init``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _results import write_section

from backout.registry.artifacts import hash_file

BACKOUT = str(Path(sys.executable).with_name("backout"))


def make_file(path: Path, size_mb: int) -> None:
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for i in range(size_mb):
            # Vary each block so nothing downstream can shortcut repeated content.
            f.write(i.to_bytes(8, "little") + block[8:])


def timed(fn: object, runs: int) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def peak_rss_mb(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run ``argv`` in a fresh wrapper; return (peak RSS in MB, wall seconds)."""
    wrapper = (
        "import resource, subprocess, sys, time; t=time.perf_counter(); "
        "r=subprocess.run(sys.argv[1:]); dt=time.perf_counter()-t; "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, dt); sys.exit(r.returncode)"
    )
    out = subprocess.run(
        [sys.executable, "-c", wrapper, *argv], env=env, capture_output=True, text=True, check=True
    )
    kb, secs = out.stdout.strip().splitlines()[-1].split()
    return int(kb) / 1024, float(secs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-write", action="store_true", help="print results, leave RESULTS.md alone")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="backout-bench-"))
    try:
        art = work / "model.bin"
        make_file(art, args.size_mb)
        size = art.stat().st_size
        subprocess.run(["cat", str(art)], stdout=subprocess.DEVNULL, check=True)  # warm the cache

        t_sum = timed(
            lambda: subprocess.run(["sha256sum", str(art)], capture_output=True, check=True),
            args.runs,
        )
        t_ours = timed(lambda: hash_file(art), args.runs)

        env = {**os.environ, "BACKOUT_HOME": str(work / "home")}
        idle_mb, _ = peak_rss_mb([BACKOUT, "init"], env)
        reg_mb, reg_s = [], []
        for i in range(args.runs):
            mb, secs = peak_rss_mb(
                [BACKOUT, "release", "register", "bench", f"1.0.{i}", "--artifact", str(art)], env
            )
            reg_mb.append(mb)
            reg_s.append(secs)
            shutil.rmtree(work / "home" / "artifacts", ignore_errors=True)  # each run stores anew
        mib = size / 2**20
        rows = {
            "sha256sum": mib / t_sum,
            "backout hash_file": mib / t_ours,
            "backout release register (hash + copy + fsync)": mib / statistics.median(reg_s),
        }
        ratio = t_sum / t_ours
        peak = statistics.median(reg_mb)
        body = [
            f"Artifact: {mib:,.0f} MiB of random bytes, page-cached; median of {args.runs} runs.",
            "",
            "| what | MiB/s |",
            "| --- | ---: |",
            *[f"| {k} | {v:,.0f} |" for k, v in rows.items()],
            "",
            f"- hashing throughput ratio backout / sha256sum: **{ratio:.2f}x** (target >= 0.9x): "
            + ("met" if ratio >= 0.9 else "NOT met"),
            f"- peak RSS of `backout release register`: {peak:.0f} MB; idle `backout init`: {idle_mb:.0f} MB; "
            f"difference **{peak - idle_mb:.0f} MB** (target < 100 MB): "
            + ("met" if peak - idle_mb < 100 else "NOT met"),
        ]
        text = "\n".join(body)
        print(text)
        if not args.no_write:
            write_section("registry", "Registry: registering a 1 GB artifact", text)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
