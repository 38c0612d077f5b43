"""One object for the whole commerce core: `handle(command, now_ms) -> events`.

Every call first runs time-driven transitions up to `now_ms` (sales opening and closing,
payment holds expiring), then the command. Rejections of non-order commands come back as
`CommandRejected` events; order rejections as `OrderRejected`. The adapter appends each
event's `to_entry()` (when not None) to the ledger and sends the answers.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from livecommerce.commerce.auctions import AuctionBook, AuctionCommand, PlaceBid, StartAuction
from livecommerce.commerce.catalog import AddStock, Catalog, ListProduct
from livecommerce.commerce.escrow import (
    EscrowBook,
    EscrowRules,
    OrderStep,
    ProviderResult,
    RunPayouts,
    SetRules,
    Stage,
    StepKind,
    StepRefused,
    StepRepeated,
)
from livecommerce.commerce.events import Entry, Event
from livecommerce.commerce.funds import Funds, TransferRecorded
from livecommerce.commerce.groups import GroupBook, GroupStep, OfferGroup
from livecommerce.commerce.identity import IdentityRegistry, Register
from livecommerce.commerce.orders import (
    ORDER_FRESHNESS_MS,
    CheckedOrder,
    OrderBook,
    OrderPaid,
    OrderStatus,
    PaymentRefused,
    PayOrder,
    PlaceOrder,
    PreparedOrder,
)
from livecommerce.commerce.polls import PollBook, RecordPoll
from livecommerce.commerce.recommend import Recommender, Signal
from livecommerce.commerce.reservations import ReserveResult
from livecommerce.commerce.results import Reason, Rejected, all_text
from livecommerce.commerce.reviews import ReviewBook, ReviewStep
from livecommerce.commerce.rooms import LinkRoom, RoomBook
from livecommerce.commerce.sales import SaleBook, ScheduleSale, StopSale
from livecommerce.commerce.trace import TraceBook, TraceCommand

Command = (
    Register
    | ListProduct
    | AddStock
    | LinkRoom
    | ScheduleSale
    | StopSale
    | PlaceOrder
    | CheckedOrder
    | PayOrder
    | OrderStep
    | ProviderResult
    | RunPayouts
    | SetRules
    | ReviewStep
    | RecordPoll
    | TraceCommand
    | OfferGroup
    | GroupStep
    | StartAuction
    | PlaceBid
    | AuctionCommand
)


@dataclass(frozen=True, slots=True)
class CommandRejected(Event):
    command: str  # The command's class name, e.g. "ScheduleSale".
    reason: Reason
    detail: str

    def to_entry(self) -> None:
        return None


class CommerceCore:
    def __init__(
        self,
        order_freshness_ms: int = ORDER_FRESHNESS_MS,
        external_stock: bool = False,
        escrow_rules: EscrowRules | None = None,
        verify_signatures: bool = True,
    ) -> None:
        self.identities = IdentityRegistry()
        self.catalog = Catalog(self.identities)
        self.rooms = RoomBook(self.identities)
        self.sales = SaleBook(self.catalog)
        self.orders = OrderBook(
            self.identities,
            self.sales,
            order_freshness_ms=order_freshness_ms,
            external_stock=external_stock,
        )
        self.funds = Funds()
        self.escrow = EscrowBook(
            self.identities, self.catalog, self.funds, escrow_rules or EscrowRules()
        )
        # Fed with every paid order here (live or replayed); views and clicks by the adapter.
        self.recommender = Recommender()
        self.reviews = ReviewBook(self.identities, self.escrow)
        self.polls = PollBook()
        self.trace = TraceBook(self.identities, self.catalog, self.escrow.get)
        self.groups = GroupBook(self.identities, self.sales, self.orders, self.escrow)
        self.auctions = AuctionBook(self.identities, self.catalog, self.sales, self.orders)
        # False only to replay the server's own ledger: the signed steps in it were
        # checked when they were taken (a third party's audit checks them again).
        self.verify_signatures = verify_signatures
        # Replay: the entries that the step just taken again made, which must come next
        # in the ledger (livecommerce/commerce/replay.py).
        self.expected_entries: deque[Entry] = deque()
        self._now_ms = 0

    def restore_clock(self, now_ms: int) -> None:
        """Move the core's clock forward without running transitions (ledger replay)."""
        self._now_ms = max(self._now_ms, now_ms)

    def tick(self, now_ms: int) -> list[Event]:
        """Time-driven transitions. Time never goes backwards inside the core."""
        now_ms = max(now_ms, self._now_ms)
        self._now_ms = now_ms
        events = [*self.sales.tick(now_ms), *self.orders.tick(now_ms)]
        for expired in self.funds.tick(now_ms):
            events.extend(self.expire_transfer(expired, now_ms))
        events.extend(self.escrow.tick(now_ms))
        events.extend(self.groups.tick(now_ms))
        events.extend(self.auctions.tick(now_ms))
        return events

    def expire_transfer(self, expired: Event, now_ms: int) -> list[Event]:
        """A pending transfer the funds expired, then what the escrow does about it (one
        after the other, so that replay can take them again in ledger order)."""
        assert isinstance(expired, TransferRecorded)
        return [expired, *self.escrow.expired(expired, now_ms)]

    def handle(self, command: Command, now_ms: int) -> list[Event]:
        events = self.tick(now_ms)
        now_ms = self._now_ms
        result: Event | list[Event] | Rejected
        if isinstance(command, PlaceOrder):
            result = self.orders.place(command, now_ms)
        elif isinstance(command, CheckedOrder):
            result = self.orders.place(command.order, now_ms, command.check)
        elif isinstance(command, PayOrder):
            result = self._pay(command, now_ms, None)
        elif isinstance(command, OrderStep):
            result = self._step(command, now_ms)
        elif isinstance(command, ProviderResult):
            result = self.escrow.record_result(command, now_ms)
        elif isinstance(command, RunPayouts):
            result = self.escrow.run_payouts(command, now_ms)
        elif isinstance(command, TraceCommand):
            result = self.trace.take(command, now_ms, self.verify_signatures)
        elif isinstance(command, SetRules):
            result = self.escrow.set_rules(command, now_ms)
        elif isinstance(command, ReviewStep):
            result = self.reviews.take(command, now_ms, self.verify_signatures)
        elif isinstance(command, PlaceBid):
            result = self.auctions.bid(command, now_ms, self.verify_signatures)
        elif isinstance(command, StartAuction):
            linked = self.rooms.merchant_of(command.room_id) if all_text(command.room_id) else None
            if linked != command.merchant_id:
                result = Rejected(Reason.NOT_MERCHANT, "the room is linked to another merchant")
            else:
                result = self.auctions.start(command, now_ms)
        elif isinstance(command, AuctionCommand):
            result = self.auctions.host(command, now_ms)
        elif isinstance(command, GroupStep):
            result = self.groups.take(command, now_ms, self.verify_signatures)
        elif isinstance(command, OfferGroup):
            result = self.groups.make_offer(command, now_ms)
        elif isinstance(command, RecordPoll):
            result = self.polls.record(command, now_ms)
        elif isinstance(command, Register):
            result = self.identities.register(command, now_ms)
        elif isinstance(command, ListProduct):
            result = self.catalog.list_product(command, now_ms)
        elif isinstance(command, AddStock):
            result = self.catalog.add_stock(command, now_ms)
        elif isinstance(command, LinkRoom):
            result = self.rooms.link(command, now_ms)
        elif isinstance(command, ScheduleSale):
            linked = self.rooms.merchant_of(command.room_id) if all_text(command.room_id) else None
            if linked is not None and linked != command.merchant_id:
                result = Rejected(Reason.NOT_MERCHANT, "the room is linked to another merchant")
            else:
                result = self.sales.schedule(command, now_ms)
        else:
            result = self.sales.stop(command, now_ms)
        if isinstance(result, Rejected):
            events.append(CommandRejected(type(command).__name__, result.reason, result.detail))

        elif isinstance(result, list):
            events.extend(result)
        else:
            events.append(result)
        return events

    # External stock (Redis): the adapter awaits the store between these two calls.

    def prepare_order(
        self, command: PlaceOrder | CheckedOrder, now_ms: int
    ) -> tuple[list[Event], PreparedOrder | None]:
        """(events, prepared): reserve `prepared` in the store, then `complete_order`.
        `prepared` is None when the events already answer the order (a rejection or a
        repeat). `events` also holds whatever the clock moved (sales opening, expiries)."""
        events = self.tick(now_ms)
        if isinstance(command, CheckedOrder):
            prepared = self.orders.prepare(command.order, self._now_ms, command.check)
        else:
            prepared = self.orders.prepare(command, self._now_ms)
        if isinstance(prepared, PreparedOrder):
            return events, prepared
        return [*events, *prepared], None

    def pay_order(self, command: PayOrder, store_settled: bool, now_ms: int) -> list[Event]:
        """External stock: `store_settled = await store.settle(sale_id, buyer_id, order_id)`
        first, then this. The payment is applied before the clock runs, so a hold that ran
        out while the settlement was in flight does not refuse a payment the store took."""
        paid = self._pay(command, max(now_ms, self._now_ms), store_settled)
        return [*paid, *self.tick(now_ms)]

    def _pay(self, command: PayOrder, now_ms: int, store_settled: bool | None) -> list[Event]:
        """The order book takes the payment; the escrow holds its money."""
        if all_text(command.buyer_id, command.order_id, command.authorization_id):
            life = self.escrow.get(command.buyer_id, command.order_id)
            if life is not None and life.authorization_id != command.authorization_id:
                detail = "the order is paid by another payment; cancel this one"
                return [
                    PaymentRefused(command.order_id, command.buyer_id, Reason.ALREADY_PAID, detail)
                ]
            if life is None and not self.escrow.has_room():
                detail = "too many paid orders open; retry later"
                return [PaymentRefused(command.order_id, command.buyer_id, Reason.CAPACITY, detail)]
            accepted = self.orders.accepted(command.buyer_id, command.order_id)
            grouped = None
            if life is None and accepted is not None:
                grouped = self.groups.may_pay(command.buyer_id, command.order_id, accepted.sale_id)
            if grouped is not None:
                return [
                    PaymentRefused(
                        command.order_id, command.buyer_id, grouped.reason, grouped.detail
                    )
                ]
        events = self.orders.pay(command, now_ms, store_settled)
        for event in list(events):
            if isinstance(event, OrderPaid):
                events.extend(self.open_escrow(event, now_ms))
                events.extend(self.groups.paid(event.buyer_id, event.order_id, now_ms))
        return events

    def open_escrow(self, paid: OrderPaid, now_ms: int) -> list[Event]:
        sale = self.sales.get(paid.sale_id)
        assert sale is not None
        spec = sale.spec
        self.recommender.seen(Signal.ORDER, spec.room_id, spec.product_id, paid.buyer_id, now_ms)
        return self.escrow.open(
            paid.buyer_id,
            paid.order_id,
            sale.spec.merchant_id,
            sale.spec.product_id,
            paid.quantity,
            paid.amount_cents,
            paid.currency,
            paid.provider,
            paid.authorization_id,
            now_ms,
        )

    def _step(self, step: OrderStep, now_ms: int) -> list[Event]:
        """A signed step; cancelling an order not paid yet is the order book's (its units
        go back to the sale), every other step the escrow's."""
        if (
            step.step == StepKind.CANCEL
            and all_text(step.buyer_id, step.order_id)
            and self.escrow.get(step.buyer_id, step.order_id) is None
        ):
            status = self.orders.status(step.buyer_id, step.order_id)
            if status is OrderStatus.CANCELLED:
                return [StepRepeated(f"{step.buyer_id}/{step.order_id}", Stage.CANCELLED)]
            refused = self.escrow.check_signed(step, step.buyer_id, now_ms, self.verify_signatures)
            if refused is None and status is OrderStatus.HELD:
                cancelled = self.orders.cancel_hold(
                    step.buyer_id, step.order_id, step.step_id, now_ms
                )
                assert not isinstance(cancelled, Rejected)
                return cancelled
            if refused is None and status is None:
                refused = Rejected(Reason.UNKNOWN_ORDER, "no such order for this buyer")
            if refused is None:
                refused = Rejected(Reason.WRONG_STAGE, "only a held or paid order is cancelled")
            return [StepRefused(f"{step.buyer_id}/{step.order_id}", refused.reason, refused.detail)]
        if step.step == StepKind.SHIP and all_text(step.buyer_id, step.order_id):
            held = self.groups.may_ship(step.buyer_id, step.order_id)
            if held is not None:
                reference = f"{step.buyer_id}/{step.order_id}"
                return [StepRefused(reference, held.reason, held.detail)]
        return self.escrow.take_step(step, now_ms, self.verify_signatures)

    def complete_order(
        self, prepared: PreparedOrder, result: ReserveResult, now_ms: int
    ) -> list[Event]:
        events = self.tick(now_ms)
        return [*events, *self.orders.complete(prepared, result, self._now_ms)]
