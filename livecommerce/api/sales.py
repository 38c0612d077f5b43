"""Flash sales: the host schedules and stops them; anyone reads one."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from livecommerce import protocol as m
from livecommerce.api.common import (
    BadRequest,
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
from livecommerce.commerce.results import Reason
from livecommerce.commerce.sales import Sale, ScheduleSale, StopSale
from livecommerce.hub.broker import BrokerUnavailable
from livecommerce.hub.hub import Hub
from livecommerce.pipeline.answers import sale_view
from livecommerce.pipeline.pipeline import ServiceUnavailable

log = logging.getLogger("livecommerce.api")


class ScheduleSaleBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    sale_id: Short
    product_id: Short
    units_offered: int
    per_buyer_limit: int
    duration_ms: int
    payment_hold_ms: int
    # Either an absolute start or one relative to the server clock (a countdown); neither
    # starts the sale now. The price defaults to the product's.
    starts_at_ms: int | None = None
    starts_in_ms: int | None = None
    price_cents: int | None = None


@endpoint
async def schedule_sale(request: Request) -> Response:
    room_id = request.path_params["room_id"]
    await require_host(request, room_id)
    body = await body_of(request, ScheduleSaleBody)
    service = service_of(request)
    merchant_id = service.core.rooms.merchant_of(room_id)
    if merchant_id is None:
        return refused(Reason.ROOM_NOT_LINKED, "link the room to a merchant first")
    product = service.core.catalog.get(body.product_id)
    if product is None:
        return refused(Reason.UNKNOWN_PRODUCT, "no such product")
    now_ms = service.clock_ms()
    if body.starts_at_ms is not None and body.starts_in_ms is not None:
        return error(400, "invalid_request", "give starts_at_ms or starts_in_ms, not both")
    starts_at_ms = body.starts_at_ms
    if starts_at_ms is None:
        starts_at_ms = now_ms + (body.starts_in_ms or 0)
    command = ScheduleSale(
        sale_id=body.sale_id,
        room_id=room_id,
        product_id=body.product_id,
        merchant_id=merchant_id,
        units_offered=body.units_offered,
        price_cents=product.price_cents if body.price_cents is None else body.price_cents,
        per_buyer_limit=body.per_buyer_limit,
        starts_at_ms=starts_at_ms,
        duration_ms=body.duration_ms,
        payment_hold_ms=body.payment_hold_ms,
    )
    outcome = await run(request, command)
    refusal = rejected(outcome)
    if refusal is not None:
        return refusal
    sale = service.core.sales.get(body.sale_id)
    assert sale is not None
    await _pin(request, room_id, body.product_id)
    view = sale_view(sale, service.core.catalog)
    view["ledger_index"] = outcome.index_of("SaleScheduled")
    return JSONResponse(view, status_code=201)


async def _pin(request: Request, room_id: str, product_id: str) -> None:
    """The sale's product becomes the room's pinned product (viewers see what is sold)."""
    hub: Hub = request.app.state.hub
    product = service_of(request).core.catalog.get(product_id)
    replica = await hub.replica(room_id)
    if product is None or replica is None or replica.room.ended:
        return
    pinned = m.PinnedProduct(
        product_id=product.product_id,
        title=product.title,
        price_cents=product.price_cents,
        currency=product.currency,
        image=product.image_url,
    )
    if replica.room.pinned != pinned:
        try:
            await hub.publish(room_id, m.ProductPinned(product=pinned, ts_ms=hub.clock_ms()))
        except BrokerUnavailable:
            log.warning("could not pin %s in %s: %s", product_id, room_id, error)


@endpoint
async def stop_sale(request: Request) -> Response:
    room_id = request.path_params["room_id"]
    await require_host(request, room_id)
    service = service_of(request)
    sale = service.core.sales.get(request.path_params["sale_id"])
    if sale is None or sale.spec.room_id != room_id:
        return refused(Reason.UNKNOWN_SALE, "no such sale in this room")
    outcome = await run(request, StopSale(sale.sale_id, sale.spec.merchant_id))
    refusal = rejected(outcome)
    if refusal is not None:
        return refusal
    return JSONResponse(await sale_view_of(request, sale))


@endpoint
async def get_sale(request: Request) -> Response:
    service = service_of(request)
    sale = service.core.sales.get(request.path_params["sale_id"])
    if sale is None:
        return error(404, "unknown_sale", "no such sale")
    return JSONResponse(await sale_view_of(request, sale))


async def sale_view_of(request: Request, sale: Sale) -> dict[str, Any]:
    """The sale as viewers see it, with the units left as the stock's owner counts them
    (scaled out: Redis, where every web process takes stock; 503 while it cannot say)."""
    service = service_of(request)
    view = sale_view(sale, service.core.catalog)
    try:
        view["units_remaining"] = await service.units_remaining(sale)
    except ServiceUnavailable as problem:
        raise BadRequest(refused(problem.reason, problem.detail)) from None
    return view


def routes() -> list[BaseRoute]:
    return [
        Route("/api/rooms/{room_id}/sales", schedule_sale, methods=["POST"]),
        Route("/api/rooms/{room_id}/sales/{sale_id}/stop", stop_sale, methods=["POST"]),
        Route("/api/sales/{sale_id}", get_sale, methods=["GET"]),
    ]
