"""Flash sales: a state machine per sale, driven by commands and by `tick(now_ms)`.

    scheduled --(now >= starts_at_ms)--> open --(sold out | time up | stopped)--> closed

A sale is `open` for `starts_at_ms <= now_ms < starts_at_ms + duration_ms`. It closes as
`sold_out` when every offered unit is paid for (units held for payment may still come
back), `time_up` at the end of its window, or `stopped` by the merchant. After closing,
held units can still be paid for or expire; no new orders are taken.

Units always add up: `units_sold + units_held + units_remaining == units_offered`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Final

import msgspec

from livecommerce.commerce.catalog import PRICE_CENTS_MAX, Catalog
from livecommerce.commerce.events import Entry, Event, flat_fields
from livecommerce.commerce.reservations import SaleStock
from livecommerce.commerce.results import Reason, Rejected, all_text

SALE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# An auction's lot is a sale of its own (auctions.py), never orderable with `order/v1`.
LOT_SALE_PREFIX: Final = "auction-"
ROOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
SALE_UNITS_MAX: Final = 1_000_000
PER_BUYER_LIMIT_MAX: Final = 100
DURATION_MS_MIN: Final = 1_000
DURATION_MS_MAX: Final = 24 * 3600 * 1000
PAYMENT_HOLD_MS_MIN: Final = 1_000
PAYMENT_HOLD_MS_MAX: Final = 3600 * 1000
SCHEDULE_AHEAD_MS_MAX: Final = 30 * 24 * 3600 * 1000
SALES_LIVE_MAX: Final = 10_000


class SaleState(StrEnum):
    SCHEDULED = "scheduled"
    OPEN = "open"
    CLOSED = "closed"


class CloseReason(StrEnum):
    SOLD_OUT = "sold_out"
    TIME_UP = "time_up"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class ScheduleSale:
    """Command from the merchant's authenticated session (the adapter checks the token)."""

    sale_id: str
    room_id: str
    product_id: str
    merchant_id: str
    units_offered: int
    price_cents: int
    per_buyer_limit: int
    starts_at_ms: int
    duration_ms: int
    payment_hold_ms: int


@dataclass(frozen=True, slots=True)
class StopSale:
    sale_id: str
    merchant_id: str


class Sale:
    """One sale's live state. Mutated only by `SaleBook` and the order book."""

    __slots__ = (
        "close_reason",
        "currency",
        "spec",
        "state",
        "stock",
        "units_held",
        "units_sold",
    )

    def __init__(self, spec: ScheduleSale, currency: str) -> None:
        self.spec = spec
        self.currency = currency
        self.state = SaleState.SCHEDULED
        self.close_reason: CloseReason | None = None
        self.stock = SaleStock(spec.units_offered)
        self.units_sold = 0
        self.units_held = 0

    @property
    def sale_id(self) -> str:
        return self.spec.sale_id

    @property
    def ends_at_ms(self) -> int:
        return self.spec.starts_at_ms + self.spec.duration_ms

    @property
    def units_remaining(self) -> int:
        return self.stock.remaining

    def check(self) -> None:
        assert self.units_sold >= 0, self.units_sold
        assert self.units_held >= 0, self.units_held
        assert (
            self.units_sold + self.units_held + self.units_remaining == self.spec.units_offered
        ), (self.units_sold, self.units_held, self.units_remaining)


@dataclass(frozen=True, slots=True)
class SaleScheduled(Event):
    spec: ScheduleSale
    currency: str
    time_ms: int

    def to_entry(self) -> Entry:
        return "sale/v1", {
            "action": "scheduled",
            **asdict(self.spec),
            "currency": self.currency,
            "time_ms": self.time_ms,
        }


@dataclass(frozen=True, slots=True)
class SaleOpened(Event):
    sale_id: str
    room_id: str
    time_ms: int

    def to_entry(self) -> Entry:
        return "sale/v1", {"action": "opened", **asdict(self)}


@dataclass(frozen=True, slots=True)
class SaleClosed(Event):
    sale_id: str
    room_id: str
    reason: CloseReason
    units_sold: int
    units_held: int
    units_remaining: int
    time_ms: int

    def to_entry(self) -> Entry:
        fields = asdict(self)
        fields["reason"] = str(self.reason)
        return "sale/v1", {"action": "closed", **fields}


