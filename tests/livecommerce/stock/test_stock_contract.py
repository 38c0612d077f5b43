"""One behaviour suite, run against the in-process store and the Redis Lua store."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from livecommerce.stock.base import (
    OrderRecord,
    RecordStatus,
    ReleaseResult,
    ReserveResult,
    ReserveStatus,
    SaleConflict,
    StockStore,
)
from tests.livecommerce.stock.conftest import StoreFactory


async def test_load_sale_is_idempotent(store: StockStore) -> None:
    assert await store.remaining("s1") is None
    assert await store.load_sale("s1", 10) == 10
    assert (await store.reserve("s1", "b1", "o1", 3, 5)).accepted
    assert await store.load_sale("s1", 10) == 7  # Loading again changes nothing.
    with pytest.raises(SaleConflict):
        await store.load_sale("s1", 11)
    assert await store.remaining("s1") == 7


async def test_answers_in_order(store: StockStore) -> None:
    await store.load_sale("s1", 5)
    assert await store.reserve("s1", "b1", "o1", 2, 3) == ReserveResult(
        ReserveStatus.ACCEPTED, 2, 3
    )
    limited = await store.reserve("s1", "b1", "o2", 2, 3)
    assert limited.status is ReserveStatus.LIMIT_REACHED
    assert limited.remaining == 3
    sold_out = await store.reserve("s1", "b2", "o1", 4, 5)
    assert sold_out.status is ReserveStatus.SOLD_OUT
    assert (await store.reserve("s1", "b2", "o2", 3, 5)).accepted
    assert await store.remaining("s1") == 0
    unknown = await store.reserve("nope", "b1", "o1", 1, 1)
    assert unknown.status is ReserveStatus.UNKNOWN_SALE


async def test_duplicates_get_the_first_answer(store: StockStore) -> None:
    await store.load_sale("s1", 1)
    first = await store.reserve("s1", "b1", "o1", 1, 1)
    assert first.accepted
    again = await store.reserve("s1", "b1", "o1", 1, 1)
    assert again == ReserveResult(ReserveStatus.ACCEPTED, 1, 0, duplicate=True)
    refused = await store.reserve("s1", "b2", "o1", 1, 1)  # Order ids are per buyer.
    assert refused.status is ReserveStatus.SOLD_OUT
    assert not refused.duplicate
    # Stock coming back does not change a remembered refusal.
    await store.release("s1", "b1", "o1")
    assert (await store.reserve("s1", "b2", "o1", 1, 1)).status is ReserveStatus.SOLD_OUT
    altered = await store.reserve("s1", "b1", "o1", 2, 5)
    assert altered.duplicate
    assert altered.conflict
    assert altered.quantity == 1
    assert await store.remaining("s1") == 1


async def test_concurrent_duplicates_take_stock_once(store: StockStore) -> None:
    await store.load_sale("s1", 10)
    results = await asyncio.gather(*(store.reserve("s1", "b1", "o1", 4, 5) for _ in range(200)))
    assert sum(not r.duplicate for r in results) == 1
    assert all(r.status is ReserveStatus.ACCEPTED and r.quantity == 4 for r in results)
    assert await store.remaining("s1") == 6


async def test_release_returns_units_exactly_once(store: StockStore) -> None:
    await store.load_sale("s1", 3)
    assert (await store.reserve("s1", "b1", "o1", 2, 2)).accepted
    releases = await asyncio.gather(*(store.release("s1", "b1", "o1") for _ in range(100)))
    assert sum(r.released_units for r in releases) == 2
    assert await store.remaining("s1") == 3
    assert await store.release("s1", "b1", "o1") == ReleaseResult(0, 3)
    assert await store.release("s1", "b1", "never") == ReleaseResult(0, 3)
    # A refused order has nothing to release.
    assert (await store.reserve("s1", "b2", "big", 5, 5)).status is ReserveStatus.SOLD_OUT
    assert (await store.release("s1", "b2", "big")).released_units == 0
    # The buyer's allowance came back with the units.
    assert (await store.reserve("s1", "b1", "o2", 2, 2)).accepted
    assert await store.remaining("s1") == 1


@pytest.mark.parametrize(("offered", "demanded"), [(500, 2000), (3000, 2000)])
async def test_thousands_of_concurrent_reservations_never_oversell(
    store: StockStore, offered: int, demanded: int
) -> None:
    await store.load_sale("flash", offered)
    results = await asyncio.gather(
        *(store.reserve("flash", f"buyer{i}", f"order{i}", 1, 1) for i in range(demanded))
    )
    accepted = sum(r.quantity for r in results if r.accepted)
    assert accepted == min(offered, demanded)
    assert await store.remaining("flash") == offered - accepted
    refusals = Counter(r.status for r in results if not r.accepted)
    assert set(refusals) <= {ReserveStatus.SOLD_OUT}


async def test_per_buyer_limits_hold_under_concurrency(store: StockStore) -> None:
    await store.load_sale("s1", 1000)
    limit = 3
    tasks = [
        store.reserve("s1", f"buyer{b}", f"o{n}", 1 + n % 2, limit)
        for b in range(20)
        for n in range(15)
    ]
    random.Random(7).shuffle(tasks)
    results = await asyncio.gather(*tasks)
    by_buyer: Counter[int] = Counter()
    ordered = [(b, n) for b in range(20) for n in range(15)]
    random.Random(7).shuffle(ordered)
    for (b, _), result in zip(ordered, results, strict=True):
        if result.accepted:
            by_buyer[b] += result.quantity
        else:
            assert result.status is ReserveStatus.LIMIT_REACHED
    assert all(units <= limit for units in by_buyer.values())
    assert all(units >= limit - 1 for units in by_buyer.values())  # Nobody starved.
    assert await store.remaining("s1") == 1000 - sum(by_buyer.values())


async def test_two_independent_clients_hammering_one_sale(store_factory: StoreFactory) -> None:
    """Two stores with separate connection pools stand for two web processes."""
    first, second = await store_factory(), await store_factory()
    offered = 700
    assert await first.load_sale("hot", offered) == offered
    assert await second.load_sale("hot", offered) == offered

    async def hammer(store: StockStore, name: str) -> list[ReserveResult]:
        return await asyncio.gather(
            *(
                store.reserve("hot", f"{name}{i % 400}", f"{name}-{i}", 1 + i % 3, 4)
                for i in range(1200)
            )
        )

    results_a, results_b = await asyncio.gather(hammer(first, "a"), hammer(second, "b"))
    accepted = sum(r.quantity for r in [*results_a, *results_b] if r.accepted)
    assert accepted <= offered
    assert accepted >= offered - 2  # All-or-nothing may leave at most quantity-1 units.
    assert await first.remaining("hot") == offered - accepted
    assert await second.remaining("hot") == offered - accepted


async def test_mixed_reserve_and_release_add_up(store: StockStore) -> None:
    await store.load_sale("s1", 50)
    accepted: list[tuple[str, str, int]] = []

    async def buyer(number: int) -> None:
        for n in range(10):
            result = await store.reserve("s1", f"b{number}", f"o{n}", 1 + n % 2, 5)
            if not result.accepted:
                continue
            entry = (f"b{number}", f"o{n}", result.quantity)
            accepted.append(entry)
            if n % 3 == 0:
                released = await store.release("s1", f"b{number}", f"o{n}")
                assert released.released_units == result.quantity
                accepted.remove(entry)

    await asyncio.gather(*(buyer(i) for i in range(30)))
    held = sum(quantity for _, _, quantity in accepted)
    assert held <= 50
    assert await store.remaining("s1") == 50 - held


async def test_rebuild_from_ledger_records(store: StockStore) -> None:
    records = [
        OrderRecord("b1", "o1", 2, RecordStatus.ACCEPTED),
        OrderRecord("b1", "o2", 1, RecordStatus.RELEASED),
        OrderRecord("b2", "o1", 3, RecordStatus.ACCEPTED),
    ]
    assert await store.rebuild("s1", 6, records) == 1
    assert await store.remaining("s1") == 1
    duplicate = await store.reserve("s1", "b1", "o1", 2, 3)
    assert duplicate.duplicate
    assert duplicate.accepted
    # b1 holds 2 of 3 allowed.
    assert (await store.reserve("s1", "b1", "o3", 2, 3)).status is ReserveStatus.LIMIT_REACHED
    assert (await store.reserve("s1", "b1", "o4", 1, 3)).accepted
    assert await store.remaining("s1") == 0
    # A released order stays released: releasing again gives nothing back.
    assert (await store.release("s1", "b1", "o2")).released_units == 0
    assert (await store.release("s1", "b2", "o1")).released_units == 3
    # Rebuilding replaces whatever was there.
    assert await store.rebuild("s1", 6, records[:1]) == 4
    with pytest.raises(ValueError, match="oversells"):
        await store.rebuild("s1", 2, records)


async def test_settle_makes_units_sold_for_good(store: StockStore) -> None:
    await store.load_sale("s1", 5)
    assert (await store.reserve("s1", "b1", "paid", 2, 5)).accepted
    assert (await store.reserve("s1", "b1", "late", 1, 5)).accepted
    assert await store.settle("s1", "b1", "paid")
    assert await store.settle("s1", "b1", "paid")  # Idempotent.
    assert (await store.release("s1", "b1", "paid")).released_units == 0
    assert (await store.release("s1", "b1", "late")).released_units == 1
    assert not await store.settle("s1", "b1", "late")  # Expired first: refuse payment.
    assert not await store.settle("s1", "b1", "never")
    assert not await store.settle("nope", "b1", "paid")
    assert await store.remaining("s1") == 3
    # Paid units still count against the buyer's limit.
    assert (await store.reserve("s1", "b1", "more", 4, 5)).status is ReserveStatus.LIMIT_REACHED


async def test_settle_and_release_race_one_winner(store: StockStore) -> None:
    await store.load_sale("s1", 100)
    for n in range(50):
        assert (await store.reserve("s1", f"b{n}", "o", 1, 1)).accepted
    settles = [store.settle("s1", f"b{n}", "o") for n in range(50)]
    releases = [store.release("s1", f"b{n}", "o") for n in range(50)]
    mixed = [step for pair in zip(settles, releases, strict=True) for step in pair]
    random.Random(3).shuffle(mixed)
    results = await asyncio.gather(*mixed)
    settled = {n for n in range(50) if results[mixed.index(settles[n])]}
    released = {n for n in range(50) if results[mixed.index(releases[n])].released_units}
    assert settled.isdisjoint(released)
    assert settled | released == set(range(50))
    assert await store.remaining("s1") == 100 - len(settled)


async def test_rebuild_keeps_paid_orders_unreleasable(store: StockStore) -> None:
    records = [
        OrderRecord("b1", "o1", 2, RecordStatus.PAID),
        OrderRecord("b2", "o1", 1, RecordStatus.ACCEPTED),
    ]
    assert await store.rebuild("s1", 5, records) == 2
    assert (await store.release("s1", "b1", "o1")).released_units == 0
    assert await store.settle("s1", "b1", "o1")
    assert (await store.release("s1", "b2", "o1")).released_units == 1
    assert await store.remaining("s1") == 3
