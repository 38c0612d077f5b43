"""The scaled-out parts of the order pipeline: stock in Redis, the ledger in the writer.

    order --> this process's replica core: identity, signature, sale open, price, quantity
          --> `RedisStock`: one Redis script per order (pipelined in batches):
              idempotency, per-buyer limit, stock, decrement, and the order appended to
              its sale's stream
          --> `WriterLedger`: wait for the ledger writer's confirmation (lc:confirm) -->
              "accepted" with the ledger index; the receipt when the writer stores it
              (lc:receipts).

Commands (register, list, restock, link a room, schedule, stop, pay) pass the stock part
untouched; the writer ledger sends them over the `lc:commands` stream and they are
answered on this process's reply channel. The replica core follows the writer's feed of
state entries, so reads (sales, products, identities) are local; a command's answer waits
until the replica has its entries. Session challenges live in Redis (`RedisChallenges`).

If the writer does not confirm within `confirm_timeout_ms`, the buyer hears
`unavailable` ("retry with the same order id"): the order holds stock in Redis and is on
the stream, so it will be recorded when the writer is back, and the retry gets it. A
writer whose disk failed says so in `lc:writer:stopped` (read every `SWEEP_INTERVAL_S`):
meanwhile orders and commands are refused at once with its reason, taking no stock, and
those waiting for it are answered so too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import orjson
from redis.exceptions import RedisError

from ledger import decode_entry
from livecommerce import protocol as m
from livecommerce import redis_keys as keys
from livecommerce.commerce.core import Command, CommerceCore
from livecommerce.commerce.escrow import ProviderCall
from livecommerce.commerce.identity import (
    Challenge,
    SessionAuthority,
    SessionGranted,
    b64url_encode,
)
from livecommerce.commerce.operating import Period, Scope
from livecommerce.commerce.orders import (
    OrderAccepted,
    OrderRejected,
    OrderRepeated,
    OrderStatus,
    PreparedOrder,
)
from livecommerce.commerce.recommend import Signal
from livecommerce.commerce.replay import apply_entry
from livecommerce.commerce.results import Reason, Rejected
from livecommerce.commerce.sales import Sale
from livecommerce.commerce.trace import digest_of_entry
from livecommerce.payments.sandbox import TestPaymentProvider
from livecommerce.pipeline.answers import UNAVAILABLE, order_answer, order_result, refused_order
from livecommerce.pipeline.forgetting import ClosedSales
from livecommerce.pipeline.pipeline import (
    RECEIPT_TURN_PAUSE_S,
    RECEIPTS_PER_TURN_MAX,
    AcceptedView,
    CommandJob,
    CommandOutcome,
    Fail,
    Job,
    OrderJob,
    OrderKey,
    OrderLimits,
    OrderPipeline,
    Placed,
    SendReceipt,
    ServiceUnavailable,
    Wake,
)
from livecommerce.stock.base import StockStoreError, StockStoreUnavailable
from livecommerce.stock.redis_lua import RedisStockStore
from livecommerce.stopping import cancel_and_wait

log = logging.getLogger("livecommerce.pipeline.scaled")

FEED_READ_COUNT = 1_000
FEED_BLOCK_MS = 1_000
SWEEP_INTERVAL_S = 0.25
LOOKUP_AFTER_MS = 1_000  # a waiter this old asks Redis directly (a confirmation missed)
COMMAND_TIMEOUT_S = 15.0
CONFIRMED_REMEMBERED_MAX = 200_000
RECEIPTS_FETCHED_MAX = 256  # receipts fetched from Redis in one pipeline
BATCHES_CLOSE_WAIT_S = 5.0


@dataclass
class _Waiter:
    """Everyone waiting for one order's confirmation: each copy of the order that reached
    this process, with whether it was the copy that took the stock (`repeated` False) or
    a repeat of it (True: another copy, here or elsewhere, was first)."""

    sale_id: str
    order_id: str
    since_ms: int
    jobs: list[tuple[OrderJob, bool]] = field(default_factory=list)  # (job, repeated)


async def shared_secret(client: Any, key: str = keys.SESSION_SECRET) -> bytes:
    """A key all processes share (session tokens, webhooks), made once per Redis."""
    await client.set(key, secrets.token_bytes(32), nx=True)
    secret = await client.get(key)
    assert isinstance(secret, bytes)
    assert len(secret) == 32
    return secret


class RedisStock:
    """Stock in Redis, for every web process: the replica core checks each order, then one
    script per order takes its stock and appends it to its sale's stream."""

    def __init__(
        self,
        core: CommerceCore,
        store: RedisStockStore,
        clock_ms: Callable[[], int],
        writer: WriterLedger,
        limits: OrderLimits,
    ) -> None:
        self.core = core
        self.store = store
        self.clock_ms = clock_ms
        self.writer = writer
        self.limits = limits
        self._wake: Wake = lambda: None
        self._in_flight = 0  # batches with Redis
        self._batches: set[asyncio.Task[None]] = set()

    def attach(self, wake: Wake) -> None:
        self._wake = wake

    def room(self) -> bool:
        return self._in_flight < self.limits.ledger_batches_in_flight_max

    def place(self, batch: list[Job], now_ms: int, then: Callable[[Placed], None]) -> None:
        self._in_flight += 1
        task = asyncio.get_running_loop().create_task(self._reserve(batch, then))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    async def _reserve(self, batch: list[Job], then: Callable[[Placed], None]) -> None:
        try:
            then(await self._reserve_batch(batch))
        except Exception:
            log.exception("an order batch failed")
            for job in batch:
                job.failed(UNAVAILABLE, "error")
        finally:
            self._in_flight -= 1
            self._wake()

    async def _reserve_batch(self, batch: list[Job]) -> Placed:
        now_ms = self.clock_ms()
        placed: Placed = []
        prepared: list[tuple[OrderJob, PreparedOrder, bytes]] = []
        for job in batch:
            if not isinstance(job, OrderJob):
                placed.append((job, []))  # a command: the writer's core takes it
                continue
            command = job.order
            stopped = self.writer.stopped
            if stopped is not None:  # queued before the sweep saw it
                job.failed(UNAVAILABLE, stopped)
                continue
            if isinstance(command.sale_id, str) and self.core.sales.get(command.sale_id) is None:
                # Maybe only not here yet (the feed lags the writer by milliseconds):
                # answer without letting the core remember it.
                job.answer(
                    refused_order(command.order_id, command.sale_id, "unknown_sale", "no such sale")
                )
                continue
            events, ready = self.core.prepare_order(command, now_ms)
            if ready is None:
                placed.append((job, events))
                continue
            sale = self.core.sales.get(command.sale_id)
            assert sale is not None
            record = orjson.dumps(
                {
                    "order_id": command.order_id,
                    "sale_id": command.sale_id,
                    "buyer_id": command.buyer_id,
                    "quantity": command.quantity,
                    "price_cents": sale.spec.price_cents,
                    "currency": sale.currency,
                    "hold_expires_at_ms": now_ms + sale.spec.payment_hold_ms,
                    "time_ms": now_ms,
                    "order_digest": ready.digest.hex(),
                    "signed_time_ms": command.time_ms,
                    "signature": command.signature,
                }
            )
            prepared.append((job, ready, record))
        if not prepared:
            return placed
        requests = [
            (
                ready.command.sale_id,
                ready.command.buyer_id,
                ready.command.order_id,
                ready.command.quantity,
                ready.per_buyer_limit,
                record,
            )
            for _, ready, record in prepared
        ]
        try:
            results = await self.store.reserve_and_record_many(requests)
        except StockStoreUnavailable as error:
            for job, _, _ in prepared:
                job.failed(UNAVAILABLE, str(error))
            return placed
        now_ms = self.clock_ms()
        for (job, ready, _), result in zip(prepared, results, strict=True):
            if isinstance(result, StockStoreError):
                job.failed(UNAVAILABLE, str(result))
                continue
            events = self.core.complete_order(ready, result, now_ms)
            answer = order_answer(events)
            if isinstance(answer, OrderAccepted) and result.duplicate:
                # Another process (or an earlier try) was first: its answer stands.
                events = [*events, OrderRepeated(answer, OrderStatus.HELD)]
            placed.append((job, events))
        return placed

    async def units_remaining(self, sale: Sale) -> int:
        """Redis takes the stock for every web process: its count, not this replica's
        (which mirrors only the orders this process answered)."""
        try:
            remaining = await self.store.remaining(sale.sale_id)
        except StockStoreUnavailable as error:
            raise ServiceUnavailable(UNAVAILABLE, str(error)) from None
        if remaining is None:  # Redis lost its data; the writer rebuilds live sales
            raise ServiceUnavailable(
                Reason.STOCK_UNAVAILABLE, "the stock of this sale cannot be read now; retry"
            )
        return remaining

    async def close(self) -> None:
        if self._batches:
            await asyncio.wait(self._batches, timeout=BATCHES_CLOSE_WAIT_S)
        await self.store.close()


