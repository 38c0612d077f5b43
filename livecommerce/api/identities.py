"""Identities and sessions: register a key, get a challenge, open a session."""

from __future__ import annotations

from typing import Annotated

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from livecommerce.api.common import (
    Short,
    body_of,
    endpoint,
    refused,
    rejected,
    run,
    service_of,
)
from livecommerce.commerce.identity import Register
from livecommerce.commerce.results import Rejected


class RegisterBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    public_key: Short
    display_name: Annotated[str, msgspec.Meta(max_length=400)]
    time_ms: int
    signature: Short


class SessionBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    challenge: Short
    public_key: Short
    signature: Short


@endpoint
async def register(request: Request) -> Response:
    body = await body_of(request, RegisterBody)
    command = Register(body.public_key, body.display_name, body.time_ms, body.signature)
    outcome = await run(request, command)
    refusal = rejected(outcome)
    if refusal is not None:
        return refusal
    index = outcome.index_of("Registered")
    return JSONResponse({"identity_id": body.public_key, "ledger_index": index}, status_code=201)


@endpoint
async def challenge(request: Request) -> Response:
    service = service_of(request)
    issued = await service.issue_challenge(service.clock_ms())
    if isinstance(issued, Rejected):
        return refused(issued.reason, issued.detail)
    return JSONResponse({"challenge": issued.challenge, "expires_at_ms": issued.expires_at_ms})


@endpoint
async def open_session(request: Request) -> Response:
    body = await body_of(request, SessionBody)
    service = service_of(request)
    granted = await service.open_session(
        body.challenge, body.public_key, body.signature, service.clock_ms()
    )
    if isinstance(granted, Rejected):
        return refused(granted.reason, granted.detail)
    return JSONResponse(
        {
            "token": granted.token,
            "identity_id": granted.identity.identity_id,
            "expires_at_ms": granted.expires_at_ms,
        }
    )


def routes() -> list[BaseRoute]:
    return [
        Route("/api/identities", register, methods=["POST"]),
        Route("/api/sessions/challenge", challenge, methods=["POST"]),
        Route("/api/sessions", open_session, methods=["POST"]),
    ]
