"""The core's external-stock path wired to each store: several cores (processes) share
one store; random orders, payments and expiries never oversell."""

from __future__ import annotations

import asyncio
import random

from livecommerce.commerce.core import CommerceCore
from livecommerce.commerce.events import Event
from livecommerce.commerce.orders import (
    OrderAccepted,
    OrderExpired,
    OrderRejected,
    OrderRepeated,
    PayOrder,
)
from livecommerce.commerce.replay import order_records, replay
from livecommerce.commerce.results import Reason
from livecommerce.commerce.sales import SaleScheduled
from livecommerce.stock.base import StockStore
from tests.livecommerce.commerce.helpers import (
    NOW_MS,
    Signer,
    add_stock_command,
    list_product_command,
    make_core,
    order_command,
    register_command,
    schedule_command,
)
from tests.livecommerce.stock.conftest import StoreFactory

UNITS_OFFERED = 40
PER_BUYER_LIMIT = 3


def make_process_core(merchant: Signer, buyers: list[Signer]) -> CommerceCore:
    """Each process replays the same registrations, listing and sale (from the ledger)."""
    core = CommerceCore(external_stock=True)
    for signer in [merchant, *buyers]:
        core.handle(register_command(signer, "Someone"), NOW_MS)
    core.handle(list_product_command(merchant), NOW_MS)
    core.handle(add_stock_command(merchant, 1000), NOW_MS)
    events = core.handle(
        schedule_command(merchant, units_offered=UNITS_OFFERED, per_buyer_limit=PER_BUYER_LIMIT),
        NOW_MS,
    )
    assert any(isinstance(e, SaleScheduled) for e in events)
    return core


async def place(core: CommerceCore, store: StockStore, buyer: Signer, order_id: str,
                quantity: int, now_ms: int) -> list[Event]:  # fmt: skip
    events, prepared = core.prepare_order(
        order_command(buyer, order_id, quantity=quantity, time_ms=now_ms), now_ms
    )
    # Every list of events the core returns may carry expiries (it ticks first): the
    # adapter releases each one in the store.
    await release_expired(store, events)
    if prepared is None:
        return events
    command = prepared.command
    result = await store.reserve(
        command.sale_id, command.buyer_id, command.order_id, command.quantity,
        prepared.per_buyer_limit,
    )  # fmt: skip
    completed = core.complete_order(prepared, result, now_ms)
    await release_expired(store, completed)
    return [*events, *completed]


async def release_expired(store: StockStore, events: list[Event]) -> None:
    for event in events:
        if isinstance(event, OrderExpired):
            released = await store.release(event.sale_id, event.buyer_id, event.order_id)
            # 0 only if it was released already (a refused payment expired it first).
            assert released.released_units in (0, event.quantity)


