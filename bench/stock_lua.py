"""Reservations per second: the Redis Lua stock script and the in-process store.

    python bench/stock_lua.py [--redis-url redis://127.0.0.1:6379/0] [--runs 3]
        [--reservations 20000] [--offered 15000] [--clients 64] [--connections 32]

Without --redis-url it starts a private redis-server on a free loopback port (no
persistence) and stops it afterwards. Each run loads a fresh sale, then `--clients`
asyncio tasks reserve one unit each for distinct buyers until `--reservations` are made.
It prints the median of `--runs` runs and the oversold units (accepted - offered when
positive, and any mismatch between accepted units and the store's remaining), which must
be 0. Figures only; no assertion on speed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from livecommerce.stock.base import StockStore
from livecommerce.stock.memory import MemoryStockStore
from livecommerce.stock.redis_lua import RESERVE_LUA, RedisStockStore, sale_keys


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_redis(directory: str) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH; pass --redis-url")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", directory],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, f"redis://127.0.0.1:{port}/0"
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise SystemExit("redis-server did not start") from None
            time.sleep(0.02)


async def one_run(
    store: StockStore, sale_id: str, reservations: int, offered: int, clients: int
) -> tuple[float, int, int]:
    """(reservations per second, accepted units, oversold units)."""
    await store.load_sale(sale_id, offered)
    next_number = 0
    accepted = 0

    async def client() -> None:
        nonlocal next_number, accepted
        while next_number < reservations:
            number = next_number
            next_number += 1
            result = await store.reserve(sale_id, f"buyer{number}", f"order{number}", 1, 1)
            if result.accepted and not result.duplicate:
                accepted += result.quantity

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed_s = time.perf_counter() - started
    remaining = await store.remaining(sale_id)
    assert remaining is not None
    oversold = max(0, accepted - offered) + abs((offered - remaining) - accepted)
    return reservations / elapsed_s, accepted, oversold


async def bench(name: str, store: StockStore, arguments: argparse.Namespace) -> None:
    rates: list[float] = []
    oversold_total = 0
    accepted_seen: set[int] = set()
    for run in range(arguments.runs):
        rate, accepted, oversold = await one_run(
            store,
            f"bench-{name}-{run}-{time.time_ns()}",
            arguments.reservations,
            arguments.offered,
            arguments.clients,
        )
        rates.append(rate)
        oversold_total += oversold
        accepted_seen.add(accepted)
    print(
        f"{name:<10} {statistics.median(rates):>10,.0f} reservations/s (median of {arguments.runs};"
        f" runs: {', '.join(f'{r:,.0f}' for r in rates)})"
        f"  accepted={sorted(accepted_seen)} offered={arguments.offered}"
        f"  oversold={oversold_total}"
    )


async def bench_server_side(url: str, arguments: argparse.Namespace) -> None:
    """The bare script, driven by redis-benchmark (C, 50 connections): what Redis itself
    sustains, without the Python client in the way. Random buyer and order ids."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        print("redis-benchmark is not on PATH: server-side figure skipped")
        return
    requests = arguments.reservations * 5
    offered = requests // 2
    store = RedisStockStore.from_url(url)
    try:
        rates: list[float] = []
        oversold_total = 0
        accepted_seen: set[int] = set()
        for run in range(arguments.runs):
            sale_id = f"bench-server-{run}-{time.time_ns()}"
            await store.load_sale(sale_id, offered)
            await store.reserve(sale_id, "warm", "up", 1, 1)  # Loads the script (SCRIPT LOAD).
            sha = hashlib.sha1(RESERVE_LUA.encode()).hexdigest()
            port = url.rsplit(":", 1)[1].split("/")[0]
            host = url.split("//", 1)[1].rsplit(":", 1)[0]
            completed = await asyncio.to_thread(
                subprocess.run,
                [binary, "-h", host, "-p", port, "-c", "50", "-n", str(requests),
                 "-r", "1000000000", "-q", "EVALSHA", sha, "3", *sale_keys(sale_id),
                 "b__rand_int__", "o__rand_int__", "1", "1", "100000000"],
                capture_output=True, text=True, check=True, timeout=300,
            )  # fmt: skip
            output = completed.stdout
            found = re.findall(r"([0-9.]+) requests per second", output)
            rates.append(float(found[-1]) if found else float("nan"))
            remaining = await store.remaining(sale_id)
            assert remaining is not None
            held = await store.client.hvals(sale_keys(sale_id)[2])
            taken = sum(int(value) for value in held)
            oversold_total += max(0, -remaining) + abs((offered - remaining) - taken)
            accepted_seen.add(offered - remaining)
        print(
            f"{'redis-lua (redis-benchmark, 50 conns)':<10} {statistics.median(rates):>10,.0f}"
            f" reservations/s (median of {arguments.runs}; runs:"
            f" {', '.join(f'{r:,.0f}' for r in rates)}) {requests} requests,"
            f" accepted={sorted(accepted_seen)} offered={offered}  oversold={oversold_total}"
        )
    finally:
        await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--reservations", type=int, default=20_000)
    parser.add_argument("--offered", type=int, default=15_000)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--connections", type=int, default=32)
    arguments = parser.parse_args()
    print(
        f"{arguments.reservations} reservations of 1 unit, {arguments.offered} offered,"
        f" {arguments.clients} concurrent clients, {arguments.connections} Redis connections"
    )
    process = None
    with tempfile.TemporaryDirectory() as directory:
        url = arguments.redis_url
        if not url:
            process, url = start_redis(directory)
        try:
            store = RedisStockStore.from_url(url, connections_max=arguments.connections)
            try:
                await bench("redis-lua", store, arguments)
            finally:
                await store.close()
            await bench("memory", MemoryStockStore(), arguments)
            await bench_server_side(url, arguments)
        finally:
            if process is not None:
                process.kill()
                process.wait(timeout=10)


if __name__ == "__main__":
    asyncio.run(main())
