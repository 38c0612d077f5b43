from __future__ import annotations

import pytest

from livecommerce.commerce.events import Entry, Event
from livecommerce.commerce.orders import OrderRejected, OrderRepeated, PayOrder
from livecommerce.commerce.replay import ReplayError, order_records, replay
from livecommerce.commerce.reservations import OrderRecord, RecordStatus
from livecommerce.commerce.results import Reason
from tests.livecommerce.commerce.helpers import (
    NOW_MS,
    Signer,
    make_core,
    order_command,
    schedule_command,
)


def entries_of(events: list[Event]) -> list[Entry]:
    return [entry for event in events if (entry := event.to_entry()) is not None]


def history() -> tuple[list[Entry], list[Signer]]:
    events: list[Event] = []
    core, merchant, buyers = make_core(sink=events)
    alice, bob, carol = buyers
    events += core.handle(schedule_command(merchant, units_offered=4), NOW_MS)
    events += core.handle(order_command(alice, "a1", quantity=2), NOW_MS)
    events += core.handle(order_command(bob, "b1"), NOW_MS)
    events += core.handle(order_command(carol, "c1", quantity=3), NOW_MS)  # Refused.
    events += core.handle(PayOrder(alice.identity_id, "a1"), NOW_MS + 1)
    events += core.tick(NOW_MS + 10_000)  # bob's hold expires.
    return entries_of(events), buyers


def test_replay_restores_orders_and_idempotency() -> None:
    entries, (alice, bob, carol) = history()
    replayed = replay(entries)
    sale = replayed.sales.get("s1")
    assert sale is not None
    assert (sale.units_sold, sale.units_held, sale.units_remaining) == (2, 0, 2)
    assert order_records(replayed, "s1") == [
        OrderRecord(alice.identity_id, "a1", 2, RecordStatus.PAID),
        OrderRecord(bob.identity_id, "b1", 1, RecordStatus.RELEASED),
    ]
    # A retry with the same bytes after the restart gets the first answer...
    again = replayed.handle(order_command(alice, "a1", quantity=2), NOW_MS + 20)
    assert isinstance(again[-1], OrderRepeated)
    # ...altered bytes are still refused...
    altered = replayed.handle(order_command(alice, "a1", quantity=1), NOW_MS + 20)
    assert isinstance(altered[-1], OrderRejected)
    assert altered[-1].reason is Reason.DUPLICATE_CONFLICT
    # ...and the per-buyer limit counts what was bought before the restart.
    limited = replayed.handle(
        order_command(alice, "a2", quantity=2, time_ms=NOW_MS + 20_000), NOW_MS + 20_000
    )
    assert isinstance(limited[-1], OrderRejected)
    assert limited[-1].reason is Reason.LIMIT_REACHED
    # Rejections are not on the ledger: carol's refused order is evaluated afresh.
    assert replayed.orders.status(carol.identity_id, "c1") is None
    # The display name is personal data, so it was never logged.
    identity = replayed.identities.get(alice.identity_id)
    assert identity is not None
    assert identity.display_name == ""


def test_replay_refuses_a_ledger_that_disagrees_with_itself() -> None:
    entries, _ = history()
    doubled = [*entries]
    accepted = next(i for i, (kind, f) in enumerate(entries) if f.get("action") == "accepted")
    kind, fields = entries[accepted]
    doubled.insert(accepted + 1, (kind, {**fields, "order_id": "forged", "quantity": 2}))
    with pytest.raises(ReplayError, match="entry"):
        replay(doubled)
    stock_index = next(i for i, (kind, _) in enumerate(entries) if kind == "stock/v1")
    tampered = [*entries]
    kind, fields = tampered[stock_index]
    tampered[stock_index] = (kind, {**fields, "units_remaining": 99})
    with pytest.raises(ReplayError, match=f"entry {stock_index}"):
        replay(tampered)
    with pytest.raises(ReplayError, match="unknown entry type"):
        replay([("escrow/v9", {"action": "x"})])


def test_order_entries_carry_the_buyers_signature_and_room_links_replay() -> None:
    from livecommerce.commerce.identity import verify_signature
    from livecommerce.commerce.orders import OrderAccepted
    from livecommerce.commerce.rooms import LinkRoom, RoomLinked

    events: list[Event] = []
    core, merchant, (alice, *_) = make_core(sink=events)
    linked = core.handle(LinkRoom("room1", merchant.identity_id), NOW_MS)
    assert isinstance(linked[-1], RoomLinked)
    events += linked
    events += core.handle(schedule_command(merchant, units_offered=4), NOW_MS)
    events += core.handle(order_command(alice, "a1", quantity=2), NOW_MS)
    accepted = [e for e in events if isinstance(e, OrderAccepted)]
    assert len(accepted) == 1
    command = accepted[0].signed_command()
    assert verify_signature(command.buyer_id, command.signing_bytes(), command.signature) is None
    replayed = replay(entries_of(events))
    assert replayed.rooms.merchant_of("room1") == merchant.identity_id
    # A linked room sells only its merchant's products.
    other = Signer("other merchant")
    refused = replayed.handle(
        schedule_command(other, sale_id="s2", starts_at_ms=NOW_MS + 1), NOW_MS + 1
    )
    assert type(refused[-1]).__name__ == "CommandRejected"
