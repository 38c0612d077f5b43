"""Payments over HTTP: the provider's webhooks, what the pages show of the provider, and
payout batches (signed by an arbiter, the platform's own key)."""

from __future__ import annotations

from typing import Annotated, Final

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from livecommerce.api.bodies import read_body, too_large
from livecommerce.api.common import body_of, endpoint, error, refused, rejected, run, service_of
from livecommerce.commerce.canonical import DOMAIN_PAYOUTS, CanonicalError, signing_bytes
from livecommerce.commerce.escrow import RunPayouts
from livecommerce.commerce.identity import verify_signature
from livecommerce.payments import sandbox
from livecommerce.payments.webhooks import BODY_BYTES_MAX, SIGNATURE_HEADER, WebhookRefused

PAYOUT_FRESHNESS_MS: Final = 300_000
Short = Annotated[str, msgspec.Meta(max_length=200)]

TEST_CARDS: Final = [
    {"number": sandbox.SUCCEEDS, "what": "succeeds"},
    {"number": sandbox.DECLINED, "what": "declined (card_declined)"},
    {"number": sandbox.INSUFFICIENT_FUNDS, "what": "declined (insufficient_funds)"},
    {"number": sandbox.CAPTURE_FAILS, "what": "authorized; the capture at shipping fails"},
    {"number": sandbox.LATE_SUCCEEDS, "what": "answers later, then succeeds"},
    {"number": sandbox.LATE_DECLINED, "what": "answers later, then declines"},
]


class PayoutsBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Signed by an arbiter: `livecommerce/payouts/v1\\n` + canonical JSON of
    {"batch_id", "signer_id", "time_ms"}."""

    batch_id: Short
    signer_id: Short
    time_ms: int
    signature: Short


@endpoint
async def webhook(request: Request) -> Response:
    body = await read_body(request, BODY_BYTES_MAX)
    if body is None:
        return too_large(BODY_BYTES_MAX)
    try:
        await service_of(request).webhook(body, request.headers.get(SIGNATURE_HEADER, ""))
    except WebhookRefused as problem:
        return error(400, "bad_webhook", str(problem))
    return JSONResponse({"ok": True})


@endpoint
async def provider(request: Request) -> Response:
    """Which provider takes payments; with the test provider, its cards (any expiry in
    the future, any 3-digit code)."""
    service = service_of(request)
    if service.provider is None:
        return error(404, "no_provider", "no payment provider is set up")
    test = service.provider.test
    return JSONResponse(
        {"name": service.provider.name, "test": test, "cards": TEST_CARDS if test else []}
    )


@endpoint
async def payouts(request: Request) -> Response:
    body = await body_of(request, PayoutsBody)
    service = service_of(request)
    if body.signer_id not in service.core.escrow.rules.arbiter_ids:
        return refused("not_arbiter", "only an arbiter of the platform starts payouts")
    try:
        message = signing_bytes(
            DOMAIN_PAYOUTS,
            {"batch_id": body.batch_id, "signer_id": body.signer_id, "time_ms": body.time_ms},
        )
    except CanonicalError as problem:
        return error(400, "invalid_request", str(problem))
    bad = verify_signature(body.signer_id, message, body.signature)
    if bad is not None:
        return refused(bad.reason, bad.detail)
    if abs(service.clock_ms() - body.time_ms) > PAYOUT_FRESHNESS_MS:
        return refused("stale", "the request's time is too far from now")
    outcome = await run(request, RunPayouts(body.batch_id))
    refusal = rejected(outcome)
    if refusal is not None:
        return refusal
    started = [index for kind, index in outcome.recorded if kind == "PayoutBatchStarted"]
    return JSONResponse(
        {
            "batch_id": body.batch_id,
            "ledger_index": started[0] if started else None,
            "transfers": sum(kind == "TransferRecorded" for kind, _ in outcome.recorded),
        },
        status_code=201 if started else 200,
    )


def routes() -> list[BaseRoute]:
    return [
        Route("/api/payments/webhook", webhook, methods=["POST"]),
        Route("/api/payments/provider", provider, methods=["GET"]),
        Route("/api/payouts", payouts, methods=["POST"]),
    ]
