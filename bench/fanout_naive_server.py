"""The naive baseline for the fan-out benchmark: Starlette under stock uvicorn, one ASGI send per viewer.

Same routes and wire shapes the benchmark uses against the hub: viewers connect to
`/ws/rooms/{room_id}` and get a small welcome; `POST /api/rooms/{room_id}/host` with a
`host.pin/v1` body makes a `pin/v1` event (`{"seq":N,"type":"pin/v1","ts_ms":..,"product":..}`)
that is sent to every viewer with `for ws in clients: await ws.send_text(text)`.

Run: uvicorn bench.fanout_naive_server:app --loop uvloop --port P (the benchmark does this).
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

clients: set[WebSocket] = set()
sequence = 0


async def room_socket(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text('{"type":"welcome/v1"}')
    clients.add(websocket)
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
    except WebSocketDisconnect:
        pass
    finally:
        clients.discard(websocket)


async def create_room(request: Request) -> Response:
    return JSONResponse({"room_id": "naive", "host_token": "naive"}, status_code=201)


async def host_command(request: Request) -> Response:
    global sequence
    command: dict[str, Any] = msgspec.json.decode(await request.body())
    sequence += 1
    event = {"seq": sequence, "type": "pin/v1", "ts_ms": time.time_ns() // 1_000_000}
    event["product"] = command.get("product")
    text = msgspec.json.encode(event).decode()
    delivered = 0
    for websocket in list(clients):
        try:
            await websocket.send_text(text)
            delivered += 1
        except (WebSocketDisconnect, RuntimeError, OSError):
            clients.discard(websocket)
    return JSONResponse({"ok": True, "delivered": delivered})


app = Starlette(
    routes=[
        WebSocketRoute("/ws/rooms/{room_id}", room_socket),
        Route("/api/rooms", create_room, methods=["POST"]),
        Route("/api/rooms/{room_id}/host", host_command, methods=["POST"]),
    ]
)
