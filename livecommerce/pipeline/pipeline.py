"""The one order pipeline: orders and commands in, durable answers out.

    submit (room socket, HTTP) --> bounded queue --> signature checks (optional child)
        --> pump: a batch at a time --> stock part: the core takes stock
        --> ledger part: the batch made durable --> each job answered, receipts later

Two parts differ between the ways the server runs (docs/architecture.md):

| part   | embedded (pipeline/local.py)              | scaled out (pipeline/scaled.py)          |
|--------|-------------------------------------------|------------------------------------------|
| stock  | the core's own counts, in this turn       | one Redis script per order, pipelined    |
| ledger | this process's ledger: group commit       | the ledger writer, over Redis streams    |

Everything else is here, once: the queue and its limits, the signature checks ahead of
the core, batching, the clock's ticks, payments (sealing shipping details, then the
payment command), and what the endpoints ask of the pipeline.

No task per order or per batch where the parts are in this process: the pump runs at the
end of the turn that queued work (at once for orders checked in the signature child) and
again when a part has room; the local ledger answers in the very turn it learns a batch
is durable (docs/benchmarks.md has what each hop through a task cost).

Limits: `order_queue_max` jobs wait (then "busy"), a batch is at most `order_batch_max`
jobs, and a part says when it has room for another batch (`ledger_batches_in_flight_max`
batches with the disk, or with Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import logging
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from livecommerce import protocol as m
from livecommerce.commerce.core import Command, CommerceCore
from livecommerce.commerce.escrow import ProviderCall
from livecommerce.commerce.events import Event
from livecommerce.commerce.identity import Challenge, SessionAuthority, SessionGranted
from livecommerce.commerce.operating import Period, Scope
from livecommerce.commerce.orders import PayOrder, PlaceOrder, SignatureCheck
from livecommerce.commerce.privacy import seal_shipping
from livecommerce.commerce.recommend import Signal
from livecommerce.commerce.results import Reason, Rejected
from livecommerce.commerce.sales import Sale
from livecommerce.payments.provider import (
    AnswerStatus,
    Card,
    CardError,
    PaymentProvider,
    check_card,
)
from livecommerce.payments.sandbox import SUCCEEDS
from livecommerce.payments.webhooks import WebhookRefused
from livecommerce.pipeline.answers import BUSY, UNAVAILABLE, refused_order, refused_payment
from livecommerce.pipeline.payments import (
    PendingPayment,
    ProviderCaller,
    Webhooks,
    payment_reference,
)
from livecommerce.pipeline.verifying import SignatureVerifier

log = logging.getLogger("livecommerce.orders")

OrderKey = tuple[str, str]  # (buyer_id, order_id)
SendReceipt = Callable[[m.OrderReceipt], None]
Reply = Callable[[m.OrderResult], None]
# A checkpoint covers a second of orders at once. Their receipts go out a turn at a time
# with a pause after each, so a burst of thousands does not hold the event loop (and every
# buyer's screen) for tens of milliseconds: 32 per 2 ms is still over 10,000 a second.
RECEIPTS_PER_TURN_MAX = 32
RECEIPT_TURN_PAUSE_S = 0.002
SHUTTING_DOWN = "the server is shutting down"
# What a payment without card details uses, with the test provider only.
TEST_CARD = Card(SUCCEEDS, 12, 2099, "123")


@dataclass(frozen=True)
class OrderLimits:
    order_queue_max: int = 20_000
    order_batch_max: int = 256
    ledger_batches_in_flight_max: int = 8
    receipts_pending_max: int = 200_000
    tick_interval_ms: int = 100
    closed_sale_forget_ms: int = 3_600_000

    def __post_init__(self) -> None:
        assert self.order_queue_max > 0
        assert 0 < self.order_batch_max <= 2_000  # keeps a batch's entries under 8,192
        assert self.ledger_batches_in_flight_max > 0
        assert self.receipts_pending_max > 0
        assert self.tick_interval_ms > 0
        assert self.closed_sale_forget_ms > 0


@dataclass(frozen=True)
class CommandOutcome:
    """What a command did, once durable: refused (reason, detail), or the ledger index of
    each event it recorded, by event kind ("Registered", "SaleScheduled"...). In this
    process the events themselves come along; from the Redis ledger writer, only this.

    The refusal is the event the command made that records nothing and carries a reason
    (`CommandRejected`, `PaymentRefused`, a refused step): the writer tells it so too."""

    rejection: tuple[str, str] | None
    recorded: list[tuple[str, int]]
    events: list[Event] = field(default_factory=list)

    @classmethod
    def of(cls, events: list[Event], indexes: list[int | None]) -> CommandOutcome:
        rejection = None
        recorded = []
        for event, index in zip(events, indexes, strict=True):
            if index is not None:
                recorded.append((type(event).__name__, index))
            else:
                refusal = refusal_of(event)
                if refusal is not None:
                    rejection = refusal
        return cls(rejection, recorded, events)

    def index_of(self, kind: str) -> int | None:
        for name, index in self.recorded:
            if name == kind:
                return index
        return None


def refusal_of(event: Event) -> tuple[str, str] | None:
    """(reason, detail) of an event that refuses what was asked (and records nothing)."""
    reason = getattr(event, "reason", None)
    detail = getattr(event, "detail", None)
    if reason is None or not isinstance(detail, str) or event.to_entry() is not None:
        return None
    return str(reason), detail


class ServiceUnavailable(RuntimeError):
    """Not done: the pipeline is stopped (a ledger failure, shutdown), busy, or a part
    cannot be reached. Retry later with the same ids."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def stopped_by_ledger(failure: str) -> str:
    """What buyers and health checks hear once the ledger failed: the core may hold what
    the ledger lost, so nothing more is taken until a restart rebuilds it from the ledger."""
    return f"{failure}: orders are stopped until the server restarts; retry later"


