"""The HTTP API: one module per resource, each parsing a request, calling the order
pipeline or the hub, and writing the answer; and its OpenAPI description (openapi.py)."""

from __future__ import annotations

from starlette.routing import BaseRoute

from livecommerce.api import (
    auctions,
    catalog,
    groups,
    identities,
    operating,
    orders,
    payments,
    recommend,
    reviews,
    rooms,
    sales,
    trace,
)


def routes() -> list[BaseRoute]:
    """Every HTTP route of the API (the room socket is the hub's)."""
    return [
        *identities.routes(),
        *catalog.routes(),
        *rooms.routes(),
        *sales.routes(),
        *orders.routes(),
        *payments.routes(),
        *recommend.routes(),
        *operating.routes(),
        *reviews.routes(),
        *groups.routes(),
        *auctions.routes(),
        *trace.routes(),
    ]
