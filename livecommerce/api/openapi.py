"""The HTTP API as an OpenAPI 3.1 document, served at `GET /openapi.json`.

One table, `OPERATIONS`, names every HTTP route the app serves: its answers (status, media
type, body), its request body and its credential. Request bodies are the msgspec Structs the
endpoints decode, so their JSON Schemas come from the code (`msgspec.json.schema_components`)
and cannot drift from it; so do the bodies of answers that are Structs (`snapshot/v1`,
`order.result/v1`, `pay.result/v1`, the error body). A test walks the app's routes and fails
on any route missing here, or listed here and gone (tests/livecommerce/test_openapi.py).

The WebSocket route is not an HTTP operation; it is listed under `x-websockets` with the
JSON Schema of every client message (docs/protocol.md is its prose).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from livecommerce import __version__
from livecommerce import protocol as m
from livecommerce.api import (
    auctions,
    catalog,
    common,
    groups,
    identities,
    orders,
    payments,
    recommend,
    reviews,
    rooms,
    sales,
    trace,
)

OPENAPI_VERSION = "3.1.0"
# Ids are made by clients or the server from these characters (docs/commerce.md).
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
DECIMAL_PATTERN = r"^[0-9]{1,20}$"
ANY_TEXT = r"^.+$"
GTIN_PATTERN = r"^[0-9]{14}$"
SERIAL_PATTERN = r"^[A-Za-z0-9-]{1,20}$"


class ErrorBody(msgspec.Struct, frozen=True):
    """Every JSON error: `error` is a stable code for programs, `message` for people."""

    error: str
    message: str


@dataclass(frozen=True)
class Body:
    """A body of one media type: a msgspec type's schema, or a plain JSON Schema."""

    media_type: str
    types: tuple[Any, ...] = ()  # msgspec types; several mean any one of them
    schema: Mapping[str, Any] | None = None


def json_of(*types: Any) -> Body:
    return Body("application/json", types=types)


JSON_OBJECT = Body("application/json", schema={"type": "object"})
ERROR = json_of(ErrorBody)
TEXT = Body("text/plain", schema={"type": "string"})
SDP = Body("application/sdp", schema={"type": "string"})
OCTETS = Body("application/octet-stream", schema={"type": "string", "format": "binary"})
METRICS = Body("text/plain", schema={"type": "string"})
HTML = Body("text/html", schema={"type": "string"})
SVG = Body("image/svg+xml", schema={"type": "string"})
EPCIS = Body("application/ld+json", schema={"type": "object"})
EMPTY = None


@dataclass(frozen=True)
class Answer:
    description: str
    body: Body | None = ERROR
    headers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Query:
    name: str
    description: str
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # as Starlette writes it: `{name}` or `{name:path}`
    summary: str
    answers: Mapping[int, Answer]
    request: Body | None = None
    security: str | None = None  # a key of SECURITY_SCHEMES
    security_optional: bool = False  # the credential may be left out
    query: tuple[Query, ...] = ()
    path_patterns: Mapping[str, str] = field(default_factory=dict)
    tag: str = ""


SECURITY_SCHEMES = {
    "host": {
        "type": "http",
        "scheme": "bearer",
        "description": "The room's host credential (`host_token` from POST /api/rooms).",
    },
    "session": {
        "type": "http",
        "scheme": "bearer",
        "description": "An identity's session token (`token` from POST /api/sessions).",
    },
}

# Answers many routes share.
BAD = Answer("invalid_request: the body is not JSON of this shape (the message says where)")
TOO_LARGE = Answer(f"too_large: bodies are at most {common.BODY_BYTES_MAX} bytes")
NO_TOKEN = Answer("unauthorized: no `Authorization: Bearer` token")
WRONG_HOST = Answer("bad_credential: not this room's host credential")
NO_ROOM = Answer("room_not_found")
RETRY = Answer("busy or unavailable: nothing was done, retry later")
REFUSED = Answer("a business rule said no: the code says which (docs/commerce.md)")
BAD_TOKEN = Answer("bad_token or token_expired: the session token does not verify")


def _host_answers(**more: Answer) -> dict[int, Answer]:
    return {401: NO_TOKEN, 403: WRONG_HOST, 404: NO_ROOM, 503: RETRY, **_numbered(more)}


def _numbered(answers: Mapping[str, Answer]) -> dict[int, Answer]:
    return {int(key.removeprefix("s")): answer for key, answer in answers.items()}


