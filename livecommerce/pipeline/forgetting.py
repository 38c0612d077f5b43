"""Forgetting closed sales: the order tables stay bounded over days of sales.

Every answered order is remembered (to repeat its answer, to take its payment), up to the
core's `orders_max`. A sale that closed `forget_after_ms` ago and has no unpaid hold left
is dropped from memory (`OrderBook.forget_sale`); the ledger still holds its orders, and
a retry of a forgotten order is refused (`sale_not_open` or `stale`), never accepted
again. A sale that still has holds is tried again a minute later.
"""

from __future__ import annotations

import heapq
from typing import Final

from livecommerce.commerce.core import CommerceCore

RETRY_MS: Final = 60_000
FORGET_PER_CALL_MAX: Final = 100

OrderKey = tuple[str, str]


class ClosedSales:
    def __init__(self, forget_after_ms: int) -> None:
        assert forget_after_ms > 0
        self.forget_after_ms = forget_after_ms
        self._due: list[tuple[int, str]] = []  # (forget at ms, sale id), a min-heap
        self._known: set[str] = set()

    def closed(self, sale_id: str, closed_at_ms: int) -> None:
        if sale_id not in self._known:
            self._known.add(sale_id)
            heapq.heappush(self._due, (closed_at_ms + self.forget_after_ms, sale_id))

    def forget_due(self, core: CommerceCore, now_ms: int) -> list[OrderKey]:
        """Forget the sales that are due; the (buyer_id, order_id) of their accepted
        orders, so the caller can drop what it keeps per order."""
        forgotten: list[OrderKey] = []
        for _ in range(FORGET_PER_CALL_MAX):
            if not self._due or self._due[0][0] > now_ms:
                break
            _, sale_id = heapq.heappop(self._due)
            keys = [
                (accepted.buyer_id, accepted.order_id)
                for accepted, _ in core.orders.accepted_of_sale(sale_id, core.orders.orders_max)
            ]
            if isinstance(core.orders.forget_sale(sale_id), int):
                self._known.discard(sale_id)
                forgotten.extend(keys)
            else:
                heapq.heappush(self._due, (now_ms + RETRY_MS, sale_id))
        return forgotten
