"""Replaying recorded entries gives back the live core's state (sans-I/O, no ledger)."""

from __future__ import annotations

import random

import pytest

from livecommerce.commerce.core import CommerceCore
from livecommerce.commerce.events import Entry, Event
from livecommerce.commerce.identity import verify_signature
from livecommerce.commerce.orders import OrderAccepted, OrderStatus, PayOrder
from livecommerce.commerce.replay import accepted_from_entry, apply_entry
from livecommerce.commerce.results import ReplayError
from livecommerce.commerce.rooms import LinkRoom, RoomLinked
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


def entries_of(events: list[Event]) -> list[Entry]:
    return [entry for entry in (event.to_entry() for event in events) if entry is not None]


def recorded_core() -> tuple[CommerceCore, list[Entry], list[Signer]]:
    """A live core after a busy sale, and every entry it produced, in order."""
    core = CommerceCore()
    merchant = Signer("merchant")
    buyers = [Signer(f"buyer{i}") for i in range(20)]
    log: list[Entry] = []

    def run(command: object, now_ms: int) -> list[Event]:
        events = core.handle(command, now_ms)  # type: ignore[arg-type]
        log.extend(entries_of(events))
        return events

    for signer in [merchant, *buyers]:
        run(register_command(signer, "Someone"), NOW_MS)
    run(list_product_command(merchant), NOW_MS)
    run(add_stock_command(merchant, 100), NOW_MS)
    assert isinstance(run(LinkRoom("room1", merchant.identity_id), NOW_MS)[-1], RoomLinked)
    run(schedule_command(merchant, units_offered=30, payment_hold_ms=5_000), NOW_MS)
    chooser = random.Random(7)
    now_ms = NOW_MS
    for number in range(120):
        now_ms += 100
        buyer = chooser.choice(buyers)
        quantity = chooser.randint(1, 3)
        events = run(order_command(buyer, f"o{number}", quantity=quantity, time_ms=now_ms), now_ms)
        accepted = [e for e in events if isinstance(e, OrderAccepted)]
        if accepted and chooser.random() < 0.5:
            run(PayOrder(buyer.identity_id, f"o{number}"), now_ms + 50)
    log.extend(entries_of(core.tick(now_ms + 1_000)))
    return core, log, buyers


def test_replay_gives_the_live_counts_orders_and_links() -> None:
    live, log, buyers = recorded_core()
    replayed = CommerceCore()
    for entry_type, fields in log:
        apply_entry(replayed, entry_type, fields)
    live_sale, sale = live.sales.get("s1"), replayed.sales.get("s1")
    assert live_sale is not None
    assert sale is not None
    assert live_sale.units_sold > 0
    assert (sale.units_sold, sale.units_held, sale.units_remaining) == (
        live_sale.units_sold,
        live_sale.units_held,
        live_sale.units_remaining,
    )
    assert sale.state == live_sale.state
    assert replayed.rooms.merchant_of("room1") == live.rooms.merchant_of("room1")
    assert replayed.catalog.inventory_units("mug") == live.catalog.inventory_units("mug") == 70
    for buyer in buyers:
        assert replayed.identities.get(buyer.identity_id) is not None
        for number in range(120):
            status = live.orders.status(buyer.identity_id, f"o{number}")
            if status is not None and status is not OrderStatus.REJECTED:
                assert replayed.orders.status(buyer.identity_id, f"o{number}") is status
    # Holds still running in the live core expire in the replayed one at the same time.
    later = NOW_MS + 120 * 100 + 10_000
    live.tick(later)
    replayed.tick(later)
    assert live_sale.units_remaining == sale.units_remaining
    assert sale.units_held == 0


def test_accepted_entries_carry_the_buyers_signature() -> None:
    _, log, _ = recorded_core()
    accepted = [fields for entry_type, fields in log if fields.get("action") == "accepted"]
    assert accepted
    for fields in accepted:
        command = accepted_from_entry(fields).signed_command()
        assert (
            verify_signature(command.buyer_id, command.signing_bytes(), command.signature) is None
        )


def test_a_history_that_oversells_is_refused() -> None:
    core, merchant, (alice, bob, *_) = make_core()
    core.handle(schedule_command(merchant, units_offered=2), NOW_MS)
    first = OrderAccepted(
        "o1", "s1", alice.identity_id, 2, 999, "EUR", NOW_MS + 9, NOW_MS, NOW_MS, ""
    )
    assert len(core.orders.record_accepted(first)) == 2
    assert core.orders.record_accepted(first) == []  # the same order again: nothing new
    second = OrderAccepted(
        "o2", "s1", bob.identity_id, 1, 999, "EUR", NOW_MS + 9, NOW_MS, NOW_MS, ""
    )
    with pytest.raises(ReplayError):
        core.orders.record_accepted(second)
    with pytest.raises(ReplayError):
        apply_entry(core, "order/v1", {"action": "paid", "buyer_id": "x", "order_id": "nope"})
