"""The one app factory: `create_app(settings)` wires the adapters around the core."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from livecommerce import __version__, api
from livecommerce.api.openapi import openapi_json
from livecommerce.clock import wall_clock_ms
from livecommerce.gc_pauses import freeze_survivors_forever
from livecommerce.hub import endpoints as hub_endpoints
from livecommerce.hub.broker import Broker, InProcessBroker
from livecommerce.hub.hub import Hub, HubLimits
from livecommerce.hub.room import RoomLimits
from livecommerce.keyfiles import load_or_create_secret
from livecommerce.metrics import metrics
from livecommerce.settings import Settings
from livecommerce.wiring import orders_lifespan
from streaming import IceServer, StreamingService, StreamingSettings


async def healthz(request: Request) -> Response:
    """200 while this process takes orders; 503 with the reason once it cannot (its ledger
    failed to write, or it is shutting down), so a load balancer's health check sends
    buyers elsewhere. Rooms, video and reads still answer meanwhile (docs/operations.md)."""
    orders = getattr(request.app.state, "orders", None)
    stopped = orders.failed if orders is not None else None
    if stopped is not None:
        return JSONResponse(
            {"status": "unavailable", "reason": stopped, "version": __version__},
            status_code=503,
        )
    return JSONResponse({"status": "ok", "version": __version__})


def hub_limits(settings: Settings) -> HubLimits:
    return HubLimits(
        room=RoomLimits(
            comment_chars_max=settings.comment_chars_max,
            snapshot_comments_max=settings.snapshot_comments_max,
            history_events_max=settings.history_events_max,
        ),
        buffer_bytes_max=settings.viewer_buffer_bytes_max,
        buffer_bytes_soft=settings.viewer_buffer_bytes_soft,
        comments_per_10s_max=settings.comments_per_10s_max,
        frames_per_s_max=20,
        frames_burst_max=60,
        shares_per_min_max=5,
        host_auth_failures_max=5,
        connections_per_address_max=settings.connections_per_address_max,
        connections_max=settings.connections_per_process_max,
        rooms_max=settings.rooms_max,
        state_flush_interval_ms=settings.state_flush_interval_ms,
        state_deliveries_per_s_max=settings.state_deliveries_per_s_max,
        viewer_heartbeat_ms=settings.viewer_count_heartbeat_ms,
    )


async def make_broker(settings: Settings) -> tuple[Broker, bytes]:
    if settings.embedded:
        return InProcessBroker(), load_or_create_secret(settings.data_dir / "viewer_secret")
    from livecommerce.hub.redis_broker import RedisBroker

    broker = RedisBroker(settings.redis_url, history_events_max=settings.history_events_max)
    return broker, await broker.shared_secret()


def streaming_settings(settings: Settings) -> StreamingSettings:
    urls = tuple(url.strip() for url in settings.video_ice_urls.split(",") if url.strip())
    servers = (
        (
            IceServer(
                urls=urls,
                username=settings.video_turn_username or None,
                credential=settings.video_turn_credential or None,
            ),
        )
        if urls
        else ()
    )
    return StreamingSettings(
        peers_per_room_max=settings.video_peers_per_room_max,
        peers_total_max=settings.video_peers_total_max,
        ice_servers=servers,
        ice_loopback=settings.video_ice_loopback,
    )


def create_app(settings: Settings) -> Starlette:
    # The hub is made in the lifespan (it needs the running loop and the broker); the
    # streaming service's routes exist from the start, so it reaches the hub through app.
    def hub_of_app() -> Hub:
        hub: Hub = app.state.hub
        return hub

    async def authorize_host(room_id: str, token: str) -> bool:
        return await hub_of_app().host_token_matches(room_id, token)

    async def room_exists(room_id: str) -> bool:
        return await hub_of_app().room_open(room_id)

    video = StreamingService(streaming_settings(settings), authorize_host, room_exists)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        broker, secret = await make_broker(settings)
        hub = Hub(broker, hub_limits(settings), secret, wall_clock_ms)
        await hub.start()
        hub.room_ended_listeners.append(
            lambda room_id: _spawn(video.end_room(room_id), f"end video of {room_id}")
        )
        app.state.hub = hub
        try:
            async with orders_lifespan(app, settings, hub):
                if settings.demo:
                    from livecommerce.demo import create_demo

                    await create_demo(app, settings)
                gc_task = (
                    asyncio.create_task(
                        freeze_survivors_forever(settings.gc_freeze_interval_ms), name="gc-freeze"
                    )
                    if settings.gc_freeze_interval_ms
                    else None
                )
                try:
                    yield
                finally:
                    if gc_task is not None:
                        gc_task.cancel()
        finally:
            await video.close()
            await hub.close()

    async def ledger_app(scope: Scope, receive: Receive, send: Send) -> None:
        # The ledger opens in the lifespan; its routes exist from the start.
        inner = getattr(app.state, "ledger_app", None)
        if inner is None:
            response = PlainTextResponse("no ledger in this process\n", status_code=404)
            await response(scope, receive, send)
            return
        await inner(scope, receive, send)

    routes = [
        Route("/healthz", healthz),
        Route("/metrics", metrics),
        Route("/openapi.json", openapi_json),
        *hub_endpoints.routes(),
        *api.routes(),
        Mount("/ledger", app=ledger_app),
        *video.routes,
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    # The pages are what no route matches, not a route: a mount at "/" matched every path
    # first, so a route called with a method it does not take (OPTIONS /api/rooms, GET
    # /api/orders) got the static files' 404 or their "Allow: GET, HEAD", not its own 405.
    app.router.default = StaticFiles(directory=settings.static_dir, html=True)
    app.state.settings = settings
    app.state.video = video
    return app


_background: set[asyncio.Task[None]] = set()


def _spawn(coroutine: Coroutine[Any, Any, None], name: str) -> None:
    """Run a coroutine in the background, keeping a reference so it is not collected."""
    task = asyncio.get_running_loop().create_task(coroutine, name=name)
    _background.add(task)
    task.add_done_callback(_background.discard)
