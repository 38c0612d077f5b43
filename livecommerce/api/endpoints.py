"""HTTP endpoints for identities, sessions, the catalog, sales and orders; and the hook
that takes `order/v1` and `pay/v1` from room sockets. Parse, call the service, serialise.

Who may do what:
- registering, listing a product and adding stock are signed by the key itself (no session);
- linking a room to a merchant needs the room's host credential (Bearer) and the
  merchant's session token (body);
- scheduling and stopping a sale need the room's host credential; the merchant is the
  room's linked merchant, so a host only sells that merchant's products;
- paying and reading a merchant's orders need the identity's session token (Bearer);
- placing an order needs only the buyer's signature; a receipt is public.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict
from typing import Annotated, Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from livecommerce import protocol as m
from livecommerce.api.bodies import read_body, too_large
from livecommerce.commerce.catalog import AddStock, Catalog, ListProduct, Product
from livecommerce.commerce.identity import Register, SessionAuthority
from livecommerce.commerce.orders import PlaceOrder
from livecommerce.commerce.results import Reason, Rejected
from livecommerce.commerce.rooms import LinkRoom
from livecommerce.commerce.sales import Sale, ScheduleSale, StopSale
from livecommerce.hub.broker import BrokerUnavailable
from livecommerce.hub.hub import Connection, Hub
from livecommerce.pipeline.answers import BUSY, UNAVAILABLE, refused_payment, sale_view
from livecommerce.pipeline.base import Orders
from livecommerce.pipeline.service import CommandOutcome, ServiceUnavailable
from livecommerce.pipeline.stats import OrderStats

log = logging.getLogger("livecommerce.orders")

BODY_BYTES_MAX = 16 * 1024
RECEIPT_WAIT_S = 5.0
MERCHANT_ORDERS_MAX = 1000
MERCHANT_PRODUCTS_MAX = 500
ROOM_STATS_SALES_MAX = 20

T = TypeVar("T")

# HTTP status for each refusal; anything not listed is 409 (a business rule said no).
STATUS_OF_REASON = {
    Reason.BAD_FIELD: 400,
    Reason.BAD_QUANTITY: 400,
    Reason.BAD_ORDER_ID: 400,
    Reason.BAD_PUBLIC_KEY: 400,
    Reason.BAD_DISPLAY_NAME: 400,
    Reason.BAD_SIGNATURE: 401,
    Reason.BAD_TOKEN: 401,
    Reason.TOKEN_EXPIRED: 401,
    Reason.UNKNOWN_CHALLENGE: 401,
    Reason.CHALLENGE_EXPIRED: 401,
    Reason.NOT_MERCHANT: 403,
    Reason.NOT_YOUR_ORDER: 403,
    Reason.UNKNOWN_IDENTITY: 404,
    Reason.UNKNOWN_PRODUCT: 404,
    Reason.UNKNOWN_SALE: 404,
    Reason.UNKNOWN_ORDER: 404,
    Reason.CAPACITY: 503,
    Reason.STOCK_UNAVAILABLE: 503,
    BUSY: 503,
    UNAVAILABLE: 503,
}

Text = Annotated[str, msgspec.Meta(max_length=4000)]
Short = Annotated[str, msgspec.Meta(max_length=200)]


class RegisterBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    public_key: Short
    display_name: Annotated[str, msgspec.Meta(max_length=400)]
    time_ms: int
    signature: Short


class SessionBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    challenge: Short
    public_key: Short
    signature: Short


class ListProductBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    product_id: Short
    merchant_id: Short
    title: Text
    description: Text
    price_cents: int
    currency: Short
    sku: Short
    image_url: Annotated[str, msgspec.Meta(max_length=600)]
    time_ms: int
    signature: Short


class AddStockBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    change_id: Short
    merchant_id: Short
    quantity: int
    time_ms: int
    signature: Short


class LinkMerchantBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    merchant_token: Short


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


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


def _refused(reason: str, detail: str) -> JSONResponse:
    return _error(STATUS_OF_REASON.get(reason, 409), str(reason), detail)


class BadRequest(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


async def _body(request: Request, kind: type[T]) -> T:
    body = await read_body(request, BODY_BYTES_MAX)
    if body is None:
        raise BadRequest(too_large(BODY_BYTES_MAX))
    try:
        return msgspec.json.decode(body or b"{}", type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        raise BadRequest(_error(400, "invalid_request", str(error))) from None


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise BadRequest(_error(401, "unauthorized", "send a token as Authorization: Bearer"))
    return token


def _service(request: Request) -> Orders:
    service: Orders = request.app.state.orders
    return service


def _stats(request: Request) -> OrderStats:
    stats: OrderStats = request.app.state.order_stats
    return stats


def _sessions(request: Request) -> SessionAuthority:
    sessions: SessionAuthority = request.app.state.sessions
    return sessions


async def _identity(request: Request, token: str) -> str:
    """The identity a session token names, or a 401."""
    service = _service(request)
    checked = _sessions(request).check_token(token, service.clock_ms())
    if isinstance(checked, Rejected):
        raise BadRequest(_refused(checked.reason, checked.detail))
    return checked.identity_id


async def _host(request: Request, room_id: str) -> None:
    """The request carries the room's host credential, or a 401/403/404."""
    hub: Hub = request.app.state.hub
    token = _bearer(request)
    try:
        replica = await hub.replica(room_id)
    except BrokerUnavailable as error:
        raise BadRequest(_error(503, "unavailable", str(error))) from None
    if replica is None:
        raise BadRequest(_error(404, "room_not_found", "no such room"))
    if not replica.room.info.host_token_matches(token):
        raise BadRequest(_error(403, "bad_credential", "that is not this room's host credential"))