class StockChanged(msgspec.Struct, Event, frozen=True):
    """A sale's counts after a change; `cause` names it (`order:<id>`, `expired:<id>`...).
    A msgspec Struct, as the order events: one is made for every order."""

    sale_id: str
    room_id: str
    units_remaining: int
    units_held: int
    units_sold: int
    cause: str
    time_ms: int

    def to_entry(self) -> Entry:
        return "stock/v1", flat_fields(self)


def superseded_stock_changes(events: Sequence[Event]) -> set[int]:
    """Positions of the `StockChanged` events that a later one of the same sale follows.

    Every change of a sale's counts comes with a `StockChanged`. When events go to the
    ledger together (one batch, one write), the last one of each sale already holds the
    counts after all the others, and the order, expiry and payment entries say what
    changed, so the adapter appends only that one (replay checks it against the counts it
    rebuilt, as it checks every `stock/v1` entry). That is one entry per order instead of
    two in a burst of orders."""
    last: dict[str, int] = {}
    superseded: set[int] = set()
    for position, event in enumerate(events):
        if isinstance(event, StockChanged):
            previous = last.get(event.sale_id)
            if previous is not None:
                superseded.add(previous)
            last[event.sale_id] = position
    return superseded


def stock_changed(sale: Sale, cause: str, now_ms: int) -> StockChanged:
    sale.check()
    return StockChanged(
        sale.sale_id,
        sale.spec.room_id,
        sale.units_remaining,
        sale.units_held,
        sale.units_sold,
        cause,
        now_ms,
    )


def _check_spec(spec: ScheduleSale, now_ms: int) -> Rejected | None:
    def bad(detail: str) -> Rejected:
        return Rejected(Reason.BAD_FIELD, detail)

    def integer_in(value: int, low: int, high: int) -> bool:
        return type(value) is int and low <= value <= high

    if not all_text(spec.sale_id, spec.room_id, spec.product_id, spec.merchant_id):
        return bad("sale_id, room_id, product_id, merchant_id are text")
    if SALE_ID.fullmatch(spec.sale_id) is None:
        return bad("sale_id must be 1..64 of [A-Za-z0-9_-]")
    if ROOM_ID.fullmatch(spec.room_id) is None:
        return bad("room_id must be 1..64 of [A-Za-z0-9_-]")
    if not integer_in(spec.units_offered, 1, SALE_UNITS_MAX):
        return bad(f"units_offered must be an integer in 1..{SALE_UNITS_MAX}")
    if not integer_in(spec.price_cents, 1, PRICE_CENTS_MAX):
        return bad(f"price_cents must be an integer in 1..{PRICE_CENTS_MAX}")
    if not integer_in(spec.per_buyer_limit, 1, PER_BUYER_LIMIT_MAX):
        return bad(f"per_buyer_limit must be an integer in 1..{PER_BUYER_LIMIT_MAX}")
    if not integer_in(spec.starts_at_ms, 0, now_ms + SCHEDULE_AHEAD_MS_MAX):
        return bad("starts_at_ms must be an integer no more than 30 days ahead")
    if not integer_in(spec.duration_ms, DURATION_MS_MIN, DURATION_MS_MAX):
        return bad(f"duration_ms must be an integer in {DURATION_MS_MIN}..{DURATION_MS_MAX}")
    if not integer_in(spec.payment_hold_ms, PAYMENT_HOLD_MS_MIN, PAYMENT_HOLD_MS_MAX):
        return bad(
            f"payment_hold_ms must be an integer in {PAYMENT_HOLD_MS_MIN}..{PAYMENT_HOLD_MS_MAX}"
        )
    if spec.starts_at_ms + spec.duration_ms <= now_ms:
        return bad("the sale would end before it is scheduled")
    return None


