"""One object for the whole commerce core: `handle(command, now_ms) -> events`.

Every call first runs time-driven transitions up to `now_ms` (sales opening and closing,
payment holds expiring), then the command. Rejections of non-order commands come back as
`CommandRejected` events; order rejections as `OrderRejected`. The adapter appends each
event's `to_entry()` (when not None) to the ledger and sends the answers.
"""

from __future__ import annotations

from dataclasses import dataclass

from livecommerce.commerce.catalog import AddStock, Catalog, ListProduct
from livecommerce.commerce.events import Event
from livecommerce.commerce.identity import IdentityRegistry, Register
from livecommerce.commerce.orders import (
    ORDER_FRESHNESS_MS,
    CheckedOrder,
    OrderBook,
    PayOrder,
    PlaceOrder,
    PreparedOrder,
)
from livecommerce.commerce.reservations import ReserveResult
from livecommerce.commerce.results import Reason, Rejected, all_text
from livecommerce.commerce.rooms import LinkRoom, RoomBook
from livecommerce.commerce.sales import SaleBook, ScheduleSale, StopSale

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
        self._now_ms = 0

    def restore_clock(self, now_ms: int) -> None:
        """Move the core's clock forward without running transitions (ledger replay)."""
        self._now_ms = max(self._now_ms, now_ms)

    def tick(self, now_ms: int) -> list[Event]:
        """Time-driven transitions. Time never goes backwards inside the core."""
        now_ms = max(now_ms, self._now_ms)
        self._now_ms = now_ms
        return [*self.sales.tick(now_ms), *self.orders.tick(now_ms)]

    def handle(self, command: Command, now_ms: int) -> list[Event]:
        events = self.tick(now_ms)
        now_ms = self._now_ms
        result: Event | list[Event] | Rejected
        if isinstance(command, PlaceOrder):
            result = self.orders.place(command, now_ms)
        elif isinstance(command, CheckedOrder):
            result = self.orders.place(command.order, now_ms, command.check)
        elif isinstance(command, PayOrder):
            result = self.orders.pay(command, now_ms)
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
        paid = self.orders.pay(command, max(now_ms, self._now_ms), store_settled)
        return [*paid, *self.tick(now_ms)]

    def complete_order(
        self, prepared: PreparedOrder, result: ReserveResult, now_ms: int
    ) -> list[Event]:
        events = self.tick(now_ms)
        return [*events, *self.orders.complete(prepared, result, self._now_ms)]
