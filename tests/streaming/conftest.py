"""A WHIP/WHEP service under uvicorn on a free loopback port, one per test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import uvicorn
import uvloop
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from streaming import StreamingService, StreamingSettings
from tests.support import ROOT, free_port


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The relay's own tests run on the stock loop and on uvloop, which the server runs on.

    The two differ in small ways the relay has met: uvloop answers `call_at` with a due time
    under half a millisecond away with a plain `Handle` (no `when()`).
    """
    if item.path.name == "test_relay.py":
        return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


HOST_TOKEN = "host-secret"
ROOMS = frozenset({"room-1", "room-2"})
STATIC = ROOT / "static"


@dataclass
class RunningServer:
    service: StreamingService
    base_url: str
    settings: StreamingSettings
    server: uvicorn.Server
    task: asyncio.Task[None] | None = None
    authorizations: list[tuple[str, str]] = field(default_factory=list)

    def whip(self, room_id: str = "room-1") -> str:
        return f"{self.base_url}/whip/{room_id}"

    def whep(self, room_id: str = "room-1") -> str:
        return f"{self.base_url}/whep/{room_id}"


async def start_server(settings: StreamingSettings) -> RunningServer:
    running: RunningServer

    async def authorize_host(room_id: str, token: str) -> bool:
        running.authorizations.append((room_id, token))
        return token == HOST_TOKEN

    async def room_exists(room_id: str) -> bool:
        return room_id in ROOMS

    service = StreamingService(settings, authorize_host, room_exists)
    app = Starlette(routes=[*service.routes, Mount("/static", StaticFiles(directory=Path(STATIC)))])
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    running = RunningServer(service, f"http://127.0.0.1:{port}", settings, server)
    running.task = asyncio.get_running_loop().create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    assert server.started, "uvicorn did not start"
    return running


async def stop_server(running: RunningServer) -> None:
    await running.service.close()
    running.server.should_exit = True
    assert running.task is not None
    await asyncio.wait_for(running.task, timeout=10)


TEST_SETTINGS = StreamingSettings(
    peers_per_room_max=5,
    peers_total_max=8,
    ice_loopback=True,
    peer_connect_timeout_ms=10_000,
    host_reconnect_grace_ms=3_000,
    keyframe_request_interval_ms=300,
)


@pytest.fixture
async def streaming_server() -> AsyncIterator[RunningServer]:
    running = await start_server(TEST_SETTINGS)
    try:
        yield running
    finally:
        await stop_server(running)
