from __future__ import annotations

import dataclasses
import gc

import pytest

from livecommerce.commerce.events import Event
from livecommerce.commerce.orders import (
    CheckedOrder,
    OrderAccepted,
    OrderExpired,
    OrderPaid,
    OrderRejected,
    OrderRepeated,
    OrderStatus,
    PaymentRefused,
    PayOrder,
    PlaceOrder,
    check_order_signature,
)
from livecommerce.commerce.reservations import ReserveResult, ReserveStatus
from livecommerce.commerce.results import Reason, Rejected
from livecommerce.commerce.sales import (
    CloseReason,
    SaleClosed,
    StockChanged,
    StopSale,
)
from tests.livecommerce.commerce.helpers import (
    NOW_MS,
    Signer,
    make_core,
    order_command,
    schedule_command,
)


def only(events: list[Event], kind: type[Event]) -> Event:
    matching = [e for e in events if isinstance(e, kind)]
    assert len(matching) == 1, events
    return matching[0]


def rejection(events: list[Event]) -> Reason:
    rejected = only(events, OrderRejected)
    assert isinstance(rejected, OrderRejected)
    return rejected.reason


def test_accept_pay_and_entries() -> None:
    core, merchant, (alice, *_) = make_core()
    core.handle(schedule_command(merchant), NOW_MS)
    events = core.handle(order_command(alice, "o1", quantity=2), NOW_MS + 10)
    accepted = only(events, OrderAccepted)
    assert isinstance(accepted, OrderAccepted)
    assert accepted.quantity == 2
    assert accepted.hold_expires_at_ms == NOW_MS + 10 + 10_000
    changed = only(events, StockChanged)
    assert isinstance(changed, StockChanged)
    assert (changed.units_remaining, changed.units_held, changed.units_sold) == (8, 2, 0)
    entry_type, fields = accepted.to_entry()
    assert entry_type == "order/v1"
    assert fields["action"] == "accepted"
    assert only(events, StockChanged).to_entry() is not None
    paid = core.handle(PayOrder(alice.identity_id, "o1"), NOW_MS + 20)
    order_paid = only(paid, OrderPaid)
    assert isinstance(order_paid, OrderPaid)
    assert order_paid.amount_cents == 2 * 999
    assert order_paid.currency == "EUR"
    sale = core.sales.get("s1")
    assert sale is not None
    assert (sale.units_sold, sale.units_held, sale.units_remaining) == (2, 0, 8)
    # Paying twice answers the same, changes nothing.
    repeat = core.handle(PayOrder(alice.identity_id, "o1"), NOW_MS + 30)
    assert isinstance(repeat[-1], OrderRepeated)
    assert sale.units_sold == 2
    # Nothing with personal data in any entry: no display names.
    for event in [*events, *paid]:
        entry = event.to_entry()
        assert entry is None or "Someone" not in repr(entry)


def test_expiry_returns_units_once() -> None:
    core, merchant, (alice, bob, _) = make_core()
    core.handle(schedule_command(merchant, units_offered=2, per_buyer_limit=2), NOW_MS)
    assert only(core.handle(order_command(alice, "a1", quantity=2), NOW_MS), OrderAccepted)
    assert rejection(core.handle(order_command(bob, "b1"), NOW_MS + 1)) is Reason.SOLD_OUT
    assert core.tick(NOW_MS + 9_999) == []
    expired_events = core.tick(NOW_MS + 10_000)
    expired = only(expired_events, OrderExpired)
    assert isinstance(expired, OrderExpired)
    assert expired.quantity == 2
    assert expired.to_entry()[1]["action"] == "expired"
    assert core.tick(NOW_MS + 20_000) == []
    sale = core.sales.get("s1")
    assert sale is not None
    assert (sale.units_sold, sale.units_held, sale.units_remaining) == (0, 0, 2)
    late = core.handle(PayOrder(alice.identity_id, "a1"), NOW_MS + 20_001)
    refused = only(late, PaymentRefused)
    assert isinstance(refused, PaymentRefused)
    assert refused.reason is Reason.ORDER_EXPIRED
    assert core.orders.status(alice.identity_id, "a1") is OrderStatus.EXPIRED
    # Alice's allowance came back with the units.
    assert only(
        core.handle(
            order_command(alice, "a2", quantity=2, time_ms=NOW_MS + 20_000), NOW_MS + 20_002
        ),
        OrderAccepted,
    )