async def _run(request: Request, command: Any) -> CommandOutcome:
    try:
        return await _service(request).run(command)
    except ServiceUnavailable as error:
        raise BadRequest(_refused(error.reason, error.detail)) from None


def _rejected(outcome: CommandOutcome) -> Response | None:
    if outcome.rejection is not None:
        return _refused(*outcome.rejection)
    return None


def endpoint(handler: Any) -> Any:
    async def wrapped(request: Request) -> Response:
        try:
            response: Response = await handler(request)
            return response
        except BadRequest as bad:
            return bad.response

    wrapped.__name__ = handler.__name__
    return wrapped


# Identities and sessions


@endpoint
async def register(request: Request) -> Response:
    body = await _body(request, RegisterBody)
    command = Register(body.public_key, body.display_name, body.time_ms, body.signature)
    outcome = await _run(request, command)
    refused = _rejected(outcome)
    if refused is not None:
        return refused
    index = outcome.index_of("Registered")
    return JSONResponse({"identity_id": body.public_key, "ledger_index": index}, status_code=201)


@endpoint
async def challenge(request: Request) -> Response:
    service = _service(request)
    issued = await service.issue_challenge(service.clock_ms())
    if isinstance(issued, Rejected):
        return _refused(issued.reason, issued.detail)
    return JSONResponse({"challenge": issued.challenge, "expires_at_ms": issued.expires_at_ms})


@endpoint
async def open_session(request: Request) -> Response:
    body = await _body(request, SessionBody)
    service = _service(request)
    granted = await service.open_session(
        body.challenge, body.public_key, body.signature, service.clock_ms()
    )
    if isinstance(granted, Rejected):
        return _refused(granted.reason, granted.detail)
    return JSONResponse(
        {
            "token": granted.token,
            "identity_id": granted.identity.identity_id,
            "expires_at_ms": granted.expires_at_ms,
        }
    )


# Catalog


@endpoint
async def list_product(request: Request) -> Response:
    body = await _body(request, ListProductBody)
    command = ListProduct(**msgspec.structs.asdict(body))
    outcome = await _run(request, command)
    refused = _rejected(outcome)
    if refused is not None:
        return refused
    return JSONResponse(
        {"product_id": body.product_id, "ledger_index": outcome.index_of("ProductListed")},
        status_code=201,
    )


@endpoint
async def add_stock(request: Request) -> Response:
    body = await _body(request, AddStockBody)
    product_id = request.path_params["product_id"]
    command = AddStock(
        body.change_id, product_id, body.merchant_id, body.quantity, body.time_ms, body.signature
    )
    outcome = await _run(request, command)
    refused = _rejected(outcome)
    if refused is not None:
        return refused
    catalog = _service(request).core.catalog
    return JSONResponse(
        {
            "product_id": product_id,
            "inventory_units": catalog.inventory_units(product_id),
            "ledger_index": outcome.index_of("InventoryChanged"),
        },
        status_code=201,
    )


def _product_view(catalog: Catalog, product: Product) -> dict[str, Any]:
    view: dict[str, Any] = asdict(product)
    view["inventory_units"] = catalog.inventory_units(product.product_id)
    return view


@endpoint
async def get_product(request: Request) -> Response:
    catalog = _service(request).core.catalog
    product = catalog.get(request.path_params["product_id"])
    if product is None:
        return _error(404, "unknown_product", "no such product")
    return JSONResponse(_product_view(catalog, product))


# Rooms and sales (the host)


