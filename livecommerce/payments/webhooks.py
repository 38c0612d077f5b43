"""Signed webhooks: a provider's results that come after the call that asked for them.

A webhook is a POST whose body is one JSON event and whose header
`Livecommerce-Signature: t=<ms>,v1=<hex>` carries HMAC-SHA-256, keyed with the secret the
platform shares with the provider, over `<t>.` followed by the body's exact bytes (the
scheme card processors use). An event is taken only if the signature checks out and `t`
is within `tolerance_ms` of now, so a captured webhook cannot be replayed much later;
within that window a second delivery is harmless because every result names the
escrow's own reference and the escrow takes each result once (escrow.py).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated, Final

import msgspec

SIGNATURE_HEADER: Final = "livecommerce-signature"
TOLERANCE_MS: Final = 300_000
BODY_BYTES_MAX: Final = 16 * 1024
EVENT_TYPES: Final = frozenset(
    f"{operation}.{outcome}"
    for operation in ("authorization", "capture", "cancel", "refund", "payout")
    for outcome in ("succeeded", "failed")
)

Short = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class WebhookEvent(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    id: Short  # the provider's id for this event
    type: Short  # <operation>.<outcome>, one of EVENT_TYPES
    reference: Short  # the escrow's id of what was asked (idempotency key)
    provider_ref: Short  # the provider's id of what it did
    amount_cents: int
    currency: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")]
    created_ms: int
    reason: Annotated[str, msgspec.Meta(max_length=200)] = ""

    @property
    def operation(self) -> str:
        return self.type.partition(".")[0]

    @property
    def succeeded(self) -> bool:
        return self.type.endswith(".succeeded")


class WebhookRefused(ValueError):
    """Not a webhook to act on: the message says why (for the 400 answer and the log)."""


def signature_header(secret: bytes, body: bytes, now_ms: int) -> str:
    return f"t={now_ms},v1={_mac(secret, now_ms, body)}"


def verify_webhook(
    secret: bytes, body: bytes, header: str, now_ms: int, tolerance_ms: int = TOLERANCE_MS
) -> WebhookEvent:
    """The event, or WebhookRefused. Checks size, signature, age, then the JSON."""
    if len(body) > BODY_BYTES_MAX:
        raise WebhookRefused(f"a webhook body is at most {BODY_BYTES_MAX} bytes")
    parts = dict(part.partition("=")[::2] for part in header.split(",") if "=" in part)
    stamp, given = parts.get("t", ""), parts.get("v1", "")
    if not stamp.isdigit() or not given:
        raise WebhookRefused(f"the {SIGNATURE_HEADER} header is t=<ms>,v1=<hex>")
    signed_ms = int(stamp)
    if not hmac.compare_digest(_mac(secret, signed_ms, body), given):
        raise WebhookRefused("the webhook's signature does not verify")
    if abs(now_ms - signed_ms) > tolerance_ms:
        raise WebhookRefused("the webhook was signed too long ago (or in the future)")
    try:
        event = msgspec.json.decode(body, type=WebhookEvent)
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        raise WebhookRefused(f"not a webhook event: {error}") from None
    except RecursionError:
        raise WebhookRefused("not a webhook event: JSON nested too deeply") from None
    if event.type not in EVENT_TYPES:
        raise WebhookRefused(f"unknown event type {event.type!r}")
    return event


def encode_event(event: WebhookEvent) -> bytes:
    return msgspec.json.encode(event)


def _mac(secret: bytes, signed_ms: int, body: bytes) -> str:
    return hmac.new(secret, str(signed_ms).encode() + b"." + body, hashlib.sha256).hexdigest()