def test_sold_out_closes_when_everything_is_paid() -> None:
    core, merchant, (alice, bob, _) = make_core()
    core.handle(schedule_command(merchant, units_offered=2), NOW_MS)
    core.handle(order_command(alice, "a1"), NOW_MS)
    core.handle(order_command(bob, "b1"), NOW_MS)
    core.handle(PayOrder(alice.identity_id, "a1"), NOW_MS + 1)
    events = core.handle(PayOrder(bob.identity_id, "b1"), NOW_MS + 2)
    closed = only(events, SaleClosed)
    assert isinstance(closed, SaleClosed)
    assert closed.reason is CloseReason.SOLD_OUT
    assert closed.units_sold == 2


def test_idempotency_same_bytes_same_answer_other_bytes_conflict() -> None:
    core, merchant, (alice, bob, _) = make_core()
    core.handle(schedule_command(merchant), NOW_MS)
    first = only(core.handle(order_command(alice, "o1"), NOW_MS), OrderAccepted)
    repeat = core.handle(order_command(alice, "o1"), NOW_MS)
    repeated = only(repeat, OrderRepeated)
    assert isinstance(repeated, OrderRepeated)
    assert repeated.first == first
    assert repeated.status is OrderStatus.HELD
    altered = core.handle(order_command(alice, "o1", quantity=2), NOW_MS + 1)
    assert rejection(altered) is Reason.DUPLICATE_CONFLICT
    # Order ids are per buyer: bob may use "o1" too.
    assert only(core.handle(order_command(bob, "o1"), NOW_MS + 2), OrderAccepted)
    sale = core.sales.get("s1")
    assert sale is not None
    assert sale.units_held == 2
    # A remembered rejection is repeated too.
    core.handle(StopSale("s1", merchant.identity_id), NOW_MS + 3)
    closed = core.handle(order_command(alice, "o2"), NOW_MS + 4)
    assert rejection(closed) is Reason.SALE_NOT_OPEN
    again = only(core.handle(order_command(alice, "o2"), NOW_MS + 5), OrderRepeated)
    assert isinstance(again, OrderRepeated)
    assert isinstance(again.first, OrderRejected)
    assert again.status is OrderStatus.REJECTED
    # A retry 40 s later (past freshness, hold expired) still gets the first answer.
    late = only(core.handle(order_command(alice, "o1"), NOW_MS + 40_000), OrderRepeated)
    assert isinstance(late, OrderRepeated)
    assert late.first == first
    assert late.status is OrderStatus.EXPIRED


def test_per_buyer_limit_is_cumulative() -> None:
    core, merchant, (alice, *_) = make_core()
    core.handle(schedule_command(merchant, per_buyer_limit=3), NOW_MS)
    assert only(core.handle(order_command(alice, "o1", quantity=2), NOW_MS), OrderAccepted)
    assert rejection(core.handle(order_command(alice, "o2", quantity=2), NOW_MS)) is (
        Reason.LIMIT_REACHED
    )
    assert only(core.handle(order_command(alice, "o3", quantity=1), NOW_MS), OrderAccepted)
    assert rejection(core.handle(order_command(alice, "o4", quantity=1), NOW_MS)) is (
        Reason.LIMIT_REACHED
    )


