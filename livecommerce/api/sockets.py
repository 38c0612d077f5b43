"""The room sockets' `order/v1`, `pay/v1` and `bid/v1`: the hub hands them to the
pipeline here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from livecommerce import protocol as m
from livecommerce.api.orders import card_of, order_command
from livecommerce.commerce.auctions import PlaceBid
from livecommerce.commerce.identity import SessionAuthority
from livecommerce.commerce.results import Rejected
from livecommerce.hub.hub import Connection
from livecommerce.pipeline.answers import UNAVAILABLE, refused_payment
from livecommerce.pipeline.auctions import bid_result
from livecommerce.pipeline.pipeline import OrderPipeline, ServiceUnavailable
from livecommerce.pipeline.stats import OrderStats

log = logging.getLogger("livecommerce.api")


class SocketOrders:
    """The hub's `order_handler`: orders go to the service's queue (answered on the same
    socket, receipt later); payments run as a short task each (they are rate-limited by
    the socket's frame budget)."""

    def __init__(
        self, service: OrderPipeline, sessions: SessionAuthority, stats: OrderStats
    ) -> None:
        self.service = service
        self.sessions = sessions
        self.stats = stats
        self._payments: set[asyncio.Task[None]] = set()

    def __call__(self, connection: Connection, message: m.OrderMessage) -> None:
        if isinstance(message, m.PlaceOrder):
            buyer_id = message.buyer_id
            started_s = time.perf_counter()

            def reply(result: m.OrderResult) -> None:
                self.stats.record(buyer_id, result, time.perf_counter() - started_s)
                connection.send(result)

            # The receipt can wait for the socket's next write (hub: `send_soon`).
            self.service.submit_order(order_command(message), reply, connection.send_soon)
            return
        if isinstance(message, m.Bid):
            task = asyncio.get_running_loop().create_task(self._bid(connection, message))
        else:
            task = asyncio.get_running_loop().create_task(self._pay(connection, message))
        self._payments.add(task)
        task.add_done_callback(self._payments.discard)

    async def _bid(self, connection: Connection, message: m.Bid) -> None:
        connection.send(await place_bid(self.service, message))

    async def _pay(self, connection: Connection, message: m.Pay) -> None:
        checked = self.sessions.check_token(message.token, self.service.clock_ms())
        if isinstance(checked, Rejected):
            connection.send(refused_payment(message.order_id, checked.reason, checked.detail))
            return
        try:
            result = await self.service.pay(
                checked.identity_id, message.order_id, message.shipping, card_of(message.card)
            )
        except Exception:
            log.exception("payment failed")
            result = refused_payment(message.order_id, UNAVAILABLE, "the payment failed; retry")
        connection.send(result)


async def place_bid(service: OrderPipeline, message: m.Bid) -> m.BidResult:
    """A signed bid to the core that owns the auctions; its answer (socket and HTTP)."""
    bid = PlaceBid(
        message.auction_id, message.bidder_id, message.amount_cents, message.max_cents,
        message.time_ms, message.signature,
    )  # fmt: skip
    try:
        outcome = await service.run(bid)
    except ServiceUnavailable as problem:
        return m.BidResult(
            auction_id=message.auction_id,
            status="rejected",
            reason=problem.reason,
            detail=problem.detail,
        )
    view = None
    if outcome.rejection is None and not outcome.events:
        with contextlib.suppress(ServiceUnavailable):
            view = await service.auctions("auction", message.auction_id)
    return bid_result(message.auction_id, outcome, view)
