"""A 1 GB artifact to and from an S3 endpoint: throughput against plain boto3, peak memory.

    .venv/bin/python benchmarks/objectstore.py [--size-mb 1024] [--runs 3] [--no-write]

The S3 endpoint is moto's server mode in a process of its own (it keeps objects in its own
memory or spill files: its memory is not the client's). Each transfer runs in a fresh
client process, which reports its own figures:

- backout upload: ``S3BlobStore.put_file`` (hash the file for its address, a HEAD to see
  whether it is stored, boto3's multipart file upload, the file's stamp checked, and a HEAD
  to check the object);
- backout download: ``S3BlobStore.local_path`` into an empty host cache (one streamed GET
  written a MiB at a time, hash, atomic rename);
- plain boto3: ``upload_file`` / ``download_file`` with boto3's default settings, and
  ``get_object`` streamed to a file with ``shutil.copyfileobj`` (the same single stream
  backout uses, without the hash). moto answers each ranged GET by reading
  the whole object, so ``download_file``'s parallel 8 MiB ranges are quadratic against it:
  it is measured in the first run only, and the streamed copy is the fair baseline.

Memory, per client process: the peak resident set sampled every 5 ms with psutil, the
kernel's high-water mark (``ru_maxrss``) as a check, the resident set after the imports
and the client were made (the floor every boto3 program pays), and, in a separate
untimed run, tracemalloc's peak of Python allocations during the transfer.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

OPS = ("boto3-upload", "backout-upload", "boto3-get", "backout-download", "boto3-download")
FIRST_RUN_ONLY = {"boto3-download"}
BUCKET = "bench-artifacts"
CREDS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
         "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip


def make_file(path: Path, size_mb: int) -> None:
    """Write ``size_mb`` MiB of varied random blocks, one MiB at a time (never whole)."""
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for i in range(size_mb):
            f.write(i.to_bytes(8, "little") + block[8:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the client process ------------------------------------------------------------------


def child(op: str, endpoint: str, file: Path, work: Path, trace: bool) -> dict[str, Any]:
    import resource
    import tracemalloc

    import boto3
    import psutil

    from backout.registry.cache import BlobCache
    from backout.registry.objectstore import S3BlobStore

    me = psutil.Process()
    client = boto3.client("s3", endpoint_url=endpoint)
    store = S3BlobStore(BUCKET, "bench", endpoint=endpoint, cache=BlobCache(work / "cache"))
    store.client.head_bucket(Bucket=BUCKET)  # make the client and its connection now
    digest = (work / "digest").read_text().strip()
    base = me.memory_info().rss
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], me.memory_info().rss)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    if trace:
        tracemalloc.start()
    t0 = time.perf_counter()
    if op == "boto3-upload":
        client.upload_file(str(file), BUCKET, "plain/model.bin")
    elif op == "backout-upload":
        got, _ = store.put_file(file)
        assert got == digest, "the upload hashed to another digest"
    elif op == "boto3-download":
        client.download_file(BUCKET, "plain/model.bin", str(work / "plain.bin"))
    elif op == "boto3-get":
        body = client.get_object(Bucket=BUCKET, Key="plain/model.bin")["Body"]
        with open(work / "plain.bin", "wb") as f:
            shutil.copyfileobj(body, f, 1 << 20)
    elif op == "backout-download":
        path = store.local_path(digest)
        assert path.stat().st_size == file.stat().st_size
    seconds = time.perf_counter() - t0
    traced = tracemalloc.get_traced_memory()[1] if trace else None
    done.set()
    sampler.join()
    peak[0] = max(peak[0], me.memory_info().rss)
    return {
        "seconds": seconds,
        "base_rss": base,
        "peak_rss": peak[0],
        "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "traced_peak": traced,
    }


# -- the parent --------------------------------------------------------------------------


class Moto:
    """moto's S3 server in its own process on a free loopback port."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = root / "moto.log"
        env = {**os.environ, "TMPDIR": str(root)}  # where moto spills large objects
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"moto exited: {self.log.read_text()[-2000:]}") from None
                time.sleep(0.1)
        raise RuntimeError("moto did not start in 30 s")

    def rss_mb(self) -> float:
        import psutil

        return float(psutil.Process(self.proc.pid).memory_info().rss / 2**20)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def run_child(op: str, moto: Moto, art: Path, work: Path, *, trace: bool = False) -> dict[str, Any]:
    """Run one transfer in a fresh client process; its figures."""
    env = {**os.environ, **CREDS}
    argv = [sys.executable, __file__, "--child", op, "--endpoint", moto.endpoint,
            "--file", str(art), "--work", str(work)] + (["--trace"] if trace else [])  # fmt: skip
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        server = moto.log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{op} failed: {out.stderr[-3000:]}\n--- moto's log:\n{server}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def reset(client: Any, work: Path, digest: str) -> None:
    """Nothing from a previous transfer: no objects, no cache, no downloaded file."""
    for key in ("plain/model.bin", f"bench/sha256/{digest[:2]}/{digest}"):
        client.delete_object(Bucket=BUCKET, Key=key)
    shutil.rmtree(work / "cache", ignore_errors=True)
    (work / "plain.bin").unlink(missing_ok=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-trace", action="store_true", help="skip the tracemalloc runs")
    ap.add_argument("--no-write", action="store_true", help="print results, leave RESULTS.md alone")
    ap.add_argument("--child", choices=OPS, help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", help=argparse.SUPPRESS)
    ap.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.endpoint, args.file, args.work, args.trace)))
        return

    import boto3

    from backout.registry.artifacts import hash_file

    work = Path(tempfile.mkdtemp(prefix="backout-bench-s3-"))
    moto = None
    try:
        art = work / "model.bin"
        make_file(art, args.size_mb)
        size = art.stat().st_size
        digest, _ = hash_file(art)  # also warms the page cache for every upload
        (work / "digest").write_text(digest)
        moto = Moto(work)
        os.environ.update(CREDS)
        client = boto3.client("s3", endpoint_url=moto.endpoint)
        client.create_bucket(Bucket=BUCKET)
        load_before = os.getloadavg()
        results: dict[str, list[dict[str, Any]]] = {op: [] for op in OPS}
        server_peak = 0.0
        for run in range(args.runs):
            reset(client, work, digest)
            for op in OPS:  # uploads first: the downloads read what they stored
                if run and op in FIRST_RUN_ONLY:
                    continue
                (work / "plain.bin").unlink(missing_ok=True)
                r = run_child(op, moto, art, work)
                results[op].append(r)
                server_peak = max(server_peak, moto.rss_mb())
                print(f"run {run + 1} {op}: {size / 2**20 / r['seconds']:,.0f} MiB/s, "
                      f"peak RSS {r['peak_rss'] / 2**20:.0f} MB", flush=True)  # fmt: skip
        traced: dict[str, float] = {}
        if not args.no_trace:
            reset(client, work, digest)
            for op in OPS:
                if op not in FIRST_RUN_ONLY:
                    (work / "plain.bin").unlink(missing_ok=True)
                    traced[op] = run_child(op, moto, art, work, trace=True)["traced_peak"] / 2**20
        load_after = os.getloadavg()
        report(args, size, results, traced, server_peak, load_before, load_after)
    finally:
        if moto is not None:
            moto.stop()
        shutil.rmtree(work, ignore_errors=True)