def checkpoint_size(note: bytes) -> int:
    """The tree size of a signed checkpoint note (c2sp.org/tlog-checkpoint: origin line,
    then the size in decimal)."""
    return int(note.split(b"\n", 2)[1])


# Jobs: what waits in the queue, and who hears the answer


class Job:
    """A command waiting for the pump (None: a clock tick), answered by `done` once its
    entries are durable, or `failed` if it cannot be taken."""

    __slots__ = ("check", "command", "forgotten", "sealed")

    def __init__(self, command: Command | None, sealed: bytes | None = None) -> None:
        self.command = command
        self.check: SignatureCheck | None = None  # an order's, when checked ahead
        self.sealed = sealed  # a payment's sealed shipping details, for the writer
        self.forgotten: list[OrderKey] = []  # a tick's: orders of closed sales dropped

    def done(self, outcome: CommandOutcome) -> None:
        raise NotImplementedError

    def failed(self, reason: str, detail: str) -> None:
        raise NotImplementedError


class CommandJob(Job):
    __slots__ = ("future",)

    def __init__(self, command: Command | None, sealed: bytes | None = None) -> None:
        super().__init__(command, sealed)
        self.future: asyncio.Future[CommandOutcome] = asyncio.get_running_loop().create_future()

    def done(self, outcome: CommandOutcome) -> None:
        if not self.future.done():
            self.future.set_result(outcome)

    def failed(self, reason: str, detail: str) -> None:
        if not self.future.done():
            self.future.set_exception(ServiceUnavailable(reason, detail))


class TickJob(Job):
    """A clock tick: sales open and close, holds expire, closed sales are forgotten (the
    ledger part drops their indexes when it answers the tick, after every earlier answer:
    a repeat of one of them may be among those)."""

    __slots__ = ("pipeline",)

    def __init__(self, pipeline: OrderPipeline) -> None:
        super().__init__(None)
        self.pipeline = pipeline

    def done(self, outcome: CommandOutcome) -> None:
        self.pipeline._tick_queued = False

    def failed(self, reason: str, detail: str) -> None:
        self.pipeline._tick_queued = False


