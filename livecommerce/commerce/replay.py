"""Rebuild the core from its ledger entries, and the stock store's records from the core.

`replay(entries)` feeds `(entry_type, fields)` pairs, in ledger order, back into a fresh
`CommerceCore`. What the ledger does not hold is not restored: display names (personal
data; keep profiles elsewhere), remembered order *rejections* (a retry after a restart is
evaluated again), and session challenges. Every `stock/v1` entry is checked against the
replayed counts (embedded mode), so a ledger that disagrees with itself is refused with a
`ReplayError` naming the entry, rather than served.

Money (escrow.py, funds.py) is replayed by taking every step again and checking what it
makes: a signed step, a provider's result, a payout batch, a transfer the clock expired,
or an order the clock confirmed is the head of the entries it made; taken again, it must
make exactly that entry and then, in order, the money entries that follow it in the
ledger (`transfer/v1`, `payment/v1`, `payout/v1`, the escrow's `order/v1`). So no money
entry can be added, dropped or altered without replay naming it, and balances replayed
are the balances the rules give. `finish(core)` then checks that nothing it expected
is missing at the end.

`order_records(core, sale_id)` gives the list a stock store's `rebuild` takes, e.g. after
Redis restarted empty.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from livecommerce.commerce.auctions import AuctionCommand, bid_of, start_of
from livecommerce.commerce.catalog import InventoryChanged, Product
from livecommerce.commerce.core import CommerceCore
from livecommerce.commerce.escrow import (
    OrderStep,
    ProviderResult,
    RunPayouts,
    StepRefused,
    rules_of,
)
from livecommerce.commerce.events import Entry, Event
from livecommerce.commerce.groups import (
    GroupRepeated,
    offer_of,
)
from livecommerce.commerce.groups import (
    step_of as group_step_of,
)
from livecommerce.commerce.identity import Identity
from livecommerce.commerce.orders import OrderAccepted, OrderPaid, OrderStatus
from livecommerce.commerce.reservations import OrderRecord, RecordStatus
from livecommerce.commerce.results import Rejected
from livecommerce.commerce.reviews import ReviewRefused, step_of
from livecommerce.commerce.sales import CloseReason, ScheduleSale
from livecommerce.commerce.trace import TraceRecorded, command_of_entry


class ReplayError(ValueError):
    """The entries do not describe a valid history; the message names the entry."""


def _pick(fields: dict[str, object], names: Iterable[str]) -> dict[str, object]:
    return {name: fields[name] for name in names}


_PRODUCT_FIELDS = [
    "product_id", "merchant_id", "title", "description", "price_cents", "currency", "sku",
    "image_url",
]  # fmt: skip
_SPEC_FIELDS = list(ScheduleSale.__dataclass_fields__)
_ACCEPTED_FIELDS = list(OrderAccepted.__struct_fields__)


def apply_entry(core: CommerceCore, entry: Entry) -> None:
    entry_type, fields = entry
    action = fields.get("action")
    time_ms = fields.get("time_ms")
    if isinstance(time_ms, int):
        core.restore_clock(time_ms)
    if is_money_entry(entry):
        _apply_money(core, entry)
    elif entry_type == "identity/v1":
        identity_id, registered_at_ms = fields["identity_id"], fields["time_ms"]
        assert isinstance(identity_id, str)
        assert isinstance(registered_at_ms, int)
        core.identities.restore(Identity(identity_id, "", registered_at_ms))
    elif entry_type == "product/v1":
        core.catalog.restore_product(Product(**_pick(fields, _PRODUCT_FIELDS)))  # type: ignore[arg-type]
    elif entry_type == "inventory/v1":
        core.catalog.restore_inventory(InventoryChanged(**fields))  # type: ignore[arg-type]
    elif entry_type == "sale/v1" and action == "scheduled":
        spec = ScheduleSale(**_pick(fields, _SPEC_FIELDS))  # type: ignore[arg-type]
        currency = fields["currency"]
        assert isinstance(currency, str)
        core.sales.restore_scheduled(spec, currency)
    elif entry_type == "sale/v1" and action == "opened":
        core.sales.restore_opened(str(fields["sale_id"]))
    elif entry_type == "sale/v1" and action == "closed":
        core.sales.restore_closed(str(fields["sale_id"]), CloseReason(str(fields["reason"])))
    elif entry_type == "order/v1" and action == "accepted":
        accepted = OrderAccepted(**_pick(fields, _ACCEPTED_FIELDS))  # type: ignore[arg-type]
        core.orders.restore_accepted(accepted)
    elif entry_type == "order/v1" and action == "paid":
        core.orders.restore_paid(str(fields["buyer_id"]), str(fields["order_id"]))
        if "authorization_id" in fields:  # paid with money held in escrow
            paid = OrderPaid(**{k: v for k, v in fields.items() if k != "action"})  # type: ignore[arg-type]
            _expect(core, core.open_escrow(paid, paid.time_ms))
    elif entry_type == "order/v1" and action in ("expired", "hold_cancelled"):
        time_ms = fields["time_ms"]
        assert isinstance(time_ms, int)
        core.orders.restore_expired(
            str(fields["buyer_id"]),
            str(fields["order_id"]),
            time_ms,
            str(fields.get("cancel_step_id", "")),
        )
    elif entry_type == "rules/v1":
        core.escrow.rules = dataclasses.replace(
            rules_of(fields), lives_max=core.escrow.rules.lives_max
        )
    elif entry_type == "room/v1" and action == "linked":
        core.rooms.restore_linked(str(fields["room_id"]), str(fields["merchant_id"]))
    elif entry_type == "review/v1":
        _apply_review(core, entry)
    elif entry_type == "poll/v1" and action == "closed":
        core.polls.restore(fields)
    elif entry_type == "trace/v1":
        _apply_trace(core, entry)
    elif entry_type == "group/v1":
        _apply_group(core, entry)
    elif entry_type == "auction/v1":
        _apply_auction(core, entry)
    elif entry_type == "stock/v1":
        sale = core.sales.get(str(fields["sale_id"]))
        assert sale is not None, "stock entry for an unknown sale"
        sale.check()
        if not core.orders.external_stock:
            replayed = (sale.units_remaining, sale.units_held, sale.units_sold)
            logged = (fields["units_remaining"], fields["units_held"], fields["units_sold"])
            if replayed != logged:
                raise ValueError(f"counts {logged} in the ledger, {replayed} replayed")
    else:
        raise ValueError(f"unknown entry type {entry_type} / action {action}")


def _apply_trace(core: CommerceCore, entry: Entry) -> None:
    """A trace command taken again, as recorded: it must be taken and make this entry.
    Freshness and a sale's order are not checked again (they held when it was taken, and
    a web replica follows the feed without orders); signatures are, unless the core
    replays its own ledger."""
    time_ms = entry[1]["time_ms"]
    assert isinstance(time_ms, int)
    taken = core.trace.take(command_of_entry(entry[1]), time_ms, core.verify_signatures, False)
    if not isinstance(taken, list) or not isinstance(taken[0], TraceRecorded):
        raise ValueError(f"taken again, this trace command is refused or repeated: {taken}")
    if taken[0].to_entry() != entry:
        raise ValueError(f"taken again, this trace command made {taken[0].to_entry()[1]}")


def _apply_group(core: CommerceCore, entry: Entry) -> None:
    """A group offer or a buyer's step taken again: it must make this very entry.
    Freshness is not checked again; signatures are, unless the core replays its own
    ledger. (A group's close is a money entry: `_take_again`.)"""
    _, fields = entry
    now_ms = fields["time_ms"]
    assert isinstance(now_ms, int)
    if fields["action"] == "offered":
        made = core.groups.make_offer(offer_of(fields), now_ms)
    else:
        made = core.groups.take(group_step_of(fields), now_ms, core.verify_signatures, False)
    if not isinstance(made, list) or len(made) != 1 or isinstance(made[0], GroupRepeated):
        raise ValueError(f"taken again, this group entry is refused or repeated: {made}")
    (event,) = made
    if event.to_entry() != entry:
        raise ValueError(f"taken again, this group entry made {event.to_entry()}")


def _apply_auction(core: CommerceCore, entry: Entry) -> None:
    """An auction's start, bid, close or host command taken again at the entry's time: it
    must make this very entry (bids' signatures checked unless the core replays its own
    ledger; a bid after the end is refused, so is a close before it). The lot's sale and
    the winner's order have entries of their own, which follow."""
    _, fields = entry
    now_ms = fields["time_ms"]
    assert isinstance(now_ms, int)
    action = fields["action"]
    made: list[Event] | Rejected
    if action == "started":
        made = core.auctions.start(start_of(fields), now_ms, schedule_lot=False)
    elif action == "bid":
        made = core.auctions.bid(bid_of(fields), now_ms, core.verify_signatures, fresh=False)
    else:
        auction = core.auctions.get(str(fields["auction_id"]))
        if auction is None:
            raise ValueError("an entry of an unknown auction")
        if action == "closed":
            if auction.state != "open" or now_ms < auction.ends_at_ms:
                raise ValueError("closes an auction that is not open, or before its end")
            made = core.auctions.close(auction, now_ms, award=False)
        else:
            host_action = {"cancelled": "cancel", "banned": "ban", "offered": "offer_second"}
            command = AuctionCommand(
                host_action[str(action)],
                auction.auction_id,
                auction.spec.merchant_id,
                str(fields["bidder_id"]) if action == "banned" else "",
            )
            made = core.auctions.host(command, now_ms, award=False)
    if not isinstance(made, list) or not made:
        raise ValueError(f"taken again, this auction entry is refused or repeated: {made}")
    if made[0].to_entry() != entry:
        raise ValueError(f"taken again, this auction entry made {made[0].to_entry()}")


def replay(entries: Iterable[Entry], external_stock: bool = False) -> CommerceCore:
    core = CommerceCore(external_stock=external_stock)
    index = -1
    for index, entry in enumerate(entries):
        try:
            apply_entry(core, entry)
        except (KeyError, TypeError, ValueError, AssertionError) as error:
            raise ReplayError(f"entry {index} ({entry[0]}): {error!r}") from error
    try:
        finish(core)
    except ValueError as error:
        raise ReplayError(f"after entry {index}: {error}") from error
    return core


def finish(core: CommerceCore) -> None:
    """At the end of the ledger: every money entry the steps made is there."""
    if core.expected_entries:
        missing = core.expected_entries[0]
        raise ValueError(f"the ledger ends without {missing[0]} {missing[1]}")


def _apply_review(core: CommerceCore, entry: Entry) -> None:
    """A review action is taken again where the core has the orders' lives (the server's
    own replay, the writer's, an audit), and must make this very entry; a web process's
    replica, which follows only state entries and has no escrow, takes it as written."""
    _, fields = entry
    if core.orders.external_stock:
        core.reviews.restore(fields)
        return
    now_ms = fields["time_ms"]
    assert isinstance(now_ms, int)
    events = core.reviews.take(step_of(fields), now_ms, core.verify_signatures)
    (event,) = events
    if isinstance(event, ReviewRefused):
        raise ValueError(f"taken again, this review action is refused: {event.detail}")
    made = event.to_entry()
    if made != entry:
        raise ValueError(f"taken again, this review action made {made}")


# Money: take the step again, check what it makes

MONEY_ENTRY_TYPES = frozenset({"transfer/v1", "payment/v1", "payout/v1"})
STEP_ACTIONS = frozenset(
    {
        "cancelled", "shipped", "delivered", "confirmed", "refund_requested",
        "refund_accepted", "refund_declined", "disputed", "resolved",
    }
)  # fmt: skip
GROUP_CLOSES = frozenset({"succeeded", "failed"})
_STEP_FIELDS = list(OrderStep.__dataclass_fields__)
_RESULT_FIELDS = list(ProviderResult.__dataclass_fields__)


def is_money_entry(entry: Entry) -> bool:
    entry_type, fields = entry
    if entry_type in MONEY_ENTRY_TYPES:
        return True
    action = fields.get("action")
    if entry_type == "group/v1":
        return action in GROUP_CLOSES
    return entry_type == "order/v1" and (action in STEP_ACTIONS or action == "stage")


def _expect(core: CommerceCore, events: list[Event]) -> None:
    """What taking a step again made, that the ledger must hold next."""
    for event in events:
        made = event.to_entry()
        if made is not None and is_money_entry(made):
            core.expected_entries.append(made)


def _apply_money(core: CommerceCore, entry: Entry) -> None:
    expected = core.expected_entries
    if expected:
        made = expected.popleft()
        if made != entry:
            raise ValueError(f"the rules made {made[0]} {made[1]}, the ledger holds {entry[1]}")
        return
    events = _take_again(core, entry)
    for event in events:
        if isinstance(event, StepRefused):
            raise ValueError(f"taken again, this step is refused: {event.detail}")
    made_entries = [made for made in (e.to_entry() for e in events) if made is not None]
    if not made_entries or made_entries[0] != entry:
        first = made_entries[0][1] if made_entries else "nothing"
        raise ValueError(f"taken again, this step made {first}")
    _expect(core, events[1:])


def _take_again(core: CommerceCore, entry: Entry) -> list[Event]:
    """The command that made this (head) entry, taken again at the entry's time."""
    entry_type, fields = entry
    action = fields.get("action")
    now_ms = fields["time_ms"]
    assert isinstance(now_ms, int)
    if entry_type == "order/v1" and action in STEP_ACTIONS:
        step_fields = {name: fields[name] for name in _STEP_FIELDS if name != "time_ms"}
        step = OrderStep(time_ms=fields["signed_time_ms"], **step_fields)  # type: ignore[arg-type]
        return core.escrow.take_step(step, now_ms, core.verify_signatures)
    if entry_type == "order/v1" and fields.get("cause") == "auto_confirmed":
        life = core.escrow.get(str(fields["buyer_id"]), str(fields["order_id"]))
        if life is None or life.confirm_due_ms == 0 or life.confirm_due_ms > now_ms:
            raise ValueError("confirmed by the clock before it was due")
        return core.escrow.auto_confirm(life, now_ms)
    if entry_type == "transfer/v1" and fields.get("phase") == "expire":
        expired = core.funds.expire(str(fields["pending_id"]), now_ms)
        if expired is None:
            raise ValueError("expires what is not pending, or not due yet")
        return core.expire_transfer(expired, now_ms)
    if entry_type == "payment/v1":
        result = ProviderResult(**{name: fields[name] for name in _RESULT_FIELDS})  # type: ignore[arg-type]
        return core.escrow.record_result(result, now_ms)
    if entry_type == "group/v1" and action in GROUP_CLOSES:
        group = core.groups.get(str(fields["group_id"]))
        if group is None or group.outcome != "open" or not core.groups.due(group, now_ms):
            raise ValueError("closes a group that is not open, or not due to close")
        return core.groups.close(group, now_ms, release_holds=False)
    if entry_type == "payout/v1" and action == "started":
        return core.escrow.run_payouts(RunPayouts(str(fields["batch_id"])), now_ms)
    raise ValueError("no step makes this entry by itself")


def order_records(core: CommerceCore, sale_id: str) -> list[OrderRecord]:
    """The accepted orders of a sale as the stock stores' `rebuild` wants them."""
    records: list[OrderRecord] = []
    status_to_record = {
        OrderStatus.HELD: RecordStatus.ACCEPTED,
        OrderStatus.PAID: RecordStatus.PAID,
        OrderStatus.EXPIRED: RecordStatus.RELEASED,
        OrderStatus.CANCELLED: RecordStatus.RELEASED,
    }
    for (buyer_id, order_id), order in core.orders.orders_of_sale(sale_id):
        record = status_to_record.get(order.status)
        if record is not None:
            records.append(OrderRecord(buyer_id, order_id, order.quantity, record))
    return records
