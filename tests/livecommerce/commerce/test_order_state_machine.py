"""Random sequences of orders, payments, stops and clock moves never oversell, and units
always add up (sold + held + remaining == offered), checked against the events too."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from livecommerce.commerce.events import Event
from livecommerce.commerce.orders import (
    OrderAccepted,
    OrderExpired,
    OrderPaid,
    OrderRejected,
    OrderRepeated,
    PayOrder,
)
from livecommerce.commerce.replay import order_records, replay
from livecommerce.commerce.reservations import SaleStock
from livecommerce.commerce.results import Reason
from livecommerce.commerce.sales import SaleClosed, StopSale
from tests.livecommerce.commerce.helpers import NOW_MS, make_core, order_command, schedule_command

UNITS_OFFERED = 7
PER_BUYER_LIMIT = 3
BUYERS = 4


class OrderMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[Event] = []
        self.core, self.merchant, self.buyers = make_core(buyers=BUYERS, sink=self.events)
        self.now_ms = NOW_MS
        scheduled = self.core.handle(
            schedule_command(
                self.merchant,
                units_offered=UNITS_OFFERED,
                per_buyer_limit=PER_BUYER_LIMIT,
                duration_ms=120_000,
                payment_hold_ms=10_000,
            ),
            self.now_ms,
        )
        self.events.extend(scheduled)
        self.units_by_order: dict[tuple[str, str], int] = {}
        self.state_by_order: dict[tuple[str, str], str] = {}
        self.sold_seen = 0
        self.closed = 0

    def apply(self, events: list[Event]) -> None:
        self.events.extend(events)
        for event in events:
            if isinstance(event, OrderAccepted):
                key = (event.buyer_id, event.order_id)
                assert key not in self.units_by_order
                self.units_by_order[key] = event.quantity
                self.state_by_order[key] = "held"
            elif isinstance(event, OrderPaid):
                key = (event.buyer_id, event.order_id)
                assert self.state_by_order[key] == "held"
                self.state_by_order[key] = "paid"
            elif isinstance(event, OrderExpired):
                key = (event.buyer_id, event.order_id)
                assert self.state_by_order[key] == "held"
                self.state_by_order[key] = "expired"
            elif isinstance(event, SaleClosed):
                self.closed += 1
            elif isinstance(event, OrderRejected):
                assert event.reason in {
                    Reason.SOLD_OUT,
                    Reason.LIMIT_REACHED,
                    Reason.BAD_QUANTITY,
                    Reason.SALE_NOT_OPEN,
                    Reason.DUPLICATE_CONFLICT,
                    Reason.STALE,
                }, event

    @rule(
        buyer=st.integers(0, BUYERS - 1),
        order_number=st.integers(0, 12),
        quantity=st.integers(0, PER_BUYER_LIMIT + 1),
        skew_ms=st.sampled_from([0, 0, 0, -31_000, 31_000]),
    )
    def place(self, buyer: int, order_number: int, quantity: int, skew_ms: int) -> None:
        command = order_command(
            self.buyers[buyer],
            f"o{order_number}",
            quantity=quantity,
            time_ms=self.now_ms + skew_ms,
        )
        events = self.core.handle(command, self.now_ms)
        self.apply(events)
        answers = [
            e for e in events if isinstance(e, OrderAccepted | OrderRejected | OrderRepeated)
        ]
        assert len(answers) == 1, events

    @rule(buyer=st.integers(0, BUYERS - 1), order_number=st.integers(0, 12))
    def pay(self, buyer: int, order_number: int) -> None:
        self.apply(
            self.core.handle(
                PayOrder(self.buyers[buyer].identity_id, f"o{order_number}"), self.now_ms
            )
        )

    @rule(step_ms=st.sampled_from([1, 500, 5_000, 9_999, 10_000, 30_000]))
    def advance(self, step_ms: int) -> None:
        self.now_ms += step_ms
        self.apply(self.core.tick(self.now_ms))

    @rule()
    def stop(self) -> None:
        self.apply(self.core.handle(StopSale("s1", self.merchant.identity_id), self.now_ms))

    @invariant()
    def units_add_up(self) -> None:
        sale = self.core.sales.get("s1")
        assert sale is not None
        sale.check()
        sale.stock.check_totals()
        held = sum(q for k, q in self.units_by_order.items() if self.state_by_order[k] == "held")
        sold = sum(q for k, q in self.units_by_order.items() if self.state_by_order[k] == "paid")
        assert (sale.units_held, sale.units_sold) == (held, sold)
        assert sold + held + sale.units_remaining == UNITS_OFFERED
        assert sold + held <= UNITS_OFFERED  # Never oversold.
        assert sold >= self.sold_seen  # Sold units never come back.
        self.sold_seen = sold
        assert self.closed <= 1

    @invariant()
    def per_buyer_limit_holds(self) -> None:
        for signer in self.buyers:
            live = sum(
                q
                for (buyer_id, _), q in self.units_by_order.items()
                if buyer_id == signer.identity_id
                and self.state_by_order[(buyer_id, _)] in ("held", "paid")
            )
            assert live <= PER_BUYER_LIMIT

    def teardown(self) -> None:
        """The ledger entries replay to the same state: counts, order states, stock."""
        entries = [entry for event in self.events if (entry := event.to_entry()) is not None]
        replayed = replay(entries)
        live_sale, replayed_sale = self.core.sales.get("s1"), replayed.sales.get("s1")
        assert live_sale is not None
        assert replayed_sale is not None
        assert (
            replayed_sale.state,
            replayed_sale.close_reason,
            replayed_sale.units_sold,
            replayed_sale.units_held,
            replayed_sale.units_remaining,
        ) == (
            live_sale.state,
            live_sale.close_reason,
            live_sale.units_sold,
            live_sale.units_held,
            live_sale.units_remaining,
        )
        for buyer_id, order_id in self.units_by_order:
            assert replayed.orders.status(buyer_id, order_id) == self.core.orders.status(
                buyer_id, order_id
            )
        assert replayed.catalog.inventory_units("mug") == self.core.catalog.inventory_units("mug")
        records = order_records(replayed, "s1")
        rebuilt = SaleStock.rebuild(UNITS_OFFERED, records)
        assert rebuilt.remaining == live_sale.units_remaining
        # Both cores go on identically: expire everything still held.
        later = self.now_ms + 10**6
        assert [e.to_entry() for e in replayed.tick(later)] == [
            e.to_entry() for e in self.core.tick(later)
        ]


TestOrderMachine = OrderMachine.TestCase
TestOrderMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
