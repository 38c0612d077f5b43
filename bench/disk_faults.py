"""Disk faults held long: what the embedded server answers, spends and logs while its
ledger's disk fails, and what was lost after the restart (must be 0).

    python bench/disk_faults.py [--fault all|enospc-on-write|enospc-on-fsync|eio-on-write|
        eio-on-fsync] [--hold-s 30] [--socket-buyers 40] [--http-buyers 10] [--pace-s 0.5]

The long version of tests/faults/test_disk_faults.py, with the same parts: a real
`python -m livecommerce serve`, buyers ordering one unit at a time (`--pace-s` apart each)
on room sockets and over HTTP, ENOSPC on write from a real loop-mounted ext4 filled up
(root needed), the other faults from the fault shim (tests/faults/fault_shim.c, gcc
needed) on the ledger's files. Each fault is held `--hold-s` with orders flowing, then
removed; the server is restarted on the same data, every order refused during the fault
is retried with the same id, and the ledger is read after a last stop.

Per fault it prints: the orders answered during the fault and how (status:reason), their
answer time (p50, p99, max, client side), the server's CPU (user + system, with its
signature child) and log growth over the fault, then after the restart: orders told
"accepted" in all, those the ledger holds at the index told, lost (told accepted, not in
the ledger: must be 0), refused but recorded (heard "unavailable", yet the ledger holds
them: their frame reached the disk though its fsync failed; the retry answers "accepted"),
and whether `python -m ledger verify` passes. Figures only; the test asserts the promises.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from ledger import Ledger, LedgerSettings, decode_entry  # noqa: E402
from livecommerce.clients.signing import KeyPair  # noqa: E402
from tests.faults.disk import FaultShim, build_shim, small_disk  # noqa: E402
from tests.faults.paced_buyers import Answer, Traffic, post_order  # noqa: E402
from tests.faults.promises import cpu_seconds, ledger_on_disk  # noqa: E402
from tests.livecommerce.pipeline.flows import register, room_with_sale  # noqa: E402
from tests.livecommerce.processes import ServerProcess  # noqa: E402

FAULTS = {
    "enospc-on-write": "",  # the real full filesystem
    "enospc-on-fsync": "fsync ENOSPC",
    "eio-on-write": "write EIO torn",
    "eio-on-fsync": "fsync EIO lose",
}
UNITS_OFFERED = 1_000_000
PER_BUYER_LIMIT = 100


async def recorded_orders(ledger_dir: Path, sale_id: str) -> set[str]:
    """The sale's accepted orders in a stopped server's ledger, opened (so recovered) as
    its next start opens it."""
    ledger = await Ledger.open(ledger_dir, LedgerSettings())
    try:
        entries = [decode_entry(ledger.entry(index)) for index in range(ledger.size)]
    finally:
        await ledger.close()
    return {
        fields["order_id"]
        for entry_type, fields in entries
        if entry_type == "order/v1"
        and fields.get("action") == "accepted"
        and fields["sale_id"] == sale_id
    }


def milliseconds(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"{statistics.median(ordered) * 1000:.1f}/{p99 * 1000:.1f}/{ordered[-1] * 1000:.1f}"


async def run_fault(name: str, directory: Path, arguments: argparse.Namespace) -> None:
    shim_line = FAULTS[name]
    async with contextlib.AsyncExitStack() as stack:
        if shim_line:
            data_dir = directory / "data"
            shim: FaultShim | None = FaultShim(
                build_shim(directory), data_dir / "ledger", directory / "control"
            )
            disk = None
        else:
            disk = stack.enter_context(small_disk(directory))
            data_dir = disk.mount_point / "data"
            shim = None
        environment = shim.environment() if shim is not None else {}
        server = await asyncio.to_thread(
            ServerProcess, data_dir, "", directory / "server-1.log", environment
        )
        stack.callback(server.stop)
        async with httpx.AsyncClient(timeout=10) as client:
            setup = await room_with_sale(
                client,
                server.http,
                units_offered=UNITS_OFFERED,
                per_buyer_limit=PER_BUYER_LIMIT,
                duration_ms=3_600_000,
                payment_hold_ms=3_600_000,
            )
            buyers = [KeyPair() for _ in range(arguments.socket_buyers + arguments.http_buyers)]
            for buyer in buyers:
                await register(client, server.http, buyer, "buyer")
            traffic = Traffic(
                server.http,
                server.ws,
                setup.room_id,
                setup.sale_id,
                setup.price_cents,
                buyers[: arguments.socket_buyers],
                buyers[arguments.socket_buyers :],
                pace_s=arguments.pace_s,
            )
            traffic.start()
            await asyncio.sleep(2.0)
            cpu_before = cpu_seconds(server.process.pid)
            log_before = server.log_path.stat().st_size
            fault_s = time.monotonic()
            if shim is not None:
                shim.inject(shim_line)
            else:
                assert disk is not None
                disk.fill()
            await asyncio.sleep(arguments.hold_s)
            cpu_used = cpu_seconds(server.process.pid) - cpu_before
            log_grown = server.log_path.stat().st_size - log_before
            held_s = time.monotonic() - fault_s
            if shim is not None:
                shim.remove()
            else:
                assert disk is not None
                disk.free()
            await traffic.stop()
        await asyncio.to_thread(server.stop)
        during = traffic.answers_since(fault_s)
        # What the restart will find: recovery (a torn tail cut) as the server does it.
        entries_wal = data_dir / "ledger" / "entries.wal"
        bytes_before = entries_wal.stat().st_size
        found = await recorded_orders(data_dir / "ledger", setup.sale_id)
        cut_bytes = bytes_before - entries_wal.stat().st_size
        refused_but_recorded = sum(
            1
            for answer in traffic.answers
            if answer.status != "accepted" and answer.order_id in found
        )
        restarted = await asyncio.to_thread(ServerProcess, data_dir, "", directory / "server-2.log")
        stack.callback(restarted.stop)
        async with httpx.AsyncClient(timeout=10) as client:
            refused = [a for a in traffic.answers if a.status != "accepted"]
            retries: list[Answer] = []
            for answer in refused:
                retries.append(
                    await post_order(client, restarted.http, traffic.orders[answer.order_id])
                )
        await asyncio.to_thread(restarted.stop)
        try:
            on_disk = await ledger_on_disk(data_dir / "ledger")
            verified = "ok"
        except Exception as error:
            print(f"  the ledger does not verify: {error}")
            raise
        recorded = on_disk.accepted(setup.sale_id)
        told = {a.order_id: a for a in [*traffic.answers, *retries] if a.status == "accepted"}
        lost = [
            order_id
            for order_id, answer in told.items()
            if recorded.get(order_id, (-1, {}))[0] != answer.ledger_index
        ]
        how = Counter(f"{a.status}:{a.reason}" for a in during)
        print(f"{name}: held {held_s:.1f} s")
        print(f"  orders during the fault: {len(during)} {dict(how)}")
        print(
            f"  answer time during the fault p50/p99/max ms: "
            f"{milliseconds([a.waited_s for a in during])}"
        )
        print(
            f"  server CPU over the fault: {cpu_used:.2f} s ({cpu_used / held_s:.1%} of a core);"
            f" log grew {log_grown} bytes"
        )
        print(
            f"  after the restart: told accepted {len(told)}, in the ledger at the index told "
            f"{len(told) - len(lost)}, lost {len(lost)}, refused but recorded "
            f"{refused_but_recorded}, torn bytes cut {cut_bytes}, retries "
            f"{dict(Counter(f'{a.status}:{a.reason}' for a in retries))}, "
            f"ledger verify {verified} ({on_disk.report.entries} entries)"
        )


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fault", default="all", choices=["all", *FAULTS])
    parser.add_argument("--hold-s", type=float, default=30.0)
    parser.add_argument("--socket-buyers", type=int, default=40)
    parser.add_argument("--http-buyers", type=int, default=10)
    parser.add_argument("--pace-s", type=float, default=0.5)
    arguments = parser.parse_args()
    names = list(FAULTS) if arguments.fault == "all" else [arguments.fault]
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"disk-fault-{name}-") as directory:
            await run_fault(name, Path(directory), arguments)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
