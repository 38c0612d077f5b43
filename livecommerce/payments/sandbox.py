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
reference. Late answers arrive as signed webhooks (webhooks.py), delivered in this
process to `deliver` after `late_answer_ms`, as a real provider would POST them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
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
RECORDS_MAX: Final = 1_000_000
LATE_ANSWERS_MAX: Final = 10_000

Deliver = Callable[[bytes, str], Awaitable[None]]


@dataclass
class _Authorization:
    amount_cents: int
    currency: str
    capture_fails: bool
    captured_cents: int = 0
    refunded_cents: int = 0
    cancelled: bool = False


def _failed(reason: str) -> ProviderAnswer:
    return ProviderAnswer(AnswerStatus.FAILED, "", reason)


class TestPaymentProvider:
    """A provider in this process, named `test` on the ledger and in the pages."""

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
        self._answers: dict[tuple[str, str], ProviderAnswer] = {}  # (operation, reference)
        self._authorizations: dict[str, _Authorization] = {}
        self._late: set[asyncio.Task[None]] = set()
        self.calls = 0

    @property
    def name(self) -> str:
        return PROVIDER_NAME

    @property
    def test(self) -> bool:
        return True

    def _remember(self, operation: str, reference: str, answer: ProviderAnswer) -> ProviderAnswer:
        if len(self._answers) < RECORDS_MAX:
            self._answers[(operation, reference)] = answer
        return answer

    async def authorize(
        self, reference: str, amount_cents: int, currency: str, card: Card
    ) -> ProviderAnswer:
        self.calls += 1
        seen = self._answers.get(("authorize", reference))
        if seen is not None:
            return seen
        if len(self._authorizations) >= RECORDS_MAX:
            return _failed("capacity")
        number = card.number
        if number in (DECLINED, LATE_DECLINED):
            answer = _failed("card_declined")
        elif number == INSUFFICIENT_FUNDS:
            answer = _failed("insufficient_funds")
        elif number in (SUCCEEDS, CAPTURE_FAILS, LATE_SUCCEEDS):
            authorization_id = f"auth_{secrets.token_hex(8)}"
            self._authorizations[authorization_id] = _Authorization(
                amount_cents, currency, capture_fails=number == CAPTURE_FAILS
            )
            answer = ProviderAnswer(AnswerStatus.SUCCEEDED, authorization_id)
        else:
            answer = _failed("not_a_test_card")
        if number in (LATE_SUCCEEDS, LATE_DECLINED):
            self._answer_late("authorization", reference, answer, amount_cents, currency)
            answer = ProviderAnswer(AnswerStatus.PENDING, answer.provider_ref)
        return self._remember("authorize", reference, answer)

    async def capture(
        self, reference: str, authorization_id: str, amount_cents: int, currency: str
    ) -> ProviderAnswer:
        self.calls += 1
        seen = self._answers.get(("capture", reference))
        if seen is not None:
            return seen
        held = self._authorizations.get(authorization_id)
        if held is None:
            answer = _failed("unknown_authorization")
        elif held.cancelled:
            answer = _failed("authorization_cancelled")
        elif held.capture_fails:
            answer = _failed("capture_declined")
        elif amount_cents > held.amount_cents or currency != held.currency:
            answer = _failed("more_than_authorized")
        else:
            held.captured_cents = amount_cents
            answer = ProviderAnswer(AnswerStatus.SUCCEEDED, f"cap_{secrets.token_hex(8)}")
        return self._remember("capture", reference, answer)

    async def cancel(self, reference: str, authorization_id: str) -> ProviderAnswer:
        self.calls += 1
        seen = self._answers.get(("cancel", reference))
        if seen is not None:
            return seen
        held = self._authorizations.get(authorization_id)
        if held is None:
            answer = _failed("unknown_authorization")
        elif held.captured_cents:
            answer = _failed("already_captured")
        else:
            held.cancelled = True
            answer = ProviderAnswer(AnswerStatus.SUCCEEDED, f"can_{secrets.token_hex(8)}")
        return self._remember("cancel", reference, answer)

    async def refund(
        self, reference: str, authorization_id: str, amount_cents: int, currency: str
    ) -> ProviderAnswer:
        self.calls += 1
        seen = self._answers.get(("refund", reference))
        if seen is not None:
            return seen
        held = self._authorizations.get(authorization_id)
        if held is None:
            answer = _failed("unknown_authorization")
        elif held.refunded_cents + amount_cents > held.captured_cents:
            answer = _failed("more_than_captured")
        else:
            held.refunded_cents += amount_cents
            answer = ProviderAnswer(AnswerStatus.SUCCEEDED, f"re_{secrets.token_hex(8)}")
        return self._remember("refund", reference, answer)

    async def payout(
        self, reference: str, merchant_id: str, amount_cents: int, currency: str
    ) -> ProviderAnswer:
        self.calls += 1
        seen = self._answers.get(("payout", reference))
        if seen is not None:
            return seen
        answer = ProviderAnswer(AnswerStatus.SUCCEEDED, f"po_{secrets.token_hex(8)}")
        return self._remember("payout", reference, answer)

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
