"""Stock counting for one sale, as a pure value: the rules every stock store follows.

One reservation is all-or-nothing: it is `accepted` only when the buyer's held units plus
`quantity` stay within `per_buyer_limit` and `quantity` units remain. Each (buyer, order)
pair is answered once; asking again returns the first answer marked `duplicate` (and
`conflict` when the quantity differs). `release` returns an accepted order's units exactly
once. The in-process store wraps this class; the Redis Lua script implements the same
rules, and the shared test suite holds both to them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import msgspec

ORDER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
BUYER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
SALE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
UNITS_OFFERED_MAX: Final = 10_000_000
ORDERS_PER_SALE_MAX: Final = 2_000_000


class ReserveStatus(StrEnum):
    ACCEPTED = "accepted"
    SOLD_OUT = "sold_out"
    LIMIT_REACHED = "limit_reached"
    UNKNOWN_SALE = "unknown_sale"  # The store has no such sale (e.g. Redis lost it).
    CAPACITY = "capacity"  # The sale's order table is full (orders_per_sale_max).


class RecordStatus(StrEnum):
    """What a stored order is now: `accepted` units are held for payment, `paid` units are
    sold for good (never released), `released` units went back to the sale."""

    ACCEPTED = "accepted"
    PAID = "paid"
    RELEASED = "released"


@dataclass(frozen=True, slots=True)
class ReserveResult:
    status: ReserveStatus
    quantity: int  # The quantity of the first request for this order id.
    remaining: int  # Units left in the sale after this call.
    duplicate: bool = False  # This order id was answered before; `status` is that answer.
    conflict: bool = False  # A duplicate whose quantity differs from the first request.

    @property
    def accepted(self) -> bool:
        return self.status is ReserveStatus.ACCEPTED


@dataclass(frozen=True, slots=True)
class ReleaseResult:
    released_units: int  # 0 when the order was unknown, refused, or already released.
    remaining: int


@dataclass(frozen=True, slots=True)
class OrderRecord:
    """An order as the ledger knows it, for rebuilding stock after a restart."""

    buyer_id: str
    order_id: str
    quantity: int
    status: RecordStatus


class _Answer(msgspec.Struct, frozen=True, gc=False):
    """One order's first answer and where its units are now. Plain values only, so the
    garbage collector does not track it: a sale remembers up to `orders_max` of these, and
    tracked records made full collections pause the server (docs/benchmarks.md)."""

    status: ReserveStatus
    quantity: int
    record: RecordStatus | None


def check_ids(sale_id: str, buyer_id: str, order_id: str) -> None:
    """Ids are validated by the core before they reach a store: a bad one is a bug."""
    assert SALE_ID.fullmatch(sale_id), sale_id
    assert BUYER_ID.fullmatch(buyer_id), buyer_id
    assert ORDER_ID.fullmatch(order_id), order_id


class SaleStock:
    """The stock of one sale: remaining units, units per buyer, and each order's answer."""

    def __init__(self, units_offered: int, orders_max: int = ORDERS_PER_SALE_MAX) -> None:
        assert 0 < units_offered <= UNITS_OFFERED_MAX, units_offered
        self.units_offered = units_offered
        self.remaining = units_offered
        self.orders_max = orders_max
        self._buyer_units: dict[str, int] = {}
        # (buyer_id, order_id) -> first status, first quantity, record status or None
        self._orders: dict[tuple[str, str], _Answer] = {}

    def buyer_units(self, buyer_id: str) -> int:
        return self._buyer_units.get(buyer_id, 0)

    @property
    def units_taken(self) -> int:
        return self.units_offered - self.remaining

    def reserve(
        self, buyer_id: str, order_id: str, quantity: int, per_buyer_limit: int
    ) -> ReserveResult:
        assert quantity > 0, quantity
        assert per_buyer_limit > 0, per_buyer_limit
        first = self._orders.get((buyer_id, order_id))
        if first is not None:
            return ReserveResult(
                first.status,
                first.quantity,
                self.remaining,
                duplicate=True,
                conflict=first.quantity != quantity,
            )
        if len(self._orders) >= self.orders_max:
            return ReserveResult(ReserveStatus.CAPACITY, quantity, self.remaining)
        held = self._buyer_units.get(buyer_id, 0)
        if held + quantity > per_buyer_limit:
            status = ReserveStatus.LIMIT_REACHED
        elif quantity > self.remaining:
            status = ReserveStatus.SOLD_OUT
        else:
            status = ReserveStatus.ACCEPTED
            self.remaining -= quantity
            self._buyer_units[buyer_id] = held + quantity
        record = RecordStatus.ACCEPTED if status is ReserveStatus.ACCEPTED else None
        self._orders[(buyer_id, order_id)] = _Answer(status, quantity, record)
        self._check()
        return ReserveResult(status, quantity, self.remaining)

    def release(self, buyer_id: str, order_id: str) -> ReleaseResult:
        first = self._orders.get((buyer_id, order_id))
        if first is None or first.record is not RecordStatus.ACCEPTED:
            return ReleaseResult(0, self.remaining)
        quantity = first.quantity
        self._orders[(buyer_id, order_id)] = _Answer(first.status, quantity, RecordStatus.RELEASED)
        self.remaining += quantity
        left = self._buyer_units[buyer_id] - quantity
        if left:
            self._buyer_units[buyer_id] = left
        else:
            del self._buyer_units[buyer_id]
        self._check()
        return ReleaseResult(quantity, self.remaining)

    def forget_orders(self) -> None:
        """Drop the per-order answers (counts stay): for a sale that takes no more orders
        and has nothing left to release."""
        self._orders.clear()

    def settle(self, buyer_id: str, order_id: str) -> bool:
        """Mark an accepted order paid, so no later release can return its units. True
        when the order is paid now (also when it already was); False when it was never
        accepted or its units were already released (the hold expired)."""
        first = self._orders.get((buyer_id, order_id))
        if first is None or first.record not in (RecordStatus.ACCEPTED, RecordStatus.PAID):
            return False
        self._orders[(buyer_id, order_id)] = _Answer(
            first.status, first.quantity, RecordStatus.PAID
        )
        return True

    def retake(self, buyer_id: str, order_id: str) -> bool:
        """Take a released order's units again and mark it paid, if they are still there
        (used when a store said "paid" after this mirror released the hold)."""
        first = self._orders.get((buyer_id, order_id))
        if first is None or first.record is not RecordStatus.RELEASED:
            return False
        quantity = first.quantity
        if quantity > self.remaining:
            return False
        self._orders[(buyer_id, order_id)] = _Answer(first.status, quantity, RecordStatus.PAID)
        self.remaining -= quantity
        self._buyer_units[buyer_id] = self._buyer_units.get(buyer_id, 0) + quantity
        self._check()
        return True

    def _check(self) -> None:
        assert 0 <= self.remaining <= self.units_offered, self.remaining

    def check_totals(self) -> None:
        """Slow full check, for tests: held units per buyer add up to the units taken."""
        assert sum(self._buyer_units.values()) == self.units_taken

    @classmethod
    def rebuild(
        cls,
        units_offered: int,
        records: Iterable[OrderRecord],
        orders_max: int = ORDERS_PER_SALE_MAX,
    ) -> SaleStock:
        """Stock from the ledger's accepted and released orders (limits are not re-checked:
        the ledger says what was accepted). Refuses a history that would oversell."""
        stock = cls(units_offered, orders_max)
        for record in records:
            key = (record.buyer_id, record.order_id)
            assert key not in stock._orders, f"order {key} appears twice"
            assert record.quantity > 0, record
            if record.status in (RecordStatus.ACCEPTED, RecordStatus.PAID):
                if record.quantity > stock.remaining:
                    raise ValueError(f"history oversells sale at order {record.order_id}")
                stock.remaining -= record.quantity
                stock._buyer_units[record.buyer_id] = (
                    stock._buyer_units.get(record.buyer_id, 0) + record.quantity
                )
            stock._orders[key] = _Answer(ReserveStatus.ACCEPTED, record.quantity, record.status)
        stock._check()
        return stock

    def buyer_units_items(self) -> list[tuple[str, int]]:
        return sorted(self._buyer_units.items())

    def order_items(self) -> list[tuple[str, str, ReserveStatus, int, RecordStatus | None]]:
        return [
            (buyer_id, order_id, answer.status, answer.quantity, answer.record)
            for (buyer_id, order_id), answer in self._orders.items()
        ]