def _bad_signature(buyer: Signer) -> PlaceOrder:
    return dataclasses.replace(order_command(buyer, "o1"), quantity=2)


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (lambda b: _bad_signature(b), Reason.BAD_SIGNATURE),
        (
            lambda b: dataclasses.replace(order_command(b, "o1"), signature="!!"),
            Reason.BAD_SIGNATURE,
        ),
        (lambda b: order_command(Signer("nobody"), "o1"), Reason.UNKNOWN_IDENTITY),
        (lambda b: order_command(b, "o1", time_ms=NOW_MS - 30_001), Reason.STALE),
        (lambda b: order_command(b, "o1", time_ms=NOW_MS + 30_001), Reason.STALE),
        (lambda b: order_command(b, "o1", sale_id="nope"), Reason.UNKNOWN_SALE),
        (lambda b: order_command(b, "o1", price_cents=998), Reason.PRICE_CHANGED),
        (lambda b: order_command(b, "o1", quantity=0), Reason.BAD_QUANTITY),
        (lambda b: order_command(b, "o1", quantity=-3), Reason.BAD_QUANTITY),
        (lambda b: order_command(b, "o1", quantity=4), Reason.BAD_QUANTITY),
        (lambda b: order_command(b, "o1", quantity=10**15), Reason.BAD_QUANTITY),
        (
            lambda b: dataclasses.replace(order_command(b, "o1"), quantity=1.0),
            Reason.BAD_QUANTITY,
        ),
        (lambda b: order_command(b, "o/1"), Reason.BAD_ORDER_ID),
        (lambda b: order_command(b, "x" * 65), Reason.BAD_ORDER_ID),
        (lambda b: order_command(b, ""), Reason.BAD_ORDER_ID),
    ],
)
def test_bad_orders_are_refused_and_change_nothing(build: object, reason: Reason) -> None:
    core, merchant, (alice, *_) = make_core()
    core.handle(schedule_command(merchant), NOW_MS)
    assert callable(build)
    events = core.handle(build(alice), NOW_MS)
    assert rejection(events) is reason
    assert all(e.to_entry() is None for e in events)
    sale = core.sales.get("s1")
    assert sale is not None
    assert (sale.units_sold, sale.units_held, sale.units_remaining) == (0, 0, 10)


def test_sale_not_open_before_countdown_ends() -> None:
    core, merchant, (alice, *_) = make_core()
    core.handle(schedule_command(merchant, starts_at_ms=NOW_MS + 5000), NOW_MS)
    assert rejection(core.handle(order_command(alice, "o1"), NOW_MS)) is Reason.SALE_NOT_OPEN
    opened = core.handle(order_command(alice, "o2", time_ms=NOW_MS + 5000), NOW_MS + 5000)
    assert [type(e).__name__ for e in opened][:2] == ["SaleOpened", "OrderAccepted"]


def test_pay_refusals() -> None:
    core, merchant, (alice, bob, _) = make_core()
    core.handle(schedule_command(merchant), NOW_MS)
    core.handle(order_command(alice, "o1"), NOW_MS)
    unknown = only(core.handle(PayOrder(bob.identity_id, "o1"), NOW_MS), PaymentRefused)
    assert isinstance(unknown, PaymentRefused)
    assert unknown.reason is Reason.UNKNOWN_ORDER


def test_external_stock_path() -> None:
    core, merchant, (alice, bob, _) = make_core(external_stock=True)
    core.handle(schedule_command(merchant, units_offered=5), NOW_MS)
    events, prepared = core.prepare_order(order_command(alice, "o1", quantity=2), NOW_MS)
    assert prepared is not None
    assert events == []
    done = core.complete_order(prepared, ReserveResult(ReserveStatus.ACCEPTED, 2, 1), NOW_MS)
    changed = only(done, StockChanged)
    assert isinstance(changed, StockChanged)
    assert changed.units_remaining == 1  # The store's figure, not the local mirror's.
    assert only(done, OrderAccepted)
    events, prepared = core.prepare_order(order_command(bob, "o1", quantity=2), NOW_MS)
    assert prepared is not None
    done = core.complete_order(prepared, ReserveResult(ReserveStatus.SOLD_OUT, 2, 1), NOW_MS)
    assert rejection(done) is Reason.SOLD_OUT
    events, prepared = core.prepare_order(order_command(bob, "o1", quantity=2), NOW_MS)
    assert prepared is None
    assert isinstance(events[-1], OrderRepeated)
    expired = core.tick(NOW_MS + 10_000)
    assert isinstance(only(expired, OrderExpired), OrderExpired)


