"""What the endpoints and the socket hook need of an order service: the embedded one
(service.py) and the scaled-out web process's (scaled.py) both provide it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from livecommerce import protocol as m
from livecommerce.commerce.core import Command, CommerceCore
from livecommerce.commerce.identity import Challenge, SessionGranted
from livecommerce.commerce.orders import PlaceOrder
from livecommerce.commerce.results import Rejected
from livecommerce.commerce.sales import Sale
from livecommerce.pipeline.service import CommandOutcome


class Orders(Protocol):
    # The core this process reads from (embedded: the owner's; scaled out: a replica kept
    # current from the ledger writer's feed). Endpoints only read it.
    core: CommerceCore

    def clock_ms(self) -> int: ...

    # Why this process takes no orders now (its ledger failed, shutting down), or None.
    @property
    def failed(self) -> str | None: ...

    async def issue_challenge(self, now_ms: int) -> Challenge | Rejected: ...

    async def open_session(
        self, challenge: str, public_key: str, signature: str, now_ms: int
    ) -> SessionGranted | Rejected: ...

    async def run(self, command: Command) -> CommandOutcome: ...

    def submit_order(
        self,
        command: PlaceOrder,
        reply: Callable[[m.OrderResult], None],
        receipt: Callable[[m.OrderReceipt], None] | None = None,
    ) -> None: ...

    async def place_order(self, command: PlaceOrder) -> m.OrderResult: ...

    async def pay(
        self, buyer_id: str, order_id: str, shipping: dict[str, str] | None
    ) -> m.PayResult: ...

    async def receipt(self, buyer_id: str, order_id: str, timeout_s: float) -> bytes | None: ...

    async def merchant_orders(
        self, merchant_id: str, sale_id: str | None, limit: int
    ) -> list[dict[str, Any]]: ...

    # Units of a sale left for orders, as the process that takes stock counts them
    # (ServiceUnavailable when that cannot be read now).
    async def units_remaining(self, sale: Sale) -> int: ...
