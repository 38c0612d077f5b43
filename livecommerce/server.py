"""Runs the app under uvicorn with the fan-out WebSocket protocol and uvloop."""

from __future__ import annotations

import importlib.util

import uvicorn

from livecommerce.app import create_app
from livecommerce.hub.uvicorn_fanout import FanoutWebSocketProtocol
from livecommerce.settings import Settings


def uvicorn_config(settings: Settings, log_level: str = "info") -> uvicorn.Config:
    protocol = type(
        "ConfiguredFanoutWebSocketProtocol",
        (FanoutWebSocketProtocol,),
        {"socket_send_buffer_bytes": settings.viewer_socket_send_buffer_bytes},
    )
    return uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
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
