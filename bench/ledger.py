"""Ledger benchmark: prints figures; not a test. Run from the project root:

    /work/venv/bin/python bench/ledger.py [--quick]

Figures are medians over a few runs; baselines are measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import itertools

from ledger import Ledger, LedgerSettings, encode_entry
from ledger.note import Verifier
from ledger.receipt import verify_receipt
from ledger.verify import verify_directory

ORIGIN = "bench.example/log"


def _entry(i: int) -> bytes:
    return encode_entry(
        "order/v1",
        {"order": f"ord-{i:012d}", "sale": "sale-42", "quantity": 1, "price_cents": 1999,
         "buyer": "c2FsdGVkLWNvbW1pdG1lbnQtb2YtdGhlLWJ1eWVy", "time_ms": 1_700_000_000_000 + i},
    )  # fmt: skip


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def throughput(
    directory: Path, appenders: int, total: int, settings: LedgerSettings
) -> float:
    """Durable single-entry appends per second from `appenders` concurrent tasks."""
    entries = [_entry(i) for i in range(total)]
    ledger = await Ledger.open(directory, settings)
    per_task = total // appenders

    async def appender(offset: int) -> None:
        for i in range(offset, offset + per_task):
            await ledger.append(entries[i])

    started = time.perf_counter()
    await asyncio.gather(*(appender(a * per_task) for a in range(appenders)))
    elapsed = time.perf_counter() - started
    await ledger.close()
    return per_task * appenders / elapsed


async def throughput_many(directory: Path, appenders: int, total: int, batch: int) -> float:
    entries = [_entry(i) for i in range(total)]
    ledger = await Ledger.open(directory, LedgerSettings(origin=ORIGIN))
    per_task = total // appenders

    async def appender(offset: int) -> None:
        for i in range(offset, offset + per_task, batch):
            await ledger.append_many(entries[i : i + batch])

    started = time.perf_counter()
    await asyncio.gather(*(appender(a * per_task) for a in range(appenders)))
    elapsed = time.perf_counter() - started
    await ledger.close()
    return per_task * appenders / elapsed


async def paced(directory: Path, rate_per_s: int, seconds: float) -> tuple[list[float], list[int]]:
    """Open-loop load at `rate_per_s`: append latencies (ms) and block intervals (ms)."""
    ledger = await Ledger.open(directory, LedgerSettings(origin=ORIGIN))
    latencies: list[float] = []
    tasks: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()
    first_block = ledger.block_height

    async def one(i: int) -> None:
        started = time.perf_counter()
        await ledger.append(_entry(i))
        latencies.append((time.perf_counter() - started) * 1000)

    tick_s = 0.002
    per_tick = rate_per_s * tick_s
    begin = loop.time()
    sent = 0
    while loop.time() - begin < seconds:
        due = int((loop.time() - begin) * rate_per_s)
        while sent < due:
            task = asyncio.create_task(one(sent))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        await asyncio.sleep(tick_s)
    await asyncio.gather(*tasks)
    assert per_tick > 0
    last_block = ledger.block_height
    times = []
    for height in range(first_block + 1, last_block + 1):
        block_note, _ = ledger.block_record(height)
        line = next(x for x in block_note.split(b"\n") if x.startswith(b"time_ms "))
        times.append(int(line.split()[1]))
    await ledger.close()
    intervals = [b - a for a, b in itertools.pairwise(times)]
    return latencies, intervals


async def build_log(directory: Path, size: int) -> str:
    ledger = await Ledger.open(directory, LedgerSettings(origin=ORIGIN, checkpoint_interval_ms=100))
    batch = 5_000
    for start in range(0, size, batch):
        await ledger.append_many([_entry(i) for i in range(start, min(size, start + batch))])
    key = ledger.verifier_key
    await ledger.close()
    return key


async def proofs(directory: Path, count: int) -> tuple[float, float, float]:
    """Median microseconds: receipt built (ledger.proof), inclusion path only, receipt checked."""
    ledger = await Ledger.open(directory, LedgerSettings(origin=ORIGIN))
    verifier = Verifier.parse(ledger.verifier_key)
    size = ledger.checkpoint.size
    indexes = [random.randrange(size) for _ in range(count)]
    build, path_only, check = [], [], []
    for index in indexes:
        t0 = time.perf_counter()
        receipt = ledger.proof(index)
        t1 = time.perf_counter()
        ledger._tree.inclusion_proof(index, size)
        t2 = time.perf_counter()
        verify_receipt(receipt, verifier)
        t3 = time.perf_counter()
        build.append((t1 - t0) * 1e6)
        path_only.append((t2 - t1) * 1e6)
        check.append((t3 - t2) * 1e6)
    await ledger.close()
    return statistics.median(build), statistics.median(path_only), statistics.median(check)


async def checkpoint_receipts(directory: Path, count: int) -> float:
    """Microseconds per receipt when a checkpoint's worth of them is made at once
    (`ledger.proofs` over the last `count` entries, as the order service does), median
    of 5 rounds."""
    ledger = await Ledger.open(directory, LedgerSettings(origin=ORIGIN))
    size = ledger.checkpoint.size
    indexes = list(range(size - count, size))
    rounds = []
    for _ in range(5):
        started = time.perf_counter()
        ledger.proofs(indexes)
        rounds.append((time.perf_counter() - started) * 1e6 / count)
    await ledger.close()
    return statistics.median(rounds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller sizes, one run")
    parser.add_argument("--dir", default=None, help="where to put data (default: a temp dir)")
    arguments = parser.parse_args()
    runs = 1 if arguments.quick else 3
    scale = 5 if arguments.quick else 1
    root = Path(tempfile.mkdtemp(prefix="ledger-bench-", dir=arguments.dir))
    counter = iter(range(10**9))

    def fresh() -> Path:
        path = root / f"run-{next(counter)}"
        return path

    def median_of(label: str, make: object) -> float:
        values = []
        for _ in range(runs):
            directory = fresh()
            values.append(asyncio.run(make(directory)))  # type: ignore[operator]
            shutil.rmtree(directory)
        result = statistics.median(values)
        print(f"{label}: median {result:,.0f} (runs: {', '.join(f'{v:,.0f}' for v in values)})")
        return result

    print(f"ledger benchmark: {os.cpu_count()} CPUs, data in {root}, {runs} run(s) each")
    group = LedgerSettings(origin=ORIGIN)
    median_of(
        "durable appends/s, 1000 concurrent appenders, group commit",
        lambda d: throughput(d, 1000, 200_000 // scale, group),
    )
    median_of(
        "durable appends/s, 1000 concurrent appenders, append_many(100)",
        lambda d: throughput_many(d, 1000, 400_000 // scale, 100),
    )
    single = LedgerSettings(origin=ORIGIN, batch_entries_max=1)
    median_of(
        "baseline durable appends/s, 100 appenders, one fsync per append",
        lambda d: throughput(d, 100, 3_000 // scale, single),
    )

    p50s, p99s, interval_medians, interval_worst = [], [], [], []
    for _ in range(runs):
        directory = fresh()
        latencies, intervals = asyncio.run(
            paced(directory, 5_000, 10.0 / (2 if arguments.quick else 1))
        )
        shutil.rmtree(directory)
        p50s.append(_percentile(latencies, 0.50))
        p99s.append(_percentile(latencies, 0.99))
        interval_medians.append(statistics.median(intervals))
        interval_worst.append(max(abs(i - 1000) for i in intervals))
        print(
            f"  paced 5,000/s: {len(latencies)} appends, p50 {p50s[-1]:.2f} ms, "
            f"p99 {p99s[-1]:.2f} ms, max {max(latencies):.2f} ms; block intervals "
            f"median {interval_medians[-1]} ms, min {min(intervals)} ms, max {max(intervals)} ms"
        )
    print(
        f"append latency at 5,000/s: p50 median {statistics.median(p50s):.2f} ms, "
        f"p99 median {statistics.median(p99s):.2f} ms"
    )
    print(
        f"checkpoint interval at 5,000/s: median {statistics.median(interval_medians)} ms, "
        f"worst deviation from 1000 ms (median over runs) {statistics.median(interval_worst)} ms"
    )

    size = 1_000_000 // scale
    directory = fresh()
    key = asyncio.run(build_log(directory, size))
    verifier = Verifier.parse(key)
    speeds = []
    for _ in range(runs):
        started = time.perf_counter()
        report = verify_directory(directory, verifier)
        speeds.append(report.entries / (time.perf_counter() - started))
    runs_text = ", ".join(f"{v:,.0f}" for v in speeds)
    print(
        f"verify whole log ({size:,} entries, {report.blocks} blocks): median "
        f"{statistics.median(speeds):,.0f} entries/s (runs: {runs_text})"
    )
    started = time.perf_counter()
    verify_directory(directory, verifier, check_canonical=True)
    canonical = size / (time.perf_counter() - started)
    print(f"verify whole log with --canonical (one run): {canonical:,.0f} entries/s")
    build, path_only, check = asyncio.run(proofs(directory, 2_000))
    print(
        f"proof at size {size:,}: receipt built {build:.1f} us (inclusion path alone "
        f"{path_only:.1f} us), receipt verified {check:.1f} us (medians of 2,000)"
    )
    per_receipt = asyncio.run(checkpoint_receipts(directory, 5_000))
    print(f"receipts of the last 5,000 entries at once (ledger.proofs): {per_receipt:.1f} us each")
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
