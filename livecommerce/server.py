"""Runs the app under uvicorn with uvloop; room sockets are served by `RoomSocketProtocol`."""

from __future__ import annotations

import importlib.util

import uvicorn

from livecommerce.app import create_app
from livecommerce.hub.uvicorn_fanout import RoomSocketProtocol
from livecommerce.settings import Settings
from livecommerce.slow_headers import HeaderDeadlineProtocol


def uvicorn_config(settings: Settings, log_level: str = "info") -> uvicorn.Config:
    app = create_app(settings)
    protocol = RoomSocketProtocol.configured(
        app, settings.viewer_socket_send_buffer_bytes, settings.viewer_ping_interval_ms
    )
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=HeaderDeadlineProtocol.configured(settings.http_header_timeout_ms),
        ws=protocol,
        # Compression would make each socket's bytes different; the fan-out writes one frame.
        ws_per_message_deflate=False,
        ws_max_size=settings.frame_bytes_max,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        lifespan="on",
        log_level=log_level,
        access_log=False,
    )


def serve(settings: Settings) -> int:
    uvicorn.Server(uvicorn_config(settings)).run()
    return 0