@endpoint
async def link_merchant(request: Request) -> Response:
    room_id = request.path_params["room_id"]
    await _host(request, room_id)
    body = await _body(request, LinkMerchantBody)
    merchant_id = await _identity(request, body.merchant_token)
    outcome = await _run(request, LinkRoom(room_id, merchant_id))
    refused = _rejected(outcome)
    if refused is not None:
        return refused
    return JSONResponse(
        {
            "room_id": room_id,
            "merchant_id": merchant_id,
            "ledger_index": outcome.index_of("RoomLinked"),
        },
        status_code=201,
    )


@endpoint
async def schedule_sale(request: Request) -> Response:
    room_id = request.path_params["room_id"]
    await _host(request, room_id)
    body = await _body(request, ScheduleSaleBody)
    service = _service(request)
    merchant_id = service.core.rooms.merchant_of(room_id)
    if merchant_id is None:
        return _refused(Reason.ROOM_NOT_LINKED, "link the room to a merchant first")
    product = service.core.catalog.get(body.product_id)
    if product is None:
        return _refused(Reason.UNKNOWN_PRODUCT, "no such product")
    now_ms = service.clock_ms()
    if body.starts_at_ms is not None and body.starts_in_ms is not None:
        return _error(400, "invalid_request", "give starts_at_ms or starts_in_ms, not both")
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
    outcome = await _run(request, command)
    refused = _rejected(outcome)
    if refused is not None:
        return refused
    sale = service.core.sales.get(body.sale_id)
    assert sale is not None
    await _pin(request, room_id, body.product_id)
    view = sale_view(sale, service.core.catalog)
    view["ledger_index"] = outcome.index_of("SaleScheduled")
    return JSONResponse(view, status_code=201)


async def _pin(request: Request, room_id: str, product_id: str) -> None:
    """The sale's product becomes the room's pinned product (viewers see what is sold)."""
    hub: Hub = request.app.state.hub
    product = _service(request).core.catalog.get(product_id)
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
        except BrokerUnavailable as error:
            log.warning("could not pin %s in %s: %s", product_id, room_id, error)


@endpoint
async def stop_sale(request: Request) -> Response:
    room_id = request.path_params["room_id"]
    await _host(request, room_id)
    service = _service(request)
    sale = service.core.sales.get(request.path_params["sale_id"])
    if sale is None or sale.spec.room_id != room_id:
        return _refused(Reason.UNKNOWN_SALE, "no such sale in this room")
    outcome = await _run(request, StopSale(sale.sale_id, sale.spec.merchant_id))
    refused = _rejected(outcome)
    if refused is not None:
        return refused
    return JSONResponse(await _sale_view(request, sale))


@endpoint
async def room_stats(request: Request) -> Response:
    """The host's dashboard: the room's sales (newest first) with their order counts."""
    room_id = request.path_params["room_id"]
    await _host(request, room_id)
    service = _service(request)
    sales = [sale for sale in service.core.sales.all() if sale.spec.room_id == room_id]
    sales.sort(key=lambda sale: sale.spec.starts_at_ms, reverse=True)
    views = []
    for sale in sales[:ROOM_STATS_SALES_MAX]:
        view = await _sale_view(request, sale)
        view.update(_stats(request).of_sale(sale.sale_id))
        views.append(view)
    return JSONResponse(
        {
            "room_id": room_id,
            "merchant_id": service.core.rooms.merchant_of(room_id),
            "time_ms": service.clock_ms(),
            "sales": views,
        }
    )


@endpoint
async def merchant_products(request: Request) -> Response:
    catalog = _service(request).core.catalog
    products = catalog.of_merchant(request.path_params["merchant_id"], MERCHANT_PRODUCTS_MAX)
    return JSONResponse({"products": [_product_view(catalog, p) for p in products]})


@endpoint
async def get_sale(request: Request) -> Response:
    service = _service(request)
    sale = service.core.sales.get(request.path_params["sale_id"])
    if sale is None:
        return _error(404, "unknown_sale", "no such sale")
    return JSONResponse(await _sale_view(request, sale))


async def _sale_view(request: Request, sale: Sale) -> dict[str, Any]:
    """The sale as viewers see it, with the units left as the stock's owner counts them
    (scaled out: Redis, where every web process takes stock; 503 while it cannot say)."""
    service = _service(request)
    view = sale_view(sale, service.core.catalog)
    try:
        view["units_remaining"] = await service.units_remaining(sale)
    except ServiceUnavailable as error:
        raise BadRequest(_refused(error.reason, error.detail)) from None
    return view


# Orders


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
    body = await _body(request, OrderBody)
    started_s = time.perf_counter()
    result = await _service(request).place_order(order_command(body))
    _stats(request).record(body.buyer_id, result, time.perf_counter() - started_s)
    status = 200 if result.status == "accepted" else STATUS_OF_REASON.get(result.reason, 409)
    if result.status == "accepted" and not result.repeated:
        status = 201
    return Response(m.encode(result), status_code=status, media_type="application/json")


