"""Operating metrics over HTTP (livecommerce/commerce/operating.py): a room's for its
host, a merchant's for the merchant, the platform's for an arbiter.

`GET /api/metrics/operating?scope=room&id=<room_id>&period=hour&from_ms=&to_ms=`: the
buckets in the period (at most 744 points), each with its counts and the rates derived
from them. The ledger's counters come from whoever holds the ledger; the traffic
counters (viewers, watch time, comments, likes, order attempts) are this process's."""

from __future__ import annotations

from typing import Final, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from livecommerce.api.common import (
    BadRequest,
    bearer,
    endpoint,
    error,
    identity_of,
    refused,
    require_host,
    service_of,
)
from livecommerce.commerce.operating import DAY_MS, OperatingMetrics, Period, Scope
from livecommerce.pipeline.pipeline import ServiceUnavailable
from livecommerce.pipeline.views import operating_view

Choice = TypeVar("Choice", Scope, Period)
DEFAULT_SPAN_MS: Final = {Period.HOUR: DAY_MS, Period.DAY: 30 * DAY_MS}


def _choice(request: Request, name: str, kind: type[Choice], default: str) -> Choice:
    raw = request.query_params.get(name, default)
    try:
        return kind(raw)
    except ValueError:
        choices = ", ".join(str(member) for member in kind)
        raise BadRequest(error(400, "bad_field", f"{name} is one of {choices}")) from None


def _time(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or len(raw) > 15:
        raise BadRequest(error(400, "bad_field", f"{name} is a time in ms"))
    return int(raw)


async def _allowed(request: Request, scope: Scope, scope_id: str) -> None:
    service = service_of(request)
    if scope is Scope.ROOM:
        await require_host(request, scope_id)
        return
    identity_id = await identity_of(request, bearer(request))
    if scope is Scope.MERCHANT and identity_id != scope_id:
        raise BadRequest(error(403, "not_merchant", "only the merchant reads its metrics"))
    if scope is Scope.PLATFORM and identity_id not in service.core.escrow.rules.arbiter_ids:
        raise BadRequest(error(403, "not_arbiter", "only an arbiter reads the platform's"))


@endpoint
async def operating(request: Request) -> Response:
    scope = _choice(request, "scope", Scope, "room")
    period = _choice(request, "period", Period, "hour")
    scope_id = "" if scope is Scope.PLATFORM else request.query_params.get("id", "")
    if scope is not Scope.PLATFORM and not 1 <= len(scope_id) <= 64:
        return error(400, "bad_field", "id names the room or the merchant")
    service = service_of(request)
    to_ms = _time(request, "to_ms", service.clock_ms() + 1)
    from_ms = _time(request, "from_ms", to_ms - DEFAULT_SPAN_MS[period])
    if from_ms >= to_ms:
        return error(400, "bad_field", "from_ms is before to_ms")
    await _allowed(request, scope, scope_id)
    try:
        ledger_part = await service.operating(scope, scope_id, period, from_ms, to_ms)
    except ServiceUnavailable as problem:
        return refused(problem.reason, problem.detail)
    activity: OperatingMetrics = request.app.state.activity
    traffic = activity.counts(scope, scope_id, period, from_ms, to_ms)
    return JSONResponse(operating_view([ledger_part, traffic], scope, scope_id, period))


def routes() -> list[BaseRoute]:
    return [Route("/api/metrics/operating", operating, methods=["GET"])]
