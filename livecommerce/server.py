"""Runs the app under uvicorn with the fan-out WebSocket protocol and uvloop."""

from __future__ import annotations

import uvicorn

from livecommerce.app import create_app
from livecommerce.settings import Settings


def serve(settings: Settings) -> int:
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        ws_per_message_deflate=False,
        ws_max_size=settings.frame_bytes_max,
        lifespan="on",
        log_level="info",
    )
    uvicorn.Server(config).run()
    return 0