class WriterLedger:
    """The ledger is the writer's: accepted orders wait for its confirmation, commands go
    to it over Redis, and this process's replica core follows its feed."""

    def __init__(
        self,
        core: CommerceCore,
        client: Any,
        clock_ms: Callable[[], int],
        limits: OrderLimits,
        confirm_timeout_ms: int = 20_000,
        command_timeout_s: float = COMMAND_TIMEOUT_S,
    ) -> None:
        self.core = core
        # Typed loosely: redis-py's reply types are unions of everything.
        self.client = client
        self.clock_ms = clock_ms
        self.limits = limits
        self.confirm_timeout_ms = confirm_timeout_ms
        self.command_timeout_s = command_timeout_s
        # Why the ledger writer stopped (its disk failed), as it said in Redis; or None.
        self.stopped: str | None = None
        self.process_id = secrets.token_hex(6)
        self._wake: Wake = lambda: None
        self._pubsub: Any = None
        self._waiters: dict[OrderKey, _Waiter] = {}
        self._receipt_waiters: dict[OrderKey, tuple[str, int, list[SendReceipt], int]] = {}
        self._receipts_wanted: deque[tuple[str, OrderKey]] = deque()
        self._receipts_wake = asyncio.Event()
        self._confirmed: OrderedDict[OrderKey, tuple[int, int, int]] = OrderedDict()
        self._requests: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._commands: set[asyncio.Task[None]] = set()
        self._request_number = 0
        self._epoch = ""
        self._feed_position = "0-0"
        self.applied_index = -1
        self._closed = ClosedSales(limits.closed_sale_forget_ms)
        self._applied = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    def attach(self, wake: Wake, fail: Fail) -> None:
        self._wake = wake  # the writer's failures are its own: this process goes on

    def attach_calls(self, calls: Callable[[list[ProviderCall]], None]) -> None:
        return None  # the writer makes the provider calls its core asks for

    @property
    def runs_clock(self) -> bool:
        return False  # the writer's core runs it

    @property
    def failure(self) -> str | None:
        """The ledger is the writer's: while it is away orders wait for it
        (`confirm_timeout_ms`), this process is not at fault."""
        return None

    def refusal(self) -> str | None:
        return self.stopped

    def waiting(self) -> int:
        return len(self._waiters)

    def room(self) -> bool:
        return True  # bounded by the queue's limit, counting the waiters

    # Life cycle

    async def start(self) -> None:
        self._pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(
            keys.CONFIRM_CHANNEL, keys.RECEIPTS_CHANNEL, keys.reply_channel(self.process_id)
        )
        for name, loop in (
            ("scaled-feed", self._feed_forever),
            ("scaled-messages", self._messages_forever),
            ("scaled-sweep", self._sweep_forever),
            ("scaled-receipts", self._receipts_forever),
        ):
            self._tasks.append(asyncio.create_task(loop(), name=name))

    async def close(self, reason: str) -> None:
        self._closing = True
        if self._commands:
            await asyncio.wait(self._commands, timeout=BATCHES_CLOSE_WAIT_S)
        # Not one cancel and an await: a Redis call can swallow a cancel (stopping.py).
        await cancel_and_wait(self._tasks)
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.aclose()

    # Recording: accepted orders wait for the writer; commands go to it

    def record(self, placed: Placed) -> None:
        for job, events in placed:
            if isinstance(job, OrderJob):
                answer = order_answer(events)
                first = answer.first if isinstance(answer, OrderRepeated) else answer
                if isinstance(first, OrderRejected):
                    job.answer(order_result(answer, None))
                else:
                    self._wait_for_ledger(job, repeated=isinstance(answer, OrderRepeated))
                continue
            assert isinstance(job, CommandJob), "the writer runs the clock"
            task = asyncio.get_running_loop().create_task(self._run_command(job))
            self._commands.add(task)
            task.add_done_callback(self._commands.discard)

    async def _run_command(self, job: CommandJob) -> None:
        assert job.command is not None
        try:
            job.done(await self.run(job.command, job.sealed))
        except ServiceUnavailable as problem:
            job.failed(problem.reason, problem.detail)
        except Exception:
            log.exception("a command to the writer failed")
            job.failed(UNAVAILABLE, "error")

    def _wait_for_ledger(self, job: OrderJob, repeated: bool) -> None:
        command = job.order
        key = (command.buyer_id, command.order_id)
        waiter = self._waiters.get(key)
        if waiter is None:
            waiter = _Waiter(command.sale_id, command.order_id, self.clock_ms())
            self._waiters[key] = waiter
        waiter.jobs.append((job, repeated))
        known = self._confirmed.get(key)
        if known is not None:  # confirmed before this copy came: answer it now
            self._confirm(command.sale_id, key, *known)

    async def _feed_forever(self) -> None:
        delay_s = 0.1
        while True:
            try:
                await self._follow_feed()
                delay_s = 0.1
            except (RedisError, OSError) as error:
                log.warning("feed: redis trouble (%r); retrying in %.1f s", error, delay_s)
                await asyncio.sleep(delay_s)
                delay_s = min(5.0, delay_s * 2)

    async def _follow_feed(self) -> None:
        epoch_value = await self.client.get(keys.FEED_EPOCH)
        epoch = epoch_value.decode() if isinstance(epoch_value, bytes) else ""
        if not epoch:
            await asyncio.sleep(0.2)  # no writer has published yet
            return
        if epoch != self._epoch:
            # A new feed holds the whole history again; entries we applied are skipped
            # by index (the ledger only grows, so our replica is a prefix of it).
            self._epoch, self._feed_position = epoch, "0-0"
        stream = keys.feed_key(epoch)
        reply = await self.client.xread(
            {stream: self._feed_position}, count=FEED_READ_COUNT, block=FEED_BLOCK_MS
        )
        for message_id, fields in reply[0][1] if reply else []:
            self._feed_position = message_id.decode()
            index = int(fields[b"index"])
            if index <= self.applied_index:
                continue
            entry_type, entry_fields = decode_entry(fields[b"entry"])
            apply_entry(self.core, (entry_type, entry_fields))
            self.applied_index = index
            digest = digest_of_entry(entry_type, entry_fields)
            if digest is not None:
                self.core.trace.indexed(digest, index)
            if entry_type == "sale/v1" and entry_fields.get("action") == "closed":
                self._closed.closed(entry_fields["sale_id"], entry_fields["time_ms"])
        # This process's own order records of long-closed sales (the writer keeps the
        # authoritative ones) leave memory too.
        for key in self._closed.forget_due(self.core, self.clock_ms()):
            self._confirmed.pop(key, None)
        async with self._applied:
            self._applied.notify_all()

    async def _wait_applied(self, index: int, timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s), self._applied:
            await self._applied.wait_for(lambda: self.applied_index >= index)

    async def _messages_forever(self) -> None:
        delay_s = 0.1
        connected = True
        while True:
            try:
                if not connected:
                    # A pubsub whose subscribe failed has no connection to read: try
                    # again, with backoff, until Redis takes the subscription.
                    await asyncio.sleep(delay_s)
                    delay_s = min(5.0, delay_s * 2)
                    connected = await self._resubscribe()
                    continue
                message = await self._pubsub.get_message(timeout=1.0)
                delay_s = 0.1
            except (RedisError, OSError) as error:
                log.warning("subscription lost (%r); resubscribing in %.1f s", error, delay_s)
                connected = False
                continue
            if message is None or message.get("type") != "message":
                continue
            channel = message["channel"].decode()
            try:
                data = orjson.loads(message["data"])
                if channel == keys.CONFIRM_CHANNEL:
                    for sale_id, buyer_id, order_id, index, hold_ms, quantity in data:
                        self._confirm(sale_id, (buyer_id, order_id), index, hold_ms, quantity)
                elif channel == keys.RECEIPTS_CHANNEL:
                    # Fetched and sent by their own task: confirmations must not wait.
                    self._receipts_wanted.extend(
                        (sale_id, (buyer_id, order_id))
                        for sale_id, buyer_id, order_id in data
                        if (buyer_id, order_id) in self._receipt_waiters
                    )
                    self._receipts_wake.set()
                else:
                    future = self._requests.pop(data["request"], None)
                    if future is not None and not future.done():
                        future.set_result(data)
            except (RedisError, OSError):
                log.warning("fetching receipts failed; the sweep retries")
            except Exception:
                log.exception("bad message on %s", channel)

    async def _resubscribe(self) -> bool:
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.aclose()
        self._pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            await self._pubsub.subscribe(
                keys.CONFIRM_CHANNEL, keys.RECEIPTS_CHANNEL, keys.reply_channel(self.process_id)
            )
        except (RedisError, OSError):
            return False
        return True

    def _confirm(
        self, sale_id: str, key: OrderKey, index: int, hold_ms: int, quantity: int
    ) -> None:
        self._confirmed[key] = (index, hold_ms, quantity)
        if len(self._confirmed) > CONFIRMED_REMEMBERED_MAX:
            self._confirmed.popitem(last=False)
        waiter = self._waiters.pop(key, None)
        if waiter is None:
            return
        result = m.OrderResult(
            order_id=waiter.order_id,
            sale_id=sale_id,
            status="accepted",
            ledger_index=index,
            quantity=quantity,
            hold_expires_at_ms=hold_ms,
            order_status="held",
        )
        repeat = msgspec.structs.replace(result, repeated=True)
        for job, repeated in waiter.jobs:
            job.answer(repeat if repeated else result)
        receipts = [job.receipt for job, _ in waiter.jobs if job.receipt is not None]
        if receipts:
            self._want_receipt(key, sale_id, index, receipts)

    def _want_receipt(
        self, key: OrderKey, sale_id: str, index: int, sends: list[SendReceipt]
    ) -> None:
        if len(self._receipt_waiters) >= self.limits.receipts_pending_max:
            return  # best effort; GET /api/orders/{id}/receipt still has it
        known = self._receipt_waiters.get(key)
        listeners = [*known[2], *sends] if known else list(sends)
        self._receipt_waiters[key] = (sale_id, index, listeners, self.clock_ms())

    async def _receipts_forever(self) -> None:
        """Receipts a checkpoint covers, announced by the writer: fetched from Redis a turn
        at a time and sent with a pause after each turn (as the embedded service does)."""
        while True:
            if not self._receipts_wanted:
                self._receipts_wake.clear()
                await self._receipts_wake.wait()
                continue
            wanted = [
                self._receipts_wanted.popleft()
                for _ in range(min(len(self._receipts_wanted), RECEIPTS_FETCHED_MAX))
            ]
            try:
                await self._fetch_receipts(wanted)
            except (RedisError, OSError):
                log.warning("fetching receipts failed; the sweep retries")

    async def _fetch_receipts(self, wanted: list[tuple[str, OrderKey]]) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for sale_id, (buyer_id, order_id) in wanted:
                pipe.hget(keys.sale_receipts_key(sale_id), keys.order_field(buyer_id, order_id))
            proofs = await pipe.execute()
        sent = 0
        for (_, key), proof in zip(wanted, proofs, strict=True):
            if proof is None:
                continue
            waiting = self._receipt_waiters.pop(key, None)
            if waiting is None:
                continue
            _, index, sends, _ = waiting
            receipt = m.OrderReceipt(order_id=key[1], ledger_index=index, proof=proof.decode())
            for send in sends:
                send(receipt)
            sent += 1
            if sent % RECEIPTS_PER_TURN_MAX == 0:
                await asyncio.sleep(RECEIPT_TURN_PAUSE_S)

    async def _sweep_forever(self) -> None:
        """Waiters that missed their message ask Redis; those past the timeout give up."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            try:
                await self._sweep()
            except (RedisError, OSError) as error:
                log.info("sweep: redis trouble (%r)", error)
            except Exception:
                log.exception("sweep failed")

    async def _sweep(self) -> None:
        await self._check_writer()
        now_ms = self.clock_ms()
        for key, waiter in list(self._waiters.items()):
            if now_ms - waiter.since_ms > self.confirm_timeout_ms:
                del self._waiters[key]
                for job, _ in waiter.jobs:
                    job.failed(
                        UNAVAILABLE,
                        "the ledger has not confirmed this order yet; retry with the same order_id",
                    )
        late = [
            (key, waiter)
            for key, waiter in self._waiters.items()
            if now_ms - waiter.since_ms > LOOKUP_AFTER_MS
        ]
        if late:
            async with self.client.pipeline(transaction=False) as pipe:
                for (buyer_id, order_id), waiter in late:
                    pipe.hget(
                        keys.sale_ledger_key(waiter.sale_id), keys.order_field(buyer_id, order_id)
                    )
                records = await pipe.execute()
            for (key, waiter), record in zip(late, records, strict=True):
                if record is not None:
                    value = orjson.loads(record)
                    if value.get("ledger_index") is not None:
                        self._confirm(
                            waiter.sale_id,
                            key,
                            value["ledger_index"],
                            value["hold_expires_at_ms"],
                            value["quantity"],
                        )
        stale = [
            (sale_id, key)
            for key, (sale_id, _, _, since_ms) in self._receipt_waiters.items()
            if now_ms - since_ms > 2 * LOOKUP_AFTER_MS
        ]
        if stale:
            await self._fetch_receipts(stale)
        for key, (_, _, _, since_ms) in list(self._receipt_waiters.items()):
            if now_ms - since_ms > 10 * self.confirm_timeout_ms:
                del self._receipt_waiters[key]

    async def _check_writer(self) -> None:
        """Whether the writer stopped: if so, everyone waiting for it hears why now."""
        stopped = await self.client.get(keys.WRITER_STOPPED)
        self.stopped = stopped.decode() if isinstance(stopped, bytes) else None
        if self.stopped is None:
            return
        # Their orders are on the streams: the restarted writer records them, and a retry
        # with the same order id gets that answer.
        waiters, self._waiters = self._waiters, {}
        for waiter in waiters.values():
            for job, _ in waiter.jobs:
                job.failed(UNAVAILABLE, self.stopped)
        requests, self._requests = self._requests, {}
        for future in requests.values():
            if not future.done():
                future.set_exception(ServiceUnavailable(UNAVAILABLE, self.stopped))

    async def run(self, command: Command, sealed: bytes | None = None) -> CommandOutcome:
        """The command to the writer, and its answer once the replica has its entries."""
        fields: dict[Any, Any] = {"command": keys.encode_command(command)}
        if sealed is not None:
            fields["sealed"] = b64url_encode(sealed)
        reply = await self._ask(fields)
        if reply["feed_index"] >= 0:
            try:
                await self._wait_applied(reply["feed_index"], self.command_timeout_s)
            except TimeoutError:
                raise ServiceUnavailable(UNAVAILABLE, "the feed is behind; retry") from None
        rejection = (reply["rejection"][0], reply["rejection"][1]) if reply["rejection"] else None
        return CommandOutcome(
            rejection,
            [(kind, index) for kind, index in reply["recorded"]],
        )

    async def _order_record(self, buyer_id: str, order_id: str) -> dict[str, Any] | None:
        sale_id = await self.client.hget(keys.buyer_key(buyer_id), order_id)
        if sale_id is None:
            return None
        record = await self.client.hget(
            keys.sale_ledger_key(sale_id.decode()), keys.order_field(buyer_id, order_id)
        )
        if record is None:
            return None
        value: dict[str, Any] = orjson.loads(record)
        return value

    async def receipt(self, buyer_id: str, order_id: str, timeout_s: float) -> bytes | None:
        record = await self._order_record(buyer_id, order_id)
        if record is None:
            return None
        async with asyncio.timeout(timeout_s):
            while True:
                proof = await self.client.hget(
                    keys.sale_receipts_key(record["sale_id"]), keys.order_field(buyer_id, order_id)
                )
                if proof is not None:
                    assert isinstance(proof, bytes)
                    return proof
                await asyncio.sleep(0.2)

    async def merchant_orders(
        self, merchant_id: str, sale_id: str | None, limit: int
    ) -> list[dict[str, Any]]:
        orders: list[dict[str, Any]] = []
        for sale in self.core.sales.of_merchant(merchant_id):
            if sale_id is not None and sale.sale_id != sale_id:
                continue
            records: dict[bytes, bytes] = {}
            async for field_name, value in self.client.hscan_iter(
                keys.sale_ledger_key(sale.sale_id), count=500
            ):
                records[field_name] = value
                if len(records) + len(orders) >= limit:
                    break
            fields = list(records)
            boxes = (
                await self.client.hmget(keys.sale_shipping_key(sale.sale_id), fields)
                if fields
                else []
            )
            for field_name, box in zip(fields, boxes, strict=True):
                view = orjson.loads(records[field_name])
                view.pop("paid_index", None)
                view.pop("hold_expires_at_ms", None)
                view["shipping_sealed"] = b64url_encode(box) if box is not None else None
                orders.append(view)
            if len(orders) >= limit:
                break
        return orders

    async def query(self, what: str, **arguments: Any) -> Any:
        """A read of the writer's core (the escrow lives there), answered after the
        entries read with it are durable."""
        reply = await self._ask({"query": orjson.dumps({"what": what, "arguments": arguments})})
        return reply["data"]

    async def _ask(self, fields: dict[Any, Any]) -> dict[str, Any]:
        """`fields` (a command or a query) to the writer's stream; its reply."""
        if self.stopped is not None:
            raise ServiceUnavailable(UNAVAILABLE, self.stopped)
        self._request_number += 1
        request = f"{self.process_id}:{self._request_number}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._requests[request] = future
        fields = {"request": request, "reply": keys.reply_channel(self.process_id), **fields}
        try:
            await self.client.xadd(keys.COMMANDS, fields, maxlen=100_000, approximate=True)
            return await asyncio.wait_for(future, self.command_timeout_s)
        except TimeoutError:
            # First: TimeoutError is an OSError, which the next clause would take for Redis.
            raise ServiceUnavailable(UNAVAILABLE, "the ledger writer did not answer") from None
        except (RedisError, OSError) as error:
            raise ServiceUnavailable(UNAVAILABLE, f"redis: {error!r}") from None
        finally:
            self._requests.pop(request, None)

    async def order_life(self, buyer_id: str, order_id: str) -> dict[str, Any] | None:
        view: dict[str, Any] | None = await self.query(
            "order_life", buyer_id=buyer_id, order_id=order_id
        )
        return view

    async def recommendations(
        self, room_id: str, buyer_id: str, beside: str, count: int, now_ms: int
    ) -> dict[str, Any]:
        """From the writer's core: it alone sees every paid order."""
        arguments = {"room_id": room_id, "buyer_id": buyer_id, "beside": beside, "count": count}
        view: dict[str, Any] | None = await self.query("recommendations", **arguments)
        if view is None:
            raise ServiceUnavailable(UNAVAILABLE, "the ledger writer could not answer")
        return view

    async def seen(
        self, signal: Signal, room_id: str, product_id: str, buyer_id: str, now_ms: int
    ) -> None:
        arguments = {"room_id": room_id, "product_id": product_id, "buyer_id": buyer_id}
        await self.query("seen", signal=str(signal), **arguments)

    async def operating(
        self, scope: Scope, scope_id: str, period: Period, from_ms: int, to_ms: int
    ) -> dict[int, dict[str, int]]:
        """The ledger's counters, from the writer's (operating.py)."""
        arguments = {"scope": str(scope), "scope_id": scope_id, "period": str(period)}
        points = await self.query("operating", from_ms=from_ms, to_ms=to_ms, **arguments)
        if points is None:
            raise ServiceUnavailable(UNAVAILABLE, "the ledger writer could not answer")
        return {int(start): counts for start, counts in points.items()}

    async def merchant_money(self, merchant_id: str) -> dict[str, Any]:
        money: dict[str, Any] = await self.query("merchant_money", merchant_id=merchant_id)
        return money

    async def statement(self, merchant_id: str, from_ms: int, to_ms: int) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await self.query(
            "statement", merchant_id=merchant_id, from_ms=from_ms, to_ms=to_ms
        )
        return rows

    async def product_reviews(self, product_id: str, limit: int) -> dict[str, Any]:
        """The writer has the orders' timelines (the proof of purchase): asked there."""
        view: dict[str, Any] = await self.query(
            "product_reviews", product_id=product_id, limit=limit
        )
        return view

    async def groups(self, what: str, key: str, now_ms: int) -> dict[str, Any] | None:
        """The writer's core holds the groups (their members' payments are its)."""
        view: dict[str, Any] | None = await self.query("groups", kind=what, key=key)
        return view

    async def auctions(self, what: str, key: str, now_ms: int) -> dict[str, Any] | None:
        """The writer's core runs the auctions (it sequences every bid)."""
        view: dict[str, Any] | None = await self.query("auctions", kind=what, key=key)
        return view

    async def accepted_order(self, buyer_id: str, order_id: str) -> AcceptedView | None:
        try:
            record = await self._order_record(buyer_id, order_id)
        except (RedisError, OSError) as error:
            raise ServiceUnavailable(UNAVAILABLE, f"redis: {error}") from None
        if record is None:
            return None
        amount = int(record["quantity"]) * int(record["price_cents"])
        return AcceptedView(str(record["sale_id"]), amount, str(record["currency"]))

    async def keep_sealed(self, buyer_id: str, order_id: str, sealed: bytes) -> None:
        """Nothing here: the sealed details go with the payment to the writer, which
        stores them before it records the payment."""
        return None

    async def paid_index(self, buyer_id: str, order_id: str) -> int | None:
        record = await self._order_record(buyer_id, order_id)
        paid = (record or {}).get("paid_index")
        return None if paid is None else int(paid)


