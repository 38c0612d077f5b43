"""The built-in test provider: no real money moves. It answers by the card number, so
every path of a payment can be tried from a browser or a test (docs/commerce.md lists
the numbers; any expiry in the future, any 3-digit code):

| card number         | authorize                   | later                       |
|---------------------|-----------------------------|-----------------------------|
| 4242 4242 4242 4242 | succeeds                    | capture, refunds succeed    |
| 4000 0000 0000 0002 | declined: card_declined     |                             |
| 4000 0000 0000 9995 | declined: insufficient_funds|                             |
| 4000 0000 0000 0341 | succeeds                    | capture declined            |
| 4000 0000 0000 3063 | pending, then succeeds      | by webhook after a delay    |
| 4000 0000 0000 3097 | pending, then declined      | by webhook after a delay    |

Any other card is declined (`not_a_test_card`). Answers are idempotent by the caller's
reference, and the same in every process (the provider keeps no state). Late answers
arrive as signed webhooks (webhooks.py), delivered in this process to `deliver` after
`late_answer_ms`, as a real provider would POST them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Final

from livecommerce.payments.provider import AnswerStatus, Card, ProviderAnswer
from livecommerce.payments.webhooks import WebhookEvent, encode_event, signature_header

log = logging.getLogger("livecommerce.payments")

PROVIDER_NAME: Final = "test"
SUCCEEDS: Final = "4242424242424242"
DECLINED: Final = "4000000000000002"
INSUFFICIENT_FUNDS: Final = "4000000000009995"
CAPTURE_FAILS: Final = "4000000000000341"
LATE_SUCCEEDS: Final = "4000000000003063"
LATE_DECLINED: Final = "4000000000003097"
LATE_ANSWERS_MAX: Final = 10_000

Deliver = Callable[[bytes, str], Awaitable[None]]


AUTHORIZATION = re.compile(r"auth_([sx])([0-9]{1,16})([A-Z]{3})_([0-9a-f]{16})")


def _failed(reason: str) -> ProviderAnswer:
    return ProviderAnswer(AnswerStatus.FAILED, "", reason)


class TestPaymentProvider:
    """A provider in this process, named `test` on the ledger and in the pages.

    It keeps no state: every answer follows from the call's own arguments (and the
    authorization id, which names the card's behaviour and the amount authorized), so
    every process of a scaled-out deployment answers alike, the ledger writer's too, and
    a call asked again gets the same answer (its ids are an HMAC of the reference)."""

    __test__ = False  # not a pytest class, whatever its name

    def __init__(
        self,
        webhook_secret: bytes,
        clock_ms: Callable[[], int],
        late_answer_ms: int = 2_000,
        deliver: Deliver | None = None,
    ) -> None:
        assert late_answer_ms > 0
        self.webhook_secret = webhook_secret
        self.clock_ms = clock_ms
        self.late_answer_ms = late_answer_ms
        self.deliver = deliver
        self._late: set[asyncio.Task[None]] = set()
        self.calls = 0

    @property
    def name(self) -> str:
        return PROVIDER_NAME

    @property
    def test(self) -> bool:
        return True

    def _id(self, prefix: str, reference: str) -> str:
        digest = hmac.new(self.webhook_secret, reference.encode(), hashlib.sha256).hexdigest()
        return f"{prefix}_{digest[:16]}"

    async def authorize(
        self, reference: str, amount_cents: int, currency: str, card: Card
    ) -> ProviderAnswer:
        self.calls += 1
        number = card.number
        if number in (DECLINED, LATE_DECLINED):
            answer = _failed("card_declined")
        elif number == INSUFFICIENT_FUNDS:
            answer = _failed("insufficient_funds")
        elif number in (SUCCEEDS, CAPTURE_FAILS, LATE_SUCCEEDS):
            kind = "x" if number == CAPTURE_FAILS else "s"
            token = self._id("", reference).removeprefix("_")
            answer = ProviderAnswer(
                AnswerStatus.SUCCEEDED, f"auth_{kind}{amount_cents}{currency}_{token}"
            )
        else:
            answer = _failed("not_a_test_card")
        if number in (LATE_SUCCEEDS, LATE_DECLINED):
            self._answer_late("authorization", reference, answer, amount_cents, currency)
            return ProviderAnswer(AnswerStatus.PENDING, answer.provider_ref)
        return answer

    async def capture(
        self, reference: str, authorization_id: str, amount_cents: int, currency: str
    ) -> ProviderAnswer:
        self.calls += 1
        held = AUTHORIZATION.fullmatch(authorization_id)
        if held is None:
            return _failed("unknown_authorization")
        kind, authorized, authorized_currency, _ = held.groups()
        if kind == "x":
            return _failed("capture_declined")
        if amount_cents > int(authorized) or currency != authorized_currency:
            return _failed("more_than_authorized")
        return ProviderAnswer(AnswerStatus.SUCCEEDED, self._id("cap", reference))

    async def cancel(self, reference: str, authorization_id: str) -> ProviderAnswer:
        self.calls += 1
        if AUTHORIZATION.fullmatch(authorization_id) is None:
            return _failed("unknown_authorization")
        return ProviderAnswer(AnswerStatus.SUCCEEDED, self._id("can", reference))

    async def refund(
        self, reference: str, authorization_id: str, amount_cents: int, currency: str
    ) -> ProviderAnswer:
        self.calls += 1
        held = AUTHORIZATION.fullmatch(authorization_id)
        if held is None:
            return _failed("unknown_authorization")
        if amount_cents > int(held.group(2)) or currency != held.group(3):
            return _failed("more_than_captured")
        return ProviderAnswer(AnswerStatus.SUCCEEDED, self._id("re", reference))

    async def payout(
        self, reference: str, merchant_id: str, amount_cents: int, currency: str
    ) -> ProviderAnswer:
        self.calls += 1
        return ProviderAnswer(AnswerStatus.SUCCEEDED, self._id("po", reference))

    # Late answers, as signed webhooks

    def _answer_late(
        self,
        operation: str,
        reference: str,
        answer: ProviderAnswer,
        amount_cents: int,
        currency: str,
    ) -> None:
        if self.deliver is None or len(self._late) >= LATE_ANSWERS_MAX:
            log.warning("test provider: no room to answer %s %s late", operation, reference)
            return
        outcome = "succeeded" if answer.status is AnswerStatus.SUCCEEDED else "failed"
        event = WebhookEvent(
            id=f"evt_{secrets.token_hex(8)}",
            type=f"{operation}.{outcome}",
            reference=reference,
            provider_ref=answer.provider_ref or f"none_{secrets.token_hex(4)}",
            amount_cents=amount_cents,
            currency=currency,
            created_ms=self.clock_ms(),
            reason=answer.reason,
        )
        task = asyncio.get_running_loop().create_task(self._send_later(event))
        self._late.add(task)
        task.add_done_callback(self._late.discard)

    async def _send_later(self, event: WebhookEvent) -> None:
        await asyncio.sleep(self.late_answer_ms / 1000)
        body = encode_event(event)
        assert self.deliver is not None
        try:
            await self.deliver(body, signature_header(self.webhook_secret, body, self.clock_ms()))
        except Exception:
            log.exception("test provider: delivering webhook %s failed", event.id)

    async def close(self) -> None:
        for task in list(self._late):
            task.cancel()
        for task in list(self._late):
            with contextlib.suppress(asyncio.CancelledError):
                await task
