"""The one app factory: `create_app(settings)` wires the adapters around the core."""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from livecommerce import __version__
from livecommerce.hub import endpoints as hub_endpoints
from livecommerce.hub.broker import Broker, InProcessBroker
from livecommerce.hub.hub import Hub, HubLimits
from livecommerce.hub.room import RoomLimits
from livecommerce.metrics import metrics
from livecommerce.settings import Settings


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


async def healthz(request: Request) -> Response:
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
        viewer_heartbeat_ms=settings.viewer_count_heartbeat_ms,
    )


def load_or_create_secret(path: Path) -> bytes:
    """A 32-byte secret kept in the data directory, created on first start with mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(secrets.token_bytes(32))
    secret = path.read_bytes()
    if len(secret) != 32:
        raise RuntimeError(f"{path} must hold exactly 32 bytes; remove it to make a new one")
    return secret


async def make_broker(settings: Settings) -> tuple[Broker, bytes]:
    if settings.embedded:
        return InProcessBroker(), load_or_create_secret(settings.data_dir / "viewer_secret")
    from livecommerce.hub.redis_broker import RedisBroker

    broker = RedisBroker(settings.redis_url, history_events_max=settings.history_events_max)
    return broker, await broker.shared_secret()


def create_app(settings: Settings) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        broker, secret = await make_broker(settings)
        hub = Hub(broker, hub_limits(settings), secret, wall_clock_ms)
        await hub.start()
        app.state.hub = hub
        try:
            if settings.demo:
                from livecommerce.demo import create_demo

                await create_demo(app, settings)
            yield
        finally:
            await hub.close()

    routes = [
        Route("/healthz", healthz),
        Route("/metrics", metrics),
        *hub_endpoints.routes(),
        Mount("/", app=StaticFiles(directory=settings.static_dir, html=True), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.settings = settings
    return app