def report(args: Any, size: int, results: dict[str, list[dict[str, Any]]],
           traced: dict[str, float], server_peak: float,
           load_before: tuple[float, float, float], load_after: tuple[float, float, float]) -> None:  # fmt: skip
    from _results import write_section

    mib = size / 2**20

    def med(op: str, key: str) -> float:
        return statistics.median(r[key] for r in results[op])

    def rate(op: str) -> float:
        return mib / med(op, "seconds")

    def worst(op: str, key: str) -> float:
        return max(r[key] for r in results[op]) / 2**20

    rows = []
    for op in OPS:
        runs = ", ".join(f"{mib / r['seconds']:,.0f}" for r in results[op])
        tm = f"{traced[op]:.1f}" if op in traced else "–"
        rows.append(
            f"| {op} | {rate(op):,.0f} | {runs} | {worst(op, 'peak_rss'):.0f} | "
            f"{worst(op, 'maxrss'):.0f} | {med(op, 'base_rss') / 2**20:.0f} | {tm} |"
        )
    up = rate("backout-upload") / rate("boto3-upload")
    down = rate("backout-download") / rate("boto3-get")
    down_ranged = rate("backout-download") / rate("boto3-download")
    peak = max(worst("backout-upload", "peak_rss"), worst("backout-download", "peak_rss"))
    peak_max = max(worst("backout-upload", "maxrss"), worst("backout-download", "maxrss"))
    met = "met" if max(peak, peak_max) < 100 else "NOT met"
    body = f"""Artifact: {mib:,.0f} MiB of random bytes, page-cached. S3 endpoint: moto's server mode (`python -m moto.server`) in its own process on 127.0.0.1 (its RSS peaked at {server_peak:,.0f} MB; not counted). Each transfer in a fresh client process; {args.runs} runs, medians (`download_file` once); backout uploads 8 MiB parts, 4 in flight (plain boto3: its defaults, 8 MiB and 10). Machine load (1, 5, 15 min) before: {" ".join(f"{x:.2f}" for x in load_before)}; after: {" ".join(f"{x:.2f}" for x in load_after)}.

| transfer | MiB/s (median) | run by run | peak RSS MB (psutil, 5 ms) | peak RSS MB (ru_maxrss) | RSS after imports MB | tracemalloc peak MB |
| --- | ---: | --- | ---: | ---: | ---: | ---: |
{chr(10).join(rows)}

- upload throughput backout / plain boto3 `upload_file`: **{up:.2f}x** (backout also hashes the file for its address first and checks the object afterwards)
- download throughput backout / plain boto3 streamed `get_object` copy: **{down:.2f}x** (backout also hashes the bytes on the way and renames the file into the cache); against plain `download_file` (parallel ranged GETs, first run only): {down_ranged:.2f}x — moto reads the whole object for each range, so that baseline is slow here, not on S3
- reading them: the client and moto share this machine's two cores with other engineers' work, so run-by-run figures spread widely (see the columns); the ratios are of medians from the same run
- peak memory of the backout client, upload or download: **{max(peak, peak_max):.0f} MB** resident, of which about {med("backout-upload", "base_rss") / 2**20:.0f} MB is Python, boto3 and backout loaded before any transfer (target < 100 MB): {met}
"""
    print(body)
    if not args.no_write:
        write_section(
            "objectstore", f"Object storage: a {mib / 1024:g} GiB artifact to and from S3", body
        )


if __name__ == "__main__":
    main()
