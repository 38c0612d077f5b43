"""Starlette endpoints for the hub: parse, call the hub, serialise. Nothing else."""

from __future__ import annotations

import contextlib
from typing import Annotated

import anyio
import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from livecommerce import protocol as m
from livecommerce.api.bodies import read_body, too_large
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


class CreateRoom(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # The limits of RoomInfo, here too so that the API description states them.
    title: Annotated[str, msgspec.Meta(min_length=1, max_length=120)]
    host_name: Annotated[str, msgspec.Meta(min_length=1, max_length=40)]


async def create_room(request: Request) -> Response:
    raw = await read_body(request, BODY_BYTES_MAX)
    if raw is None:
        return too_large(BODY_BYTES_MAX)
    try:
        body = msgspec.json.decode(raw, type=CreateRoom)
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        return _error(400, "invalid_request", str(error))
    try:
        room_id, host_token = await _hub(request).create_room(body.title, body.host_name)
    except ValueError as error:
        return _error(400, "invalid_request", str(error))
    return JSONResponse({"room_id": room_id, "host_token": host_token}, status_code=201)


async def room_snapshot(request: Request) -> Response:
    hub = _hub(request)
    replica = await hub.replica(request.path_params["room_id"])
    if replica is None:
        return _error(404, "room_not_found", "no such room")
    return Response(m.encode(replica.room.snapshot(hub.clock_ms())), media_type="application/json")


async def host_command(request: Request) -> Response:
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return _error(401, "unauthorized", "send the room's host credential as a Bearer token")
    body = await read_body(request, BODY_BYTES_MAX)
    if body is None:
        return too_large(BODY_BYTES_MAX)
    try:
        command = m.decode_host_command(body)
    except m.ProtocolError as error:
        return _error(400, "invalid_request", error.message)
    try:
        refusal = await _hub(request).host_command(request.path_params["room_id"], token, command)
    except BrokerUnavailable as error:
        return _error(503, "unavailable", f"not done, retry: {error}")
    if refusal is None:
        return JSONResponse({"ok": True})
    status = {"room_not_found": 404, "bad_credential": 403}.get(refusal.code, 409)
    return _error(status, refusal.code, refusal.message)


def routes() -> list[BaseRoute]:
    return [
        WebSocketRoute("/ws/rooms/{room_id}", room_socket),
        Route("/api/rooms", create_room, methods=["POST"]),
        Route("/api/rooms/{room_id}", room_snapshot, methods=["GET"]),
        Route("/api/rooms/{room_id}/host", host_command, methods=["POST"]),
    ]
