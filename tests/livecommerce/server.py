"""Running the real app under uvicorn with the fan-out protocol, on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette

from livecommerce.server import uvicorn_config
from livecommerce.settings import Settings
from tests.support import free_port


class RunningServer:
    def __init__(self, server: uvicorn.Server, settings: Settings) -> None:
        self.server = server
        self.settings = settings
        self.port = settings.port
        self.http = f"http://127.0.0.1:{settings.port}"
        self.ws = f"ws://127.0.0.1:{settings.port}"

    @property
    def app(self) -> Starlette:
        app = self.server.config.app
        assert isinstance(app, Starlette)
        return app

    @property
    def hub(self) -> Any:
        return self.app.state.hub


@contextlib.asynccontextmanager
async def running_server(
    data_dir: Path, stock_protocol: bool = False, **overrides: Any
) -> AsyncIterator[RunningServer]:
    """The app under uvicorn; `stock_protocol` uses uvicorn's own WebSocket protocol, as any
    ASGI deployment without the fan-out extension would."""
    settings = Settings.load({}, port=free_port(), data_dir=data_dir, **overrides)
    config = uvicorn_config(settings, log_level="warning")
    if stock_protocol:
        config.ws = "websockets-sansio"
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        assert server.started, "the server did not start"
        yield RunningServer(server, settings)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=15)
