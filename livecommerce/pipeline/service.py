"""The embedded order path: one asyncio owner of the commerce core, the ledger behind it.

    submit (WebSocket, HTTP) --> bounded job queue --> pump: core.handle, in batches
        --> ledger.append_many_then (group commit: one fsync for many orders)
        --> answers ("accepted" with the ledger index only now), then sale events and
            stock counts to viewers, then receipts once a checkpoint covers the orders.

No task per batch and no worker task: the pump runs as soon as checked orders come back
(other jobs: at the end of the turn that queued them, or when the ledger frees room), and
the ledger calls `_committed` in the very turn it learns a batch is durable. Each hop
through a task cost a turn of the event loop, several milliseconds each when the loop is
busy (docs/benchmarks.md).

Crash ordering: the core changes in memory first, the ledger makes it durable, only then
does anyone hear of it. After a crash the core is rebuilt from the ledger (`start`), so
whatever was in memory but not durable is forgotten, and nobody was told about it.

Ordering: entries go to the ledger in the order the core made them: the pump hands each
batch to the ledger before it takes the next one, and the ledger writes batches first in,
first out. Answers go out in the same order: a batch with nothing to record (a repeat, a
refusal) waits behind the batches still with the ledger, because its answers may rest on
them: a repeat of an order whose first copy is in flight is answered with the first's
ledger index once that is durable, never before (and never "accepted" from memory alone).

Limits: `order_queue_max` jobs wait (then "busy"), a batch is at most `order_batch_max`
jobs, at most `ledger_batches_in_flight_max` batches wait for the disk, at most
`receipts_pending_max` receipts wait for a checkpoint. A ledger that fails (a write
error) stops the service: the core may hold what the ledger lost, so it takes nothing
more until a restart rebuilds it from the ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ledger.log import describe_failure
from livecommerce import protocol as m
from livecommerce.commerce.core import Command, CommandRejected, CommerceCore
from livecommerce.commerce.events import Event
from livecommerce.commerce.identity import Challenge, SessionAuthority, SessionGranted
from livecommerce.commerce.orders import (
    CheckedOrder,
    OrderAccepted,
    OrderPaid,
    OrderRepeated,
    PaymentRefused,
    PayOrder,
    PlaceOrder,
    SignatureCheck,
)
from livecommerce.commerce.privacy import seal_shipping
from livecommerce.commerce.replay import apply_entry
from livecommerce.commerce.results import Reason, Rejected
from livecommerce.commerce.sales import (
    Sale,
    SaleClosed,
    SaleOpened,
    SaleScheduled,
    StockChanged,
    superseded_stock_changes,
)
from livecommerce.pipeline.answers import (
    BUSY,
    UNAVAILABLE,
    merchant_order_view,
    order_answer,
    order_result,
    pay_answer,
    refused_order,
    refused_payment,
    sale_view,
)
from livecommerce.pipeline.forgetting import ClosedSales
from livecommerce.pipeline.shipping import ShippingFull, ShippingStore
from livecommerce.pipeline.verifying import SignatureVerifier

log = logging.getLogger("livecommerce.orders")

OrderKey = tuple[str, str]  # (buyer_id, order_id)
# A checkpoint covers a second of orders at once. Their receipts go out a turn at a time
# with a pause after each, so a burst of thousands does not hold the event loop (and every
# buyer's screen) for tens of milliseconds: 32 per 2 ms is still over 10,000 a second.
RECEIPTS_PER_TURN_MAX = 32
RECEIPT_TURN_PAUSE_S = 0.002
SendReceipt = Callable[[m.OrderReceipt], None]


class LedgerLike(Protocol):
    """What the order path needs of `ledger.Ledger` (the names the ledger promises)."""

    @property
    def size(self) -> int: ...
    @property
    def failure(self) -> str | None: ...
    def append_many_then(
        self, entries: list[bytes], then: Callable[[list[int] | BaseException], None]
    ) -> None: ...
    async def wait_covered(self, index: int) -> bytes: ...
    def proof(self, index: int) -> bytes: ...
    def proofs(self, indexes: Sequence[int]) -> list[bytes]: ...
    def entry(self, index: int) -> bytes: ...


class Viewers(Protocol):
    """What the order path needs of the hub: sale events and stock counts to viewers."""

    async def room_open(self, room_id: str) -> bool: ...
    async def publish_sale(self, room_id: str, sale: dict[str, Any]) -> int: ...
    async def set_stock(self, room_id: str, product_id: str, remaining: int) -> None: ...


EncodeEntry = Callable[[str, dict[str, object]], bytes]
DecodeEntry = Callable[[bytes], tuple[str, dict[str, Any]]]


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
    process the events themselves come along; from the Redis ledger writer, only this."""

    rejection: tuple[str, str] | None
    recorded: list[tuple[str, int]]
    events: list[Event] = field(default_factory=list)

    @classmethod
    def of(cls, events: list[Event], indexes: list[int | None]) -> CommandOutcome:
        rejection = None
        recorded = []
        for event, index in zip(events, indexes, strict=True):
            if isinstance(event, CommandRejected):
                rejection = (str(event.reason), event.detail)
            if index is not None:
                recorded.append((type(event).__name__, index))
        return cls(rejection, recorded, events)

    def index_of(self, kind: str) -> int | None:
        for name, index in self.recorded:
            if name == kind:
                return index
        return None