class OrderJob(Job):
    """An order: its answer goes to `reply`, its receipt to `receipt` once a checkpoint
    covers it. The ledger part answers it with `answer` (methods, not closures per order)."""

    __slots__ = ("pipeline", "receipt", "reply")

    def __init__(
        self,
        pipeline: OrderPipeline,
        command: PlaceOrder,
        reply: Reply,
        receipt: SendReceipt | None,
    ) -> None:
        super().__init__(command)
        self.pipeline = pipeline
        self.reply = reply
        self.receipt = receipt

    @property
    def order(self) -> PlaceOrder:
        assert isinstance(self.command, PlaceOrder)
        return self.command

    def answer(self, result: m.OrderResult) -> None:
        if result.status == "accepted":
            self.pipeline.orders_accepted += not result.repeated
        else:
            self.pipeline.orders_rejected += 1
        self.reply(result)

    def done(self, outcome: CommandOutcome) -> None:
        raise AssertionError("orders are answered with `answer`")

    def failed(self, reason: str, detail: str) -> None:
        order = self.order
        self.reply(refused_order(order.order_id, order.sale_id, reason, detail))


Placed = list[tuple[Job, list[Event]]]  # jobs with the events the core made for them


@dataclass(frozen=True, slots=True)
class AcceptedView:
    """An accepted order, as a payment needs it."""

    sale_id: str
    amount_cents: int
    currency: str


# The parts


Wake = Callable[[], None]
Fail = Callable[[str], None]


class StockPart(Protocol):
    """Where orders take stock: the core's own counts, or Redis."""

    def attach(self, wake: Wake) -> None:
        """`wake()` when there is room again for a batch held back."""
        ...

    def room(self) -> bool:
        """Whether another batch may be placed now."""
        ...

    def place(self, batch: list[Job], now_ms: int, then: Callable[[Placed], None]) -> None:
        """Take the batch through the core (and the store); `then` gets the jobs placed
        (those that failed in the store are answered and left out), in order."""
        ...

    async def units_remaining(self, sale: Sale) -> int: ...

    async def close(self) -> None: ...


class LedgerPart(Protocol):
    """Where placed jobs become durable and are answered."""

    def attach(self, wake: Wake, fail: Fail) -> None:
        """`wake()` when there is room again; `fail(reason)` once it fails for good."""
        ...

    def attach_calls(self, calls: Callable[[list[ProviderCall]], None]) -> None:
        """Where the escrow's provider calls go once durable (where the core owns the
        escrow; scaled out the ledger writer makes them)."""
        ...

    @property
    def runs_clock(self) -> bool:
        """Whether this process's core runs the clock (ticks go through the pipeline)."""
        ...

    @property
    def failure(self) -> str | None:
        """Why this process is broken and takes nothing more (for health checks)."""
        ...

    def refusal(self) -> str | None:
        """Why new work is refused now (a failure, or the writer away), or None."""
        ...

    def waiting(self) -> int:
        """Jobs placed but not answered yet, against the queue's limit."""
        ...

    def room(self) -> bool: ...

    def record(self, placed: Placed) -> None:
        """Make the placed jobs durable and answer each (`done`, `answer` or `failed`)."""
        ...

    async def start(self) -> None: ...

    async def close(self, reason: str) -> None:
        """Let what is with the ledger finish (bounded), refuse the rest with `reason`."""
        ...

    async def accepted_order(self, buyer_id: str, order_id: str) -> AcceptedView | None:
        """What a payment needs of an accepted order (None: no such accepted order)."""
        ...

    async def keep_sealed(self, buyer_id: str, order_id: str, sealed: bytes) -> None:
        """Before a payment: its sealed shipping details, off the ledger. Raises
        ServiceUnavailable (nothing stored) when that cannot be done now."""
        ...

    async def paid_index(self, buyer_id: str, order_id: str) -> int | None: ...

    async def receipt(self, buyer_id: str, order_id: str, timeout_s: float) -> bytes | None:
        """The order's tlog-proof, waiting up to `timeout_s` for a checkpoint. None: no
        such accepted order. TimeoutError: not covered yet."""
        ...

    async def merchant_orders(
        self, merchant_id: str, sale_id: str | None, limit: int
    ) -> list[dict[str, Any]]: ...

    async def order_life(self, buyer_id: str, order_id: str) -> dict[str, Any] | None:
        """An accepted order's life after the sale, with its timeline (views.py)."""
        ...

    async def merchant_money(self, merchant_id: str) -> dict[str, Any]: ...

    async def recommendations(
        self, room_id: str, buyer_id: str, beside: str, count: int, now_ms: int
    ) -> dict[str, Any]:
        """recommend.py's two lists for a viewer of the room (views.py)."""
        ...

    async def seen(
        self, signal: Signal, room_id: str, product_id: str, buyer_id: str, now_ms: int
    ) -> None:
        """A view or click, for recommend.py (not on the ledger)."""
        ...

    async def operating(
        self, scope: Scope, scope_id: str, period: Period, from_ms: int, to_ms: int
    ) -> dict[int, dict[str, int]]:
        """The ledger's operating counters (operating.py): bucket start -> counts."""
        ...

    async def statement(
        self, merchant_id: str, from_ms: int, to_ms: int
    ) -> list[dict[str, Any]]: ...

    async def product_reviews(self, product_id: str, limit: int) -> dict[str, Any]:
        """A product's rating and newest reviews, each with its ledger indexes and the
        indexes of its order's paid and received entries (pipeline/reviews.py)."""
        ...

    async def auctions(self, what: str, key: str, now_ms: int) -> dict[str, Any] | None:
        """Auctions (pipeline/auctions.py): `what` "auction" (one) or "room" (a room's
        newest); None when there is none."""
        ...

    async def groups(self, what: str, key: str, now_ms: int) -> dict[str, Any] | None:
        """Group buying (pipeline/groups.py): `what` "sale" (a sale's offer and groups)
        or "group" (one group with its offer); None when there is none."""
        ...


