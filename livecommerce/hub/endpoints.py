"""The room socket over Starlette's WebSocket (the portable path; under uvicorn with
`livecommerce.server`'s protocol, room sockets are served by uvicorn_fanout)."""

from __future__ import annotations

import contextlib

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket

from livecommerce import protocol as m
from livecommerce.hub.broker import BrokerUnavailable
from livecommerce.hub.fanout import Outgoing, QueueSink
from livecommerce.hub.hub import CLOSE_UNSUPPORTED_DATA, Hub, JoinRefused

BODY_BYTES_MAX = 16 * 1024


def _hub(scope_holder: Request | WebSocket) -> Hub:
    hub: Hub = scope_holder.app.state.hub
    return hub


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


async def room_socket(websocket: WebSocket) -> None:
    """The portable path for any ASGI server (under uvicorn with `livecommerce.server`'s
    protocol, room sockets never get here: see uvicorn_fanout)."""
    hub = _hub(websocket)
    room_id = websocket.path_params["room_id"]
    since = parse_since(websocket.query_params.get("since", ""))
    await websocket.accept()
    sink = QueueSink(websocket)
    address = websocket.client.host if websocket.client else "unknown"
    try:
        connection = await hub.join(
            room_id, sink, address, websocket.query_params.get("viewer", ""), since
        )
    except JoinRefused as refused:
        sink.write(Outgoing(m.encode(m.Error(code=refused.code, message=refused.message))))
        sink.close(refused.close_code, refused.message)
        await sink.drain()
        return
    except BrokerUnavailable as error:
        sink.write(Outgoing(m.encode(m.Error(code="unavailable", message=str(error)))))
        sink.close(1013, "try again later")
        await sink.drain()
        return
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_drain_then_stop, sink, tasks.cancel_scope)
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                if text is None:
                    sink.close(
                        CLOSE_UNSUPPORTED_DATA, "binary frames are not accepted; send JSON text"
                    )
                    continue
                published = hub.receive(connection, text)
                if published is not None:
                    await published
            tasks.cancel_scope.cancel()
    finally:
        hub.leave(connection)


def parse_since(text: str) -> int | None:
    """The `since` query parameter: a sequence number, or None for "send a snapshot"."""
    return int(text) if text.isdigit() and len(text) <= 18 else None


async def _drain_then_stop(sink: QueueSink, scope: anyio.CancelScope) -> None:
    with contextlib.suppress(Exception):
        await sink.drain()
    scope.cancel()


def routes() -> list[BaseRoute]:
    return [
        WebSocketRoute("/ws/rooms/{room_id}", room_socket),
    ]
