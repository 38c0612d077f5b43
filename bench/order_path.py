"""The embedded order path in one process, without sockets: CPU time per signed order.

    python bench/order_path.py [--orders 20000] [--buyers 2000] [--batch 250]
        [--signatures-in-child] [--profile FILE]

What it runs is the server's own code from the point where a socket's frame has been
decoded: `OrderPipeline.submit_order` (the worker's batches through the commerce core,
`ledger.append_many` with its group commit and fsync, the answers) and then the receipts
once a checkpoint covers the orders. Answers and receipts are encoded as the hub would
send them (`protocol.encode`), then dropped. Orders are signed beforehand, so the figure
is the server's work alone: CPU seconds of this process (all threads) per order, and the
wall time. `bench/flash_sale.py` measures the whole server over real sockets; this one
says how much of it is the order path. Figures only: nothing is asserted.

`--signatures-in-child` checks signatures in the verifier's child process (the
`order_signatures_in_child` setting) and also prints the child's CPU per order.
`--profile FILE` writes a cProfile of the run (cProfile inflates small Python calls;
read it for proportions).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ledger import Ledger, LedgerSettings, decode_entry, encode_entry  # noqa: E402
from livecommerce import protocol as m  # noqa: E402
from livecommerce.clients.signing import KeyPair  # noqa: E402
from livecommerce.commerce.catalog import AddStock, ListProduct  # noqa: E402
from livecommerce.commerce.core import CommerceCore  # noqa: E402
from livecommerce.commerce.identity import Register, SessionAuthority  # noqa: E402
from livecommerce.commerce.orders import PlaceOrder  # noqa: E402
from livecommerce.commerce.rooms import LinkRoom  # noqa: E402
from livecommerce.commerce.sales import ScheduleSale  # noqa: E402
from livecommerce.pipeline.forgetting import ClosedSales  # noqa: E402
from livecommerce.pipeline.local import CoreStock, LocalChallenges, LocalLedger  # noqa: E402
from livecommerce.pipeline.pipeline import OrderLimits, OrderPipeline  # noqa: E402
from livecommerce.pipeline.shipping import ShippingStore  # noqa: E402
from livecommerce.pipeline.verifying import SignatureVerifier  # noqa: E402

PRICE_CENTS = 1800


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class NoViewers:
    """The hub's side of `Viewers`: this benchmark has no room sockets."""

    async def room_open(self, room_id: str) -> bool:
        return False

    async def publish_sale(self, room_id: str, sale: dict[str, Any]) -> int:
        return 0

    async def set_stock(self, room_id: str, product_id: str, remaining: int) -> None:
        return None


def command_of(fields: dict[str, Any]) -> PlaceOrder:
    return PlaceOrder(
        fields["order_id"],
        fields["sale_id"],
        fields["buyer_id"],
        fields["quantity"],
        fields["price_cents"],
        fields["time_ms"],
        fields["signature"],
    )


async def run(arguments: argparse.Namespace, directory: Path) -> None:
    ledger = await Ledger.open(directory / "ledger", LedgerSettings())
    core = CommerceCore()
    shipping = await ShippingStore.open(directory)
    sessions = SessionAuthority(core.identities, b"s" * 32)
    verifier = SignatureVerifier() if arguments.signatures_in_child else None
    limits = OrderLimits()
    closed = ClosedSales(limits.closed_sale_forget_ms)
    service = OrderPipeline(
        core,
        CoreStock(core, closed),
        LocalLedger(core, ledger, NoViewers(), shipping, closed, encode_entry, decode_entry),
        LocalChallenges(sessions),
        sessions,
        wall_clock_ms,
        limits,
        verifier,
    )
    await service.start()
    merchant = KeyPair()
    buyers = [KeyPair() for _ in range(arguments.buyers)]
    now = wall_clock_ms()
    for key in [merchant, *buyers]:
        registration = key.registration("someone", now)
        await service.run(Register(**registration))
    listing = merchant.listing("mug", "Stoneware mug", PRICE_CENTS, now)
    await service.run(ListProduct(**listing))
    stock = merchant.stock("s", "mug", 1_000_000, now)
    await service.run(AddStock(product_id="mug", **stock))
    await service.run(LinkRoom("room", merchant.identity_id))
    await service.run(
        ScheduleSale("sale", "room", "mug", merchant.identity_id, 1_000_000, PRICE_CENTS,
                     100, now, 3_600_000, 3_600_000)
    )  # fmt: skip
    orders = [
        command_of(buyers[n % len(buyers)].order(f"o{n}", "sale", 1, PRICE_CENTS, wall_clock_ms()))
        for n in range(arguments.orders)
    ]
    answered = asyncio.Event()
    counts = {"answers": 0, "receipts": 0, "accepted": 0}
    sent_bytes = [0]

    def finished() -> None:
        if counts["answers"] == len(orders) and counts["receipts"] == counts["accepted"]:
            answered.set()

    def reply(result: m.OrderResult) -> None:
        sent_bytes[0] += len(m.encode(result))
        counts["answers"] += 1
        counts["accepted"] += result.status == "accepted"
        finished()

    def receipt(message: m.OrderReceipt) -> None:
        sent_bytes[0] += len(m.encode(message))
        counts["receipts"] += 1
        finished()

    profiler = cProfile.Profile() if arguments.profile else None
    child_started = child_cpu_s(verifier)
    cpu_started, wall_started = time.process_time(), time.perf_counter()
    if profiler:
        profiler.enable()
    for start in range(0, len(orders), arguments.batch):
        # As frames arrive from many sockets between the worker's turns.
        for command in orders[start : start + arguments.batch]:
            service.submit_order(command, reply, receipt)
        await asyncio.sleep(0)
    await asyncio.wait_for(answered.wait(), 60)
    if profiler:
        profiler.disable()
        profiler.dump_stats(arguments.profile)
    cpu_s, wall_s = time.process_time() - cpu_started, time.perf_counter() - wall_started
    child_s = child_cpu_s(verifier) - child_started
    await service.close()
    await ledger.close()
    print(
        f"{len(orders):,} orders, {counts['accepted']:,} accepted (others: busy, the queue was "
        f"full), {counts['receipts']:,} "
        f"receipts: {cpu_s * 1e6 / len(orders):.1f} us of CPU per order (all threads), "
        f"wall {wall_s:.2f} s (receipts wait for the checkpoint, up to 1 s)"
        + (f"; the child: {child_s * 1e6 / len(orders):.1f} us per order" if verifier else "")
    )


def child_cpu_s(verifier: SignatureVerifier | None) -> float:
    """CPU seconds the verifier's child has used (Linux /proc), 0 without one."""
    pid = verifier.child_pid if verifier is not None else None
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--buyers", type=int, default=2_000)
    parser.add_argument("--batch", type=int, default=250, help="orders submitted per turn")
    parser.add_argument("--signatures-in-child", action="store_true")
    parser.add_argument("--profile", type=Path)
    arguments = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(run(arguments, Path(directory)))


if __name__ == "__main__":
    main()
