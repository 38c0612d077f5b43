"""The embedded parts of the order pipeline: this process owns the core and the ledger.

- `CoreStock`: the core takes stock itself (its sale counts), in the pump's turn, so a
  batch goes through `core.handle` whole, with no await.
- `LocalLedger`: the batch's entries to this process's ledger in one group commit
  (`append_many_then`: one fsync for many orders), answered in the turn the ledger learns
  they are durable; then sale events and stock counts to viewers, and receipts once a
  checkpoint covers the orders.
- `LocalChallenges`: session challenges in this process.

Crash ordering: the core changes in memory first, the ledger makes it durable, only then
does anyone hear of it. After a crash the core is rebuilt from the ledger (`start`), so
whatever was in memory but not durable is forgotten, and nobody was told about it.

Ordering: entries go to the ledger in the order the core made them: the pump hands each
batch to the ledger before it takes the next one, and the ledger writes batches first in,
first out. Answers go out in the same order: a batch with nothing to record (a repeat, a
refusal) waits behind the batches still with the ledger, because its answers may rest on
them: a repeat of an order whose first copy is in flight is answered with the first's
ledger index once that is durable, never before (and never "accepted" from memory alone).

A ledger that fails (a write error) stops the pipeline: the core may hold what the
ledger lost, so it takes nothing more until a restart rebuilds it from the ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ledger.log import describe_failure
from livecommerce import protocol as m
from livecommerce.commerce.auctions import AUCTION_EVENTS, auction_id_of
from livecommerce.commerce.core import CommerceCore
from livecommerce.commerce.escrow import ProviderCall
from livecommerce.commerce.events import Event
from livecommerce.commerce.identity import Challenge, SessionAuthority, SessionGranted
from livecommerce.commerce.operating import Period, Scope
from livecommerce.commerce.orders import CheckedOrder, OrderAccepted, OrderPaid, OrderRepeated
from livecommerce.commerce.recommend import Signal
from livecommerce.commerce.replay import apply_entry, finish
from livecommerce.commerce.results import Reason, Rejected
from livecommerce.commerce.sales import (
    LOT_SALE_PREFIX,
    Sale,
    SaleClosed,
    SaleOpened,
    SaleScheduled,
    StockChanged,
    superseded_stock_changes,
)
from livecommerce.commerce.trace import TraceRecorded, digest_of_entry
from livecommerce.pipeline.answers import (
    UNAVAILABLE,
    merchant_order_view,
    order_answer,
    order_result,
    sale_view,
)
from livecommerce.pipeline.auctions import auction_view, auctions_view
from livecommerce.pipeline.forgetting import ClosedSales
from livecommerce.pipeline.groups import groups_view
from livecommerce.pipeline.pipeline import (
    RECEIPT_TURN_PAUSE_S,
    RECEIPTS_PER_TURN_MAX,
    AcceptedView,
    CommandOutcome,
    Fail,
    Job,
    OrderJob,
    OrderKey,
    OrderLimits,
    Placed,
    SendReceipt,
    ServiceUnavailable,
    TickJob,
    Wake,
    checkpoint_size,
    stopped_by_ledger,
)
from livecommerce.pipeline.reviews import ReviewIndexes, product_reviews_view
from livecommerce.pipeline.shipping import ShippingFull, ShippingStore
from livecommerce.pipeline.views import (
    TIMELINE_ENTRIES,
    TIMELINE_EVENTS,
    Timelines,
    merchant_money,
    operating_metrics,
    order_life_view,
    recommendations_view,
    statement_rows,
    take_operating,
)

log = logging.getLogger("livecommerce.orders")

CLOSE_WAIT_S = 10.0


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
    async def publish_auction(self, room_id: str, auction: dict[str, Any]) -> int: ...


EncodeEntry = Callable[[str, dict[str, object]], bytes]
DecodeEntry = Callable[[bytes], tuple[str, dict[str, Any]]]


class CoreStock:
    """Stock taken by the core that owns it, in the pump's turn (atomic: nothing awaits)."""

    def __init__(self, core: CommerceCore, closed: ClosedSales) -> None:
        self.core = core
        self.closed = closed

    def attach(self, wake: Wake) -> None:
        return None  # always has room

    def room(self) -> bool:
        return True

    def place(self, batch: list[Job], now_ms: int, then: Callable[[Placed], None]) -> None:
        core = self.core
        placed: Placed = []
        for job in batch:
            command = job.command
            if command is None:
                assert isinstance(job, TickJob)
                events = core.tick(now_ms)
                job.forgotten = self.closed.forget_due(core, now_ms)
            else:
                if job.check is not None:
                    assert isinstance(job, OrderJob)
                    command = CheckedOrder(job.order, job.check)
                events = core.handle(command, now_ms)
            placed.append((job, events))
        then(placed)

    async def units_remaining(self, sale: Sale) -> int:
        """This process owns the stock: its core's count."""
        return sale.units_remaining

    async def close(self) -> None:
        return None


