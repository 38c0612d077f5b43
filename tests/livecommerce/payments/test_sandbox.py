"""The test provider's cards, its idempotency, and its late answers as signed webhooks."""

from __future__ import annotations

import asyncio
import json

import pytest

from livecommerce.payments import sandbox
from livecommerce.payments.provider import AnswerStatus, Card, CardError, check_card, luhn_valid
from livecommerce.payments.sandbox import TestPaymentProvider
from livecommerce.payments.webhooks import (
    WebhookEvent,
    WebhookRefused,
    signature_header,
    verify_webhook,
)

SECRET = b"k" * 32
NOW_MS = 1_700_000_000_000


def card(number: str) -> Card:
    return Card(number, 12, 2099, "123")


def provider(deliver: sandbox.Deliver | None = None) -> TestPaymentProvider:
    return TestPaymentProvider(SECRET, lambda: NOW_MS, late_answer_ms=20, deliver=deliver)


@pytest.mark.parametrize(
    "number",
    [sandbox.SUCCEEDS, sandbox.DECLINED, sandbox.INSUFFICIENT_FUNDS, sandbox.CAPTURE_FAILS,
     sandbox.LATE_SUCCEEDS, sandbox.LATE_DECLINED],
)  # fmt: skip
def test_every_test_card_is_a_well_formed_card(number: str) -> None:
    assert luhn_valid(number)
    check_card(card(number), 2026, 12)


@pytest.mark.parametrize(
    ("details", "message"),
    [
        (Card("4242424242424241", 12, 2099, "123"), "check digit"),
        (Card("4242-4242", 12, 2099, "123"), "12 to 19 digits"),
        (Card(sandbox.SUCCEEDS, 13, 2099, "123"), "month"),
        (Card(sandbox.SUCCEEDS, 11, 2026, "123"), "expired"),
        (Card(sandbox.SUCCEEDS, 12, 2099, "12a"), "security code"),
    ],
)
def test_cards_that_cannot_be_cards_are_refused_before_any_provider(
    details: Card, message: str
) -> None:
    with pytest.raises(CardError, match=message):
        check_card(details, 2026, 12)
    assert details.number not in repr(details)  # a card number never reaches a log


async def test_cards_decide_the_answers_and_each_reference_is_answered_alike() -> None:
    test = provider()
    ok = await test.authorize("pay-1", 1800, "EUR", card(sandbox.SUCCEEDS))
    assert ok.status is AnswerStatus.SUCCEEDED
    assert await test.authorize("pay-1", 1800, "EUR", card(sandbox.SUCCEEDS)) == ok
    # Another process's provider (the same secret) answers the same: no state is kept.
    assert await provider().authorize("pay-1", 1800, "EUR", card(sandbox.SUCCEEDS)) == ok
    declined = await test.authorize("pay-2", 1800, "EUR", card(sandbox.DECLINED))
    assert (declined.status, declined.reason) == (AnswerStatus.FAILED, "card_declined")
    poor = await test.authorize("pay-3", 1800, "EUR", card(sandbox.INSUFFICIENT_FUNDS))
    assert poor.reason == "insufficient_funds"
    other = await test.authorize("pay-4", 1800, "EUR", card("4111111111111111"))
    assert other.reason == "not_a_test_card"
    assert (await test.capture("cap-1", ok.provider_ref, 1900, "EUR")).reason == (
        "more_than_authorized"
    )
    assert (await test.capture("cap-1", ok.provider_ref, 1800, "USD")).reason == (
        "more_than_authorized"
    )
    captured = await test.capture("cap-2", ok.provider_ref, 1800, "EUR")
    assert captured.status is AnswerStatus.SUCCEEDED
    assert await provider().capture("cap-2", ok.provider_ref, 1800, "EUR") == captured
    assert (await test.refund("re-1", ok.provider_ref, 1000, "EUR")).status is (
        AnswerStatus.SUCCEEDED
    )
    assert (await test.refund("re-2", ok.provider_ref, 1801, "EUR")).reason == (
        "more_than_captured"
    )
    assert (await test.capture("cap-3", "auth_forged", 10, "EUR")).reason == (
        "unknown_authorization"
    )
    fails = await test.authorize("pay-5", 500, "EUR", card(sandbox.CAPTURE_FAILS))
    assert (await test.capture("cap-4", fails.provider_ref, 500, "EUR")).reason == (
        "capture_declined"
    )
    assert (await test.cancel("can-1", fails.provider_ref)).status is AnswerStatus.SUCCEEDED
    assert (await test.payout("po-1", "merchant", 500, "EUR")).status is AnswerStatus.SUCCEEDED


async def test_late_cards_answer_pending_then_by_a_signed_webhook() -> None:
    delivered: list[tuple[bytes, str]] = []

    async def deliver(body: bytes, header: str) -> None:
        delivered.append((body, header))

    test = provider(deliver)
    late = await test.authorize("pay-1", 700, "EUR", card(sandbox.LATE_SUCCEEDS))
    refused = await test.authorize("pay-2", 700, "EUR", card(sandbox.LATE_DECLINED))
    assert (late.status, refused.status) == (AnswerStatus.PENDING, AnswerStatus.PENDING)
    async with asyncio.timeout(5):
        while len(delivered) < 2:
            await asyncio.sleep(0.01)
    events = [verify_webhook(SECRET, body, header, NOW_MS) for body, header in delivered]
    by_reference = {event.reference: event for event in events}
    assert by_reference["pay-1"].type == "authorization.succeeded"
    assert by_reference["pay-1"].provider_ref == late.provider_ref
    assert (await test.capture("cap", late.provider_ref, 700, "EUR")).status is (
        AnswerStatus.SUCCEEDED
    )
    assert (by_reference["pay-2"].type, by_reference["pay-2"].reason) == (
        "authorization.failed",
        "card_declined",
    )
    await test.close()


def event_body(**overrides: object) -> bytes:
    fields: dict[str, object] = {
        "id": "evt_1", "type": "capture.succeeded", "reference": "ann/o1",
        "provider_ref": "cap_1", "amount_cents": 1800, "currency": "EUR", "created_ms": NOW_MS,
    }  # fmt: skip
    fields.update(overrides)
    return json.dumps(fields).encode()


def test_a_webhook_is_taken_only_signed_fresh_and_well_formed() -> None:
    body = event_body()
    header = signature_header(SECRET, body, NOW_MS)
    event = verify_webhook(SECRET, body, header, NOW_MS + 1_000)
    assert isinstance(event, WebhookEvent)
    assert (event.operation, event.succeeded) == ("capture", True)
    cases = [
        (body, header.replace("v1=", "v1=0"), "does not verify"),
        (body + b" ", header, "does not verify"),
        (body, signature_header(b"other" * 8, body, NOW_MS), "does not verify"),
        (body, "v1=abc", "t=<ms>,v1=<hex>"),
        (body, "", "t=<ms>,v1=<hex>"),
        (body, signature_header(SECRET, body, NOW_MS - 400_000), "too long ago"),
        (b"x" * 20_000, header, "at most"),
    ]
    for bad_body, bad_header, message in cases:
        with pytest.raises(WebhookRefused, match=message):
            verify_webhook(SECRET, bad_body, bad_header, NOW_MS)
    for bad in (event_body(type="capture.maybe"), event_body(amount_cents="1"), b"[]"):
        with pytest.raises(WebhookRefused):
            verify_webhook(SECRET, bad, signature_header(SECRET, bad, NOW_MS), NOW_MS)
