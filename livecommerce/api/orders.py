"""Orders over HTTP: place, pay, the receipt, and a merchant's orders."""

from __future__ import annotations

import time

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from livecommerce import protocol as m
from livecommerce.api.common import (
    STATUS_OF_REASON,
    Short,
    bearer,
    body_of,
    endpoint,
    error,
    identity_of,
    service_of,
    stats_of,
)
from livecommerce.commerce.orders import PlaceOrder

RECEIPT_WAIT_S = 5.0


MERCHANT_ORDERS_MAX = 1000


class OrderBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    order_id: Short
    sale_id: Short
    buyer_id: Short
    quantity: int
    price_cents: int
    time_ms: int
    signature: Short


class PayBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    shipping: dict[str, Short] | None = None


def order_command(body: OrderBody | m.PlaceOrder) -> PlaceOrder:
    return PlaceOrder(
        body.order_id,
        body.sale_id,
        body.buyer_id,
        body.quantity,
        body.price_cents,
        body.time_ms,
        body.signature,
    )


@endpoint
async def place_order(request: Request) -> Response:
    body = await body_of(request, OrderBody)
    started_s = time.perf_counter()
    result = await service_of(request).place_order(order_command(body))
    stats_of(request).record(body.buyer_id, result, time.perf_counter() - started_s)
    status = 200 if result.status == "accepted" else STATUS_OF_REASON.get(result.reason, 409)
    if result.status == "accepted" and not result.repeated:
        status = 201
    return Response(m.encode(result), status_code=status, media_type="application/json")


@endpoint
async def pay(request: Request) -> Response:
    buyer_id = await identity_of(request, bearer(request))
    body = await body_of(request, PayBody)
    result = await service_of(request).pay(buyer_id, request.path_params["order_id"], body.shipping)
    status = 200 if result.status == "paid" else STATUS_OF_REASON.get(result.reason, 409)
    return Response(m.encode(result), status_code=status, media_type="application/json")


@endpoint
async def receipt(request: Request) -> Response:
    buyer_id = request.query_params.get("buyer_id", "")
    try:
        proof = await service_of(request).receipt(
            buyer_id, request.path_params["order_id"], RECEIPT_WAIT_S
        )
    except TimeoutError:
        return error(409, "not_covered", "no checkpoint covers this order yet; retry")
    if proof is None:
        return error(404, "unknown_order", "no accepted order with this buyer_id and id")
    return PlainTextResponse(proof.decode())


@endpoint
async def merchant_orders(request: Request) -> Response:
    merchant_id = await identity_of(request, bearer(request))
    limit_text = request.query_params.get("limit", str(MERCHANT_ORDERS_MAX))
    limit = int(limit_text) if limit_text.isdigit() else MERCHANT_ORDERS_MAX
    limit = max(1, min(limit, MERCHANT_ORDERS_MAX))
    orders = await service_of(request).merchant_orders(
        merchant_id, request.query_params.get("sale_id"), limit
    )
    return JSONResponse({"merchant_id": merchant_id, "orders": orders})


def routes() -> list[BaseRoute]:
    return [
        Route("/api/orders", place_order, methods=["POST"]),
        Route("/api/orders/{order_id}/pay", pay, methods=["POST"]),
        Route("/api/orders/{order_id}/receipt", receipt, methods=["GET"]),
        Route("/api/merchant/orders", merchant_orders, methods=["GET"]),
    ]