def _signed(created: Answer, **more: Answer) -> dict[int, Answer]:
    """A command signed by the identity's key (registration, a listing, a restock)."""
    return {
        201: created,
        400: Answer("invalid_request, or a field out of range (bad_field, bad_public_key…)"),
        401: Answer("bad_signature: the signature does not verify for these bytes"),
        404: Answer("unknown_identity or unknown_product"),
        409: REFUSED,
        413: TOO_LARGE,
        503: RETRY,
        **_numbered(more),
    }


ORDER_ANSWER = json_of(m.OrderResult)
PAY_ANSWER = json_of(m.PayResult)
STEP_ANSWER = json_of(m.StepResult)
SALE = JSON_OBJECT  # the sale's state, docs/protocol.md
SDP_ERRORS = {
    400: Answer("the offer is not an SDP offer this server can use", TEXT),
    413: Answer("the offer is too large", TEXT),
    415: Answer("the offer is not application/sdp", TEXT),
    503: Answer("no room for another peer; retry after Retry-After", TEXT, ("Retry-After",)),
}
LEDGER_404 = Answer("no such object, a malformed path, or no ledger in this process", TEXT)

OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "/healthz", "liveness", {200: Answer("ok", JSON_OBJECT)}, tag="operations"),
    Operation(
        "GET",
        "/metrics",
        "Prometheus metrics (docs/operations.md)",
        {200: Answer("the text exposition format", METRICS)},
        tag="operations",
    ),
    Operation(
        "GET",
        "/openapi.json",
        "this document",
        {200: Answer("OpenAPI 3.1", JSON_OBJECT)},
        tag="operations",
    ),
    # Rooms (livecommerce/api/rooms.py)
    Operation(
        "POST",
        "/api/rooms",
        "create a room; its host credential is shown once",
        {201: Answer("room_id and host_token", JSON_OBJECT), 400: BAD},
        request=json_of(rooms.CreateRoom),
        tag="rooms",
    ),
    Operation(
        "GET",
        "/api/rooms/{room_id}",
        "the room's snapshot/v1",
        {200: Answer("the snapshot", json_of(m.Snapshot)), 404: NO_ROOM},
        tag="rooms",
    ),
    Operation(
        "POST",
        "/api/rooms/{room_id}/host",
        "a host command (docs/protocol.md)",
        {
            200: Answer("done", JSON_OBJECT),
            400: BAD,
            401: NO_TOKEN,
            403: WRONG_HOST,
            404: NO_ROOM,
            409: Answer("refused: room_ended, or another rule"),
            413: TOO_LARGE,
            503: RETRY,
        },
        request=json_of(m.HostCommand),
        security="host",
        tag="rooms",
    ),
    # Identities and sessions (livecommerce/api/)
    Operation(
        "POST",
        "/api/identities",
        "register an Ed25519 key, signed by it",
        _signed(Answer("identity_id and ledger_index", JSON_OBJECT)),
        request=json_of(identities.RegisterBody),
        tag="identities",
    ),
    Operation(
        "POST",
        "/api/sessions/challenge",
        "a single-use challenge to sign (60 s)",
        {200: Answer("challenge and expires_at_ms", JSON_OBJECT), 503: RETRY},
        tag="identities",
    ),
    Operation(
        "POST",
        "/api/sessions",
        "a session token for a signed challenge",
        {
            200: Answer("token, identity_id and expires_at_ms", JSON_OBJECT),
            400: BAD,
            401: Answer("unknown_challenge, challenge_expired or bad_signature"),
            404: Answer("unknown_identity"),
            409: REFUSED,
            413: TOO_LARGE,
            503: RETRY,
        },
        request=json_of(identities.SessionBody),
        tag="identities",
    ),
    # The catalog
    Operation(
        "POST",
        "/api/products",
        "list a product, signed by the merchant's key",
        _signed(Answer("product_id and ledger_index", JSON_OBJECT), s403=Answer("not_merchant")),
        request=json_of(catalog.ListProductBody),
        tag="catalog",
    ),
    Operation(
        "GET",
        "/api/products/{product_id}",
        "a product and its inventory_units",
        {200: Answer("the product", JSON_OBJECT), 404: Answer("unknown_product")},
        tag="catalog",
    ),
    Operation(
        "POST",
        "/api/products/{product_id}/stock",
        "add stock, signed by the merchant's key",
        _signed(
            Answer("inventory_units and ledger_index", JSON_OBJECT), s403=Answer("not_merchant")
        ),
        request=json_of(catalog.AddStockBody),
        tag="catalog",
    ),
    Operation(
        "GET",
        "/api/merchants/{merchant_id}/products",
        "a merchant's listings (at most 500)",
        {200: Answer("products", JSON_OBJECT)},
        # Any text: an id nobody registered has no products.
        path_patterns={"merchant_id": ANY_TEXT},
        tag="catalog",
    ),
    # Rooms and sales (the host)
    Operation(
        "POST",
        "/api/rooms/{room_id}/merchant",
        "link the room to a merchant, once (the merchant's session token in the body)",
        _host_answers(
            s201=Answer("room_id, merchant_id and ledger_index", JSON_OBJECT),
            s400=BAD,
            s409=REFUSED,
            s413=TOO_LARGE,
        ),
        request=json_of(rooms.LinkMerchantBody),
        security="host",
        tag="sales",
    ),
    Operation(
        "POST",
        "/api/rooms/{room_id}/sales",
        "schedule a flash sale of the linked merchant's product; it is pinned in the room",
        _host_answers(
            s201=Answer("the sale's state", SALE),
            s400=Answer("invalid_request or bad_field"),
            s409=Answer("room_not_linked, not_merchant, insufficient_stock…"),
            s413=TOO_LARGE,
        ),
        request=json_of(sales.ScheduleSaleBody),
        security="host",
        tag="sales",
    ),
    Operation(
        "POST",
        "/api/rooms/{room_id}/sales/{sale_id}/stop",
        "stop a sale now",
        _host_answers(s200=Answer("the sale, closed `stopped`", SALE), s409=REFUSED),
        security="host",
        tag="sales",
    ),
    Operation(
        "GET",
        "/api/rooms/{room_id}/stats",
        "the host's dashboard: the room's sales with their order counts",
        _host_answers(s200=Answer("room_id, merchant_id, time_ms and sales", JSON_OBJECT)),
        security="host",
        tag="sales",
    ),
    Operation(
        "GET",
        "/api/sales/{sale_id}",
        "a sale's state",
        {200: Answer("the sale", SALE), 404: Answer("unknown_sale")},
        tag="sales",
    ),
    # Orders
    Operation(
        "POST",
        "/api/orders",
        "a signed order (docs/commerce.md); answered once durable",
        {
            200: Answer("a repeat of an earlier order", ORDER_ANSWER),
            201: Answer("accepted", ORDER_ANSWER),
            400: Answer(
                "invalid_request, or bad_field, bad_quantity, bad_order_id",
                json_of(ErrorBody, m.OrderResult),
            ),
            401: Answer("bad_signature", ORDER_ANSWER),
            404: Answer("unknown_identity or unknown_sale", ORDER_ANSWER),
            409: Answer("rejected: the reason says why", ORDER_ANSWER),
            413: TOO_LARGE,
            503: Answer("busy, capacity, stock_unavailable or unavailable: retry", ORDER_ANSWER),
        },
        request=json_of(orders.OrderBody),
        tag="orders",
    ),
    Operation(
        "POST",
        "/api/orders/{order_id}/pay",
        "pay a held order with a card (the test provider's that succeeds if none), with the "
        "buyer's session token; the money is held in escrow",
        {
            200: Answer("paid", PAY_ANSWER),
            202: Answer("pending: the card's bank answers later (a webhook)", PAY_ANSWER),
            402: Answer("payment_declined: the provider's reason in detail", PAY_ANSWER),
            400: Answer("invalid_request or bad_field", json_of(ErrorBody, m.PayResult)),
            401: Answer("no token, bad_token or token_expired", json_of(ErrorBody, m.PayResult)),
            403: Answer("not_your_order", PAY_ANSWER),
            404: Answer("unknown_order", PAY_ANSWER),
            409: Answer("refused: order_expired…", PAY_ANSWER),
            413: TOO_LARGE,
            503: Answer("unavailable: retry", PAY_ANSWER),
        },
        request=json_of(orders.PayBody),
        security="session",
        tag="orders",
    ),
    Operation(
        "GET",
        "/api/orders/{order_id}/receipt",
        "the order's tlog-proof (waits up to 5 s for a checkpoint)",
        {
            200: Answer("c2sp.org/tlog-proof", TEXT),
            404: Answer("unknown_order"),
            409: Answer("not_covered: no checkpoint covers it yet, retry"),
            503: RETRY,
        },
        query=(Query("buyer_id", "the buyer's identity id"),),
        tag="orders",
    ),
    Operation(
        "GET",
        "/api/merchant/orders",
        "the merchant's orders, shipping details sealed to its key",
        {200: Answer("merchant_id and orders", JSON_OBJECT), 401: BAD_TOKEN, 503: RETRY},
        security="session",
        query=(
            Query("sale_id", "only this sale's orders"),
            Query("limit", "at most this many (1..1000)"),
        ),
        tag="orders",
    ),
    Operation(
        "GET",
        "/api/orders/{order_id}",
        "an accepted order's life after the sale, with the ledger index of each step",
        {200: Answer("the order", JSON_OBJECT), 404: Answer("unknown_order"), 503: RETRY},
        query=(Query("buyer_id", "the buyer's identity id"),),
        tag="orders",
    ),
    Operation(
        "POST",
        "/api/orders/{order_id}/steps",
        "a signed step of the order's life: cancel, ship, deliver, confirm, refund_request, "
        "refund_answer, dispute, resolve",
        {
            200: Answer("taken or repeated", STEP_ANSWER),
            400: Answer(
                "invalid_request, bad_field or bad_amount", json_of(ErrorBody, m.StepResult)
            ),
            401: Answer("bad_signature", STEP_ANSWER),
            403: Answer("not_your_order, not_merchant or not_arbiter", STEP_ANSWER),
            404: Answer("unknown_order or unknown_identity", STEP_ANSWER),
            409: Answer("refused: wrong_stage, stale, payment_pending…", STEP_ANSWER),
            413: TOO_LARGE,
            503: Answer("capacity or unavailable: retry", json_of(ErrorBody, m.StepResult)),
        },
        request=json_of(orders.StepBody),
        tag="orders",
    ),
    Operation(
        "POST",
        "/api/orders/{order_id}/reviews",
        "a signed review of a received order (once), the merchant's reply (once), or an "
        "arbiter hiding a text",
        {
            200: Answer("repeated: the same action again", json_of(reviews.ReviewResult)),
            201: Answer("taken: on the ledger at `ledger_index`", json_of(reviews.ReviewResult)),
            400: Answer("invalid_request or bad_field"),
            401: Answer("bad_signature"),
            403: Answer("not_your_order, not_merchant or not_arbiter"),
            404: Answer("unknown_order, unknown_review or unknown_identity"),
            409: Answer("wrong_stage, stale, already_reviewed, already_replied, already_hidden"),
            413: TOO_LARGE,
            503: Answer("capacity or unavailable: retry"),
        },
        request=json_of(reviews.ReviewBody),
        tag="reviews",
    ),
    Operation(
        "POST",
        "/api/rooms/{room_id}/sales/{sale_id}/group-offer",
        "offer the sale's price to groups of `size` buyers within `window_ms`, with optional "
        "lower tiers; the sale then sells only in groups",
        _host_answers(
            s200=Answer("the same offer again", JSON_OBJECT),
            s201=Answer("the offer and its groups, on the ledger at `ledger_index`", JSON_OBJECT),
            s400=Answer("invalid_request or bad_field"),
            s409=Answer("group_exists, sale_closed, not_merchant"),
            s413=TOO_LARGE,
        ),
        request=json_of(groups.GroupOfferBody),
        security="host",
        tag="groups",
    ),
    Operation(
        "GET",
        "/api/sales/{sale_id}/groups",
        "a sale's group offer, its open groups with places and time left, the newest closed",
        {
            200: Answer("offer, open and closed groups", JSON_OBJECT),
            400: Answer("bad_field"),
            404: Answer("unknown_sale or no_group_offer"),
            503: RETRY,
        },
        tag="groups",
    ),
    Operation(
        "POST",
        "/api/groups",
        "a buyer's signed step: open a group or join one with an order that holds its units",
        {
            200: Answer("repeated: the same step again", JSON_OBJECT),
            201: Answer("taken: on the ledger at `ledger_index`, with the group", JSON_OBJECT),
            400: Answer("invalid_request or bad_field"),
            401: Answer("bad_signature"),
            404: Answer("unknown_order, unknown_group, unknown_identity or no_group_offer"),
            409: Answer("group_full, group_closed, group_exists, already_in_group, stale…"),
            413: TOO_LARGE,
            503: Answer("capacity or unavailable: retry"),
        },
        request=json_of(groups.GroupStepBody),
        tag="groups",
    ),
    Operation(
        "GET",
        "/api/groups/{group_id}",
        "one group (what a share link opens) with its offer",
        {
            200: Answer("the group", JSON_OBJECT),
            400: Answer("bad_field"),
            404: Answer("unknown_group"),
            503: RETRY,
        },
        tag="groups",
    ),
    Operation(
        "POST",
        "/api/rooms/{room_id}/auctions",
        "auction one unit of the linked merchant's product: starting price, duration, "
        "extend or sudden death, increments by band",
        _host_answers(
            s201=Answer("the auction, on the ledger at `ledger_index`", JSON_OBJECT),
            s400=Answer("invalid_request or bad_field"),
            s409=Answer("room_not_linked, not_merchant, auction_exists, insufficient_stock"),
            s413=TOO_LARGE,
        ),
        request=json_of(auctions.StartAuctionBody),
        security="host",
        tag="auctions",
    ),
    Operation(
        "GET",
        "/api/rooms/{room_id}/auctions",
        "the room's newest auctions (at most 20), newest first",
        {200: Answer("auctions", JSON_OBJECT), 400: Answer("bad_field"), 503: RETRY},
        tag="auctions",
    ),
    Operation(
        "POST",
        "/api/rooms/{room_id}/auctions/{auction_id}/{action}",
        "cancel (before any bid), ban a bidder (`bidder_id`), or offer_second (the winner "
        "did not pay in time)",
        _host_answers(
            s200=Answer("the auction", JSON_OBJECT),
            s400=Answer("invalid_request or bad_field"),
            s409=Answer("has_bids, auction_closed, auction_open, wrong_stage, no_second_bidder"),
            s413=TOO_LARGE,
        ),
        request=json_of(auctions.HostActionBody),
        security="host",
        path_patterns={"action": "^(cancel|ban|offer_second)$"},
        tag="auctions",
    ),
    Operation(
        "POST",
        "/api/auctions/{auction_id}/bids",
        "a signed bid (with an optional proxy maximum); also `bid/v1` on the room socket",
        {
            201: Answer(
                "accepted: durable at `ledger_index`, the leader, price and end", JSON_OBJECT
            ),
            400: Answer("invalid_request, bad_field or bad_amount"),
            401: Answer("bad_signature"),
            403: Answer("banned"),
            404: Answer("unknown_auction or unknown_identity"),
            409: Answer("bid_too_low, auction_closed, stale"),
            413: TOO_LARGE,
            503: Answer("capacity or unavailable: retry"),
        },
        request=json_of(auctions.BidBody),
        tag="auctions",
    ),
    Operation(
        "GET",
        "/api/auctions/{auction_id}",
        "one auction: state, leader and name, price, the lowest next bid, the end",
        {
            200: Answer("the auction", JSON_OBJECT),
            400: Answer("bad_field"),
            404: Answer("unknown_auction"),
            503: RETRY,
        },
        tag="auctions",
    ),
    Operation(
        "GET",
        "/api/products/{product_id}/reviews",
        "a product's rating and newest reviews, each with the ledger indexes that prove it",
        {
            200: Answer("rating and reviews", JSON_OBJECT),
            400: Answer("bad_field"),
            404: Answer("unknown_product"),
            503: RETRY,
        },
        query=(Query("limit", "at most this many reviews (1..100, default 20)"),),
        tag="reviews",
    ),
    Operation(
        "GET",
        "/api/products/{product_id}/rating",
        "a product's review count, average (hundredths of a star) and histogram",
        {
            200: Answer("the rating", JSON_OBJECT),
            400: Answer("bad_field"),
            404: Answer("unknown_product"),
        },
        tag="reviews",
    ),
    Operation(
        "GET",
        "/api/merchant/money",
        "the merchant's balances per currency and its orders by stage",
        {200: Answer("balances", JSON_OBJECT), 401: BAD_TOKEN, 503: RETRY},
        security="session",
        tag="orders",
    ),
    Operation(
        "GET",
        "/api/merchant/statement.csv",
        "every transfer of the merchant's money in a period, as CSV",
        {
            200: Answer("the statement", Body("text/csv", schema={"type": "string"})),
            400: Answer("invalid_request: from_ms < to_ms"),
            401: BAD_TOKEN,
            503: RETRY,
        },
        security="session",
        query=(
            Query("from_ms", "the period's start, ms (default 0)"),
            Query("to_ms", "the period's end, ms, not included (default now)"),
        ),
        tag="orders",
    ),
    # Payments
    Operation(
        "POST",
        "/api/payments/webhook",
        "a result from the payment provider, signed (Livecommerce-Signature: t=..,v1=..)",
        {
            200: Answer("taken", JSON_OBJECT),
            400: Answer("bad_webhook: not signed, too old or malformed"),
            413: TOO_LARGE,
        },
        request=JSON_OBJECT,
        tag="payments",
    ),
    Operation(
        "GET",
        "/api/payments/provider",
        "the payment provider; with the test provider, its cards",
        {200: Answer("name, test, cards", JSON_OBJECT), 404: Answer("no_provider")},
        tag="payments",
    ),
    Operation(
        "POST",
        "/api/payouts",
        "start a payout batch of every merchant's available balance (signed by an arbiter)",
        {
            200: Answer("the same batch again", JSON_OBJECT),
            201: Answer("started", JSON_OBJECT),
            400: Answer("invalid_request"),
            401: Answer("bad_signature"),
            403: Answer("not_arbiter"),
            409: Answer("stale"),
            413: TOO_LARGE,
            503: RETRY,
        },
        request=json_of(payments.PayoutsBody),
        tag="payments",
    ),
    # Operating metrics (commerce/operating.py)
    Operation(
        "GET",
        "/api/metrics/operating",
        "activity, transaction success and satisfaction by hour or day: a room's (host "
        "credential), a merchant's (its session) or the platform's (an arbiter's session)",
        {
            200: Answer("the series", JSON_OBJECT),
            400: Answer("bad_field"),
            401: Answer("no credential, or bad_token"),
            403: Answer("bad_credential, not_merchant or not_arbiter"),
            404: Answer("room_not_found"),
            503: RETRY,
        },
        query=(
            Query("scope", "room, merchant or platform (default room)"),
            Query("id", "the room's or the merchant's id"),
            Query("period", "hour or day (default hour)"),
            Query("from_ms", "from (ms; default a day or 30 days back)"),
            Query("to_ms", "to, not included (ms; default now)"),
        ),
        tag="metrics",
    ),
    # Recommendations (commerce/recommend.py)
    Operation(
        "GET",
        "/api/rooms/{room_id}/recommendations",
        "more from this stream, and you may also like: the session's buyer's, or by "
        "popularity without a session",
        {
            200: Answer("both lists", JSON_OBJECT),
            400: Answer("bad_field: count is 1..50, beside a product id"),
            401: BAD_TOKEN,
            404: Answer("room_not_found"),
            503: RETRY,
        },
        security="session",
        security_optional=True,
        query=(
            Query("count", "at most this many in each list (1..50, default 10)"),
            Query("beside", "the product the lists are shown beside (left out of them)"),
        ),
        tag="recommendations",
    ),
    Operation(
        "POST",
        "/api/rooms/{room_id}/seen",
        "a view or click of a product in the room, for the recommendations (not on the ledger)",
        {
            200: Answer("counted", JSON_OBJECT),
            400: Answer("invalid_request"),
            401: BAD_TOKEN,
            404: Answer("room_not_found or unknown_product"),
            413: TOO_LARGE,
            429: Answer("rate_limited: dropped"),
            503: RETRY,
        },
        request=json_of(recommend.SeenBody),
        security="session",
        security_optional=True,
        tag="recommendations",
    ),
    # Traceability (api/trace.py, docs/traceability.md)
    *(
        Operation(
            "POST",
            f"/api/trace/{path}",
            summary,
            {
                200: Answer("the same signed bytes again: nothing changed", JSON_OBJECT),
                201: Answer("recorded: its ledger index and digest", JSON_OBJECT),
                400: Answer("invalid_request or bad_field (the message says which)"),
                401: Answer("bad_signature"),
                403: Answer("role_not_allowed or not_merchant"),
                404: Answer("unknown_identity, unknown_unit, unknown_lot, unknown_order…"),
                409: REFUSED,
                413: TOO_LARGE,
                503: RETRY,
            },
            request=json_of(trace.TraceBody),
            tag="trace",
        )
        for path, summary in (
            ("actors", "a merchant gives or takes back a role for its goods (signed)"),
            ("lots", "a merchant registers a lot of a product under its GTIN (signed)"),
            ("units", "a merchant registers serialised units of a lot (signed)"),
            ("events", "an actor signs a step of units or a case (EPCIS 2.0, CBV)"),
            ("imports", "an actor imports an EPCIS 2.0 document's events (signed digest)"),
        )
    ),
    Operation(
        "GET",
        "/api/trace/units/{unit}",
        "a unit's product, lot, events with their ledger indexes, and verdict",
        {200: Answer("the unit (an unknown code too: its verdict says so)", JSON_OBJECT)},
        path_patterns={"unit": ANY_TEXT},
        tag="trace",
    ),
    Operation(
        "GET",
        "/api/trace/units/{unit}/epcis",
        "a unit's events as an EPCIS 2.0 JSON-LD document",
        {200: Answer("EPCISDocument", EPCIS), 404: Answer("unknown_unit")},
        path_patterns={"unit": ANY_TEXT},
        tag="trace",
    ),
    Operation(
        "GET",
        "/api/trace/units/{unit}/qr.svg",
        "the QR code of the unit's GS1 Digital Link, to print",
        {200: Answer("SVG", SVG, ("Link",)), 404: Answer("unknown_unit")},
        path_patterns={"unit": ANY_TEXT},
        tag="trace",
    ),
    Operation(
        "GET",
        "/api/trace/lots/{lot}/epcis",
        "a lot's events as an EPCIS 2.0 JSON-LD document",
        {200: Answer("EPCISDocument", EPCIS), 404: Answer("unknown_lot")},
        path_patterns={"lot": ANY_TEXT},
        tag="trace",
    ),
    Operation(
        "GET",
        "/api/trace/orders/{order_id}",
        "the units sold to an order, each with its trace page",
        {200: Answer("units", JSON_OBJECT)},
        query=(Query("buyer_id", "the buyer's identity id"),),
        path_patterns={"order_id": ANY_TEXT},
        tag="trace",
    ),
    Operation(
        "GET",
        "/api/trace/merchants/{merchant_id}/flags",
        "a merchant's units flagged possibly counterfeit, and unknown codes scanned",
        {200: Answer("flags", JSON_OBJECT)},
        path_patterns={"merchant_id": ANY_TEXT},
        tag="trace",
    ),
    Operation(
        "GET",
        "/api/trace/products/{product_id}",
        "whether a product is traceable, and a sample unit's trace page",
        {200: Answer("traceability", JSON_OBJECT)},
        path_patterns={"product_id": ANY_TEXT},
        tag="trace",
    ),
    Operation(
        "GET",
        "/t/{unit}",
        "the public trace page of a unit (counts a scan)",
        {200: Answer("the page", HTML)},
        path_patterns={"unit": ANY_TEXT},
        tag="trace",
    ),
    Operation(
        "GET",
        "/01/{gtin}/21/{serial}",
        "the trace page at the unit's GS1 Digital Link path (counts a scan)",
        {200: Answer("the page", HTML), 404: Answer("not a GTIN-14 and a serial", TEXT)},
        path_patterns={"gtin": GTIN_PATTERN, "serial": SERIAL_PATTERN},
        tag="trace",
    ),
    # Live video (streaming/service.py): WHIP (RFC 9725) and WHEP.
    Operation(
        "POST",
        "/whip/{room_id}",
        "the host's WebRTC offer (WHIP)",
        {
            201: Answer("the SDP answer; Location names the session", SDP, ("Location",)),
            401: Answer("no Bearer token", TEXT),
            403: Answer("not the host of this room", TEXT),
            404: Answer("no such room", TEXT),
            **SDP_ERRORS,
        },
        request=SDP,
        security="host",
        tag="video",
    ),
    Operation(
        "DELETE",
        "/whip/{room_id}/{session_id}",
        "end the broadcast",
        {
            200: Answer("ended", EMPTY),
            401: Answer("no Bearer token", TEXT),
            403: Answer("not the host of this room", TEXT),
            404: Answer("no such session", TEXT),
        },
        security="host",
        tag="video",
    ),
    Operation(
        "PATCH",
        "/whip/{room_id}/{session_id}",
        "trickle ICE: not supported",
        {405: Answer("the answer has every candidate", TEXT, ("Allow",))},
        tag="video",
    ),
    Operation(
        "POST",
        "/whep/{room_id}",
        "a viewer's WebRTC offer (WHEP)",
        {
            201: Answer("the SDP answer; Location names the session", SDP, ("Location",)),
            404: Answer("no such room", TEXT),
            **SDP_ERRORS,
        },
        request=SDP,
        tag="video",
    ),
    Operation(
        "DELETE",
        "/whep/{room_id}/{session_id}",
        "leave",
        {200: Answer("closed", EMPTY), 404: Answer("no such session", TEXT)},
        tag="video",
    ),
    Operation(
        "PATCH",
        "/whep/{room_id}/{session_id}",
        "trickle ICE: not supported",
        {405: Answer("the answer has every candidate", TEXT, ("Allow",))},
        tag="video",
    ),
    # The ledger (ledger/http.py, docs/ledger.md); embedded only.
    Operation(
        "GET",
        "/ledger/checkpoint",
        "the latest signed checkpoint (c2sp.org/tlog-checkpoint)",
        {200: Answer("a signed note", TEXT), 404: LEDGER_404},
        tag="ledger",
    ),
    Operation(
        "GET",
        "/ledger/vkey",
        "the log's verifier key",
        {200: Answer("a note verifier key", TEXT), 404: LEDGER_404},
        tag="ledger",
    ),
    Operation(
        "GET",
        "/ledger/tile/{path:path}",
        "a hash tile or entry bundle (c2sp.org/tlog-tiles)",
        {200: Answer("the tile", OCTETS), 404: LEDGER_404},
        path_patterns={
            "path": r"^(entries|[0-9]{1,2})(/x[0-9]{3}){0,6}/[0-9]{3}(\.p/[0-9]{1,3})?$"
        },
        tag="ledger",
    ),
    Operation(
        "GET",
        "/ledger/proof/{index}",
        "a tlog-proof receipt for an entry",
        {200: Answer("c2sp.org/tlog-proof", TEXT), 404: LEDGER_404},
        path_patterns={"index": DECIMAL_PATTERN},
        tag="ledger",
    ),
    Operation(
        "GET",
        "/ledger/blocks/latest",
        "the latest block height",
        {200: Answer("a decimal", TEXT), 404: LEDGER_404},
        tag="ledger",
    ),
    Operation(
        "GET",
        "/ledger/blocks/{group}",
        "blocks 256·group onwards",
        {200: Answer("length-prefixed block and checkpoint notes", OCTETS), 404: LEDGER_404},
        path_patterns={"group": DECIMAL_PATTERN},
        tag="ledger",
    ),
)

