"""Audit trail figures: append rate and latency (file with fsync, PostgreSQL), verify time, and
the operator's burst of concurrent appends one at a time beside group commit.

    PYTHONPATH=tests .venv/bin/python tests/bench/bench_audit.py [--appends 2000]
        [--pg-appends 1000] [--records 100000] [--burst 2000] [--dir /path/on/the/volume]

Targets (SECURITY-NOTES P6): append p99 <= 20 ms, sustained >= 500 records/s. Run it on the
volume the audit log will live on: fsync cost is a property of the device.

Burst: ``--burst`` appends from 64 reconciles at once on a pool of 32 threads (the operator's
defaults), first each on its own (the lock, then ``append``: how the operator appended before
group commit), then through ``operator.recorder`` (``append_all`` of whatever is queued).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from wingman.audit import (
    GENESIS_HASH,
    AuditSink,
    FileSink,
    NewRecord,
    PostgresSink,
    make_record,
    verify,
)
from wingman.operator.recorder import Recorder

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.postgres import PostgresServer, PostgresUnavailable

SUBJECT = {"kind": "ExecutionGrant", "namespace": "team-a", "name": "grant-0001", "uid": "u"}
DATA = {"argv": ["kubectl", "-n", "team-a", "rollout", "restart", "deploy/web"], "exit": 0,
        "token": "sha256:" + "ab" * 32, "durationSeconds": 1.25}


def _measure(label: str, count: int, append: Callable[[int], object]) -> None:
    latencies = []
    start = time.perf_counter()
    for i in range(count):
        t0 = time.perf_counter()
        append(i)
        latencies.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    latencies.sort()
    p50 = statistics.median(latencies) * 1e3
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e3
    print(f"{label:<34} {count / total:9.0f} appends/s   p50 {p50:6.2f} ms   "
          f"p99 {p99:6.2f} ms   max {latencies[-1] * 1e3:6.2f} ms")


def bench_file(directory: Path, count: int) -> None:
    path = directory / "bench-audit.jsonl"
    with FileSink(path) as sink:
        _measure("file sink (flock + fsync)", count,
                 lambda i: sink.append("ExecutionResult", actor="gateway", subject=SUBJECT,
                                       data={**DATA, "i": i}))
    report = verify(str(path))
    assert report.ok and report.records == count, report.summary()


def bench_postgres(count: int, burst: int) -> None:
    try:
        server = PostgresServer.start(durable=True)
    except PostgresUnavailable as exc:
        print(f"postgres sink: skipped ({exc})")
        return
    try:
        dsn = server.create_database("bench")
        with PostgresSink(dsn) as sink:
            _measure("postgres sink (sync commit, fsync)", count,
                     lambda i: sink.append("ExecutionResult", actor="gateway", subject=SUBJECT,
                                           data={**DATA, "i": i}))
        t0 = time.perf_counter()
        report = verify(dsn)
        took = time.perf_counter() - t0
        assert report.ok and report.records == count, report.summary()
        print(f"{'verify postgres':<34} {count} records in {took:.2f} s "
              f"({count / took:,.0f} records/s)")
        if burst:
            bench_burst("postgres sink", lambda name: PostgresSink(server.create_database(name)),
                        burst)
    finally:
        server.stop()


BURST_CALLERS = 64
BURST_THREADS = 32


def _burst(sink: AuditSink, count: int, grouped: bool) -> tuple[float, float, float]:
    """``count`` appends by BURST_CALLERS concurrent callers: (appends/s, p50 ms, p99 ms)."""
    pool = ThreadPoolExecutor(BURST_THREADS)
    lock = threading.Lock()

    async def run(fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, fn)
    recorder = Recorder(sink, run)
    latencies: list[float] = []

    def alone(i: int) -> object:
        with lock:
            return sink.append("ExecutionResult", actor="operator", subject=SUBJECT,
                               data={**DATA, "i": i})

    async def caller(first: int) -> None:
        for i in range(first, count, BURST_CALLERS):
            t0 = time.perf_counter()
            if grouped:
                await recorder.append(NewRecord("ExecutionResult", "operator", SUBJECT,
                                                {**DATA, "i": i}))
            else:
                await run(functools.partial(alone, i))
            latencies.append(time.perf_counter() - t0)

    async def everyone() -> None:
        await asyncio.gather(*(caller(c) for c in range(BURST_CALLERS)))
    start = time.perf_counter()
    try:
        asyncio.run(everyone())
    finally:
        pool.shutdown()
    total = time.perf_counter() - start
    latencies.sort()
    return (count / total, statistics.median(latencies) * 1e3,
            latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e3)


def bench_burst(label: str, open_sink: Callable[[str], AuditSink], count: int) -> None:
    rows = []
    for grouped in (False, True):
        sink = open_sink("grouped" if grouped else "alone")
        try:
            rows.append(_burst(sink, count, grouped))
        finally:
            sink.close()
    (rate0, p50_0, p99_0), (rate1, p50_1, p99_1) = rows
    print(f"{label + ', burst':<34} one at a time {rate0:7.0f}/s p50 {p50_0:7.1f} ms "
          f"p99 {p99_0:7.1f} ms | group commit {rate1:7.0f}/s p50 {p50_1:7.1f} ms "
          f"p99 {p99_1:7.1f} ms | {rate1 / rate0:4.1f}x the rate")


def bench_verify(directory: Path, records: int) -> None:
    path = directory / "bench-verify.jsonl"
    now = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    prev = GENESIS_HASH
    t0 = time.perf_counter()
    with path.open("wb") as out:
        for seq in range(records):
            record = make_record(seq, prev, "ExecutionResult", actor="gateway", subject=SUBJECT,
                                 data={**DATA, "i": seq}, now=now + dt.timedelta(seconds=seq))
            out.write(record.to_bytes() + b"\n")
            prev = record.hash
    built = time.perf_counter() - t0
    size = path.stat().st_size
    t0 = time.perf_counter()
    report = verify(str(path))
    took = time.perf_counter() - t0
    assert report.ok and report.records == records and report.head == prev, report.summary()
    print(f"{'verify file':<34} {records:,} records ({size / 2**20:.1f} MiB) in {took:.2f} s "
          f"({records / took:,.0f} records/s; building them took {built:.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--pg-appends", type=int, default=1000)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--burst", type=int, default=2000,
                        help="appends of the burst comparison (0: skip)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="directory on the volume to measure (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        directory = Path(tmp)
        print(f"python {sys.version.split()[0]}, directory {directory}")
        bench_file(directory, args.appends)
        if args.burst:
            bench_burst("file sink", lambda name: FileSink(directory / f"burst-{name}.jsonl"),
                        args.burst)
        bench_postgres(args.pg_appends, args.burst)
        bench_verify(directory, args.records)


if __name__ == "__main__":
    main()