class ServiceUnavailable(RuntimeError):
    """The service is stopped (ledger failure or shutdown) or its queue is full."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


Done = Callable[[CommandOutcome], None]
Failed = Callable[[str, str], None]


class _Job:
    """A command waiting for the worker (None: a clock tick), answered by `done` once its
    entries are durable, or `failed` if the service cannot take it."""

    __slots__ = ("check", "command")

    def __init__(self, command: Command | None) -> None:
        self.command = command
        self.check: SignatureCheck | None = None  # an order's, when checked ahead

    def done(self, outcome: CommandOutcome) -> None:
        raise NotImplementedError

    def failed(self, reason: str, detail: str) -> None:
        raise NotImplementedError


class _TickJob(_Job):
    """A clock tick: sales open and close, holds expire, closed sales are forgotten. The
    forgotten orders' ledger indexes are dropped only when the tick is answered, after
    every earlier answer (a repeat of one of them may be among those)."""

    __slots__ = ("forgotten", "service")

    def __init__(self, service: OrderService) -> None:
        super().__init__(None)
        self.service = service
        self.forgotten: list[OrderKey] = []

    def done(self, outcome: CommandOutcome) -> None:
        service = self.service
        service._tick_queued = False
        for key in self.forgotten:
            service._index_of.pop(key, None)
            service._paid_index_of.pop(key, None)

    def failed(self, reason: str, detail: str) -> None:
        self.service._tick_queued = False


class _CommandJob(_Job):
    __slots__ = ("on_done", "on_failed")

    def __init__(self, command: Command | None, done: Done, failed: Failed) -> None:
        super().__init__(command)
        self.on_done = done
        self.on_failed = failed

    def done(self, outcome: CommandOutcome) -> None:
        self.on_done(outcome)

    def failed(self, reason: str, detail: str) -> None:
        self.on_failed(reason, detail)


class _OrderJob(_Job):
    """An order: the answer goes to `reply`, and an accepted order's receipt to `receipt`
    once a checkpoint covers it. (Methods, not two closures per order.)"""

    __slots__ = ("receipt", "reply", "service")

    def __init__(
        self,
        service: OrderService,
        command: PlaceOrder,
        reply: Callable[[m.OrderResult], None],
        receipt: SendReceipt | None,
    ) -> None:
        super().__init__(command)
        self.service = service
        self.reply = reply
        self.receipt = receipt

    def done(self, outcome: CommandOutcome) -> None:
        service = self.service
        answer = order_answer(outcome.events)
        first = answer.first if isinstance(answer, OrderRepeated) else answer
        index = None
        if isinstance(first, OrderAccepted):
            index = service._index_of[(first.buyer_id, first.order_id)]
            service.orders_accepted += not isinstance(answer, OrderRepeated)
        else:
            service.orders_rejected += 1
        self.reply(order_result(answer, index))
        if self.receipt is not None and index is not None:
            service._want_receipt(index, first.order_id, self.receipt)

    def failed(self, reason: str, detail: str) -> None:
        command = self.command
        assert isinstance(command, PlaceOrder)
        self.reply(refused_order(command.order_id, command.sale_id, reason, detail))


class _Batch:
    """Jobs the pump took through the core together, with their events, whether each
    event has a ledger entry, and (once durable) the entries' indexes."""

    __slots__ = ("indexes", "jobs", "recorded")

    def __init__(self, jobs: list[tuple[_Job, list[Event]]], recorded: list[list[bool]]) -> None:
        self.jobs = jobs
        self.recorded = recorded
        self.indexes: list[int] | None = None  # None: not durable yet