WEBSOCKETS = {
    "/ws/rooms/{room_id}": {
        "summary": "a room's viewer socket (docs/protocol.md)",
        "client_messages": m.ClientMessage,
    }
}

_PARAMETER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::[a-z]+)?\}")


def openapi_path(path: str) -> str:
    """`/ledger/tile/{path:path}` as OpenAPI writes it: `/ledger/tile/{path}`."""
    return _PARAMETER.sub(lambda match: "{" + match.group(1) + "}", path)


def _bodies() -> list[Body]:
    bodies = []
    for operation in OPERATIONS:
        if operation.request is not None:
            bodies.append(operation.request)
        bodies.extend(a.body for a in operation.answers.values() if a.body is not None)
    return bodies


def _content(body: Body, schemas: Mapping[Any, Any]) -> dict[str, Any]:
    if body.schema is not None:
        schema: Any = dict(body.schema)
    elif len(body.types) == 1:
        schema = schemas[body.types[0]]
    else:
        schema = {"anyOf": [schemas[kind] for kind in body.types]}
    return {body.media_type: {"schema": schema}}


def _operation(operation: Operation, schemas: Mapping[Any, Any]) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {
                "type": "string",
                "pattern": operation.path_patterns.get(name, ID_PATTERN),
            },
        }
        for name in _PARAMETER.findall(operation.path)
    ]
    parameters += [
        {"name": q.name, "in": "query", "description": q.description, "schema": dict(q.schema)}
        for q in operation.query
    ]
    described: dict[str, Any] = {
        "summary": operation.summary,
        "operationId": f"{operation.method.lower()} {openapi_path(operation.path)}",
        "responses": {},
    }
    if operation.tag:
        described["tags"] = [operation.tag]
    if parameters:
        described["parameters"] = parameters
    if operation.request is not None:
        described["requestBody"] = {
            "required": operation.request.media_type == "application/sdp",
            "content": _content(operation.request, schemas),
        }
    if operation.security is not None:
        described["security"] = [{operation.security: []}]
        if operation.security_optional:
            described["security"].append({})
    for status, answer in sorted(operation.answers.items()):
        response: dict[str, Any] = {"description": answer.description}
        if answer.body is not None:
            response["content"] = _content(answer.body, schemas)
        if answer.headers:
            response["headers"] = {name: {"schema": {"type": "string"}} for name in answer.headers}
        described["responses"][str(status)] = response
    return described


@cache
def document() -> dict[str, Any]:
    """The whole document; built once, from the table and the Structs it names."""
    types: list[Any] = []
    for body in _bodies():
        types.extend(kind for kind in body.types if kind not in types)
    client_messages = [w["client_messages"] for w in WEBSOCKETS.values()]
    types.extend(client_messages)
    refs, components = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    schemas = dict(zip(types, refs, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for operation in OPERATIONS:
        path = paths.setdefault(openapi_path(operation.path), {})
        assert operation.method.lower() not in path, f"{operation.method} {operation.path} twice"
        path[operation.method.lower()] = _operation(operation, schemas)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "livecommerce",
            "version": __version__,
            "description": "The HTTP API of the live-stream commerce server. Errors are "
            '`{"error": code, "message": text}`; docs/protocol.md is the prose.',
        },
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": SECURITY_SCHEMES},
        "x-websockets": {
            path: {"summary": w["summary"], "client_messages": schemas[w["client_messages"]]}
            for path, w in WEBSOCKETS.items()
        },
    }


@cache
def _encoded() -> bytes:
    return msgspec.json.encode(document())


async def openapi_json(request: Request) -> Response:
    return Response(_encoded(), media_type="application/json")