class RedisChallenges:
    """Challenges live in Redis, so any process can take the answer, once."""

    def __init__(self, client: Any, sessions: SessionAuthority) -> None:
        self.client = client
        self.sessions = sessions

    async def issue_challenge(self, now_ms: int) -> Challenge | Rejected:
        issued = self.sessions.issue_challenge(now_ms)
        if isinstance(issued, Rejected):
            return issued
        self.sessions.withdraw_challenge(issued.challenge)
        try:
            await self.client.set(
                keys.challenge_key(issued.challenge),
                issued.expires_at_ms,
                px=self.sessions.challenge_ttl_ms,
            )
        except (RedisError, OSError) as error:
            return Rejected(Reason.CAPACITY, f"redis is unavailable: {error}")
        return issued

    async def open_session(
        self, challenge: str, public_key: str, signature: str, now_ms: int
    ) -> SessionGranted | Rejected:
        """Claimed from Redis with GETDEL, so a challenge opens at most one session
        across all processes (unlike one process alone, a forged answer uses it up)."""
        try:
            stored = await self.client.getdel(keys.challenge_key(challenge))
        except (RedisError, OSError) as error:
            return Rejected(Reason.CAPACITY, f"redis is unavailable: {error}")
        if stored is None:
            return Rejected(Reason.UNKNOWN_CHALLENGE, "no such challenge (or already used)")
        self.sessions.admit_challenge(challenge, int(stored))
        granted = self.sessions.open_session(challenge, public_key, signature, now_ms)
        self.sessions.withdraw_challenge(challenge)
        return granted


