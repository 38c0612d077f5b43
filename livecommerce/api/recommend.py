"""Recommendations over HTTP: what a room's viewers see next, and the views and clicks
that feed it (livecommerce/commerce/recommend.py).

Both take the viewer's session token (Bearer) when there is one: with it the lists are
that buyer's and a view counts toward what they are shown; without it, popularity only.
Views and clicks are kept in memory, not on the ledger; a process counts at most
`SEEN_PER_SECOND` a second (beyond that they are dropped, answered 429)."""

from __future__ import annotations

from typing import Annotated, Final

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from livecommerce.api.common import (
    BadRequest,
    bearer_if_any,
    body_of,
    endpoint,
    error,
    identity_of,
    refused,
    room_replica,
    service_of,
)
from livecommerce.commerce.recommend import LIST_LENGTH_MAX, Signal
from livecommerce.hub.ratelimit import TokenBucket
from livecommerce.pipeline.pipeline import ServiceUnavailable

SEEN_PER_SECOND: Final = 1_000
ProductId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class SeenBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    product_id: ProductId
    signal: Annotated[str, msgspec.Meta(pattern=r"^(view|click)$")]


async def _viewer(request: Request) -> str:
    """The buyer a session token names, "" without one (a bad token is a 401)."""
    token = bearer_if_any(request)
    return "" if token is None else await identity_of(request, token)


def _count(request: Request) -> int:
    raw = request.query_params.get("count", "10")
    if not raw.isdigit() or not 1 <= int(raw) <= LIST_LENGTH_MAX:
        raise BadRequest(error(400, "bad_field", f"count is 1..{LIST_LENGTH_MAX}"))
    return int(raw)


@endpoint
async def recommendations(request: Request) -> Response:
    room_id = request.path_params["room_id"]
    count = _count(request)
    beside = request.query_params.get("beside", "")
    if len(beside) > 64:
        return error(400, "bad_field", "beside is a product id")
    await room_replica(request, room_id)
    buyer_id = await _viewer(request)
    try:
        view = await service_of(request).recommendations(room_id, buyer_id, beside, count)
    except ServiceUnavailable as problem:
        return refused(problem.reason, problem.detail)
    return JSONResponse(view)


@endpoint
async def seen(request: Request) -> Response:
    room_id = request.path_params["room_id"]
    body = await body_of(request, SeenBody)
    await room_replica(request, room_id)
    buyer_id = await _viewer(request)
    service = service_of(request)
    if service.core.catalog.get(body.product_id) is None:
        return error(404, "unknown_product", "no such product")
    bucket: TokenBucket | None = getattr(request.app.state, "seen_bucket", None)
    if bucket is None:
        bucket = TokenBucket(SEEN_PER_SECOND, 1000 // SEEN_PER_SECOND, service.clock_ms())
        request.app.state.seen_bucket = bucket
    if not bucket.take(service.clock_ms()):
        return error(429, "rate_limited", "too many views counted this second; dropped")
    try:
        await service.seen(Signal(body.signal), room_id, body.product_id, buyer_id)
    except ServiceUnavailable as problem:
        return refused(problem.reason, problem.detail)
    return JSONResponse({"ok": True})


def routes() -> list[BaseRoute]:
    return [
        Route("/api/rooms/{room_id}/recommendations", recommendations, methods=["GET"]),
        Route("/api/rooms/{room_id}/seen", seen, methods=["POST"]),
    ]
