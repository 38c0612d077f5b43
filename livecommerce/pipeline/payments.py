"""The payment provider beside the order pipeline: the calls the escrow asks for, and the
provider's webhooks.

- `ProviderCaller` makes the calls the core's escrow asks for (`ProviderCall` events:
  capture at shipping, cancel, refund, payout), only once the entries that asked are
  durable, and hands each answer back to the core as a `ProviderResult` command. A
  pending answer waits for the provider's webhook. Every call names the escrow's own
  reference, the provider's idempotency key, so asking twice is harmless: what the core
  still waits for (`EscrowBook.outstanding_calls`) is asked again at every start and every
  `RESEND_INTERVAL_S`, and the core takes each result once.
- `Webhooks` checks a webhook's signature (payments/webhooks.py) and turns it into the
  same commands: a late authorization finishes its payment (`PayOrder`), other results
  become `ProviderResult`s. An authorization that comes too late (the hold expired) or
  for an order another payment paid is cancelled at the provider.

Limits: at most `CALLS_IN_FLIGHT_MAX` calls at once and `CALLS_QUEUED_MAX` waiting (the
rest are asked again by the next resend); at most `PENDING_PAYMENTS_MAX` late
authorizations remembered with their shipping commitment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from livecommerce.commerce.core import Command
from livecommerce.commerce.escrow import ProviderCall, ProviderResult
from livecommerce.commerce.orders import PayOrder
from livecommerce.payments.provider import AnswerStatus, PaymentProvider, ProviderAnswer
from livecommerce.payments.webhooks import WebhookEvent, WebhookRefused, verify_webhook

log = logging.getLogger("livecommerce.payments")

CALLS_IN_FLIGHT_MAX: Final = 64
CALLS_QUEUED_MAX: Final = 100_000
RESEND_INTERVAL_S: Final = 60.0
PENDING_PAYMENTS_MAX: Final = 100_000
RETRY_DELAY_S: Final = (0.5, 2.0, 8.0)

Submit = Callable[[Command, bytes | None], Awaitable[tuple[str, str] | None]]
"""Runs a command on the core that owns the escrow; (reason, detail) if it was refused."""


class ProviderCaller:
    def __init__(
        self,
        provider: PaymentProvider,
        submit: Submit,
        outstanding: Callable[[], list[ProviderCall]],
    ) -> None:
        self.provider = provider
        self.submit = submit
        self.outstanding = outstanding
        self._queue: deque[ProviderCall] = deque()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.calls_made = 0

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._calls_forever(), name=f"provider-calls-{number}")
            for number in range(CALLS_IN_FLIGHT_MAX)
        ]
        self._tasks.append(asyncio.create_task(self._resend_forever(), name="provider-resend"))
        self.call_soon(self.outstanding())

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def call_soon(self, calls: list[ProviderCall]) -> None:
        for call in calls:
            if len(self._queue) >= CALLS_QUEUED_MAX:
                log.warning("provider calls queue full; the resend asks the rest again")
                break
            self._queue.append(call)
        if self._queue:
            self._wake.set()

    async def _resend_forever(self) -> None:
        while True:
            await asyncio.sleep(RESEND_INTERVAL_S)
            self.call_soon(self.outstanding())

    async def _calls_forever(self) -> None:
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            call = self._queue.popleft()
            try:
                await self._call(call)
            except Exception:
                log.exception("provider call %s %s failed", call.operation, call.reference)

    async def _call(self, call: ProviderCall) -> None:
        answer: ProviderAnswer | None = None
        for delay_s in (0.0, *RETRY_DELAY_S):
            await asyncio.sleep(delay_s)
            try:
                answer = await self._ask(call)
                break
            except (OSError, TimeoutError) as error:  # the provider cannot be reached
                log.warning("provider %s %s: %r; retrying", call.operation, call.reference, error)
        self.calls_made += 1
        if answer is None or answer.status is AnswerStatus.PENDING or call.operation == "cancel":
            return  # a webhook follows, or the resend asks again; a cancel needs no answer
        refused = await self.submit(
            ProviderResult(
                call.operation,
                call.reference,
                answer.status is AnswerStatus.SUCCEEDED,
                self.provider.name,
                answer.provider_ref or f"none_{call.operation}",
                answer.reason,
            ),
            None,
        )
        if refused is not None:
            log.info("provider result for %s not taken: %s", call.reference, refused[1])

    async def _ask(self, call: ProviderCall) -> ProviderAnswer:
        provider = self.provider
        if call.operation == "capture":
            return await provider.capture(
                call.reference, call.authorization_id, call.amount_cents, call.currency
            )
        if call.operation == "cancel":
            return await provider.cancel(call.reference, call.authorization_id)
        if call.operation == "refund":
            return await provider.refund(
                call.reference, call.authorization_id, call.amount_cents, call.currency
            )
        assert call.operation == "payout", call.operation
        return await provider.payout(
            call.reference, call.merchant_id, call.amount_cents, call.currency
        )


@dataclass(frozen=True, slots=True)
class PendingPayment:
    """A payment whose authorization answers later: what its `PayOrder` needs then."""

    buyer_id: str
    order_id: str
    commitment: str
    sealed: bytes | None


def payment_reference(buyer_id: str, order_id: str, attempt: str) -> str:
    return f"pay:{buyer_id}/{order_id}:{attempt}"


def order_of_payment(reference: str) -> tuple[str, str] | None:
    """(buyer_id, order_id) of a payment reference, or None."""
    kind, colon, rest = reference.partition(":")
    ref, _, attempt = rest.rpartition(":")
    buyer_id, slash, order_id = ref.rpartition("/")
    if kind != "pay" or not colon or not slash or not attempt:
        return None
    return buyer_id, order_id


class Webhooks:
    """The provider's signed webhooks, on any process that takes the HTTP request."""

    def __init__(
        self,
        provider: PaymentProvider,
        secret: bytes,
        submit: Submit,
        clock_ms: Callable[[], int],
    ) -> None:
        self.provider = provider
        self.secret = secret
        self.submit = submit
        self.clock_ms = clock_ms
        self.pending: OrderedDict[str, PendingPayment] = OrderedDict()
        self._cancels: set[asyncio.Task[None]] = set()
        self.received = 0

    def remember(self, reference: str, payment: PendingPayment) -> None:
        self.pending[reference] = payment
        while len(self.pending) > PENDING_PAYMENTS_MAX:
            self.pending.popitem(last=False)  # its late answer pays without the commitment

    async def receive(self, body: bytes, signature: str) -> WebhookEvent:
        """Act on one webhook (WebhookRefused: not signed, too old, malformed)."""
        event = verify_webhook(self.secret, body, signature, self.clock_ms())
        self.received += 1
        if event.operation == "authorization":
            await self._authorized(event)
        elif event.operation in ("capture", "refund", "payout"):
            await self.submit(
                ProviderResult(
                    event.operation, event.reference, event.succeeded, self.provider.name,
                    event.provider_ref, event.reason,
                ),
                None,
            )  # fmt: skip
        return event

    async def _authorized(self, event: WebhookEvent) -> None:
        pending = self.pending.pop(event.reference, None)
        if not event.succeeded:
            return  # declined: the order stays held; the buyer may pay again
        order = order_of_payment(event.reference)
        if order is None:
            raise WebhookRefused(f"{event.reference!r} is not a payment of this platform")
        buyer_id, order_id = order
        commitment = pending.commitment if pending else ""
        sealed = pending.sealed if pending else None
        refused = await self.submit(
            PayOrder(buyer_id, order_id, commitment, self.provider.name, event.provider_ref),
            sealed,
        )
        if refused is not None:  # the hold expired meanwhile, or another payment paid
            log.info("late authorization for %s refused (%s): cancelled", order_id, refused[0])
            self.cancel_soon(event.reference, event.provider_ref)

    def cancel_soon(self, reference: str, authorization_id: str) -> None:
        """Release an authorization nothing will capture (at the provider, in the
        background; an authorization left alone lapses by itself too)."""

        async def cancel() -> None:
            with contextlib.suppress(Exception):
                await self.provider.cancel(f"cancel:{reference}", authorization_id)

        task = asyncio.get_running_loop().create_task(cancel())
        self._cancels.add(task)
        task.add_done_callback(self._cancels.discard)
