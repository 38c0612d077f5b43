"""Reviews over HTTP: a signed review, reply or hide for an order; a product's reviews
and its rating (docs/commerce.md, "Reviews")."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from livecommerce.api.common import Short, Text, body_of, endpoint, error, refused, run, service_of
from livecommerce.commerce.catalog import PRODUCT_ID
from livecommerce.commerce.reviews import ReviewStep
from livecommerce.pipeline.pipeline import ServiceUnavailable
from livecommerce.pipeline.reviews import PRODUCT_REVIEWS_MAX, rating_view


class ReviewBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A signed review action (the order is the path's): review (`stars`, `text`),
    reply (`text`), hide (`target` review | reply, `text` the reason)."""

    action: Short
    buyer_id: Short
    signer_id: Short
    time_ms: int
    signature: Short
    stars: int = 0
    target: Short = ""
    text: Text = ""


class ReviewResult(msgspec.Struct, frozen=True):
    """`taken` (with its entry's ledger index) or `repeated` (the same action again)."""

    order_id: str
    action: str
    status: str
    ledger_index: int = -1


@endpoint
async def post_review(request: Request) -> Response:
    body = await body_of(request, ReviewBody)
    order_id = request.path_params["order_id"]
    step = ReviewStep(
        body.action, body.buyer_id, order_id, body.signer_id, body.time_ms, body.stars,
        body.target, body.text, body.signature,
    )  # fmt: skip
    outcome = await run(request, step)
    if outcome.rejection is not None:
        return refused(*outcome.rejection)
    index = outcome.index_of("ReviewTaken")
    result = ReviewResult(
        order_id, body.action, "taken" if index is not None else "repeated",
        -1 if index is None else index,
    )  # fmt: skip
    return Response(
        msgspec.json.encode(result),
        status_code=201 if index is not None else 200,
        media_type="application/json",
    )


def _product_id(request: Request) -> str | None:
    product_id: str = request.path_params["product_id"]
    return product_id if PRODUCT_ID.fullmatch(product_id) else None


def _unknown(request: Request, product_id: str) -> Response | None:
    if service_of(request).core.catalog.get(product_id) is None:
        return error(404, "unknown_product", "no such product")
    return None


@endpoint
async def product_reviews(request: Request) -> Response:
    """The product's rating and newest reviews, each with the ledger indexes that prove
    it: its entry, and its order's paid and received entries."""
    product_id = _product_id(request)
    if product_id is None:
        return error(400, "bad_field", "product_id must be 1..64 of [A-Za-z0-9_-]")
    unknown = _unknown(request, product_id)
    if unknown is not None:
        return unknown
    limit_text = request.query_params.get("limit", "20")
    limit = int(limit_text) if limit_text.isdigit() and len(limit_text) < 6 else 20
    limit = max(1, min(limit, PRODUCT_REVIEWS_MAX))
    try:
        view = await service_of(request).product_reviews(product_id, limit)
    except ServiceUnavailable as problem:
        return refused(problem.reason, problem.detail)
    return JSONResponse(view)


@endpoint
async def product_rating(request: Request) -> Response:
    """The count and average of a product's reviews (read from this process's core)."""
    product_id = _product_id(request)
    if product_id is None:
        return error(400, "bad_field", "product_id must be 1..64 of [A-Za-z0-9_-]")
    unknown = _unknown(request, product_id)
    if unknown is not None:
        return unknown
    return JSONResponse(rating_view(service_of(request).core, product_id))


def routes() -> list[BaseRoute]:
    return [
        Route("/api/orders/{order_id}/reviews", post_review, methods=["POST"]),
        Route("/api/products/{product_id}/reviews", product_reviews, methods=["GET"]),
        Route("/api/products/{product_id}/rating", product_rating, methods=["GET"]),
    ]