async def test_cores_sharing_a_store_never_oversell(store_factory: StoreFactory) -> None:
    merchant = Signer("merchant")
    buyers = [Signer(f"buyer{i}") for i in range(30)]
    stores = [await store_factory(), await store_factory()]
    cores = [make_process_core(merchant, buyers) for _ in stores]
    assert await stores[0].load_sale("s1", UNITS_OFFERED) == UNITS_OFFERED
    assert await stores[1].load_sale("s1", UNITS_OFFERED) == UNITS_OFFERED
    rng = random.Random(11)
    # (buyer index, order number) -> process index, so each process owns its orders.
    held: dict[tuple[str, str], int] = {}
    paid: dict[tuple[str, str], int] = {}

    def record(events: list[Event]) -> None:
        for event in events:
            if isinstance(event, OrderAccepted):
                held[(event.buyer_id, event.order_id)] = event.quantity
            elif isinstance(event, OrderExpired):
                held.pop((event.buyer_id, event.order_id))
            elif isinstance(event, OrderRejected):
                assert event.reason in {Reason.SOLD_OUT, Reason.LIMIT_REACHED}, event

    now_ms = NOW_MS
    for round_number in range(8):
        now_ms += 3_000
        batch = []
        for n in range(60):
            process = rng.randrange(2)
            buyer = rng.choice(buyers)
            order_id = f"r{round_number}n{n}"
            batch.append(
                place(cores[process], stores[process], buyer, order_id, rng.randint(1, 2), now_ms)
            )
        for events in await asyncio.gather(*batch):
            record(events)
        # Some buyers pay; the rest expire later.
        for key in list(held):
            if rng.random() < 0.2 and key not in paid:
                for process, core in enumerate(cores):
                    if core.orders.status(*key) is None:
                        continue  # The other process took this order.
                    # The store arbitrates between payment and expiry: settle first.
                    settled = await stores[process].settle("s1", *key)
                    answer = core.pay_order(PayOrder(*key), settled, now_ms)
                    # Core calls run the clock: expiries they report are released too.
                    record(answer)
                    await release_expired(stores[process], answer)
                    if settled:
                        assert any(type(e).__name__ == "OrderPaid" for e in answer), answer
                        paid[key] = held[key]
        for process, core in enumerate(cores):
            expired = core.tick(now_ms)
            record(expired)
            await release_expired(stores[process], expired)
        live = sum(held.values())
        assert live <= UNITS_OFFERED  # Never oversold.
        remaining = await stores[0].remaining("s1")
        assert remaining == UNITS_OFFERED - live
        for core in cores:
            sale = core.sales.get("s1")
            assert sale is not None
            sale.check()
    assert paid, "the workload paid for nothing: it tests too little"
    assert sum(held.values()) > 0


async def test_a_retry_after_the_store_answered_gets_the_same_order(
    store_factory: StoreFactory,
) -> None:
    """The store took the units but the answer was lost: the retry sees a duplicate and
    the core records one accepted order."""
    merchant, buyer = Signer("merchant"), Signer("buyer0")
    store = await store_factory()
    core = make_process_core(merchant, [buyer])
    await store.load_sale("s1", UNITS_OFFERED)
    _, prepared = core.prepare_order(order_command(buyer, "o1", quantity=2), NOW_MS)
    assert prepared is not None
    await store.reserve("s1", buyer.identity_id, "o1", 2, PER_BUYER_LIMIT)  # Answer lost.
    _, prepared = core.prepare_order(order_command(buyer, "o1", quantity=2), NOW_MS)
    assert prepared is not None
    result = await store.reserve("s1", buyer.identity_id, "o1", 2, PER_BUYER_LIMIT)
    assert result.duplicate
    done = core.complete_order(prepared, result, NOW_MS)
    assert [type(e).__name__ for e in done] == ["OrderAccepted", "StockChanged"]
    again, _ = core.prepare_order(order_command(buyer, "o1", quantity=2), NOW_MS)
    assert isinstance(again[-1], OrderRepeated)
    assert await store.remaining("s1") == UNITS_OFFERED - 2


async def test_rebuild_a_store_from_the_replayed_ledger(store: StockStore) -> None:
    """Redis restarted empty: replay the ledger, hand each sale's records to the store."""
    events: list[Event] = []
    core, merchant, (alice, bob, _) = make_core(sink=events)
    events += core.handle(schedule_command(merchant, units_offered=5), NOW_MS)
    events += core.handle(order_command(alice, "a1", quantity=2), NOW_MS)
    events += core.handle(order_command(bob, "b1", quantity=2), NOW_MS)
    events += core.handle(PayOrder(alice.identity_id, "a1"), NOW_MS + 1)
    entries = [entry for event in events if (entry := event.to_entry()) is not None]
    replayed = replay(entries)
    assert await store.rebuild("s1", 5, order_records(replayed, "s1")) == 1
    assert (await store.release("s1", alice.identity_id, "a1")).released_units == 0  # Paid.
    assert (await store.release("s1", bob.identity_id, "b1")).released_units == 2  # Held.
    assert (await store.reserve("s1", alice.identity_id, "a1", 2, 3)).duplicate
    assert await store.remaining("s1") == 3
