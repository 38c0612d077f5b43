"""Orders over HTTP: place, pay, take a step of the order's life, read it, its receipt;
a merchant's orders, money and statement."""

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
    refused,
    run,
    service_of,
    stats_of,
)
from livecommerce.commerce.escrow import OrderStep
from livecommerce.commerce.orders import PlaceOrder
from livecommerce.payments.provider import Card
from livecommerce.pipeline.pipeline import ServiceUnavailable
from livecommerce.pipeline.views import statement_csv

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
    card: m.CardDetails | None = None


class StepBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A signed step of the order's life (docs/commerce.md, "After the sale")."""

    step: Short
    step_id: Short
    buyer_id: Short
    signer_id: Short
    time_ms: int
    signature: Short
    carrier: Short = ""
    tracking: Short = ""
    amount_cents: int = 0
    decision: Short = ""
    reason: Short = ""


def card_of(details: m.CardDetails | None) -> Card | None:
    if details is None:
        return None
    return Card(details.number, details.exp_month, details.exp_year, details.cvc)


def pay_status(result: m.PayResult) -> int:
    if result.status == "paid":
        return 200
    if result.status == "pending":
        return 202
    return STATUS_OF_REASON.get(result.reason, 409)


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
    result = await service_of(request).pay(
        buyer_id, request.path_params["order_id"], body.shipping, card_of(body.card)
    )
    return Response(m.encode(result), status_code=pay_status(result), media_type="application/json")


@endpoint
async def take_step(request: Request) -> Response:
    """A signed step: cancel, ship, deliver, confirm, refund_request, refund_answer,
    dispute, resolve. The signature names who asks; the core decides whether they may."""
    body = await body_of(request, StepBody)
    order_id = request.path_params["order_id"]
    step = OrderStep(
        body.step, body.step_id, body.buyer_id, order_id, body.signer_id, body.time_ms,
        body.carrier, body.tracking, body.amount_cents, body.decision, body.reason,
        body.signature,
    )  # fmt: skip
    service = service_of(request)
    outcome = await run(request, step)
    life = await service.order_life(body.buyer_id, order_id)
    stage = str(life["stage"]) if life else ""
    if outcome.rejection is not None:
        reason, detail = outcome.rejection
        result = m.StepResult(order_id, body.step, "refused", stage, reason, detail)
        status = STATUS_OF_REASON.get(reason, 409)
    else:
        index = outcome.index_of("StepTaken")
        if index is None:
            index = outcome.index_of("OrderExpired")  # an unpaid hold, cancelled
        taken = "taken" if index is not None else "repeated"
        result = m.StepResult(
            order_id, body.step, taken, stage, ledger_index=-1 if index is None else index
        )
        status = 200
    return Response(m.encode(result), status_code=status, media_type="application/json")


@endpoint
async def order_life(request: Request) -> Response:
    """An accepted order's life: stage, amounts, tracking, and its timeline of ledger
    entries (each with the index to prove it at /ledger/proof/<index>). Public, as the
    ledger is: it holds no personal data."""
    buyer_id = request.query_params.get("buyer_id", "")
    try:
        view = await service_of(request).order_life(buyer_id, request.path_params["order_id"])
    except ServiceUnavailable as problem:
        return refused(problem.reason, problem.detail)
    if view is None:
        return error(404, "unknown_order", "no accepted order with this buyer_id and id")
    return JSONResponse(view)


@endpoint
async def merchant_money(request: Request) -> Response:
    """The merchant's balances per currency (pending in escrow, available, paying out,
    paid out) and its orders by stage."""
    merchant_id = await identity_of(request, bearer(request))
    try:
        return JSONResponse(await service_of(request).merchant_money(merchant_id))
    except ServiceUnavailable as problem:
        return refused(problem.reason, problem.detail)


def _millis(text: str | None, default: int) -> int | None:
    if text is None:
        return default
    return int(text) if text.isdigit() and len(text) <= 16 else None


@endpoint
async def statement(request: Request) -> Response:
    """Every transfer of the merchant's money from `from_ms` to `to_ms` (a period), CSV."""
    merchant_id = await identity_of(request, bearer(request))
    service = service_of(request)
    from_ms = _millis(request.query_params.get("from_ms"), 0)
    to_ms = _millis(request.query_params.get("to_ms"), service.clock_ms() + 1)
    if from_ms is None or to_ms is None or from_ms >= to_ms:
        return error(400, "invalid_request", "from_ms < to_ms, both integers (ms)")
    try:
        rows = await service.statement(merchant_id, from_ms, to_ms)
    except ServiceUnavailable as problem:
        return refused(problem.reason, problem.detail)
    return Response(
        statement_csv(rows),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="statement-{from_ms}-{to_ms}.csv"'},
    )


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
        Route("/api/orders/{order_id}", order_life, methods=["GET"]),
        Route("/api/orders/{order_id}/steps", take_step, methods=["POST"]),
        Route("/api/merchant/orders", merchant_orders, methods=["GET"]),
        Route("/api/merchant/money", merchant_money, methods=["GET"]),
        Route("/api/merchant/statement.csv", statement, methods=["GET"]),
    ]