@endpoint
async def pay(request: Request) -> Response:
    buyer_id = await _identity(request, _bearer(request))
    body = await _body(request, PayBody)
    result = await _service(request).pay(buyer_id, request.path_params["order_id"], body.shipping)
    status = 200 if result.status == "paid" else STATUS_OF_REASON.get(result.reason, 409)
    return Response(m.encode(result), status_code=status, media_type="application/json")


@endpoint
async def receipt(request: Request) -> Response:
    buyer_id = request.query_params.get("buyer_id", "")
    try:
        proof = await _service(request).receipt(
            buyer_id, request.path_params["order_id"], RECEIPT_WAIT_S
        )
    except TimeoutError:
        return _error(409, "not_covered", "no checkpoint covers this order yet; retry")
    if proof is None:
        return _error(404, "unknown_order", "no accepted order with this buyer_id and id")
    return PlainTextResponse(proof.decode())


@endpoint
async def merchant_orders(request: Request) -> Response:
    merchant_id = await _identity(request, _bearer(request))
    limit_text = request.query_params.get("limit", str(MERCHANT_ORDERS_MAX))
    limit = int(limit_text) if limit_text.isdigit() else MERCHANT_ORDERS_MAX
    limit = max(1, min(limit, MERCHANT_ORDERS_MAX))
    orders = await _service(request).merchant_orders(
        merchant_id, request.query_params.get("sale_id"), limit
    )
    return JSONResponse({"merchant_id": merchant_id, "orders": orders})


# Room sockets: order/v1 and pay/v1


class SocketOrders:
    """The hub's `order_handler`: orders go to the service's queue (answered on the same
    socket, receipt later); payments run as a short task each (they are rate-limited by
    the socket's frame budget)."""

    def __init__(self, service: Orders, sessions: SessionAuthority, stats: OrderStats) -> None:
        self.service = service
        self.sessions = sessions
        self.stats = stats
        self._payments: set[asyncio.Task[None]] = set()

    def __call__(self, connection: Connection, message: m.OrderMessage) -> None:
        if isinstance(message, m.PlaceOrder):
            buyer_id = message.buyer_id
            started_s = time.perf_counter()

            def reply(result: m.OrderResult) -> None:
                self.stats.record(buyer_id, result, time.perf_counter() - started_s)
                connection.send(result)

            # The receipt can wait for the socket's next write (hub: `send_soon`).
            self.service.submit_order(order_command(message), reply, connection.send_soon)
            return
        task = asyncio.get_running_loop().create_task(self._pay(connection, message))
        self._payments.add(task)
        task.add_done_callback(self._payments.discard)

    async def _pay(self, connection: Connection, message: m.Pay) -> None:
        checked = self.sessions.check_token(message.token, self.service.clock_ms())
        if isinstance(checked, Rejected):
            connection.send(refused_payment(message.order_id, checked.reason, checked.detail))
            return
        try:
            result = await self.service.pay(checked.identity_id, message.order_id, message.shipping)
        except Exception:
            log.exception("payment failed")
            result = refused_payment(message.order_id, UNAVAILABLE, "the payment failed; retry")
        connection.send(result)


def routes() -> list[BaseRoute]:
    return [
        Route("/api/identities", register, methods=["POST"]),
        Route("/api/sessions/challenge", challenge, methods=["POST"]),
        Route("/api/sessions", open_session, methods=["POST"]),
        Route("/api/products", list_product, methods=["POST"]),
        Route("/api/products/{product_id}", get_product, methods=["GET"]),
        Route("/api/products/{product_id}/stock", add_stock, methods=["POST"]),
        Route("/api/rooms/{room_id}/merchant", link_merchant, methods=["POST"]),
        Route("/api/rooms/{room_id}/sales", schedule_sale, methods=["POST"]),
        Route("/api/rooms/{room_id}/sales/{sale_id}/stop", stop_sale, methods=["POST"]),
        Route("/api/sales/{sale_id}", get_sale, methods=["GET"]),
        Route("/api/rooms/{room_id}/stats", room_stats, methods=["GET"]),
        Route("/api/merchants/{merchant_id}/products", merchant_products, methods=["GET"]),
        Route("/api/orders", place_order, methods=["POST"]),
        Route("/api/orders/{order_id}/pay", pay, methods=["POST"]),
        Route("/api/orders/{order_id}/receipt", receipt, methods=["GET"]),
        Route("/api/merchant/orders", merchant_orders, methods=["GET"]),
    ]