class Challenges(Protocol):
    """Session challenges: in this process, or in Redis (any process takes the answer)."""

    async def issue_challenge(self, now_ms: int) -> Challenge | Rejected: ...

    async def open_session(
        self, challenge: str, public_key: str, signature: str, now_ms: int
    ) -> SessionGranted | Rejected: ...


# The pipeline


class OrderPipeline:
    def __init__(
        self,
        core: CommerceCore,
        stock: StockPart,
        ledger: LedgerPart,
        challenges: Challenges,
        sessions: SessionAuthority,
        clock_ms: Callable[[], int],
        limits: OrderLimits | None = None,
        verifier: SignatureVerifier | None = None,
        provider: PaymentProvider | None = None,
        webhook_secret: bytes = b"",
    ) -> None:
        # The core this process reads from (embedded: the owner; scaled out: a replica
        # that follows the writer's feed). Endpoints only read it.
        self.core = core
        self.stock = stock
        self.ledger = ledger
        self.challenges = challenges
        self.sessions = sessions
        self.clock_ms = clock_ms
        self.limits = limits or OrderLimits()
        # Where order signatures are checked ahead of the core (None: in the core).
        self.verifier = verifier
        self._jobs: deque[Job] = deque()
        self._pump_due = False
        # Orders waiting for the verifier (then they join `_jobs`, checked).
        self._unchecked: deque[Job] = deque()
        self._unchecked_flush_due = False
        self._failure: str | None = None  # shutdown, or a part's failure
        self._tick_queued = False
        self._tasks: list[asyncio.Task[None]] = []
        self.orders_accepted = 0
        self.orders_rejected = 0
        stock.attach(self.pump_soon)
        ledger.attach(self.pump_soon, self.fail)
        # The payment provider: authorizations here; its webhooks reach any process; the
        # calls the escrow asks for are made where the core that owns the escrow is.
        self.provider = provider
        self.webhooks = (
            Webhooks(provider, webhook_secret, self._submit, clock_ms) if provider else None
        )
        self.caller = (
            ProviderCaller(provider, self._submit, core.escrow.outstanding_calls)
            if provider is not None and ledger.runs_clock
            else None
        )
        if self.caller is not None:
            ledger.attach_calls(self.caller.call_soon)

    # Life cycle

    async def start(self) -> None:
        await self.ledger.start()
        if self.verifier is not None:
            await self.verifier.start()
        if self.caller is not None:
            await self.caller.start()  # after the replay: it asks what is outstanding
        if self.ledger.runs_clock:
            self._tasks.append(asyncio.create_task(self._tick_forever(), name="orders-ticker"))

    async def close(self) -> None:
        """Stop taking work; what the parts hold finishes (bounded), the rest is refused."""
        if self._failure is None:
            self._failure = SHUTTING_DOWN
        while self._unchecked:
            self._unchecked.popleft().failed(UNAVAILABLE, self._failure)
        if self.verifier is not None:
            # Orders with the child are checked here now, then answered "unavailable".
            await self.verifier.close()
        while self._jobs:
            self._jobs.popleft().failed(UNAVAILABLE, self._failure)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.caller is not None:
            await self.caller.close()
        await self.ledger.close(self._failure)
        await self.stock.close()

    @property
    def failed(self) -> str | None:
        """Why orders are not taken (a ledger failure, or shutdown), or None while they
        are (docs/operations.md, `/healthz`)."""
        return self._failure or self.ledger.failure

    def fail(self, reason: str) -> None:
        """A part failed for good: refuse everything queued, and all that comes."""
        if self._failure is None or self._failure == SHUTTING_DOWN:
            log.error("order service stopped: %s", reason)
        self._failure = reason
        while self._jobs:
            self._jobs.popleft().failed(UNAVAILABLE, reason)
        while self._unchecked:
            self._unchecked.popleft().failed(UNAVAILABLE, reason)

    def _refusal(self) -> str | None:
        return self._failure or self.ledger.refusal()

    # Submitting work

    def _enqueue(self, job: Job) -> None:
        refusal = self._refusal()
        if refusal is not None:
            job.failed(UNAVAILABLE, refusal)
            return
        queued = len(self._jobs) + len(self._unchecked) + self.ledger.waiting()
        if job.command is not None and queued >= self.limits.order_queue_max:
            job.failed(BUSY, "the server is busy; retry with the same order_id")
            return
        if self.verifier is not None and isinstance(job.command, PlaceOrder):
            self._unchecked.append(job)
            self._send_unchecked_soon()
            return
        self._jobs.append(job)
        self.pump_soon()

    async def run(self, command: Command, sealed: bytes | None = None) -> CommandOutcome:
        """Run a command and wait until its entries are durable (ServiceUnavailable if it
        cannot be taken). `sealed`: a payment's sealed shipping details."""
        job = CommandJob(command, sealed)
        self._enqueue(job)
        return await job.future

    def submit_order(
        self, command: PlaceOrder, reply: Reply, receipt: SendReceipt | None = None
    ) -> None:
        """An order from a socket: `reply` gets the answer; `receipt` the receipt later."""
        self._enqueue(OrderJob(self, command, reply, receipt))

    async def place_order(self, command: PlaceOrder) -> m.OrderResult:
        future: asyncio.Future[m.OrderResult] = asyncio.get_running_loop().create_future()

        def reply(result: m.OrderResult) -> None:
            if not future.done():
                future.set_result(result)

        self.submit_order(command, reply)
        return await future

    # Sessions

    async def issue_challenge(self, now_ms: int) -> Challenge | Rejected:
        return await self.challenges.issue_challenge(now_ms)

    async def open_session(
        self, challenge: str, public_key: str, signature: str, now_ms: int
    ) -> SessionGranted | Rejected:
        return await self.challenges.open_session(challenge, public_key, signature, now_ms)

    # Payment

    async def pay(
        self,
        buyer_id: str,
        order_id: str,
        shipping: dict[str, str] | None,
        card: Card | None = None,
    ) -> m.PayResult:
        """The provider authorizes the amount on the buyer's card, then the payment goes
        on the ledger, its money held in escrow (escrow.py). Before the card is asked, the
        sealed shipping details are kept off-ledger (their commitment goes with the
        payment). Refused at once while the pipeline is stopped, for a card that cannot be
        one, and when the details cannot be kept (nothing changed then). A card whose
        bank answers later gets `pending`: the webhook finishes the payment (payments.py).
        Without `card`, the test provider takes its card that succeeds."""
        refusal = self._refusal()
        if refusal is not None:
            return refused_payment(order_id, UNAVAILABLE, refusal)
        if self.provider is None or self.webhooks is None:
            return refused_payment(order_id, UNAVAILABLE, "no payment provider is set up")
        if card is None:
            if not self.provider.test:
                return refused_payment(order_id, Reason.BAD_FIELD, "card details are needed")
            card = TEST_CARD
        now = datetime.datetime.fromtimestamp(self.clock_ms() / 1000, datetime.UTC)
        try:
            check_card(card, now.year, now.month)
        except CardError as error:
            return refused_payment(order_id, Reason.BAD_FIELD, str(error))
        try:
            accepted = await self.ledger.accepted_order(buyer_id, order_id)
        except ServiceUnavailable as problem:
            return refused_payment(order_id, problem.reason, problem.detail)
        if accepted is None:
            return refused_payment(order_id, Reason.UNKNOWN_ORDER, "no such accepted order")
        try:  # a retried payment answers as the first did, and asks no card again
            paid_before = await self.ledger.paid_index(buyer_id, order_id)
        except ServiceUnavailable as problem:
            return refused_payment(order_id, problem.reason, problem.detail)
        if paid_before is not None:
            return m.PayResult(order_id=order_id, status="paid", ledger_index=paid_before)
        commitment, box = "", None
        if shipping:
            sale = self.core.sales.get(accepted.sale_id)
            if sale is None:
                return refused_payment(order_id, UNAVAILABLE, "sale not known here yet; retry")
            sealed = seal_shipping(shipping, sale.spec.merchant_id)
            if isinstance(sealed, Rejected):
                return refused_payment(order_id, sealed.reason, sealed.detail)
            try:
                await self.ledger.keep_sealed(buyer_id, order_id, sealed.sealed)
            except ServiceUnavailable as problem:
                return refused_payment(order_id, problem.reason, problem.detail)
            commitment, box = sealed.commitment_hex, sealed.sealed
        reference = payment_reference(buyer_id, order_id, secrets.token_hex(6))
        try:
            answer = await self.provider.authorize(
                reference, accepted.amount_cents, accepted.currency, card
            )
        except (OSError, TimeoutError) as error:
            return refused_payment(order_id, UNAVAILABLE, f"the payment provider: {error}")
        if answer.status is AnswerStatus.FAILED:
            return refused_payment(order_id, Reason.PAYMENT_DECLINED, answer.reason)
        if answer.status is AnswerStatus.PENDING:
            self.webhooks.remember(reference, PendingPayment(buyer_id, order_id, commitment, box))
            return m.PayResult(
                order_id=order_id,
                status="pending",
                detail="the card's bank answers later; the order stays held meanwhile",
            )
        command = PayOrder(buyer_id, order_id, commitment, self.provider.name, answer.provider_ref)
        try:
            outcome = await self.run(command, box)
        except ServiceUnavailable as problem:
            self.webhooks.cancel_soon(reference, answer.provider_ref)
            return refused_payment(order_id, problem.reason, problem.detail)
        if outcome.rejection is not None:
            self.webhooks.cancel_soon(reference, answer.provider_ref)
            return refused_payment(order_id, *outcome.rejection)
        paid = outcome.index_of("OrderPaid")
        if paid is None:  # paid before: the first payment's entry
            paid = await self.ledger.paid_index(buyer_id, order_id)
        return m.PayResult(
            order_id=order_id, status="paid", ledger_index=-1 if paid is None else paid
        )

    async def _submit(self, command: Command, sealed: bytes | None) -> tuple[str, str] | None:
        """For the provider's side: run a command; its refusal, or None."""
        try:
            return (await self.run(command, sealed)).rejection
        except ServiceUnavailable as problem:
            return problem.reason, problem.detail

    async def webhook(self, body: bytes, signature: str) -> None:
        """A webhook from the provider (WebhookRefused: not one to act on)."""
        if self.webhooks is None:
            raise WebhookRefused("no payment provider is set up")
        await self.webhooks.receive(body, signature)

    # Reads the endpoints make

    async def units_remaining(self, sale: Sale) -> int:
        return await self.stock.units_remaining(sale)

    async def receipt(self, buyer_id: str, order_id: str, timeout_s: float) -> bytes | None:
        return await self.ledger.receipt(buyer_id, order_id, timeout_s)

    async def merchant_orders(
        self, merchant_id: str, sale_id: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """The merchant's accepted orders (oldest first), each with its sealed shipping
        details (base64url, only the merchant's key opens them) once paid."""
        return await self.ledger.merchant_orders(merchant_id, sale_id, limit)

    async def order_life(self, buyer_id: str, order_id: str) -> dict[str, Any] | None:
        return await self.ledger.order_life(buyer_id, order_id)

    async def merchant_money(self, merchant_id: str) -> dict[str, Any]:
        return await self.ledger.merchant_money(merchant_id)

    async def recommendations(
        self, room_id: str, buyer_id: str, beside: str, count: int
    ) -> dict[str, Any]:
        return await self.ledger.recommendations(room_id, buyer_id, beside, count, self.clock_ms())

    async def seen(self, signal: Signal, room_id: str, product_id: str, buyer_id: str) -> None:
        await self.ledger.seen(signal, room_id, product_id, buyer_id, self.clock_ms())

    async def operating(
        self, scope: Scope, scope_id: str, period: Period, from_ms: int, to_ms: int
    ) -> dict[int, dict[str, int]]:
        return await self.ledger.operating(scope, scope_id, period, from_ms, to_ms)

    async def statement(self, merchant_id: str, from_ms: int, to_ms: int) -> list[dict[str, Any]]:
        return await self.ledger.statement(merchant_id, from_ms, to_ms)

    async def product_reviews(self, product_id: str, limit: int) -> dict[str, Any]:
        return await self.ledger.product_reviews(product_id, limit)

    async def groups(self, what: str, key: str) -> dict[str, Any] | None:
        return await self.ledger.groups(what, key, self.clock_ms())

    async def auctions(self, what: str, key: str) -> dict[str, Any] | None:
        return await self.ledger.auctions(what, key, self.clock_ms())

    # The pump

    def pump_soon(self) -> None:
        """Run the pump at the end of this turn of the loop: one batch for everything the
        turn queued. (The parts call it when they have room again.)"""
        if not self._pump_due and self._jobs:
            self._pump_due = True
            asyncio.get_running_loop().call_soon(self._pump)

    def _pump(self) -> None:
        """Queued jobs to the stock part and on to the ledger part, a batch at a time,
        while both have room."""
        self._pump_due = False
        while self._jobs and self.stock.room() and self.ledger.room():
            batch: list[Job] = []
            while self._jobs and len(batch) < self.limits.order_batch_max:
                job = self._jobs.popleft()
                if self._failure is not None:
                    job.failed(UNAVAILABLE, self._failure)
                    continue
                batch.append(job)
            if batch:
                self.stock.place(batch, self.clock_ms(), self.ledger.record)

    def _send_unchecked_soon(self) -> None:
        """Send the unchecked orders at the end of this turn of the loop: one request to
        the verifier for all the orders the turn brought."""
        if not self._unchecked_flush_due:
            self._unchecked_flush_due = True
            asyncio.get_running_loop().call_soon(self._send_unchecked)

    def _send_unchecked(self) -> None:
        """Orders to the verifier, as many as it has room for (the rest wait for its
        answers to make room), a batch at a time; checked, they join `_jobs`."""
        self._unchecked_flush_due = False
        verifier = self.verifier
        assert verifier is not None
        while self._unchecked and verifier.room() > 0:
            count = min(len(self._unchecked), verifier.room(), verifier.request_orders_max)
            jobs = [self._unchecked.popleft() for _ in range(count)]
            orders = [job.command for job in jobs if isinstance(job.command, PlaceOrder)]
            assert len(orders) == len(jobs)
            verifier.submit(orders, functools.partial(self._checked, jobs))

    def _checked(self, jobs: list[Job], checks: list[SignatureCheck]) -> None:
        for job, check in zip(jobs, checks, strict=True):
            if self._failure is not None:  # stopped meanwhile
                job.failed(UNAVAILABLE, self._failure)
                continue
            job.check = check
            self._jobs.append(job)
        self._pump()
        if self._unchecked:  # they waited for room with the verifier: there is some now
            self._send_unchecked_soon()

    # Time: sales open and close, holds expire (where this process's core runs the clock)

    async def _tick_forever(self) -> None:
        interval_s = self.limits.tick_interval_ms / 1000
        while True:
            await asyncio.sleep(interval_s)
            if not self._tick_queued and self._refusal() is None:
                self._tick_queued = True
                self._enqueue(TickJob(self))
