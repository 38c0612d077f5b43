from __future__ import annotations

import dataclasses

import pytest

from livecommerce.commerce.core import CommandRejected
from livecommerce.commerce.results import Reason
from livecommerce.commerce.sales import (
    CloseReason,
    SaleClosed,
    SaleOpened,
    SaleScheduled,
    SaleState,
    StockChanged,
    StopSale,
    superseded_stock_changes,
)
from tests.livecommerce.commerce.helpers import NOW_MS, make_core, schedule_command


def test_countdown_open_time_up() -> None:
    core, merchant, _ = make_core()
    events = core.handle(schedule_command(merchant, starts_at_ms=NOW_MS + 5000), NOW_MS)
    assert [type(e).__name__ for e in events] == ["SaleScheduled", "InventoryChanged"]
    scheduled = events[0]
    assert isinstance(scheduled, SaleScheduled)
    assert scheduled.to_entry()[0] == "sale/v1"
    assert core.catalog.inventory_units("mug") == 990
    sale = core.sales.get("s1")
    assert sale is not None
    assert sale.state is SaleState.SCHEDULED
    assert core.tick(NOW_MS + 4999) == []
    opened = core.tick(NOW_MS + 5000)
    assert opened == [SaleOpened("s1", "room1", NOW_MS + 5000)]
    assert core.tick(NOW_MS + 5001) == []
    closed = core.tick(NOW_MS + 65_000)
    assert len(closed) == 1
    assert isinstance(closed[0], SaleClosed)
    assert closed[0].reason is CloseReason.TIME_UP
    assert closed[0].to_entry()[1]["reason"] == "time_up"
    assert sale.state is SaleState.CLOSED
    assert core.tick(NOW_MS + 100_000) == []


def test_a_late_tick_opens_and_closes_in_order() -> None:
    core, merchant, _ = make_core()
    core.handle(schedule_command(merchant, starts_at_ms=NOW_MS + 1000), NOW_MS)
    events = core.tick(NOW_MS + 10**6)
    assert [type(e).__name__ for e in events] == ["SaleOpened", "SaleClosed"]


def test_starts_now_opens_at_once_and_merchant_stops() -> None:
    core, merchant, _ = make_core()
    events = core.handle(schedule_command(merchant), NOW_MS)
    assert isinstance(events[-1], SaleOpened)
    stranger_stop = core.handle(StopSale("s1", "someone-else"), NOW_MS + 1)
    assert isinstance(stranger_stop[-1], CommandRejected)
    assert stranger_stop[-1].reason is Reason.NOT_MERCHANT
    stopped = core.handle(StopSale("s1", merchant.identity_id), NOW_MS + 1)
    assert isinstance(stopped[-1], SaleClosed)
    assert stopped[-1].reason is CloseReason.STOPPED
    again = core.handle(StopSale("s1", merchant.identity_id), NOW_MS + 2)
    assert isinstance(again[-1], CommandRejected)
    assert again[-1].reason is Reason.SALE_CLOSED


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"units_offered": 0}, Reason.BAD_FIELD),
        ({"units_offered": 1_000_001}, Reason.BAD_FIELD),
        ({"per_buyer_limit": 0}, Reason.BAD_FIELD),
        ({"price_cents": -5}, Reason.BAD_FIELD),
        ({"duration_ms": 10}, Reason.BAD_FIELD),
        ({"payment_hold_ms": 10**9}, Reason.BAD_FIELD),
        ({"starts_at_ms": NOW_MS - 10**6, "duration_ms": 1000}, Reason.BAD_FIELD),
        ({"sale_id": "bad id"}, Reason.BAD_FIELD),
        ({"product_id": "nope"}, Reason.UNKNOWN_PRODUCT),
        ({"merchant_id": "x"}, Reason.NOT_MERCHANT),
        ({"units_offered": 1001}, Reason.INSUFFICIENT_STOCK),
    ],
)
def test_schedule_refusals_change_nothing(changes: dict[str, object], reason: Reason) -> None:
    core, merchant, _ = make_core()
    command = dataclasses.replace(schedule_command(merchant), **changes)  # type: ignore[arg-type]
    events = core.handle(command, NOW_MS)
    assert isinstance(events[-1], CommandRejected)
    assert events[-1].reason is reason
    assert core.sales.get(command.sale_id) is None
    assert core.catalog.inventory_units("mug") == 1000


def test_sale_ids_are_unique() -> None:
    core, merchant, _ = make_core()
    core.handle(schedule_command(merchant), NOW_MS)
    events = core.handle(schedule_command(merchant), NOW_MS)
    assert isinstance(events[-1], CommandRejected)
    assert events[-1].reason is Reason.SALE_EXISTS
    assert core.catalog.inventory_units("mug") == 990


def test_only_the_last_stock_count_of_each_sale_in_a_batch_is_needed() -> None:
    def changed(sale_id: str, remaining: int) -> StockChanged:
        return StockChanged(sale_id, "room1", remaining, 0, 0, "order:x", NOW_MS)

    events = [
        changed("a", 9),
        changed("b", 5),
        CommandRejected("StopSale", Reason.BAD_FIELD, "x"),
        changed("a", 8),
        changed("a", 7),
        changed("b", 4),
        changed("c", 1),
    ]
    assert superseded_stock_changes(events) == {0, 1, 3}
    assert superseded_stock_changes([changed("a", 1)]) == set()
    assert superseded_stock_changes([]) == set()
