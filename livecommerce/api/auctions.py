"""Auctions over HTTP (docs/commerce.md, "Auctions"): the host starts one, cancels it
(before any bid), bans a bidder, offers the lot to the second bidder; bidders send signed
bids (also `bid/v1` on the room socket); anyone reads an auction and a room's newest."""

from __future__ import annotations

import secrets

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from livecommerce import protocol as m
from livecommerce.api.common import (
    Short,
    body_of,
    endpoint,
    error,
    refused,
    rejected,
    require_host,
    run,
    service_of,
)
from livecommerce.api.sockets import place_bid
from livecommerce.commerce.auctions import (
    AUCTION_ID,
    BANDS_MAX,
    PAY_WITHIN_MS,
    AuctionCommand,
    HostAction,
    Mode,
    StartAuction,
)
from livecommerce.commerce.results import Reason
from livecommerce.commerce.sales import ROOM_ID
from livecommerce.pipeline.pipeline import ServiceUnavailable


class StartAuctionBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One unit of `product_id` from `starting_cents`, for `duration_ms`; `mode` extend
    or sudden_death; `bands` [[from_cents, increment_cents], ...] (default 100 below
    3,000, 200 from 3,000, 500 from 10,000); the winner pays within `pay_within_ms`."""

    product_id: Short
    starting_cents: int
    duration_ms: int
    mode: Short = Mode.EXTEND.value
    bands: list[list[int]] = msgspec.field(default_factory=list)
    pay_within_ms: int = PAY_WITHIN_MS
    auction_id: Short = ""


class HostActionBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    bidder_id: Short = ""  # ban


class BidBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A signed bid (the auction is the path's)."""

    bidder_id: Short
    amount_cents: int
    time_ms: int
    signature: Short
    max_cents: int = 0


@endpoint
async def start_auction(request: Request) -> Response:
    room_id = request.path_params["room_id"]
    await require_host(request, room_id)
    body = await body_of(request, StartAuctionBody)
    if len(body.bands) > BANDS_MAX:
        return refused(Reason.BAD_FIELD, f"at most {BANDS_MAX} bands")
    service = service_of(request)
    merchant_id = service.core.rooms.merchant_of(room_id)
    if merchant_id is None:
        return refused(Reason.ROOM_NOT_LINKED, "link the room to a merchant first")
    auction_id = body.auction_id or f"a{secrets.token_hex(6)}"
    command = StartAuction(
        auction_id, room_id, merchant_id, body.product_id, body.starting_cents,
        body.duration_ms, body.mode, body.bands, body.pay_within_ms,
    )  # fmt: skip
    outcome = await run(request, command)
    refusal = rejected(outcome)
    if refusal is not None:
        return refusal
    view = await _read(request, "auction", auction_id)
    if isinstance(view, Response):
        return view
    return JSONResponse({**view, "ledger_index": outcome.index_of("AuctionStarted")}, 201)


@endpoint
async def host_action(request: Request) -> Response:
    room_id = request.path_params["room_id"]
    await require_host(request, room_id)
    body = await body_of(request, HostActionBody)
    action = request.path_params["action"]
    if action not in HostAction.__members__.values():
        return error(404, "not_found", "the action is cancel, ban or offer_second")
    service = service_of(request)
    auction = service.core.auctions.get(request.path_params["auction_id"])
    merchant_id = service.core.rooms.merchant_of(room_id)
    if merchant_id is None:
        return refused(Reason.ROOM_NOT_LINKED, "link the room to a merchant first")
    if auction is not None and auction.spec.room_id != room_id:
        return refused(Reason.UNKNOWN_AUCTION, "no such auction in this room")
    auction_id = request.path_params["auction_id"]
    outcome = await run(request, AuctionCommand(action, auction_id, merchant_id, body.bidder_id))
    refusal = rejected(outcome)
    if refusal is not None:
        return refusal
    view = await _read(request, "auction", auction_id)
    return view if isinstance(view, Response) else JSONResponse(view)


@endpoint
async def bid(request: Request) -> Response:
    body = await body_of(request, BidBody)
    message = m.Bid(
        auction_id=request.path_params["auction_id"], bidder_id=body.bidder_id,
        amount_cents=body.amount_cents, max_cents=body.max_cents, time_ms=body.time_ms,
        signature=body.signature,
    )  # fmt: skip
    result = await place_bid(service_of(request), message)
    if result.status != "accepted":
        return refused(result.reason, result.detail)
    return Response(msgspec.json.encode(result), status_code=201, media_type="application/json")


@endpoint
async def one_auction(request: Request) -> Response:
    auction_id = request.path_params["auction_id"]
    if AUCTION_ID.fullmatch(auction_id) is None:
        return error(400, "bad_field", "auction_id must be 1..56 of [A-Za-z0-9_-]")
    view = await _read(request, "auction", auction_id)
    return view if isinstance(view, Response) else JSONResponse(view)


@endpoint
async def room_auctions(request: Request) -> Response:
    room_id = request.path_params["room_id"]
    if ROOM_ID.fullmatch(room_id) is None:
        return error(400, "bad_field", "room_id must be 1..64 of [A-Za-z0-9_-]")
    view = await _read(request, "room", room_id)
    return view if isinstance(view, Response) else JSONResponse(view)


async def room_auctions_route(request: Request) -> Response:
    """One route for the path (so that OPTIONS and 405 name both methods)."""
    if request.method == "POST":
        response: Response = await start_auction(request)
        return response
    listed: Response = await room_auctions(request)
    return listed


async def _read(request: Request, what: str, key: str) -> dict[str, object] | Response:
    try:
        view = await service_of(request).auctions(what, key)
    except ServiceUnavailable as problem:
        return refused(problem.reason, problem.detail)
    if view is None:
        return error(404, "unknown_auction", "no such auction")
    return view


def routes() -> list[BaseRoute]:
    return [
        Route("/api/rooms/{room_id}/auctions", room_auctions_route, methods=["GET", "POST"]),
        Route("/api/rooms/{room_id}/auctions/{auction_id}/{action}", host_action, methods=["POST"]),
        Route("/api/auctions/{auction_id}/bids", bid, methods=["POST"]),
        Route("/api/auctions/{auction_id}", one_auction, methods=["GET"]),
    ]