def scaled_pipeline(
    redis_url: str,
    clock_ms: Callable[[], int],
    limits: OrderLimits | None = None,
    order_freshness_ms: int = 30_000,
    confirm_timeout_ms: int = 20_000,
    connections_max: int = 32,
    command_timeout_s: float = COMMAND_TIMEOUT_S,
    session_secret: bytes | None = None,
    webhook_secret: bytes | None = None,
    late_answer_ms: int = 2_000,
) -> OrderPipeline:
    """A web process's pipeline on Redis (`session_secret`, `webhook_secret`: the ones all
    processes share, `shared_secret`; random ones without them). The payment provider's
    calls are the writer's; here, authorizations and webhooks."""
    limits = limits or OrderLimits()
    core = CommerceCore(order_freshness_ms=order_freshness_ms, external_stock=True)
    store = RedisStockStore.from_url(redis_url, connections_max=connections_max)
    ledger = WriterLedger(
        core, store.client, clock_ms, limits, confirm_timeout_ms, command_timeout_s
    )
    sessions = SessionAuthority(core.identities, session_secret or secrets.token_bytes(32))
    webhook_secret = webhook_secret or secrets.token_bytes(32)
    return OrderPipeline(
        core,
        RedisStock(core, store, clock_ms, ledger, limits),
        ledger,
        RedisChallenges(store.client, sessions),
        sessions,
        clock_ms,
        limits,
        provider=TestPaymentProvider(webhook_secret, clock_ms, late_answer_ms),
        webhook_secret=webhook_secret,
    )
