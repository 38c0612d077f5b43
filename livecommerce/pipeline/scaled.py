"""A scaled-out web process's order path: stock in Redis, the ledger in the writer process.

    order --> this process's replica core: identity, signature, sale open, price, quantity
          --> one Redis script per order (pipelined in batches): idempotency, per-buyer
              limit, stock, decrement, and the order appended to its sale's stream
          --> wait for the ledger writer's confirmation (lc:confirm) --> "accepted" with
              the ledger index; the receipt when the writer stores it (lc:receipts).

Commands (register, list, restock, link a room, schedule, stop, pay) go to the writer
over the `lc:commands` stream and are answered on this process's reply channel. The
replica core follows the writer's feed of state entries, so reads (sales, products,
identities) are local; a command's answer waits until the replica has its entries.

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
from livecommerce.commerce.identity import (
    Challenge,
    SessionAuthority,
    SessionGranted,
    b64url_encode,
)
from livecommerce.commerce.orders import (
    OrderAccepted,
    OrderRejected,
    OrderRepeated,
    PayOrder,
    PlaceOrder,
    PreparedOrder,
)
from livecommerce.commerce.privacy import seal_shipping
from livecommerce.commerce.replay import apply_entry
from livecommerce.commerce.results import Reason, Rejected
from livecommerce.commerce.sales import Sale
from livecommerce.pipeline.answers import (
    BUSY,
    UNAVAILABLE,
    order_answer,
    order_result,
    refused_order,
    refused_payment,
)
from livecommerce.pipeline.forgetting import ClosedSales
from livecommerce.pipeline.service import (
    RECEIPT_TURN_PAUSE_S,
    RECEIPTS_PER_TURN_MAX,
    CommandOutcome,
    OrderLimits,
    ServiceUnavailable,
)
from livecommerce.stock.base import StockStoreError, StockStoreUnavailable
from livecommerce.stock.redis_lua import RedisStockStore
from livecommerce.stopping import cancel_and_wait

log = logging.getLogger("livecommerce.pipeline.scaled")

OrderKey = tuple[str, str]
Reply = Callable[[m.OrderResult], None]
SendReceipt = Callable[[m.OrderReceipt], None]

FEED_READ_COUNT = 1_000
FEED_BLOCK_MS = 1_000
SWEEP_INTERVAL_S = 0.25
LOOKUP_AFTER_MS = 1_000  # a waiter this old asks Redis directly (a confirmation missed)
COMMAND_TIMEOUT_S = 15.0
CONFIRMED_REMEMBERED_MAX = 200_000
RECEIPTS_FETCHED_MAX = 256  # receipts fetched from Redis in one pipeline


@dataclass
class _Waiter:
    """Everyone waiting for one order's confirmation: each copy of the order that reached
    this process, with whether it was the copy that took the stock (`repeated` False) or
    a repeat of it (True: another copy, here or elsewhere, was first)."""

    sale_id: str
    order_id: str
    since_ms: int
    replies: list[tuple[Reply, bool]] = field(default_factory=list)  # (reply, repeated)
    receipts: list[SendReceipt] = field(default_factory=list)


class ScaledOrderService:
    def __init__(
        self,
        redis_url: str,
        clock_ms: Callable[[], int],
        limits: OrderLimits | None = None,
        order_freshness_ms: int = 30_000,
        confirm_timeout_ms: int = 20_000,
        connections_max: int = 32,
        command_timeout_s: float = COMMAND_TIMEOUT_S,
    ) -> None:
        self.core = CommerceCore(order_freshness_ms=order_freshness_ms, external_stock=True)
        self.clock_ms = clock_ms
        self.limits = limits = limits or OrderLimits()
        self.confirm_timeout_ms = confirm_timeout_ms
        self.command_timeout_s = command_timeout_s
        # Why the ledger writer stopped (its disk failed), as it said in Redis; or None.
        self.writer_stopped: str | None = None
        self.process_id = secrets.token_hex(6)
        self.store = RedisStockStore.from_url(redis_url, connections_max=connections_max)
        # Typed loosely: redis-py's reply types are unions of everything.
        self.client: Any = self.store.client
        self._pubsub: Any = None
        self._jobs: deque[tuple[PlaceOrder, Reply, SendReceipt | None]] = deque()
        self._wake = asyncio.Event()
        self._in_flight = asyncio.Semaphore(limits.ledger_batches_in_flight_max)
        self._batches: set[asyncio.Task[None]] = set()
        self._waiters: dict[OrderKey, _Waiter] = {}
        self._receipt_waiters: dict[OrderKey, tuple[str, int, list[SendReceipt], int]] = {}
        self._receipts_wanted: deque[tuple[str, OrderKey]] = deque()
        self._receipts_wake = asyncio.Event()
        self._confirmed: OrderedDict[OrderKey, tuple[int, int, int]] = OrderedDict()
        self._requests: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._request_number = 0
        self._epoch = ""
        self._feed_position = "0-0"
        self.applied_index = -1
        self._closed = ClosedSales(self.limits.closed_sale_forget_ms)
        self._applied = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        # Set by the app once the shared secret is known (wiring.scaled_lifespan).
        self.sessions = SessionAuthority(self.core.identities, secrets.token_bytes(32))

    # Life cycle

    async def start(self) -> None:
        self._pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(
            keys.CONFIRM_CHANNEL, keys.RECEIPTS_CHANNEL, keys.reply_channel(self.process_id)
        )
        for name, loop in (
            ("scaled-feed", self._feed_forever),
            ("scaled-messages", self._messages_forever),
            ("scaled-orders", self._orders_forever),
            ("scaled-sweep", self._sweep_forever),
            ("scaled-receipts", self._receipts_forever),
        ):
            self._tasks.append(asyncio.create_task(loop(), name=name))

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._batches:
            await asyncio.wait(self._batches, timeout=5)
        # Not one cancel and an await: a Redis call can swallow a cancel (stopping.py).
        await cancel_and_wait(self._tasks)
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.aclose()
        await self.store.close()

    @property
    def failed(self) -> str | None:
        """Why this process takes no orders, or None. The ledger is the writer's: while it
        is away orders wait for it (`confirm_timeout_ms`), this process is not at fault."""
        return "the server is shutting down" if self._closing else None

    async def shared_secret(self) -> bytes:
        """The session-token key all web processes share, made once per Redis."""
        await self.client.set(keys.SESSION_SECRET, secrets.token_bytes(32), nx=True)
        secret = await self.client.get(keys.SESSION_SECRET)
        assert isinstance(secret, bytes)
        assert len(secret) == 32
        return secret

    # The replica core: the writer's feed of state entries

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

    # Messages from the writer: confirmations, receipts, command replies

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
        for reply, repeated in waiter.replies:
            reply(repeat if repeated else result)
        if waiter.receipts:
            self._want_receipt(key, sale_id, index, waiter.receipts)

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

    # Orders

    def submit_order(
        self, command: PlaceOrder, reply: Reply, receipt: SendReceipt | None = None
    ) -> None:
        if self._closing:
            reply(refused_order(command.order_id, command.sale_id, UNAVAILABLE, "shutting down"))
            return
        if self.writer_stopped is not None:
            reply(
                refused_order(command.order_id, command.sale_id, UNAVAILABLE, self.writer_stopped)
            )
            return
        if len(self._jobs) + len(self._waiters) >= self.limits.order_queue_max:
            reply(refused_order(command.order_id, command.sale_id, BUSY, "busy; retry"))
            return
        self._jobs.append((command, reply, receipt))
        self._wake.set()

    async def place_order(self, command: PlaceOrder) -> m.OrderResult:
        future: asyncio.Future[m.OrderResult] = asyncio.get_running_loop().create_future()

        def reply(result: m.OrderResult) -> None:
            if not future.done():
                future.set_result(result)

        self.submit_order(command, reply)
        return await future

    async def _orders_forever(self) -> None:
        while True:
            if not self._jobs:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._in_flight.acquire()
            batch = [
                self._jobs.popleft()
                for _ in range(min(len(self._jobs), self.limits.order_batch_max))
            ]
            task = asyncio.create_task(self._reserve_batch(batch))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    async def _reserve_batch(
        self, batch: list[tuple[PlaceOrder, Reply, SendReceipt | None]]
    ) -> None:
        try:
            now_ms = self.clock_ms()
            prepared: list[tuple[PreparedOrder, Reply, SendReceipt | None, bytes]] = []
            for command, reply, receipt in batch:
                if self.writer_stopped is not None:  # queued before the sweep saw it
                    reply(
                        refused_order(
                            command.order_id, command.sale_id, UNAVAILABLE, self.writer_stopped
                        )
                    )
                    continue
                if (
                    isinstance(command.sale_id, str)
                    and self.core.sales.get(command.sale_id) is None
                ):
                    # Maybe only not here yet (the feed lags the writer by milliseconds):
                    # answer without letting the core remember it.
                    reply(
                        refused_order(
                            command.order_id, command.sale_id, "unknown_sale", "no such sale"
                        )
                    )
                    continue
                events, ready = self.core.prepare_order(command, now_ms)
                if ready is None:
                    self._answer(command, order_answer(events), reply, receipt)
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
                prepared.append((ready, reply, receipt, record))
            if not prepared:
                return
            requests = [
                (
                    ready.command.sale_id,
                    ready.command.buyer_id,
                    ready.command.order_id,
                    ready.command.quantity,
                    ready.per_buyer_limit,
                    record,
                )
                for ready, _, _, record in prepared
            ]
            try:
                results = await self.store.reserve_and_record_many(requests)
            except StockStoreUnavailable as error:
                for ready, reply, _, _ in prepared:
                    command = ready.command
                    reply(refused_order(command.order_id, command.sale_id, UNAVAILABLE, str(error)))
                return
            now_ms = self.clock_ms()
            for (ready, reply, receipt, _), result in zip(prepared, results, strict=True):
                command = ready.command
                if isinstance(result, StockStoreError):
                    reply(
                        refused_order(command.order_id, command.sale_id, UNAVAILABLE, str(result))
                    )
                    continue
                events = self.core.complete_order(ready, result, now_ms)
                answer = order_answer(events)
                if isinstance(answer, OrderAccepted) and result.duplicate:
                    # Another process (or an earlier try) was first: its answer stands.
                    self._wait_for_ledger(command, reply, receipt, repeated=True)
                else:
                    self._answer(command, answer, reply, receipt)
        except Exception:
            log.exception("an order batch failed")
            for command, reply, _ in batch:
                reply(refused_order(command.order_id, command.sale_id, UNAVAILABLE, "error"))
        finally:
            self._in_flight.release()

    def _answer(
        self,
        command: PlaceOrder,
        answer: OrderAccepted | OrderRejected | OrderRepeated,
        reply: Reply,
        receipt: SendReceipt | None,
    ) -> None:
        first = answer.first if isinstance(answer, OrderRepeated) else answer
        if isinstance(first, OrderRejected):
            reply(order_result(answer, None))
            return
        self._wait_for_ledger(command, reply, receipt, repeated=isinstance(answer, OrderRepeated))

    def _wait_for_ledger(
        self, command: PlaceOrder, reply: Reply, receipt: SendReceipt | None, repeated: bool
    ) -> None:
        key = (command.buyer_id, command.order_id)
        waiter = self._waiters.get(key)
        if waiter is None:
            waiter = _Waiter(command.sale_id, command.order_id, self.clock_ms())
            self._waiters[key] = waiter
        waiter.replies.append((reply, repeated))
        if receipt is not None:
            waiter.receipts.append(receipt)
        known = self._confirmed.get(key)
        if known is not None:  # confirmed before this copy came: answer it now
            self._confirm(command.sale_id, key, *known)

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
                for reply, _ in waiter.replies:
                    reply(
                        refused_order(
                            waiter.order_id,
                            waiter.sale_id,
                            UNAVAILABLE,
                            "the ledger has not confirmed this order yet; retry with the same "
                            "order_id",
                        )
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
        self.writer_stopped = stopped.decode() if isinstance(stopped, bytes) else None
        if self.writer_stopped is None:
            return
        # Their orders are on the streams: the restarted writer records them, and a retry
        # with the same order id gets that answer.
        waiters, self._waiters = self._waiters, {}
        for waiter in waiters.values():
            refused = refused_order(
                waiter.order_id, waiter.sale_id, UNAVAILABLE, self.writer_stopped
            )
            for reply, _ in waiter.replies:
                reply(refused)
        requests, self._requests = self._requests, {}
        for future in requests.values():
            if not future.done():
                future.set_exception(ServiceUnavailable(UNAVAILABLE, self.writer_stopped))

    # Sessions: challenges live in Redis, so any process can take the answer, once

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

    # Commands, through the writer

    async def run(self, command: Command, sealed: bytes | None = None) -> CommandOutcome:
        if self.writer_stopped is not None:
            raise ServiceUnavailable(UNAVAILABLE, self.writer_stopped)
        self._request_number += 1
        request = f"{self.process_id}:{self._request_number}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._requests[request] = future
        fields: dict[Any, Any] = {
            "request": request,
            "reply": keys.reply_channel(self.process_id),
            "command": keys.encode_command(command),
        }
        if sealed is not None:
            fields["sealed"] = b64url_encode(sealed)
        try:
            await self.client.xadd(keys.COMMANDS, fields, maxlen=100_000, approximate=True)
            reply = await asyncio.wait_for(future, self.command_timeout_s)
        except TimeoutError:
            # First: TimeoutError is an OSError, which the next clause would take for Redis.
            raise ServiceUnavailable(UNAVAILABLE, "the ledger writer did not answer") from None
        except (RedisError, OSError) as error:
            raise ServiceUnavailable(UNAVAILABLE, f"redis: {error!r}") from None
        finally:
            self._requests.pop(request, None)
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

    async def pay(
        self, buyer_id: str, order_id: str, shipping: dict[str, str] | None
    ) -> m.PayResult:
        try:
            record = await self._order_record(buyer_id, order_id)
        except (RedisError, OSError) as error:
            return refused_payment(order_id, UNAVAILABLE, f"redis: {error}")
        if record is None:
            return refused_payment(order_id, Reason.UNKNOWN_ORDER, "no such accepted order")
        commitment, box = "", None
        if shipping:
            sale = self.core.sales.get(record["sale_id"])
            if sale is None:
                return refused_payment(order_id, UNAVAILABLE, "sale not known here yet; retry")
            sealed = seal_shipping(shipping, sale.spec.merchant_id)
            if isinstance(sealed, Rejected):
                return refused_payment(order_id, sealed.reason, sealed.detail)
            commitment, box = sealed.commitment_hex, sealed.sealed
        try:
            outcome = await self.run(PayOrder(buyer_id, order_id, commitment), box)
        except ServiceUnavailable as error:
            return refused_payment(order_id, error.reason, error.detail)
        if outcome.rejection is not None:
            return refused_payment(order_id, *outcome.rejection)
        paid = outcome.index_of("OrderPaid")
        if paid is None:  # paid before: the first payment's entry
            fresh = await self._order_record(buyer_id, order_id)
            paid = (fresh or {}).get("paid_index")
        return m.PayResult(
            order_id=order_id, status="paid", ledger_index=-1 if paid is None else paid
        )

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