class _Batch:
    """Jobs placed together, with their events, whether each event has a ledger entry,
    and (once durable) the entries' indexes."""

    __slots__ = ("indexes", "placed", "recorded")

    def __init__(self, placed: Placed, recorded: list[list[bool]]) -> None:
        self.placed = placed
        self.recorded = recorded
        self.indexes: list[int] | None = None  # None: not durable yet


class LocalLedger:
    def __init__(
        self,
        core: CommerceCore,
        ledger: LedgerLike,
        viewers: Viewers,
        shipping: ShippingStore,
        closed: ClosedSales,
        encode_entry: EncodeEntry,
        decode_entry: DecodeEntry,
        limits: OrderLimits | None = None,
    ) -> None:
        self.core = core
        self.ledger = ledger
        self.viewers = viewers
        self.shipping = shipping
        self.closed = closed
        self.encode_entry = encode_entry
        self.decode_entry = decode_entry
        self.limits = limits or OrderLimits()
        self._wake: Wake = lambda: None
        self._fail: Fail = lambda reason: None
        self._calls: Callable[[list[ProviderCall]], None] = lambda calls: None
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
        self._shipping_failed = False  # the last shipping write failed (logged once)
        self.timelines = Timelines()
        self.reviews = ReviewIndexes()
        self.ledger_metrics = operating_metrics(self.core)  # the ledger's feed (operating.py)

    def attach(self, wake: Wake, fail: Fail) -> None:
        self._wake, self._fail = wake, fail

    def attach_calls(self, calls: Callable[[list[ProviderCall]], None]) -> None:
        self._calls = calls

    @property
    def runs_clock(self) -> bool:
        return True

    @property
    def failure(self) -> str | None:
        """The ledger may fail before an order finds out (a checkpoint's write)."""
        if self._failure is None and self.ledger.failure is not None:
            return stopped_by_ledger(self.ledger.failure)
        return self._failure

    def refusal(self) -> str | None:
        return self.failure

    def waiting(self) -> int:
        return 0  # bounded by the batches in flight instead

    def room(self) -> bool:
        return self._batches_in_flight < self.limits.ledger_batches_in_flight_max

    # Life cycle

    async def start(self) -> None:
        """Rebuild the core from the ledger, then start receipts and effects."""
        await asyncio.to_thread(self._replay)
        for name, loop in (
            ("orders-receipts", self._receipts_forever),
            ("orders-effects", self._effects_forever),
        ):
            self._tasks.append(asyncio.create_task(loop(), name=name))

    def _replay(self) -> None:
        size = self.ledger.size
        core = self.core
        # Its own ledger: the steps in it were checked when taken (an audit checks again).
        core.verify_signatures = False
        try:
            for index in range(size):
                entry_type, fields = self.decode_entry(self.ledger.entry(index))
                apply_entry(core, (entry_type, fields))
                if entry_type == "sale/v1" and fields.get("action") == "closed":
                    self.closed.closed(fields["sale_id"], fields["time_ms"])
                if entry_type == "order/v1":
                    key = (fields["buyer_id"], fields["order_id"])
                    if fields.get("action") == "accepted":
                        self._index_of[key] = index
                    elif fields.get("action") == "paid":
                        self._paid_index_of[key] = index
                if entry_type in TIMELINE_ENTRIES and fields.get("action") != "accepted":
                    self.timelines.add(entry_type, fields, index)
                self.reviews.add(entry_type, fields, index)
                self.ledger_metrics.take_entry(entry_type, fields)
                digest = digest_of_entry(entry_type, fields)
                if digest is not None:
                    core.trace.indexed(digest, index)
            finish(core)
        finally:
            core.verify_signatures = True
        if size:
            log.info("replayed %d ledger entries into the commerce core", size)

    async def close(self, reason: str) -> None:
        """Let the batches with the ledger finish, refuse what is left, stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._no_batches_in_flight.wait(), timeout=CLOSE_WAIT_S)
        self._fail_unanswered(reason)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await task

    # Recording

    def record(self, placed: Placed) -> None:
        """The batch's entries to the ledger; `_committed` answers once they are durable."""
        entries: list[bytes] = []
        recorded: list[list[bool]] = []
        # One write for the batch: each sale's last stock count stands for the others.
        superseded = superseded_stock_changes([e for _, events in placed for e in events])
        position = 0
        for _, events in placed:
            flags = []
            for event in events:
                entry = None if position in superseded else event.to_entry()
                position += 1
                flags.append(entry is not None)
                if entry is not None:
                    entries.append(self.encode_entry(*entry))
            recorded.append(flags)
        pending = _Batch(placed, recorded)
        if not entries:
            pending.indexes = []
            if self._unanswered:
                self._unanswered.append(pending)  # answered behind the batches in flight
            else:
                self._answer(pending.placed, recorded, [])
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
            reason = stopped_by_ledger(self.ledger.failure or f"ledger append failed: {indexes!r}")
            self._failure = reason
            self._fail_unanswered(reason)
            self._fail(reason)
            return
        pending.indexes = indexes
        while self._unanswered and self._unanswered[0].indexes is not None:
            head = self._unanswered.popleft()
            assert head.indexes is not None
            self._answer(head.placed, head.recorded, head.indexes)
        self._wake()

    def _fail_unanswered(self, reason: str) -> None:
        """Every batch not answered yet is refused: what it rests on may be lost."""
        while self._unanswered:
            for job, _ in self._unanswered.popleft().placed:
                job.failed(UNAVAILABLE, reason)

    def _answer(self, placed: Placed, recorded: list[list[bool]], indexes: list[int]) -> None:
        """Answer a durable batch: each job's outcome, with its entries' ledger indexes."""
        position = 0
        changed: list[Event] = []
        calls: list[ProviderCall] = []
        for (job, events), flags in zip(placed, recorded, strict=True):
            event_indexes: list[int | None] = []
            for event, has_entry in zip(events, flags, strict=True):
                if not has_entry:
                    event_indexes.append(None)
                    if isinstance(event, ProviderCall):
                        calls.append(event)
                    continue
                index = indexes[position]
                position += 1
                event_indexes.append(index)
                if isinstance(event, OrderAccepted):
                    self._index_of[(event.buyer_id, event.order_id)] = index
                elif isinstance(event, OrderPaid):
                    self._paid_index_of[(event.buyer_id, event.order_id)] = index
                if isinstance(
                    event, (SaleScheduled, SaleOpened, SaleClosed, StockChanged, *AUCTION_EVENTS)
                ):
                    changed.append(event)
                if isinstance(event, SaleClosed):
                    self.closed.closed(event.sale_id, event.time_ms)
                elif isinstance(event, TIMELINE_EVENTS):
                    self.timelines.add_event(event, index)
                elif isinstance(event, TraceRecorded):
                    self.core.trace.indexed(event.digest, index)
                else:
                    self.reviews.add_event(event, index)
                take_operating(self.ledger_metrics, event)
            try:
                if isinstance(job, OrderJob):
                    self._answer_order(job, events)
                else:
                    for key in job.forgotten:  # a tick's, after every earlier answer
                        self._index_of.pop(key, None)
                        self._paid_index_of.pop(key, None)
                    job.done(CommandOutcome.of(events, event_indexes))
            except Exception:
                log.exception("an order answer failed")
        if changed:
            self._effects.put_nowait(changed)
        if calls:  # asked only now: the entries that ask for them are durable
            self._calls(calls)

    def _answer_order(self, job: OrderJob, events: list[Event]) -> None:
        answer = order_answer(events)
        first = answer.first if isinstance(answer, OrderRepeated) else answer
        index = None
        if isinstance(first, OrderAccepted):
            index = self._index_of[(first.buyer_id, first.order_id)]
        job.answer(order_result(answer, index))
        if job.receipt is not None and index is not None:
            self._want_receipt(index, first.order_id, job.receipt)

    # Reads

    async def accepted_order(self, buyer_id: str, order_id: str) -> AcceptedView | None:
        accepted = self.core.orders.accepted(buyer_id, order_id)
        if accepted is None:
            return None
        amount = accepted.quantity * accepted.price_cents
        return AcceptedView(accepted.sale_id, amount, accepted.currency)

    async def keep_sealed(self, buyer_id: str, order_id: str, sealed: bytes) -> None:
        """Stored durably in the shipping store before the payment is in the core."""
        try:
            await self.shipping.put(buyer_id, order_id, sealed)
        except ShippingFull as error:
            raise ServiceUnavailable(Reason.CAPACITY, str(error)) from None
        except OSError as error:
            why = describe_failure(error)
            if not self._shipping_failed:  # once: a full disk fails every payment
                log.error("storing shipping details failed: %r", error)
            self._shipping_failed = True
            raise ServiceUnavailable(
                UNAVAILABLE, f"the shipping store cannot write to its disk ({why}); retry later"
            ) from None
        self._shipping_failed = False

    async def paid_index(self, buyer_id: str, order_id: str) -> int | None:
        return self._paid_index_of.get((buyer_id, order_id))

    async def receipt(self, buyer_id: str, order_id: str, timeout_s: float) -> bytes | None:
        index = self._index_of.get((buyer_id, order_id))
        if index is None:
            return None
        await asyncio.wait_for(self.ledger.wait_covered(index), timeout_s)
        return self.ledger.proof(index)

    async def merchant_orders(
        self, merchant_id: str, sale_id: str | None, limit: int
    ) -> list[dict[str, Any]]:
        orders: list[dict[str, Any]] = []
        for sale in self.core.sales.of_merchant(merchant_id):
            if sale_id is not None and sale.sale_id != sale_id:
                continue
            for accepted, status in self.core.orders.accepted_of_sale(
                sale.sale_id, limit - len(orders)
            ):
                key = (accepted.buyer_id, accepted.order_id)
                orders.append(
                    merchant_order_view(
                        accepted, str(status), self._index_of.get(key), self.shipping.get(*key)
                    )
                )
            if len(orders) >= limit:
                break
        return orders

    async def order_life(self, buyer_id: str, order_id: str) -> dict[str, Any] | None:
        key = (buyer_id, order_id)
        view = order_life_view(self.core, buyer_id, order_id, self.timelines.of(key))
        if view is not None:
            view["ledger_index"] = self._index_of.get(key)
        return view

    async def merchant_money(self, merchant_id: str) -> dict[str, Any]:
        return merchant_money(self.core, merchant_id)

    async def statement(self, merchant_id: str, from_ms: int, to_ms: int) -> list[dict[str, Any]]:
        return statement_rows(self.core, merchant_id, from_ms, to_ms)

    async def operating(
        self, scope: Scope, scope_id: str, period: Period, from_ms: int, to_ms: int
    ) -> dict[int, dict[str, int]]:
        return self.ledger_metrics.counts(scope, scope_id, period, from_ms, to_ms)

    async def recommendations(
        self, room_id: str, buyer_id: str, beside: str, count: int, now_ms: int
    ) -> dict[str, Any]:
        return recommendations_view(self.core, room_id, buyer_id, beside, count, now_ms)

    async def seen(
        self, signal: Signal, room_id: str, product_id: str, buyer_id: str, now_ms: int
    ) -> None:
        self.core.recommender.seen(signal, room_id, product_id, buyer_id, now_ms)

    async def product_reviews(self, product_id: str, limit: int) -> dict[str, Any]:
        return product_reviews_view(self.core, self.reviews, self.timelines, product_id, limit)

    async def groups(self, what: str, key: str, now_ms: int) -> dict[str, Any] | None:
        return groups_view(self.core, what, key, now_ms)

    async def auctions(self, what: str, key: str, now_ms: int) -> dict[str, Any] | None:
        return auctions_view(self.core, what, key, now_ms)

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
        auctions: dict[str, int] = {}  # auction id -> time of its last change here
        for event in events:
            if isinstance(event, StockChanged):
                if not event.sale_id.startswith(LOT_SALE_PREFIX):
                    stock[event.sale_id] = event
                continue
            if isinstance(event, AUCTION_EVENTS):
                auctions[auction_id_of(event)] = event.time_ms
                continue
            assert isinstance(event, SaleScheduled | SaleOpened | SaleClosed)
            sale_id = event.spec.sale_id if isinstance(event, SaleScheduled) else event.sale_id
            if sale_id.startswith(LOT_SALE_PREFIX):
                continue  # an auction's lot: its auction says what happens
            sale = self.core.sales.get(sale_id)
            assert sale is not None
            if await self.viewers.room_open(sale.spec.room_id):
                view = sale_view(sale, self.core.catalog)
                view["change"] = type(event).__name__.removeprefix("Sale").lower()
                await self.viewers.publish_sale(sale.spec.room_id, view)
        for auction_id, time_ms in auctions.items():  # once per batch: the newest state
            await self._publish_auction(auction_id, time_ms)
        for changed in stock.values():
            sale = self.core.sales.get(changed.sale_id)
            assert sale is not None
            if await self.viewers.room_open(changed.room_id):
                await self.viewers.set_stock(
                    changed.room_id, sale.spec.product_id, changed.units_remaining
                )

    async def _publish_auction(self, auction_id: str, time_ms: int) -> None:
        auction = self.core.auctions.get(auction_id)
        if auction is None or not await self.viewers.room_open(auction.spec.room_id):
            return
        view = auction_view(self.core, auction, time_ms)
        await self.viewers.publish_auction(auction.spec.room_id, view)

    # Receipts: one task waits for the checkpoint that covers the oldest pending order,
    # then makes the receipts of all the orders it covers, a turn of them at a time (the
    # ledger computes a turn's proofs in one pass: they share most of their hashes).

    def _want_receipt(self, index: int, order_id: str, send: SendReceipt) -> None:
        if len(self._receipts) >= self.limits.receipts_pending_max:
            return  # The receipt stays available over HTTP; the push is best effort.
        self._receipts.append((index, order_id, send))
        self._receipt_wake.set()

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


class LocalChallenges:
    """Session challenges in this process's memory."""

    def __init__(self, sessions: SessionAuthority) -> None:
        self.sessions = sessions

    async def issue_challenge(self, now_ms: int) -> Challenge | Rejected:
        return self.sessions.issue_challenge(now_ms)

    async def open_session(
        self, challenge: str, public_key: str, signature: str, now_ms: int
    ) -> SessionGranted | Rejected:
        return self.sessions.open_session(challenge, public_key, signature, now_ms)
