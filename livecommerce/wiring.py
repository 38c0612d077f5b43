"""Opening the order path for the app: the ledger, the core rebuilt from it, the pipeline,
and the hooks that join it to the hub and the room sockets (app.py calls it)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette

from ledger import Ledger, decode_entry, encode_entry
from ledger.http import create_app as create_ledger_app
from livecommerce.api.sockets import SocketOrders
from livecommerce.clock import wall_clock_ms
from livecommerce.commerce.core import CommerceCore
from livecommerce.commerce.escrow import RunPayouts, SetRules
from livecommerce.commerce.identity import SessionAuthority
from livecommerce.commerce.polls import RecordPoll
from livecommerce.gc_pauses import young_generation_threshold
from livecommerce.hub.hub import Hub
from livecommerce.keyfiles import load_or_create_secret
from livecommerce.payments.sandbox import TestPaymentProvider
from livecommerce.payments.webhooks import WebhookRefused
from livecommerce.pipeline.answers import sale_view
from livecommerce.pipeline.forgetting import ClosedSales
from livecommerce.pipeline.local import CoreStock, LocalChallenges, LocalLedger
from livecommerce.pipeline.pipeline import OrderLimits, OrderPipeline, ServiceUnavailable
from livecommerce.pipeline.shipping import ShippingStore
from livecommerce.pipeline.stats import OrderStats
from livecommerce.pipeline.verifying import SignatureVerifier
from livecommerce.pipeline.views import operating_metrics
from livecommerce.settings import Settings, escrow_rules, ledger_dir, ledger_settings

log = logging.getLogger("livecommerce.orders")


def announce_sales(service: OrderPipeline, hub: Hub) -> Callable[[str], None]:
    """For `hub.room_created_listeners`, embedded: a room made again after a restart (the
    demo's: rooms live in memory) hears of its sales that are not over, their state and
    their stock. Otherwise its viewers would see no sale until the next change, which
    for a sold-out sale never comes."""
    tasks: set[asyncio.Task[None]] = set()

    async def announce(room_id: str) -> None:
        if not await hub.room_open(room_id):
            return
        for sale in service.core.sales.live():
            if sale.spec.room_id != room_id:
                continue
            view = sale_view(sale, service.core.catalog)
            view["change"] = "scheduled" if view["state"] == "scheduled" else "opened"
            await hub.publish_sale(room_id, view)
            await hub.set_stock(room_id, sale.spec.product_id, sale.units_remaining)

    def created(room_id: str) -> None:
        task = asyncio.get_running_loop().create_task(announce(room_id))
        tasks.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            tasks.discard(finished)
            if not finished.cancelled() and finished.exception() is not None:
                log.error(
                    "announcing the sales of %s failed", room_id, exc_info=finished.exception()
                )

        task.add_done_callback(done)

    return created


def order_limits(settings: Settings) -> OrderLimits:
    return OrderLimits(
        order_queue_max=settings.order_queue_max,
        order_batch_max=settings.order_batch_max,
        ledger_batches_in_flight_max=settings.ledger_batches_in_flight_max,
        receipts_pending_max=settings.receipts_pending_max,
        tick_interval_ms=settings.commerce_tick_interval_ms,
        closed_sale_forget_ms=settings.closed_sale_forget_ms,
    )


@contextlib.asynccontextmanager
async def orders_lifespan(app: Starlette, settings: Settings, hub: Hub) -> AsyncIterator[None]:
    """Embedded: this process owns the ledger and the core. Scaled out (Redis): the web
    process has no ledger; see livecommerce/pipeline/scaled.py. Either way the garbage
    collector's young threshold is raised while orders are taken (gc_pauses.py)."""
    with young_generation_threshold(settings.gc_young_threshold_objects):
        async with _orders_lifespan(app, settings, hub):
            yield


@contextlib.asynccontextmanager
async def _orders_lifespan(app: Starlette, settings: Settings, hub: Hub) -> AsyncIterator[None]:
    if not settings.embedded:
        async with scaled_lifespan(app, settings, hub):
            yield
        return
    ledger = await Ledger.open(ledger_dir(settings.data_dir), ledger_settings(settings))
    try:
        core = CommerceCore(order_freshness_ms=settings.order_freshness_ms)
        shipping = await ShippingStore.open(settings.data_dir)
        sessions = SessionAuthority(
            core.identities, load_or_create_secret(settings.data_dir / "session_secret")
        )
        verifier = (
            SignatureVerifier(
                child_batch_min=settings.order_signatures_child_batch_min,
                orders_in_flight_max=settings.order_signatures_in_flight_max,
                request_orders_max=settings.order_signatures_request_max,
            )
            if settings.order_signatures_in_child
            else None
        )
        limits = order_limits(settings)
        closed = ClosedSales(limits.closed_sale_forget_ms)
        webhook_secret = load_or_create_secret(settings.data_dir / "webhook_secret")
        provider = TestPaymentProvider(
            webhook_secret, wall_clock_ms, settings.payment_late_answer_ms
        )
        local_ledger = LocalLedger(
            core, ledger, hub, shipping, closed, encode_entry, decode_entry, limits
        )
        app.state.ledger_metrics = local_ledger.ledger_metrics  # /metrics reads them
        service = OrderPipeline(
            core,
            CoreStock(core, closed),
            local_ledger,
            LocalChallenges(sessions),
            sessions,
            wall_clock_ms,
            limits,
            verifier,
            provider,
            webhook_secret,
        )
        provider.deliver = webhook_delivery(service)
        await service.start()
        # The rules after the sale from the settings, on the ledger if they changed.
        await service.run(SetRules(escrow_rules(settings)))
        payouts = (
            asyncio.create_task(payouts_forever(service, settings.payout_interval_ms))
            if settings.payout_interval_ms
            else None
        )
        app.state.order_stats = count_traffic(app, hub, service)
        hub.order_handler = SocketOrders(service, sessions, app.state.order_stats)
        hub.room_created_listeners.append(announce_sales(service, hub))
        hub.poll_closed_listeners.append(record_polls(service))
        app.state.orders = service
        app.state.sessions = sessions
        app.state.ledger = ledger
        app.state.ledger_app = create_ledger_app(ledger)
        try:
            yield
        finally:
            hub.activity = None
            hub.order_handler = None
            hub.poll_closed_listeners.clear()
            if payouts is not None:
                payouts.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await payouts
            await provider.close()
            await service.close()
    finally:
        await ledger.close()


POLL_RECORD_TRIES = 3
POLL_RETRY_S = 1.0


def record_polls(service: OrderPipeline) -> Callable[[str, dict[str, Any]], None]:
    """For `hub.poll_closed_listeners`: a closed poll's tally to the ledger (`poll/v1`),
    through the pipeline like any command; the hub's fan-out never waits for it. Tried
    again a few times while the pipeline is busy or away; a refusal is logged."""
    tasks: set[asyncio.Task[None]] = set()

    async def record(room_id: str, poll: dict[str, Any]) -> None:
        command = RecordPoll(
            room_id, str(poll["poll_id"]), str(poll["question"]), list(poll["options"]),
            list(poll["counts"]), int(poll["opened_at_ms"]), int(poll["closed_at_ms"]),
            str(poll.get("kind", "poll")),
        )  # fmt: skip
        for attempt in range(POLL_RECORD_TRIES):
            try:
                outcome = await service.run(command)
            except ServiceUnavailable as problem:
                log.warning("poll %s not recorded yet: %s", command.poll_id, problem.detail)
                await asyncio.sleep(POLL_RETRY_S * (attempt + 1))
                continue
            if outcome.rejection is not None:
                log.warning("poll %s not recorded: %s", command.poll_id, outcome.rejection)
            return

    def closed(room_id: str, poll: dict[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(record(room_id, poll))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    return closed


def count_traffic(app: Starlette, hub: Hub, service: OrderPipeline) -> OrderStats:
    """This process's traffic counters (operating.py): what its viewers do, and every
    first answer to an order; the order stats that tell them of the answers."""
    activity = operating_metrics(service.core)
    app.state.activity = activity
    hub.activity = activity
    return OrderStats(on_attempt=lambda sale_id: activity.attempted(sale_id, service.clock_ms()))


def webhook_delivery(service: OrderPipeline) -> Callable[[bytes, str], Awaitable[None]]:
    """Where the test provider's late answers go: the same handler as
    `POST /api/payments/webhook` (a refused one is logged, as the endpoint answers 400)."""

    async def deliver(body: bytes, signature: str) -> None:
        try:
            await service.webhook(body, signature)
        except WebhookRefused as refused:
            log.warning("a webhook was refused: %s", refused)

    return deliver


async def payouts_forever(service: OrderPipeline, interval_ms: int) -> None:
    """A payout batch of every merchant's available balance every `interval_ms`, its id
    the interval's number (so a restart within an interval starts no second batch)."""
    while True:
        now_ms = wall_clock_ms()
        await asyncio.sleep((interval_ms - now_ms % interval_ms) / 1000)
        try:
            await service.run(RunPayouts(f"auto-{wall_clock_ms() // interval_ms}"))
        except ServiceUnavailable as problem:
            log.warning("payout batch not started: %s", problem.detail)


@contextlib.asynccontextmanager
async def scaled_lifespan(app: Starlette, settings: Settings, hub: Hub) -> AsyncIterator[None]:
    from livecommerce.pipeline.scaled import scaled_pipeline, shared_secret
    from livecommerce.redis_keys import WEBHOOK_SECRET
    from livecommerce.stock.redis_lua import RedisStockStore

    secrets_store = RedisStockStore.from_url(settings.redis_url, connections_max=1)
    try:
        secret = await shared_secret(secrets_store.client)
        webhook_secret = await shared_secret(secrets_store.client, WEBHOOK_SECRET)
    finally:
        await secrets_store.close()
    service = scaled_pipeline(
        settings.redis_url,
        wall_clock_ms,
        order_limits(settings),
        order_freshness_ms=settings.order_freshness_ms,
        confirm_timeout_ms=settings.order_confirm_timeout_ms,
        session_secret=secret,
        webhook_secret=webhook_secret,
        late_answer_ms=settings.payment_late_answer_ms,
    )
    assert isinstance(service.provider, TestPaymentProvider)
    service.provider.deliver = webhook_delivery(service)
    await service.start()
    try:
        sessions = service.sessions
        app.state.order_stats = count_traffic(app, hub, service)
        hub.order_handler = SocketOrders(service, sessions, app.state.order_stats)
        hub.poll_closed_listeners.append(record_polls(service))
        app.state.orders = service
        app.state.sessions = sessions
        yield
    finally:
        hub.activity = None
        hub.order_handler = None
        hub.poll_closed_listeners.clear()
        await service.close()
