"""Rooms over HTTP: the merchant a room sells for, and the host's dashboard."""

from __future__ import annotations

from typing import Annotated

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from livecommerce import protocol as m
from livecommerce.api.bodies import read_body, too_large
from livecommerce.api.common import (
    BODY_BYTES_MAX,
    Short,
    body_of,
    endpoint,
    error,
    identity_of,
    rejected,
    require_host,
    run,
    service_of,
    stats_of,
)
from livecommerce.api.sales import sale_view_of
from livecommerce.commerce.rooms import LinkRoom
from livecommerce.hub.broker import BrokerUnavailable
from livecommerce.hub.hub import Hub


def hub_of(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


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
    except (msgspec.ValidationError, msgspec.DecodeError) as problem:
        return error(400, "invalid_request", str(problem))
    try:
        room_id, host_token = await hub_of(request).create_room(body.title, body.host_name)
    except ValueError as problem:
        return error(400, "invalid_request", str(problem))
    return JSONResponse({"room_id": room_id, "host_token": host_token}, status_code=201)


async def room_snapshot(request: Request) -> Response:
    hub = hub_of(request)
    replica = await hub.replica(request.path_params["room_id"])
    if replica is None:
        return error(404, "room_not_found", "no such room")
    return Response(m.encode(replica.room.snapshot(hub.clock_ms())), media_type="application/json")


async def host_command(request: Request) -> Response:
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return error(401, "unauthorized", "send the room's host credential as a Bearer token")
    body = await read_body(request, BODY_BYTES_MAX)
    if body is None:
        return too_large(BODY_BYTES_MAX)
    try:
        command = m.decode_host_command(body)
    except m.ProtocolError as problem:
        return error(400, "invalid_request", problem.message)
    try:
        refusal = await hub_of(request).host_command(request.path_params["room_id"], token, command)
    except BrokerUnavailable as problem:
        return error(503, "unavailable", f"not done, retry: {problem}")
    if refusal is None:
        return JSONResponse({"ok": True})
    status = {"room_not_found": 404, "bad_credential": 403}.get(refusal.code, 409)
    return error(status, refusal.code, refusal.message)


ROOM_STATS_SALES_MAX = 20


class LinkMerchantBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    merchant_token: Short


@endpoint
async def link_merchant(request: Request) -> Response:
    room_id = request.path_params["room_id"]
    await require_host(request, room_id)
    body = await body_of(request, LinkMerchantBody)
    merchant_id = await identity_of(request, body.merchant_token)
    outcome = await run(request, LinkRoom(room_id, merchant_id))
    refusal = rejected(outcome)
    if refusal is not None:
        return refusal
    return JSONResponse(
        {
            "room_id": room_id,
            "merchant_id": merchant_id,
            "ledger_index": outcome.index_of("RoomLinked"),
        },
        status_code=201,
    )


@endpoint
async def room_stats(request: Request) -> Response:
    """The host's dashboard: the room's sales (newest first) with their order counts."""
    room_id = request.path_params["room_id"]
    await require_host(request, room_id)
    service = service_of(request)
    sales = [sale for sale in service.core.sales.all() if sale.spec.room_id == room_id]
    sales.sort(key=lambda sale: sale.spec.starts_at_ms, reverse=True)
    views = []
    for sale in sales[:ROOM_STATS_SALES_MAX]:
        view = await sale_view_of(request, sale)
        view.update(stats_of(request).of_sale(sale.sale_id))
        views.append(view)
    return JSONResponse(
        {
            "room_id": room_id,
            "merchant_id": service.core.rooms.merchant_of(room_id),
            "time_ms": service.clock_ms(),
            "sales": views,
        }
    )


def routes() -> list[BaseRoute]:
    return [
        Route("/api/rooms", create_room, methods=["POST"]),
        Route("/api/rooms/{room_id}", room_snapshot, methods=["GET"]),
        Route("/api/rooms/{room_id}/host", host_command, methods=["POST"]),
        Route("/api/rooms/{room_id}/merchant", link_merchant, methods=["POST"]),
        Route("/api/rooms/{room_id}/stats", room_stats, methods=["GET"]),
    ]
