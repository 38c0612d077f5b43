"""Core events to client answers and viewer views (pure functions, no I/O).

Shared by the embedded service and the Redis web processes, so both answer alike.
"""

from __future__ import annotations

from typing import Any

from livecommerce import protocol as m
from livecommerce.commerce.catalog import Catalog
from livecommerce.commerce.events import Event
from livecommerce.commerce.identity import b64url_encode
from livecommerce.commerce.orders import (
    OrderAccepted,
    OrderPaid,
    OrderRejected,
    OrderRepeated,
    PaymentRefused,
)
from livecommerce.commerce.sales import Sale

# Answers the adapters give that are not the core's: the order was not looked at.
BUSY = "busy"  # the order queue is full, or the ledger pushed back: retry with the same id
UNAVAILABLE = "unavailable"  # the ledger or Redis failed: retry later with the same id


def order_answer(events: list[Event]) -> OrderAccepted | OrderRejected | OrderRepeated:
    """The event that answers a PlaceOrder among everything `handle` returned."""
    for event in reversed(events):
        if isinstance(event, OrderAccepted | OrderRejected | OrderRepeated):
            return event
    raise AssertionError(f"no answer to the order in {events}")


def order_result(
    answer: OrderAccepted | OrderRejected | OrderRepeated, ledger_index: int | None
) -> m.OrderResult:
    """The wire answer. `ledger_index` is the accepted order's entry (None: not durable)."""
    repeated = isinstance(answer, OrderRepeated)
    status = answer.status.value if isinstance(answer, OrderRepeated) else ""
    first = answer.first if isinstance(answer, OrderRepeated) else answer
    if isinstance(first, OrderAccepted):
        assert ledger_index is not None, "accepted answers wait for the ledger"
        return m.OrderResult(
            order_id=first.order_id,
            sale_id=first.sale_id,
            status="accepted",
            ledger_index=ledger_index,
            quantity=first.quantity,
            hold_expires_at_ms=first.hold_expires_at_ms,
            order_status=status or "held",
            repeated=repeated,
        )
    return m.OrderResult(
        order_id=first.order_id,
        sale_id=first.sale_id,
        status="rejected",
        reason=str(first.reason),
        detail=first.detail,
        order_status="rejected",
        repeated=repeated,
    )


def refused_order(order_id: str, sale_id: str, reason: str, detail: str) -> m.OrderResult:
    return m.OrderResult(
        order_id=order_id, sale_id=sale_id, status="rejected", reason=reason, detail=detail
    )


def refused_payment(order_id: str, reason: str, detail: str) -> m.PayResult:
    return m.PayResult(order_id=order_id, status="refused", reason=str(reason), detail=detail)


def merchant_order_view(
    accepted: OrderAccepted, status: str, ledger_index: int | None, sealed: bytes | None
) -> dict[str, Any]:
    return {
        "order_id": accepted.order_id,
        "sale_id": accepted.sale_id,
        "buyer_id": accepted.buyer_id,
        "quantity": accepted.quantity,
        "price_cents": accepted.price_cents,
        "currency": accepted.currency,
        "status": status,
        "accepted_at_ms": accepted.time_ms,
        "ledger_index": ledger_index,
        "shipping_sealed": b64url_encode(sealed) if sealed is not None else None,
    }


def pay_answer(events: list[Event]) -> OrderPaid | PaymentRefused | OrderRepeated:
    for event in reversed(events):
        if isinstance(event, OrderPaid | PaymentRefused | OrderRepeated):
            return event
    raise AssertionError(f"no answer to the payment in {events}")


def sale_view(sale: Sale, catalog: Catalog) -> dict[str, Any]:
    """What viewers see of a sale (`sale/v1` events, snapshots, GET /api/sales/{id})."""
    spec = sale.spec
    product = catalog.get(spec.product_id)
    return {
        "sale_id": spec.sale_id,
        "room_id": spec.room_id,
        "product_id": spec.product_id,
        "title": product.title if product else "",
        "image_url": product.image_url if product else "",
        "state": str(sale.state),
        "close_reason": str(sale.close_reason) if sale.close_reason else None,
        "price_cents": spec.price_cents,
        "currency": sale.currency,
        "units_offered": spec.units_offered,
        "units_remaining": sale.units_remaining,
        "per_buyer_limit": spec.per_buyer_limit,
        "starts_at_ms": spec.starts_at_ms,
        "ends_at_ms": sale.ends_at_ms,
        "payment_hold_ms": spec.payment_hold_ms,
    }