class SaleBook:
    """All sales. Live (not closed) sales are bounded by `sales_live_max`."""

    def __init__(self, catalog: Catalog, sales_live_max: int = SALES_LIVE_MAX) -> None:
        self.catalog = catalog
        self.sales_live_max = sales_live_max
        self._sales: dict[str, Sale] = {}
        self._live: dict[str, Sale] = {}

    def get(self, sale_id: str) -> Sale | None:
        return self._sales.get(sale_id)

    def live(self) -> list[Sale]:
        return list(self._live.values())

    def all(self) -> list[Sale]:
        return list(self._sales.values())

    def of_merchant(self, merchant_id: str) -> list[Sale]:
        return [sale for sale in self._sales.values() if sale.spec.merchant_id == merchant_id]

    def schedule(self, command: ScheduleSale, now_ms: int) -> list[Event] | Rejected:
        refused = _check_spec(command, now_ms)
        if refused is not None:
            return refused
        product = self.catalog.get(command.product_id)
        if product is None:
            return Rejected(Reason.UNKNOWN_PRODUCT, "no such product")
        if product.merchant_id != command.merchant_id:
            return Rejected(Reason.NOT_MERCHANT, "only the product's merchant can sell it")
        if command.sale_id in self._sales:
            return Rejected(Reason.SALE_EXISTS, "a sale with this id exists")
        if len(self._live) >= self.sales_live_max:
            return Rejected(Reason.CAPACITY, "too many live sales")
        taken = self.catalog.take_for_sale(
            command.product_id, command.units_offered, command.sale_id, now_ms
        )
        if isinstance(taken, Rejected):
            return taken
        sale = Sale(command, product.currency)
        self._sales[sale.sale_id] = sale
        self._live[sale.sale_id] = sale
        events: list[Event] = [SaleScheduled(command, product.currency, now_ms), taken]
        events.extend(self._advance(sale, now_ms))
        return events

    def stop(self, command: StopSale, now_ms: int) -> list[Event] | Rejected:
        if not all_text(command.sale_id, command.merchant_id):
            return Rejected(Reason.BAD_FIELD, "sale_id and merchant_id are text")
        sale = self._sales.get(command.sale_id)
        if sale is None:
            return Rejected(Reason.UNKNOWN_SALE, "no such sale")
        if sale.spec.merchant_id != command.merchant_id:
            return Rejected(Reason.NOT_MERCHANT, "only the sale's merchant can stop it")
        if sale.state is SaleState.CLOSED:
            return Rejected(Reason.SALE_CLOSED, "the sale is already closed")
        return [self.close(sale, CloseReason.STOPPED, now_ms)]

    def close(self, sale: Sale, reason: CloseReason, now_ms: int) -> SaleClosed:
        assert sale.state is not SaleState.CLOSED
        sale.state = SaleState.CLOSED
        sale.close_reason = reason
        self._live.pop(sale.sale_id, None)
        sale.check()
        return SaleClosed(
            sale.sale_id,
            sale.spec.room_id,
            reason,
            sale.units_sold,
            sale.units_held,
            sale.units_remaining,
            now_ms,
        )

    def _advance(self, sale: Sale, now_ms: int) -> list[Event]:
        events: list[Event] = []
        if sale.state is SaleState.SCHEDULED and now_ms >= sale.spec.starts_at_ms:
            sale.state = SaleState.OPEN
            events.append(SaleOpened(sale.sale_id, sale.spec.room_id, now_ms))
        if sale.state is SaleState.OPEN and now_ms >= sale.ends_at_ms:
            events.append(self.close(sale, CloseReason.TIME_UP, now_ms))
        return events

    # Replay from the ledger (trusted entries, in ledger order).

    def restore_scheduled(self, spec: ScheduleSale, currency: str) -> None:
        assert spec.sale_id not in self._sales, spec.sale_id
        sale = Sale(spec, currency)
        self._sales[sale.sale_id] = sale
        self._live[sale.sale_id] = sale

    def restore_opened(self, sale_id: str) -> None:
        """Idempotent: a replica core following the ledger writer's feed (scaled out) may
        have opened the sale by its own clock before the entry arrives."""
        sale = self._sales[sale_id]
        if sale.state is SaleState.SCHEDULED:
            sale.state = SaleState.OPEN

    def restore_closed(self, sale_id: str, reason: CloseReason) -> None:
        """Idempotent, as `restore_opened`; the first close keeps its reason."""
        sale = self._sales[sale_id]
        if sale.state is not SaleState.CLOSED:
            sale.state = SaleState.CLOSED
            sale.close_reason = reason
            self._live.pop(sale_id, None)

    def tick(self, now_ms: int) -> list[Event]:
        """Time-driven transitions for every live sale (bounded by `sales_live_max`)."""
        events: list[Event] = []
        for sale in list(self._live.values()):
            events.extend(self._advance(sale, now_ms))
        return events
