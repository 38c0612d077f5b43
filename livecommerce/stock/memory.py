"""The in-process stock store: the event loop owns it.

Atomic without locks because no method awaits between its check and its decrement: each
call runs to completion on the loop. The rules live in `commerce.reservations.SaleStock`.
"""

from __future__ import annotations

from collections.abc import Iterable

from livecommerce.commerce.reservations import (
    ORDERS_PER_SALE_MAX,
    OrderRecord,
    ReleaseResult,
    ReserveResult,
    ReserveStatus,
    SaleStock,
    check_ids,
)
from livecommerce.stock.base import SaleConflict


class MemoryStockStore:
    def __init__(self, orders_per_sale_max: int = ORDERS_PER_SALE_MAX) -> None:
        self.orders_per_sale_max = orders_per_sale_max
        self._sales: dict[str, SaleStock] = {}

    async def load_sale(self, sale_id: str, units_offered: int) -> int:
        stock = self._sales.get(sale_id)
        if stock is None:
            stock = SaleStock(units_offered, self.orders_per_sale_max)
            self._sales[sale_id] = stock
        elif stock.units_offered != units_offered:
            raise SaleConflict(
                f"sale {sale_id} has {stock.units_offered} units offered, not {units_offered}"
            )
        return stock.remaining

    async def reserve(
        self, sale_id: str, buyer_id: str, order_id: str, quantity: int, per_buyer_limit: int
    ) -> ReserveResult:
        check_ids(sale_id, buyer_id, order_id)
        stock = self._sales.get(sale_id)
        if stock is None:
            return ReserveResult(ReserveStatus.UNKNOWN_SALE, quantity, 0)
        return stock.reserve(buyer_id, order_id, quantity, per_buyer_limit)

    async def release(self, sale_id: str, buyer_id: str, order_id: str) -> ReleaseResult:
        check_ids(sale_id, buyer_id, order_id)
        stock = self._sales.get(sale_id)
        if stock is None:
            return ReleaseResult(0, 0)
        return stock.release(buyer_id, order_id)

    async def settle(self, sale_id: str, buyer_id: str, order_id: str) -> bool:
        check_ids(sale_id, buyer_id, order_id)
        stock = self._sales.get(sale_id)
        return stock is not None and stock.settle(buyer_id, order_id)

    async def remaining(self, sale_id: str) -> int | None:
        stock = self._sales.get(sale_id)
        return None if stock is None else stock.remaining

    async def rebuild(
        self, sale_id: str, units_offered: int, records: Iterable[OrderRecord]
    ) -> int:
        stock = SaleStock.rebuild(units_offered, records, self.orders_per_sale_max)
        self._sales[sale_id] = stock
        return stock.remaining

    async def close(self) -> None:
        return None