def test_forget_a_closed_settled_sale() -> None:
    core, merchant, (alice, bob, _) = make_core()
    core.handle(schedule_command(merchant), NOW_MS)
    core.handle(order_command(alice, "o1"), NOW_MS)
    core.handle(order_command(bob, "o1", quantity=9), NOW_MS)  # Remembered refusal.
    open_refused = core.orders.forget_sale("s1")
    assert isinstance(open_refused, Rejected)
    assert open_refused.reason is Reason.SALE_NOT_OPEN
    core.handle(StopSale("s1", merchant.identity_id), NOW_MS + 1)
    held_refused = core.orders.forget_sale("s1")
    assert isinstance(held_refused, Rejected)
    assert held_refused.reason is Reason.CAPACITY
    core.handle(PayOrder(alice.identity_id, "o1"), NOW_MS + 2)
    assert core.orders.orders_remembered() == 2
    assert core.orders.forget_sale("s1") == 2
    assert core.orders.orders_remembered() == 0
    assert core.orders.status(alice.identity_id, "o1") is None
    # A retry of a forgotten order is refused, never accepted again.
    assert rejection(core.handle(order_command(alice, "o1"), NOW_MS + 3)) is Reason.SALE_NOT_OPEN
    sale = core.sales.get("s1")
    assert sale is not None
    sale.check()
    assert (sale.units_sold, sale.units_held, sale.units_remaining) == (1, 0, 9)
    unknown = core.orders.forget_sale("nope")
    assert isinstance(unknown, Rejected)
    assert unknown.reason is Reason.UNKNOWN_SALE


def test_order_table_is_bounded() -> None:
    core, merchant, (alice, *_) = make_core()
    core.orders.orders_max = 2
    core.handle(schedule_command(merchant, per_buyer_limit=5), NOW_MS)
    core.handle(order_command(alice, "o1"), NOW_MS)
    core.handle(order_command(alice, "o2"), NOW_MS)
    assert rejection(core.handle(order_command(alice, "o3"), NOW_MS)) is Reason.CAPACITY
    assert isinstance(core.handle(order_command(alice, "o1"), NOW_MS)[-1], OrderRepeated)


def test_store_trouble_is_not_remembered() -> None:
    core, merchant, (alice, *_) = make_core(external_stock=True)
    core.handle(schedule_command(merchant), NOW_MS)
    command = order_command(alice, "o1")
    _, prepared = core.prepare_order(command, NOW_MS)
    assert prepared is not None
    lost = core.complete_order(prepared, ReserveResult(ReserveStatus.UNKNOWN_SALE, 1, 0), NOW_MS)
    assert rejection(lost) is Reason.STOCK_UNAVAILABLE
    full = core.complete_order(prepared, ReserveResult(ReserveStatus.CAPACITY, 1, 0), NOW_MS)
    assert rejection(full) is Reason.CAPACITY
    assert core.orders.status(alice.identity_id, "o1") is None
    _, prepared = core.prepare_order(command, NOW_MS + 1)
    assert prepared is not None  # The retry goes to the store again.
    done = core.complete_order(prepared, ReserveResult(ReserveStatus.ACCEPTED, 1, 9), NOW_MS + 1)
    assert only(done, OrderAccepted)


