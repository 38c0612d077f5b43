"""The stock-store contract, shared by the in-process and the Redis Lua store.

- `load_sale(sale_id, units_offered)`: create the sale's stock; idempotent. Loading an
  existing sale with another `units_offered` raises `SaleConflict`. Returns remaining.
- `reserve(sale_id, buyer_id, order_id, quantity, per_buyer_limit)`: atomically, in this
  order: the (buyer_id, order_id) pair seen before -> its first answer with
  `duplicate=True` (and `conflict=True` if the quantity differs); the buyer's held units
  plus `quantity` over `per_buyer_limit` -> `limit_reached`; fewer than `quantity` units
  left -> `sold_out`; else `accepted` and the units are taken. All or nothing. Every
  answer is remembered. An unknown sale -> `unknown_sale` (remembered nowhere).
- `release(sale_id, buyer_id, order_id)`: an accepted order's units go back, exactly
  once; releasing again, or releasing a refused or unknown order, returns 0 units.
- `settle(sale_id, buyer_id, order_id) -> bool`: the order is paid; from then on no
  release returns its units. False when it was never accepted or was already released
  (its hold expired first): the payment must be refused. Idempotent.
- `remaining(sale_id)`: units left, or None for an unknown sale.
- `rebuild(sale_id, units_offered, records)`: replace the sale's state with what the
  ledger says (accepted and released orders): after Redis lost its data, say.

Units taken = units_offered - remaining = sum of held units over buyers, always.
A store that cannot reach its backend raises `StockStoreUnavailable`; it never guesses.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from livecommerce.commerce.reservations import (
    OrderRecord,
    RecordStatus,
    ReleaseResult,
    ReserveResult,
    ReserveStatus,
)

__all__ = [
    "OrderRecord",
    "RecordStatus",
    "ReleaseResult",
    "ReserveResult",
    "ReserveStatus",
    "SaleConflict",
    "StockStore",
    "StockStoreError",
    "StockStoreUnavailable",
]


class StockStoreError(Exception):
    """Base of the stock stores' errors."""


class StockStoreUnavailable(StockStoreError):
    """The backend (Redis) cannot be reached or answered with an error; nothing is known
    about whether the last call took effect, so retry with the same order id."""


class SaleConflict(StockStoreError):
    """`load_sale` for an existing sale with a different `units_offered`."""


class StockStore(Protocol):
    async def load_sale(self, sale_id: str, units_offered: int) -> int: ...

    async def reserve(
        self, sale_id: str, buyer_id: str, order_id: str, quantity: int, per_buyer_limit: int
    ) -> ReserveResult: ...

    async def release(self, sale_id: str, buyer_id: str, order_id: str) -> ReleaseResult: ...

    async def settle(self, sale_id: str, buyer_id: str, order_id: str) -> bool: ...

    async def remaining(self, sale_id: str) -> int | None: ...

    async def rebuild(
        self, sale_id: str, units_offered: int, records: Iterable[OrderRecord]
    ) -> int: ...

    async def close(self) -> None: ...