class OrderService:
    def __init__(
        self,
        core: CommerceCore,
        ledger: LedgerLike,
        viewers: Viewers,
        encode_entry: EncodeEntry,
        decode_entry: DecodeEntry,
        clock_ms: Callable[[], int],
        shipping: ShippingStore,
        sessions: SessionAuthority,
        limits: OrderLimits = OrderLimits(),
        verifier: SignatureVerifier | None = None,
    ) -> None:
        self.core = core
        # Where order signatures are checked ahead of the core (None: in the core).
        self.verifier = verifier
        self.shipping = shipping
        self.sessions = sessions
        self.ledger = ledger
        self.viewers = viewers
        self.encode_entry = encode_entry
        self.decode_entry = decode_entry
        self.clock_ms = clock_ms
        self.limits = limits
        self._jobs: deque[_Job] = deque()
        self._pump_due = False
        # Orders waiting for the verifier (then they join `_jobs`, checked).
        self._unchecked: deque[_Job] = deque()
        self._unchecked_flush_due = False
        self._batches_in_flight = 0  # with the ledger, not yet durable
        self._no_batches_in_flight = asyncio.Event()
        self._no_batches_in_flight.set()
        # Batches not answered yet, in the order the core made them: those with the
        # ledger, and those with nothing to record that wait behind them.
        self._unanswered: deque[_Batch] = deque()
        self._failure: str | None = None
        self._index_of: dict[OrderKey, int] = {}  # accepted order -> its ledger entry
        self._paid_index_of: dict[OrderKey, int] = {}
        # (ledger index, order_id, where to send its receipt), in index order.
        self._receipts: deque[tuple[int, str, SendReceipt]] = deque()
        self._receipt_wake = asyncio.Event()
        self._effects: asyncio.Queue[list[Event]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._tick_queued = False
        self._closed = ClosedSales(limits.closed_sale_forget_ms)
        self.orders_accepted = 0
        self.orders_rejected = 0
        self._shipping_failed = False  # the last shipping write failed (logged once)

    # Life cycle

    async def start(self) -> None:
        """Rebuild the core from the ledger, then start the ticker, receipts and effects."""
        await asyncio.to_thread(self._replay)
        for name, loop in (
            ("orders-ticker", self._tick_forever),
            ("orders-receipts", self._receipts_forever),
            ("orders-effects", self._effects_forever),
        ):
            self._tasks.append(asyncio.create_task(loop(), name=name))
        if self.verifier is not None:
            await self.verifier.start()

    def _replay(self) -> None:
        size = self.ledger.size
        for index in range(size):
            entry_type, fields = self.decode_entry(self.ledger.entry(index))
            apply_entry(self.core, (entry_type, fields))
            if entry_type == "sale/v1" and fields.get("action") == "closed":
                self._closed.closed(fields["sale_id"], fields["time_ms"])
            if entry_type == "order/v1":
                key = (fields["buyer_id"], fields["order_id"])
                if fields.get("action") == "accepted":
                    self._index_of[key] = index
                elif fields.get("action") == "paid":
                    self._paid_index_of[key] = index
        if size:
            log.info("replayed %d ledger entries into the commerce core", size)

    async def close(self) -> None:
        """Stop taking work, let queued work and its ledger appends finish, stop."""
        if self._failure is None:
            self._failure = "the server is shutting down"
        while self._unchecked:
            self._unchecked.popleft().failed(UNAVAILABLE, self._failure)
        if self.verifier is not None:
            # Orders with the child are checked here now, then answered "unavailable".
            await self.verifier.close()
        # What is still queued is refused; the batches with the ledger finish.
        while self._jobs:
            self._jobs.popleft().failed(UNAVAILABLE, self._failure)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._no_batches_in_flight.wait(), timeout=10)
        self._fail_unanswered(self._failure)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await task

    @property
    def failed(self) -> str | None:
        """Why orders are not taken (the ledger failed, or shutdown), or None while they
        are. The ledger may fail before an order finds out (a checkpoint's write)."""
        if self._failure is None and self.ledger.failure is not None:
            return stopped_by_ledger(self.ledger.failure)
        return self._failure

    # Submitting work

    def submit(self, command: Command | None, done: Done, failed: Failed) -> None:
        """Queue a command (None: a tick). `done` runs once its entries are durable; `failed`
        with (reason, detail) if the service cannot take it. Never blocks."""
        self._enqueue(_CommandJob(command, done, failed))

    def _enqueue(self, job: _Job) -> None:
        failure = self.failed
        if failure is not None:
            job.failed(UNAVAILABLE, failure)
            return
        queued = len(self._jobs) + len(self._unchecked)
        if job.command is not None and queued >= self.limits.order_queue_max:
            job.failed(BUSY, "the server is busy; retry with the same order_id")
            return
        if self.verifier is not None and isinstance(job.command, PlaceOrder):
            self._unchecked.append(job)
            self._send_unchecked_soon()
            return
        self._jobs.append(job)
        self._pump_soon()

    async def run(self, command: Command) -> CommandOutcome:
        """Run a command and wait until its entries are durable."""
        future: asyncio.Future[CommandOutcome] = asyncio.get_running_loop().create_future()

        def done(outcome: CommandOutcome) -> None:
            if not future.done():
                future.set_result(outcome)

        def failed(reason: str, detail: str) -> None:
            if not future.done():
                future.set_exception(ServiceUnavailable(reason, detail))

        self.submit(command, done, failed)
        return await future

    # Sessions: challenges live in this process

    async def issue_challenge(self, now_ms: int) -> Challenge | Rejected:
        return self.sessions.issue_challenge(now_ms)

    async def open_session(
        self, challenge: str, public_key: str, signature: str, now_ms: int
    ) -> SessionGranted | Rejected:
        return self.sessions.open_session(challenge, public_key, signature, now_ms)

    def submit_order(
        self,
        command: PlaceOrder,
        reply: Callable[[m.OrderResult], None],
        receipt: SendReceipt | None = None,
    ) -> None:
        """An order from a socket: `reply` gets the answer; `receipt` the receipt later."""
        self._enqueue(_OrderJob(self, command, reply, receipt))

    async def place_order(self, command: PlaceOrder) -> m.OrderResult:
        future: asyncio.Future[m.OrderResult] = asyncio.get_running_loop().create_future()

        def reply(result: m.OrderResult) -> None:
            if not future.done():
                future.set_result(result)

        self.submit_order(command, reply)
        return await future

    async def pay(
        self, buyer_id: str, order_id: str, shipping: dict[str, str] | None
    ) -> m.PayResult:
        """Simulated payment: the sealed shipping details stored durably off-ledger first,
        then the payment (with the commitment) on the ledger. Refused at once while the
        service is stopped, and when the disk cannot take the details (nothing changed
        then: the payment is not in the core yet)."""
        failure = self.failed
        if failure is not None:
            return refused_payment(order_id, UNAVAILABLE, failure)
        accepted = self.core.orders.accepted(buyer_id, order_id)
        if accepted is None:
            return refused_payment(order_id, Reason.UNKNOWN_ORDER, "no such accepted order")
        commitment = ""
        if shipping:
            sale = self.core.sales.get(accepted.sale_id)
            assert sale is not None
            sealed = seal_shipping(shipping, sale.spec.merchant_id)
            if isinstance(sealed, Rejected):
                return refused_payment(order_id, sealed.reason, sealed.detail)
            try:
                await self.shipping.put(buyer_id, order_id, sealed.sealed)
            except ShippingFull as error:
                return refused_payment(order_id, Reason.CAPACITY, str(error))
            except OSError as error:
                why = describe_failure(error)
                if not self._shipping_failed:  # once: a full disk fails every payment
                    log.error("storing shipping details failed: %r", error)
                self._shipping_failed = True
                return refused_payment(
                    order_id,
                    UNAVAILABLE,
                    f"the shipping store cannot write to its disk ({why}); retry later",
                )
            self._shipping_failed = False
            commitment = sealed.commitment_hex
        return await self._pay(PayOrder(buyer_id, order_id, commitment))

    async def units_remaining(self, sale: Sale) -> int:
        """This process owns the stock: its core's count."""
        return sale.units_remaining

    async def merchant_orders(
        self, merchant_id: str, sale_id: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """The merchant's accepted orders (oldest first), each with its sealed shipping
        details (base64url, only the merchant's key opens them) once paid."""
        orders: list[dict[str, Any]] = []
        for sale in self.core.sales.of_merchant(merchant_id):
            if sale_id is not None and sale.sale_id != sale_id:
                continue
            for accepted, status in self.core.orders.accepted_of_sale(
                sale.sale_id, limit - len(orders)
            ):
                sealed = self.shipping.get(accepted.buyer_id, accepted.order_id)
                orders.append(
                    merchant_order_view(
                        accepted,
                        str(status),
                        self._index_of.get((accepted.buyer_id, accepted.order_id)),
                        sealed,
                    )
                )
            if len(orders) >= limit:
                break
        return orders

    async def _pay(self, command: PayOrder) -> m.PayResult:
        try:
            outcome = await self.run(command)
        except ServiceUnavailable as error:
            return m.PayResult(
                order_id=command.order_id, status="refused", reason=error.reason, detail=str(error)
            )
        answer = pay_answer(outcome.events)
        key = (command.buyer_id, command.order_id)
        if isinstance(answer, PaymentRefused):
            return m.PayResult(
                order_id=command.order_id,
                status="refused",
                reason=str(answer.reason),
                detail=answer.detail,
            )
        return m.PayResult(
            order_id=command.order_id, status="paid", ledger_index=self._paid_index_of.get(key, -1)
        )

    async def receipt(self, buyer_id: str, order_id: str, timeout_s: float) -> bytes | None:
        """The tlog-proof of an accepted order, waiting up to `timeout_s` for a checkpoint.
        None: no such accepted order. TimeoutError: not covered yet."""
        index = self._index_of.get((buyer_id, order_id))
        if index is None:
            return None
        await asyncio.wait_for(self.ledger.wait_covered(index), timeout_s)
        return self.ledger.proof(index)

    def _want_receipt(self, index: int, order_id: str, send: SendReceipt) -> None:
        if len(self._receipts) >= self.limits.receipts_pending_max:
            return  # The receipt stays available over HTTP; the push is best effort.
        self._receipts.append((index, order_id, send))
        self._receipt_wake.set()

    # The pump: the core's one owner, on the event loop

    def _pump_soon(self) -> None:
        """Run the pump at the end of this turn of the loop: one batch for everything the
        turn queued."""
        if not self._pump_due:
            self._pump_due = True
            asyncio.get_running_loop().call_soon(self._pump)

    def _pump(self) -> None:
        """Queued jobs through the core and to the ledger, a batch at a time, while fewer
        than `ledger_batches_in_flight_max` batches wait for the disk (a durable batch
        runs the pump again)."""
        self._pump_due = False
        while self._jobs and self._batches_in_flight < self.limits.ledger_batches_in_flight_max:
            batch = self._take_batch()
            if batch:
                self._commit(batch)

    def _take_batch(self) -> list[tuple[_Job, list[Event]]]:
        batch: list[tuple[_Job, list[Event]]] = []
        now_ms = self.clock_ms()
        while self._jobs and len(batch) < self.limits.order_batch_max:
            job = self._jobs.popleft()
            if self._failure is not None:
                job.failed(UNAVAILABLE, self._failure)
                continue
            command = job.command
            if command is None:
                assert isinstance(job, _TickJob)
                events = self.core.tick(now_ms)
                job.forgotten = self._closed.forget_due(self.core, now_ms)
            else:
                if job.check is not None:
                    assert isinstance(command, PlaceOrder)
                    command = CheckedOrder(command, job.check)
                events = self.core.handle(command, now_ms)
            batch.append((job, events))
        return batch

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

    def _checked(self, jobs: list[_Job], checks: list[SignatureCheck]) -> None:
        for job, check in zip(jobs, checks, strict=True):
            if self._failure is not None:  # the worker may have stopped meanwhile
                job.failed(UNAVAILABLE, self._failure)
                continue
            job.check = check
            self._jobs.append(job)
        self._pump()
        if self._unchecked:  # they waited for room with the verifier: there is some now
            self._send_unchecked_soon()

    def _commit(self, batch: list[tuple[_Job, list[Event]]]) -> None:
        """The batch's entries to the ledger; `_committed` answers once they are durable."""
        entries: list[bytes] = []
        recorded: list[list[bool]] = []
        # One write for the batch: each sale's last stock count stands for the others.
        superseded = superseded_stock_changes([e for _, events in batch for e in events])
        position = 0
        for _, events in batch:
            flags = []
            for event in events:
                entry = None if position in superseded else event.to_entry()
                position += 1
                flags.append(entry is not None)
                if entry is not None:
                    entries.append(self.encode_entry(*entry))
            recorded.append(flags)
        pending = _Batch(batch, recorded)
        if not entries:
            pending.indexes = []
            if self._unanswered:
                self._unanswered.append(pending)  # answered behind the batches in flight
            else:
                self._answer(batch, recorded, [])
            return
        self._unanswered.append(pending)
        self._batches_in_flight += 1
        self._no_batches_in_flight.clear()
        try:
            self.ledger.append_many_then(entries, functools.partial(self._committed, pending))
        except Exception as error:
            # LedgerBusy cannot happen (batches in flight are bounded below the ledger's
            # queue); anything else means the ledger state is unknown.
            self._committed(pending, error)

    def _committed(self, pending: _Batch, indexes: list[int] | BaseException) -> None:
        """From the ledger, in the turn it learns the batch is durable (or failed):
        answer every batch, in order, up to the first one still with the ledger."""
        self._batches_in_flight -= 1
        if not self._batches_in_flight:
            self._no_batches_in_flight.set()
        if isinstance(indexes, BaseException):
            # Every batch not answered yet, this one included, is refused.
            self._fail(
                stopped_by_ledger(self.ledger.failure or f"ledger append failed: {indexes!r}")
            )
            return
        pending.indexes = indexes
        while self._unanswered and self._unanswered[0].indexes is not None:
            head = self._unanswered.popleft()
            assert head.indexes is not None
            self._answer(head.jobs, head.recorded, head.indexes)
        if self._jobs:
            self._pump_soon()

    def _fail_unanswered(self, reason: str) -> None:
        """Every batch not answered yet is refused: what it rests on may be lost."""
        while self._unanswered:
            for job, _ in self._unanswered.popleft().jobs:
                job.failed(UNAVAILABLE, reason)

    def _answer(
        self,
        batch: list[tuple[_Job, list[Event]]],
        recorded: list[list[bool]],
        indexes: list[int],
    ) -> None:
        """Answer a durable batch: each job's outcome, with its entries' ledger indexes."""
        position = 0
        changed: list[Event] = []
        for (job, events), flags in zip(batch, recorded, strict=True):
            event_indexes: list[int | None] = []
            for event, has_entry in zip(events, flags, strict=True):
                if not has_entry:
                    event_indexes.append(None)
                    continue
                index = indexes[position]
                position += 1
                event_indexes.append(index)
                if isinstance(event, OrderAccepted):
                    self._index_of[(event.buyer_id, event.order_id)] = index
                elif isinstance(event, OrderPaid):
                    self._paid_index_of[(event.buyer_id, event.order_id)] = index
                if isinstance(event, SaleScheduled | SaleOpened | SaleClosed | StockChanged):
                    changed.append(event)
                if isinstance(event, SaleClosed):
                    self._closed.closed(event.sale_id, event.time_ms)
            try:
                job.done(CommandOutcome.of(events, event_indexes))
            except Exception:
                log.exception("an order answer failed")
        if changed:
            self._effects.put_nowait(changed)

    def _fail(self, reason: str) -> None:
        if self._failure is None or self._failure == "the server is shutting down":
            log.error("order service stopped: %s", reason)
        self._failure = reason
        self._fail_unanswered(reason)
        while self._jobs:
            self._jobs.popleft().failed(UNAVAILABLE, reason)
        while self._unchecked:
            self._unchecked.popleft().failed(UNAVAILABLE, reason)

    # Time: sales open and close, holds expire

    async def _tick_forever(self) -> None:
        interval_s = self.limits.tick_interval_ms / 1000
        while True:
            await asyncio.sleep(interval_s)
            if not self._tick_queued and self._failure is None:
                self._tick_queued = True
                self._enqueue(_TickJob(self))

    # What viewers see: sale events (numbered) and stock (coalesced by the hub)

    async def _effects_forever(self) -> None:
        while True:
            events = await self._effects.get()
            try:
                await self._publish(events)
            except Exception:
                log.exception("publishing sale changes failed")

    async def _publish(self, events: list[Event]) -> None:
        stock: dict[str, StockChanged] = {}
        for event in events:
            if isinstance(event, StockChanged):
                stock[event.sale_id] = event
                continue
            assert isinstance(event, SaleScheduled | SaleOpened | SaleClosed)
            sale_id = event.spec.sale_id if isinstance(event, SaleScheduled) else event.sale_id
            sale = self.core.sales.get(sale_id)
            assert sale is not None
            if await self.viewers.room_open(sale.spec.room_id):
                view = sale_view(sale, self.core.catalog)
                view["change"] = type(event).__name__.removeprefix("Sale").lower()
                await self.viewers.publish_sale(sale.spec.room_id, view)
        for changed in stock.values():
            sale = self.core.sales.get(changed.sale_id)
            assert sale is not None
            if await self.viewers.room_open(changed.room_id):
                await self.viewers.set_stock(
                    changed.room_id, sale.spec.product_id, changed.units_remaining
                )

    # Receipts: one task waits for the checkpoint that covers the oldest pending order,
    # then makes the receipts of all the orders it covers, a turn of them at a time (the
    # ledger computes a turn's proofs in one pass: they share most of their hashes).

    async def _receipts_forever(self) -> None:
        while True:
            if not self._receipts:
                self._receipt_wake.clear()
                await self._receipt_wake.wait()
                continue
            oldest = self._receipts[0][0]
            try:
                note = await self.ledger.wait_covered(oldest)
            except Exception as error:
                log.warning("receipts stopped: %r", error)
                return
            covered = checkpoint_size(note)
            while self._receipts and self._receipts[0][0] < covered:
                turn: list[tuple[int, str, SendReceipt]] = []
                while (
                    self._receipts
                    and self._receipts[0][0] < covered
                    and len(turn) < RECEIPTS_PER_TURN_MAX
                ):
                    turn.append(self._receipts.popleft())
                try:
                    proofs = self.ledger.proofs([index for index, _, _ in turn])
                except Exception:
                    log.exception("making receipts failed")
                    continue
                for (index, order_id, send), proof in zip(turn, proofs, strict=True):
                    try:
                        send(
                            m.OrderReceipt(
                                order_id=order_id, ledger_index=index, proof=proof.decode()
                            )
                        )
                    except Exception:
                        log.exception("sending a receipt failed")
                await asyncio.sleep(RECEIPT_TURN_PAUSE_S)


def stopped_by_ledger(failure: str) -> str:
    """What buyers and health checks hear once the ledger failed: the core may hold what
    the ledger lost, so nothing more is taken until a restart rebuilds it from the ledger."""
    return f"{failure}: orders are stopped until the server restarts; retry later"


def checkpoint_size(note: bytes) -> int:
    """The tree size of a signed checkpoint note (c2sp.org/tlog-checkpoint: origin line,
    then the size in decimal)."""
    return int(note.split(b"\n", 2)[1])
