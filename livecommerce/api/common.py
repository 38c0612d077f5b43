"""What every HTTP endpoint shares: reading a body, the credentials, refusals as
HTTP answers, and the order pipeline of the app.

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

import logging
from typing import Annotated, Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from livecommerce.api.bodies import read_body, too_large
from livecommerce.commerce.identity import SessionAuthority
from livecommerce.commerce.results import Reason, Rejected
from livecommerce.hub.broker import BrokerUnavailable
from livecommerce.hub.hub import Hub, Replica
from livecommerce.pipeline.answers import BUSY, UNAVAILABLE
from livecommerce.pipeline.pipeline import CommandOutcome, OrderPipeline, ServiceUnavailable
from livecommerce.pipeline.stats import OrderStats

log = logging.getLogger("livecommerce.orders")


BODY_BYTES_MAX = 16 * 1024


T = TypeVar("T")


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
    Reason.BAD_AMOUNT: 400,
    Reason.PAYMENT_DECLINED: 402,
    Reason.NOT_MERCHANT: 403,
    Reason.NOT_YOUR_ORDER: 403,
    Reason.NOT_ARBITER: 403,
    Reason.UNKNOWN_TRANSFER: 404,
    Reason.UNKNOWN_IDENTITY: 404,
    Reason.UNKNOWN_PRODUCT: 404,
    Reason.UNKNOWN_SALE: 404,
    Reason.UNKNOWN_ORDER: 404,
    Reason.UNKNOWN_REVIEW: 404,
    Reason.UNKNOWN_UNIT: 404,
    Reason.UNKNOWN_LOT: 404,
    Reason.ROLE_NOT_ALLOWED: 403,
    Reason.UNKNOWN_GROUP: 404,
    Reason.UNKNOWN_AUCTION: 404,
    Reason.BANNED: 403,
    Reason.NO_GROUP_OFFER: 404,
    Reason.CAPACITY: 503,
    Reason.STOCK_UNAVAILABLE: 503,
    BUSY: 503,
    UNAVAILABLE: 503,
}


Text = Annotated[str, msgspec.Meta(max_length=4000)]


Short = Annotated[str, msgspec.Meta(max_length=200)]


def error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


def refused(reason: str, detail: str) -> JSONResponse:
    return error(STATUS_OF_REASON.get(reason, 409), str(reason), detail)


class BadRequest(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


async def body_of(request: Request, kind: type[T]) -> T:
    body = await read_body(request, BODY_BYTES_MAX)
    if body is None:
        raise BadRequest(too_large(BODY_BYTES_MAX))
    try:
        return msgspec.json.decode(body or b"{}", type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError) as problem:
        raise BadRequest(error(400, "invalid_request", str(problem))) from None


def bearer_if_any(request: Request) -> str | None:
    """The Bearer token of the request, or None when it carries none."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token if scheme.lower() == "bearer" and token else None


def bearer(request: Request) -> str:
    token = bearer_if_any(request)
    if token is None:
        raise BadRequest(error(401, "unauthorized", "send a token as Authorization: Bearer"))
    return token


def service_of(request: Request) -> OrderPipeline:
    service: OrderPipeline = request.app.state.orders
    return service


def stats_of(request: Request) -> OrderStats:
    stats: OrderStats = request.app.state.order_stats
    return stats


def sessions_of(request: Request) -> SessionAuthority:
    sessions: SessionAuthority = request.app.state.sessions
    return sessions


async def identity_of(request: Request, token: str) -> str:
    """The identity a session token names, or a 401."""
    service = service_of(request)
    checked = sessions_of(request).check_token(token, service.clock_ms())
    if isinstance(checked, Rejected):
        raise BadRequest(refused(checked.reason, checked.detail))
    return checked.identity_id


async def room_replica(request: Request, room_id: str) -> Replica:
    """The room as this process holds it, or a 404 (503 while its broker is away)."""
    hub: Hub = request.app.state.hub
    try:
        replica = await hub.replica(room_id)
    except BrokerUnavailable as problem:
        raise BadRequest(error(503, "unavailable", str(problem))) from None
    if replica is None:
        raise BadRequest(error(404, "room_not_found", "no such room"))
    return replica


async def require_host(request: Request, room_id: str) -> None:
    """The request carries the room's host credential, or a 401/403/404."""
    token = bearer(request)
    replica = await room_replica(request, room_id)
    if not replica.room.info.host_token_matches(token):
        raise BadRequest(error(403, "bad_credential", "that is not this room's host credential"))


async def run(request: Request, command: Any) -> CommandOutcome:
    try:
        return await service_of(request).run(command)
    except ServiceUnavailable as problem:
        raise BadRequest(refused(problem.reason, problem.detail)) from None


def rejected(outcome: CommandOutcome) -> Response | None:
    if outcome.rejection is not None:
        return refused(*outcome.rejection)
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
