"""Group buying over HTTP (docs/commerce.md, "Group buying"): the host offers a sale's
group price; buyers open and join groups with signed steps; anyone reads a sale's groups
and one group (the share link's)."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

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
from livecommerce.commerce.groups import GROUP_ID, TIERS_MAX, GroupStep, OfferGroup
from livecommerce.commerce.results import Reason
from livecommerce.commerce.sales import SALE_ID
from livecommerce.pipeline.pipeline import ServiceUnavailable


class GroupOfferBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """`size` buyers within `window_ms` pay the sale's price; each tier [members,
    price_cents] beyond it lowers the price for groups that reach it."""

    size: int
    window_ms: int
    tiers: list[list[int]] = msgspec.field(default_factory=list)


class GroupStepBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A buyer's signed step: `open` a new group (`group_id` chosen by the buyer) or
    `join` one, with an accepted order of the sale that holds its units."""

    action: Short
    group_id: Short
    buyer_id: Short
    order_id: Short
    time_ms: int
    signature: Short


@endpoint
async def offer_group(request: Request) -> Response:
    room_id = request.path_params["room_id"]
    await require_host(request, room_id)
    body = await body_of(request, GroupOfferBody)
    if len(body.tiers) > TIERS_MAX:
        return refused(Reason.BAD_FIELD, f"at most {TIERS_MAX} tiers")
    service = service_of(request)
    sale = service.core.sales.get(request.path_params["sale_id"])
    if sale is None or sale.spec.room_id != room_id:
        return refused(Reason.UNKNOWN_SALE, "no such sale in this room")
    command = OfferGroup(sale.spec.merchant_id, sale.sale_id, body.size, body.window_ms, body.tiers)
    outcome = await run(request, command)
    refusal = rejected(outcome)
    if refusal is not None:
        return refusal
    view = await _read(request, "sale", sale.sale_id)
    if isinstance(view, Response):
        return view
    index = outcome.index_of("GroupOffered")
    return JSONResponse({**view, "ledger_index": index}, status_code=201 if index else 200)


@endpoint
async def group_step(request: Request) -> Response:
    body = await body_of(request, GroupStepBody)
    step = GroupStep(
        body.action, body.group_id, body.buyer_id, body.order_id, body.time_ms, body.signature
    )
    outcome = await run(request, step)
    refusal = rejected(outcome)
    if refusal is not None:
        return refusal
    index = outcome.index_of("GroupStepTaken")
    view = await _read(request, "group", body.group_id)
    if isinstance(view, Response):
        return view
    result = {
        "status": "taken" if index is not None else "repeated",
        "ledger_index": -1 if index is None else index,
        "group": view,
    }
    return JSONResponse(result, status_code=201 if index is not None else 200)


@endpoint
async def sale_groups(request: Request) -> Response:
    sale_id = request.path_params["sale_id"]
    if SALE_ID.fullmatch(sale_id) is None:
        return error(400, "bad_field", "sale_id must be 1..64 of [A-Za-z0-9_-]")
    if service_of(request).core.sales.get(sale_id) is None:
        return error(404, "unknown_sale", "no such sale")
    view = await _read(request, "sale", sale_id)
    return view if isinstance(view, Response) else JSONResponse(view)


@endpoint
async def one_group(request: Request) -> Response:
    group_id = request.path_params["group_id"]
    if GROUP_ID.fullmatch(group_id) is None:
        return error(400, "bad_field", "group_id must be 1..64 of [A-Za-z0-9_-]")
    view = await _read(request, "group", group_id)
    return view if isinstance(view, Response) else JSONResponse(view)


async def _read(request: Request, what: str, key: str) -> dict[str, object] | Response:
    try:
        view = await service_of(request).groups(what, key)
    except ServiceUnavailable as problem:
        return refused(problem.reason, problem.detail)
    if view is None:
        if what == "sale":
            return error(404, "no_group_offer", "this sale has no group offer")
        return error(404, "unknown_group", "no such group")
    return view


def routes() -> list[BaseRoute]:
    return [
        Route("/api/rooms/{room_id}/sales/{sale_id}/group-offer", offer_group, methods=["POST"]),
        Route("/api/sales/{sale_id}/groups", sale_groups, methods=["GET"]),
        Route("/api/groups", group_step, methods=["POST"]),
        Route("/api/groups/{group_id}", one_group, methods=["GET"]),
    ]