def test_external_payment_follows_the_store() -> None:
    core, merchant, (alice, bob, carol) = make_core(external_stock=True)
    core.handle(schedule_command(merchant, units_offered=5), NOW_MS)
    for buyer in (alice, bob, carol):
        _, prepared = core.prepare_order(order_command(buyer, "o1"), NOW_MS)
        assert prepared is not None
        core.complete_order(prepared, ReserveResult(ReserveStatus.ACCEPTED, 1, 4), NOW_MS)
    # The store released alice's units first (another process expired them): refused.
    refused = core.pay_order(PayOrder(alice.identity_id, "o1"), False, NOW_MS + 1)
    assert isinstance(only(refused, PaymentRefused), PaymentRefused)
    assert isinstance(only(refused, OrderExpired), OrderExpired)
    # The store settled bob's payment, though the hold ran out locally meanwhile: paid.
    # The payment is applied before the clock runs, then the clock expires carol's hold.
    late = core.pay_order(PayOrder(bob.identity_id, "o1"), True, NOW_MS + 10_000)
    paid = only(late, OrderPaid)
    assert isinstance(paid, OrderPaid)
    assert paid.buyer_id == bob.identity_id
    assert core.orders.status(bob.identity_id, "o1") is OrderStatus.PAID
    expired = only(late, OrderExpired)
    assert isinstance(expired, OrderExpired)
    assert expired.buyer_id == carol.identity_id
    # Carol's hold expired locally before the settlement answer came back: still paid.
    revived = core.pay_order(PayOrder(carol.identity_id, "o1"), True, NOW_MS + 10_002)
    assert isinstance(only(revived, OrderPaid), OrderPaid)
    sale = core.sales.get("s1")
    assert sale is not None
    sale.check()
    assert (sale.units_sold, sale.units_held, sale.units_remaining) == (2, 0, 3)


def tracked_objects() -> int:
    gc.collect()
    return len(gc.get_objects())


def test_remembered_orders_add_nothing_for_the_garbage_collector_to_walk() -> None:
    """Every answered order is remembered (for repeats and payment), up to `orders_max`.
    Full collections walk every tracked object, so the records must not be tracked: the
    count of tracked objects stays flat however many orders are remembered."""
    core, merchant, buyers = make_core(buyers=40)
    core.handle(schedule_command(merchant, units_offered=300, per_buyer_limit=20), NOW_MS)
    # Accepted, limit reached, sold out and repeated answers, all remembered.
    commands = [order_command(buyers[n % 40], f"o{n // 40}") for n in range(1000)]
    before = tracked_objects()
    for command in commands:
        core.handle(command, NOW_MS + 1)
    for command in commands[:50]:
        core.handle(command, NOW_MS + 2)
    assert core.orders.orders_remembered() == 1000
    sale = core.sales.get("s1")
    assert sale is not None
    assert sale.units_remaining == 0
    # A few containers may appear (the sale's key list); nothing per order. With one
    # tracked record per order this would be 1000 or more.
    assert tracked_objects() - before < 20


def test_a_signature_checked_ahead_is_taken_as_given_and_the_rest_still_applies() -> None:
    core, merchant, (alice, bob, _) = make_core()
    core.handle(schedule_command(merchant, units_offered=5), NOW_MS)
    order = order_command(alice, "o1")
    check = check_order_signature(order)
    assert check.refused is None
    accepted = core.handle(CheckedOrder(order, check), NOW_MS)
    assert isinstance(only(accepted, OrderAccepted), OrderAccepted)
    # The same bytes again, checked in the core this time: the first answer (same digest).
    again = core.handle(order, NOW_MS + 1)
    assert isinstance(only(again, OrderRepeated), OrderRepeated)
    # A refusal found ahead is the answer, and nothing is remembered.
    forged = dataclasses.replace(order_command(bob, "o1"), signature=alice.sign(b"other"))
    refused = check_order_signature(forged)
    assert refused.refused is not None
    assert refused.refused.reason is Reason.BAD_SIGNATURE
    rejected = only(core.handle(CheckedOrder(forged, refused), NOW_MS), OrderRejected)
    assert isinstance(rejected, OrderRejected)
    assert rejected.reason is Reason.BAD_SIGNATURE
    assert core.orders.status(bob.identity_id, "o1") is None
    # Every other rule still applies to a checked order: the price, say.
    cheap = order_command(bob, "o2", price_cents=1)
    late = only(
        core.handle(CheckedOrder(cheap, check_order_signature(cheap)), NOW_MS), OrderRejected
    )
    assert isinstance(late, OrderRejected)
    assert late.reason is Reason.PRICE_CHANGED
    # Fields that cannot be written canonically are a bad field, found ahead as in the core.
    floating = dataclasses.replace(order, order_id="o3", quantity=1.0)  # type: ignore[arg-type]
    assert check_order_signature(floating).refused == Rejected(
        Reason.BAD_FIELD, "floats are not allowed; use integers (cents, milliseconds)"
    )
