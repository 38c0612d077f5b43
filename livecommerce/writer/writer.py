"""The ledger writer: the one process that appends to the ledger when scaled out.

    web processes --reserve script: stock taken + order appended to {sale:<id>}:accepted
                 --XADD lc:commands (register, list, restock, link, schedule, stop, pay)
    writer: XREAD the streams from its positions -> the authoritative core (rebuilt from
            the ledger at start) -> ledger.append_many (durable) -> then, in Redis: the
            order records, the feed of state entries, its positions, and PUBLISH the
            confirmations and replies; web processes answer buyers only then.

Crash ordering, and why nothing acknowledged is lost:
- An order is on its sale's stream exactly when Redis took its stock (one script).
- The writer advances its stream positions only after the ledger append is durable, so
  after a crash it reads again what it may not have appended; the core knows which
  orders it has and re-sends their confirmations instead of recording them twice.
- Expiry: the hold expires in the core and goes to the ledger in core order (so the
  ledger's stock entries replay exactly); the units go back in Redis after the append
  (release script, retried until Redis takes it). A crash in between is repaired at the
  next start, which releases every expired order of a live sale again (a release
  returns units once, so repeating one gives back nothing).
- Redis losing its data (no `lc:alive`): stock of every live sale is rebuilt from the
  core, i.e. from the ledger. Accepted orders Redis lost were never confirmed, so no
  buyer heard of them.
- Redis going back in time (restarted from an RDB snapshot older than the writer's last
  writes): `lc:alive` is still there, so the writer also keeps the ledger's size in Redis
  (`lc:writer:ledger_size`), set with a check that Redis still holds the size it set
  before, and in `redis_mirrored_size` in its data directory. A size lower than it set
  means Redis lost writes: it is rebuilt as if it had lost everything, and each live
  sale's stream is emptied with its rebuild (its orders were taken against stale stock;
  none was confirmed, as none is in the ledger, and their buyers' retries are evaluated
  afresh).
- The feed (state entries for web processes) is republished from the ledger at every
  start under a new epoch; web processes skip entries they already applied by index.
- A failed write to its disk (the ledger's, or the shipping store's before it) stops the
  writer for good, as it stops the embedded server: its core has applied what the disk
  may not hold, so it reads nothing more, says why in `lc:writer:stopped` (web processes
  then refuse orders at once instead of taking stock nobody records) and waits to be
  restarted. Never retried as Redis trouble: the same commands read again would meet a
  core that already applied them, and a payment would be answered "paid" with nothing
  on the ledger. The streams keep every order it did not append; the restart records them.
- Receipts wait in memory for the checkpoint that covers their orders; Redis keeps the
  index below which all are stored (`lc:receipts:through`, written with them). At every
  sync with Redis the writer queues again each accepted order from there on (all of them
  when Redis lost its data), so a crash before the checkpoint loses no receipt.

One task does the reading, applying and appending, so the ledger's order is the order
the core saw things. Receipts, stock pushes and sale events run beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as redis
from redis.exceptions import RedisError

from ledger import Ledger, LedgerClosed, decode_entry, encode_entry
from ledger.http import create_app as create_ledger_app
from ledger.log import describe_failure
from livecommerce import protocol as m
from livecommerce import redis_keys as keys
from livecommerce.clock import wall_clock_ms
from livecommerce.commerce.auctions import AUCTION_EVENTS, auction_id_of
from livecommerce.commerce.core import Command, CommandRejected, CommerceCore
from livecommerce.commerce.escrow import ProviderCall, RunPayouts, SetRules
from livecommerce.commerce.events import Event
from livecommerce.commerce.identity import b64url_decode
from livecommerce.commerce.operating import Period, Scope
from livecommerce.commerce.orders import (
    OrderAccepted,
    OrderExpired,
    OrderPaid,
    PayOrder,
)
from livecommerce.commerce.recommend import Signal
from livecommerce.commerce.replay import apply_entry, finish, order_records
from livecommerce.commerce.sales import (
    LOT_SALE_PREFIX,
    Sale,
    SaleClosed,
    SaleOpened,
    SaleScheduled,
    SaleState,
    stock_changed,
    superseded_stock_changes,
)
from livecommerce.gc_pauses import freeze_survivors_forever, young_generation_threshold
from livecommerce.hub.broker import BrokerUnavailable
from livecommerce.hub.redis_broker import RedisBroker
from livecommerce.keyfiles import load_or_create_secret
from livecommerce.payments.sandbox import TestPaymentProvider
from livecommerce.pipeline.answers import sale_view
from livecommerce.pipeline.auctions import auction_view, auctions_view
from livecommerce.pipeline.forgetting import ClosedSales
from livecommerce.pipeline.groups import groups_view
from livecommerce.pipeline.payments import ProviderCaller
from livecommerce.pipeline.pipeline import checkpoint_size
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
from livecommerce.settings import Settings, escrow_rules, ledger_dir, ledger_settings
from livecommerce.stock.base import StockStoreError
from livecommerce.stock.redis_lua import RedisStockStore, accepted_stream_key
from livecommerce.stopping import cancel_and_wait

log = logging.getLogger("livecommerce.writer")

READ_BLOCK_MS = 100
READ_COUNT_MAX = 1_000  # per stream per read; two entries per order stays under a batch
ENTRIES_PER_APPEND_MAX = 8_000
CLOSED_STREAM_KEEP_MS = 60_000  # read a closed sale's stream this long for late orders
FEED_CHUNK = 1_000
RETRY_DELAY_S_MAX = 5.0
ALIVE_CHECK_MS = 1_000
STOCK_PUSH_INTERVAL_S = 0.1
MIRRORED_SIZE_FILE = "redis_mirrored_size"
# Sets lc:writer:ledger_size only if Redis still holds what this writer set last.
LEDGER_SIZE_LUA = """
local now = redis.call('GET', KEYS[1])
if (now or '') ~= ARGV[1] then
  return redis.error_reply('LEDGER_SIZE redis holds ' .. tostring(now) .. ', not ' .. ARGV[1])
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""
# Receipts made and stored in one pass (one pass over the tree, one HSET per sale): after a
# restart the writer may owe thousands at once.
RECEIPTS_PER_PASS_MAX = 4_096


ACCEPTED_FIELDS = OrderAccepted.__struct_fields__


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


@dataclass
class _Pending:
    """One iteration's work: events in core order, and what to tell whom once durable."""

    events: list[Event] = field(default_factory=list)
    replies: list[tuple[str, str, int, int]] = field(
        default_factory=list
    )  # channel, req, first, end
    positions: dict[str, str] = field(default_factory=dict)
    reconfirm: list[OrderAccepted] = field(default_factory=list)
    queries: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)


class WriterStopped(Exception):
    """The writer's disk failed: nothing more is read until a restart (see above)."""


class LedgerWriter:
    def __init__(self, settings: Settings, clock_ms: Any = wall_clock_ms) -> None:
        assert settings.redis_url, "the ledger writer needs --redis"
        self.settings = settings
        self.clock_ms = clock_ms
        self.core = CommerceCore(order_freshness_ms=settings.order_freshness_ms)
        self.ledger: Ledger | None = None
        self.shipping: ShippingStore | None = None
        self.timelines = Timelines()
        self.reviews = ReviewIndexes()
        self.ledger_metrics = operating_metrics(self.core)  # the ledger's feed (operating.py)
        # The provider calls the escrow asks for are made here, where its core is; their
        # results come back as commands on the stream, as the web processes' do.
        self.provider = TestPaymentProvider(
            load_or_create_secret(settings.data_dir / "webhook_secret"),
            clock_ms,
            settings.payment_late_answer_ms,
        )
        self.caller = ProviderCaller(
            self.provider, self._submit_command, self.core.escrow.outstanding_calls
        )
        self.client = redis.Redis.from_url(
            settings.redis_url, socket_timeout=5, socket_connect_timeout=5
        )
        self.store = RedisStockStore(self.client)
        self._set_ledger_size = self.client.register_script(LEDGER_SIZE_LUA)
        # The ledger size Redis was last known to hold (kept on disk too, for a restart),
        # and what lc:writer:ledger_size reads now as far as this writer knows.
        self._mirrored_size = 0
        self._mirrored_note_failed = False  # said once until a note is written again
        self._redis_size = ""
        self.broker = RedisBroker(
            settings.redis_url, settings.history_events_max, process_id="ledger-writer"
        )
        self._index_of: dict[tuple[str, str], int] = {}
        self._paid_index_of: dict[tuple[str, str], int] = {}
        self._feed: list[tuple[int, bytes]] = []  # (index, entry) of state entries
        self._positions: dict[str, str] = {}
        self._streams: dict[str, int | None] = {}  # sale id -> closed at ms (None: live)
        self._sealed: list[tuple[str, str, bytes]] = []  # shipping boxes to store first
        self._epoch = ""
        self._released_again = False
        self._closed = ClosedSales(settings.closed_sale_forget_ms)
        self._to_release: list[OrderExpired] = []
        self._unloaded: set[str] = set()
        self._alive_token = b""
        self._alive_checked_ms = 0
        self._receipts: deque[tuple[int, str, str, str]] = deque()
        self._receipts_through = 0  # every receipt below this index is in Redis
        self._receipt_wake = asyncio.Event()
        self._stock_dirty: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._stop_requested = asyncio.Event()
        # Why the writer stopped taking anything (its disk failed), or None.
        self.failure: str | None = None
        self.ready = asyncio.Event()

    # Start: the ledger, the core rebuilt from it, Redis brought in line

    async def open(self) -> None:
        data_dir = self.settings.data_dir
        self.ledger = await Ledger.open(ledger_dir(data_dir), ledger_settings(self.settings))
        self.shipping = await ShippingStore.open(data_dir)
        mirrored = data_dir / MIRRORED_SIZE_FILE
        if mirrored.exists():
            self._mirrored_size = int(mirrored.read_text() or 0)
        await asyncio.to_thread(self._replay)
        await self._apply_rules()
        for sale in self._all_sales():
            self._streams[sale.sale_id] = None if sale.state is not SaleState.CLOSED else 0
            if sale.state is not SaleState.CLOSED:
                self._unloaded.add(sale.sale_id)

    def _replay(self) -> None:
        assert self.ledger is not None
        # Its own ledger: the steps in it were checked when taken (an audit checks again).
        self.core.verify_signatures = False
        try:
            for index in range(self.ledger.size):
                entry = self.ledger.entry(index)
                entry_type, fields = decode_entry(entry)
                apply_entry(self.core, (entry_type, fields))
                self._remember(index, entry_type, fields, entry)
                if entry_type == "sale/v1" and fields.get("action") == "closed":
                    self._closed.closed(fields["sale_id"], fields["time_ms"])
                if entry_type in TIMELINE_ENTRIES and fields.get("action") != "accepted":
                    self.timelines.add(entry_type, fields, index)
                self.reviews.add(entry_type, fields, index)
                self.ledger_metrics.take_entry(entry_type, fields)
            finish(self.core)
        finally:
            self.core.verify_signatures = True
        log.info("replayed %d ledger entries", self.ledger.size)

    async def _apply_rules(self) -> None:
        """The settings' rules after the sale, on the ledger if they changed."""
        assert self.ledger is not None
        events = self.core.handle(SetRules(escrow_rules(self.settings)), self.clock_ms())
        entries = [encode_entry(*entry) for e in events if (entry := e.to_entry()) is not None]
        if entries:
            # Remembered for the feed too: a web process checks an arbiter against them.
            indexes = await self.ledger.append_many(entries)
            for index, encoded in zip(indexes, entries, strict=True):
                self._remember(index, *decode_entry(encoded), encoded)

    async def _submit_command(self, command: Command, sealed: bytes | None) -> None:
        """A provider's result, to this writer's own command stream (read in order)."""
        await self.client.xadd(
            keys.COMMANDS, {"command": keys.encode_command(command)}, maxlen=100_000,
            approximate=True,
        )  # fmt: skip

    async def _payouts_forever(self) -> None:
        interval_ms = self.settings.payout_interval_ms
        while True:
            now_ms = self.clock_ms()
            await asyncio.sleep((interval_ms - now_ms % interval_ms) / 1000)
            with contextlib.suppress(RedisError, OSError):
                await self._submit_command(
                    RunPayouts(f"auto-{self.clock_ms() // interval_ms}"), None
                )

    def _remember(self, index: int, entry_type: str, fields: dict[str, Any], entry: bytes) -> None:
        if entry_type in keys.FEED_ENTRY_TYPES:
            self._feed.append((index, entry))
        elif entry_type == "order/v1":
            key = (fields["buyer_id"], fields["order_id"])
            if fields["action"] == "accepted":
                self._index_of[key] = index
            elif fields["action"] == "paid":
                self._paid_index_of[key] = index

    def _all_sales(self) -> list[Sale]:
        return self.core.sales.all()

    async def _sync_redis(self) -> None:
        """Bring Redis in line with the ledger: rebuild stock if Redis lost its data,
        republish the feed under a new epoch, load the positions."""
        assert self.ledger is not None
        alive, size = await self.client.mget(keys.ALIVE, keys.LEDGER_SIZE)
        behind = alive is not None and int(size or 0) < self._mirrored_size
        if behind:
            log.warning(
                "redis holds the ledger up to %s, it held %d: it came back from an older "
                "snapshot; rebuilding stock and orders from the ledger",
                _str(size or b"nothing"),
                self._mirrored_size,
            )
        elif alive is None:
            log.warning("redis has no %s: rebuilding stock and orders from the ledger", keys.ALIVE)
        if alive is None or behind:
            await self._rebuild_from_ledger()
            self._positions = {}
            await self.client.delete(keys.POSITIONS)
            self._alive_token = secrets.token_hex(8).encode()
            await self.client.set(keys.ALIVE, self._alive_token)
            self._queue_receipts_from(0)
            # Redis holds the whole ledger now.
            await self.client.set(keys.LEDGER_SIZE, self.ledger.size)
            self._redis_size = str(self.ledger.size)
            await self._mirrored(self.ledger.size)
        else:
            self._redis_size = _str(size) if size is not None else ""
            through = await self.client.get(keys.RECEIPTS_THROUGH)
            self._queue_receipts_from(int(through) if through is not None else 0)
            self._alive_token = _bytes(alive)
            stored = await self.client.hgetall(keys.POSITIONS)
            self._positions = {_str(k): _str(v) for k, v in stored.items()}
            if not self._released_again:
                await self._release_expired_again()
                self._released_again = True
        await self._load_sales()
        await self._publish_feed()
        # This writer reads again: web processes take orders again.
        await self.client.delete(keys.WRITER_STOPPED)

    async def _mirrored(self, size: int) -> None:
        """Redis holds the ledger up to `size`: noted on disk (no fsync: after a crash of
        the machine it may be older, which only makes the check above weaker)."""
        if size <= self._mirrored_size:
            return
        path = self.settings.data_dir / MIRRORED_SIZE_FILE
        temporary = path.with_suffix(".tmp")
        try:
            temporary.write_text(str(size))
            temporary.replace(path)
        except OSError as error:
            # Only a note: without it the check is weaker, nothing is lost. Its disk is
            # the ledger's, whose own failure stops the writer; this is not Redis trouble.
            if not self._mirrored_note_failed:
                log.warning("cannot note the size Redis mirrors (%s); going on", error)
                self._mirrored_note_failed = True
            return
        self._mirrored_note_failed = False
        self._mirrored_size = size

    def _queue_receipts_from(self, through: int) -> None:
        """Queue the receipt of every accepted order at `through` or later that is not
        queued already: Redis may not have them (the last run died before their
        checkpoint, or Redis lost its data)."""
        self._receipts_through = through
        queued = {index for index, _, _, _ in self._receipts}
        owed = list(self._receipts)
        for (buyer_id, order_id), index in self._index_of.items():
            if index >= through and index not in queued:
                accepted = self.core.orders.accepted(buyer_id, order_id)
                if accepted is not None:
                    owed.append((index, accepted.sale_id, buyer_id, order_id))
        # In index order: the receipts task takes them oldest first, a checkpoint at a time.
        self._receipts = deque(sorted(owed))
        if self._receipts:
            self._receipt_wake.set()

    async def _rebuild_from_ledger(self) -> None:
        for sale in self._all_sales():
            if sale.state is not SaleState.CLOSED:
                records = order_records(self.core, sale.sale_id)
                await self.store.rebuild(sale.sale_id, sale.spec.units_offered, records)
                self._unloaded.discard(sale.sale_id)
            accepted = self.core.orders.accepted_of_sale(sale.sale_id, self.core.orders.orders_max)
            await self._write_records([(order, str(status)) for order, status in accepted], None)

    async def _release_expired_again(self) -> None:
        """After a restart: an expiry may be in the ledger without its release in Redis."""
        for sale in self.core.sales.live():
            for order, status in self.core.orders.accepted_of_sale(
                sale.sale_id, self.core.orders.orders_max
            ):
                if status == "expired":
                    await self.store.release(sale.sale_id, order.buyer_id, order.order_id)

    async def _load_sales(self) -> None:
        for sale_id in list(self._unloaded):
            sale = self.core.sales.get(sale_id)
            assert sale is not None
            await self.store.load_sale(sale_id, sale.spec.units_offered)
            self._unloaded.discard(sale_id)

    async def _publish_feed(self) -> None:
        epoch = secrets.token_hex(8)
        old = await self.client.get(keys.FEED_EPOCH)
        stream = keys.feed_key(epoch)
        for start in range(0, len(self._feed), FEED_CHUNK):
            async with self.client.pipeline(transaction=False) as pipe:
                for index, entry in self._feed[start : start + FEED_CHUNK]:
                    pipe.xadd(stream, {"index": index, "entry": entry})
                await pipe.execute()
        if not self._feed:
            # An empty feed still exists, so web processes know the epoch is real.
            await self.client.xadd(stream, {"index": -1, "entry": b""})
        await self.client.set(keys.FEED_EPOCH, epoch)
        self._epoch = epoch
        if old is not None and _str(old) != epoch:
            await self.client.delete(keys.feed_key(_str(old)))
        log.info("feed epoch %s: %d state entries", epoch, len(self._feed))

    # Running

    async def run(self) -> None:
        """Until `stop`: sync Redis, then iterate; on Redis trouble, back off and resync."""
        self._tasks = [
            asyncio.create_task(self._receipts_forever(), name="writer-receipts"),
            asyncio.create_task(self._stock_forever(), name="writer-stock"),
        ]
        if self.settings.payout_interval_ms:
            self._tasks.append(asyncio.create_task(self._payouts_forever(), name="payouts"))
        await self.caller.start()
        if self.settings.gc_freeze_interval_ms:
            self._tasks.append(
                asyncio.create_task(
                    freeze_survivors_forever(self.settings.gc_freeze_interval_ms),
                    name="gc-freeze",
                )
            )
        with young_generation_threshold(self.settings.gc_young_threshold_objects):
            await self._run_until_stopped()

    async def _run_until_stopped(self) -> None:
        delay_s = 0.1
        synced = False
        while not self._stopping:
            try:
                if not synced:
                    await self._sync_redis()
                    synced = True
                    self.ready.set()
                    log.info("ledger writer ready")
                await self._iterate()
                delay_s = 0.1
            except WriterStopped as error:
                await self._stopped_by_disk(str(error))
                return
            except (RedisError, OSError, StockStoreError) as error:
                log.warning("redis trouble (%r); retrying in %.1f s", error, delay_s)
                await asyncio.sleep(delay_s)
                delay_s = min(RETRY_DELAY_S_MAX, delay_s * 2)
                synced = False

    def stop(self) -> None:
        self._stopping = True
        self._stop_requested.set()

    async def _stopped_by_disk(self, reason: str) -> None:
        """Read nothing more; tell the web processes why (retrying while Redis is away, at
        most every 5 s); wait for `stop`. Reads of the ledger are still served."""
        self.failure = f"{reason}: orders are stopped until the ledger writer restarts; retry later"
        log.error("ledger writer stopped: %s; restart it once its disk is fixed", reason)
        delay_s = 0.1
        while not self._stopping:
            try:
                await self.client.set(keys.WRITER_STOPPED, self.failure)
                break
            except (RedisError, OSError) as error:
                log.warning("cannot tell redis the writer stopped (%r); retrying", error)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop_requested.wait(), delay_s)
                delay_s = min(RETRY_DELAY_S_MAX, delay_s * 2)
        await self._stop_requested.wait()

    async def close(self) -> None:
        self._stopping = True
        # Not one cancel and an await: a Redis call can swallow a cancel (stopping.py).
        await cancel_and_wait(self._tasks)
        await self.caller.close()
        if self.ledger is not None:
            await self.ledger.close()
        with contextlib.suppress(RedisError, OSError):
            await self.broker.close()
        with contextlib.suppress(RedisError, OSError):
            await self.client.aclose()

    async def _iterate(self) -> None:
        now_ms = self.clock_ms()
        if now_ms - self._alive_checked_ms >= ALIVE_CHECK_MS:
            self._alive_checked_ms = now_ms
            alive, size = await self.client.mget(keys.ALIVE, keys.LEDGER_SIZE)
            if alive != self._alive_token:
                raise RedisError("redis lost its data (lc:alive changed)")
            if (_str(size) if size is not None else "") != self._redis_size:
                raise RedisError("redis went back in time (lc:writer:ledger_size changed)")
        if self._unloaded:
            await self._load_sales()
        read = await self._read()
        pending = _Pending()
        # One clock reading for the whole iteration: `handle` then ticks nothing new, so
        # every expiry goes through `_take_time_events` (Redis release first).
        now_ms = self.clock_ms()
        pending.events.extend(self.core.tick(now_ms))
        for key in self._closed.forget_due(self.core, now_ms):
            self._index_of.pop(key, None)
            self._paid_index_of.pop(key, None)
        self._apply_reads(read, pending, now_ms)
        await self._record(pending)
        await self._release_expired(pending.events)
        self._forget_closed_streams()

    async def _read(self) -> list[Any]:
        streams: dict[Any, Any] = {keys.COMMANDS: self._positions.get(keys.COMMANDS, "0-0")}
        for sale_id in self._streams:
            stream = accepted_stream_key(sale_id)
            streams[stream] = self._positions.get(stream, "0-0")
        reply = await self.client.xread(streams, count=READ_COUNT_MAX, block=READ_BLOCK_MS)
        return list(reply or [])

    def _apply_reads(self, read: list[Any], pending: _Pending, now_ms: int) -> None:
        for stream_name, messages in read:
            stream = stream_name.decode()
            for message_id, fields in messages:
                pending.positions[stream] = message_id.decode()
                if stream == keys.COMMANDS:
                    self._apply_command(fields, pending, now_ms)
                else:
                    self._apply_order(fields, pending)

    def _apply_order(self, fields: dict[bytes, bytes], pending: _Pending) -> None:
        record = orjson.loads(fields[b"order"])
        accepted = OrderAccepted(**{name: record[name] for name in ACCEPTED_FIELDS})
        if self.core.orders.status(accepted.buyer_id, accepted.order_id) is not None:
            # Appended before a crash: confirm it again (the web may still be waiting).
            pending.reconfirm.append(accepted)
            return
        sale = self.core.sales.get(accepted.sale_id)
        try:
            if sale is None:
                raise ValueError(f"unknown sale {accepted.sale_id}")
            self.core.orders.restore_accepted(accepted)
        except (ValueError, AssertionError) as error:
            # Redis took stock that this core cannot hold: a bug. Never guess; the units
            # stay taken in Redis and the buyer is not told "accepted".
            log.error("order %s not recorded: %s", accepted.order_id, error)
            return
        assert sale is not None
        pending.events.append(accepted)
        pending.events.append(stock_changed(sale, f"order:{accepted.order_id}", accepted.time_ms))
        self._stock_dirty.add(accepted.sale_id)

    def _apply_command(self, fields: dict[bytes, bytes], pending: _Pending, now_ms: int) -> None:
        request = fields.get(b"request", b"").decode()
        channel = fields.get(b"reply", b"").decode()
        if b"query" in fields:  # answered once what came before it is durable
            with contextlib.suppress(ValueError):
                pending.queries.append((channel, request, orjson.loads(fields[b"query"])))
            return
        try:
            command = keys.decode_command(fields[b"command"])
        except (ValueError, TypeError, KeyError) as error:
            log.error("dropping a bad command: %s", error)
            return
        first = len(pending.events)
        pending.events.extend(self.core.handle(command, now_ms))
        paid = any(isinstance(event, OrderPaid) for event in pending.events[first:])
        if paid and isinstance(command, PayOrder) and fields.get(b"sealed"):
            # Stored (to disk, then Redis) before the payment's entry is appended.
            box = b64url_decode(fields[b"sealed"].decode())
            if box is not None:
                self._sealed.append((command.buyer_id, command.order_id, box))
        for event in pending.events[first:]:
            if isinstance(event, SaleScheduled):
                self._streams[event.spec.sale_id] = None
                self._unloaded.add(event.spec.sale_id)
        if channel:
            pending.replies.append((channel, request, first, len(pending.events)))

    async def _release_expired(self, events: list[Event]) -> None:
        """Units of expired holds go back in Redis, after the expiry is durable. A release
        Redis does not take now is retried next time (and at every start)."""
        retry, self._to_release = self._to_release, []
        for expired in [*retry, *(e for e in events if isinstance(e, OrderExpired))]:
            try:
                await self.store.release(expired.sale_id, expired.buyer_id, expired.order_id)
            except StockStoreError as error:
                log.warning("release of %s failed (%s); will retry", expired.order_id, error)
                self._to_release.append(expired)
                continue
            self._stock_dirty.add(expired.sale_id)

    async def _record(self, pending: _Pending) -> None:
        assert self.ledger is not None
        assert self.shipping is not None
        # Sealed shipping boxes go to disk before the payment that commits to them.
        sealed, self._sealed = self._sealed, []
        try:
            for buyer_id, order_id, box in sealed:
                await self.shipping.put(buyer_id, order_id, box)
        except (OSError, ShippingFull) as error:
            why = describe_failure(error) if isinstance(error, OSError) else str(error)
            raise WriterStopped(f"the shipping store cannot write to its disk ({why})") from error
        entries: list[bytes] = []
        entry_types: list[str] = []
        positions: list[int | None] = []
        # One write: each sale's last stock count stands for the others (as embedded).
        superseded = superseded_stock_changes(pending.events)
        for position, event in enumerate(pending.events):
            entry = None if position in superseded else event.to_entry()
            if entry is None:
                positions.append(None)
            else:
                positions.append(len(entries))
                entries.append(encode_entry(*entry))
                entry_types.append(entry[0])
        indexes: list[int] = []
        for start in range(0, len(entries), ENTRIES_PER_APPEND_MAX):
            # A failure here stops the writer: the ledger's state is unknown.
            try:
                indexes += await self.ledger.append_many(
                    entries[start : start + ENTRIES_PER_APPEND_MAX]
                )
            except LedgerClosed as error:
                raise WriterStopped(self.ledger.failure or str(error)) from error
        event_index = [None if at is None else indexes[at] for at in positions]
        for at, index in enumerate(indexes):
            if entry_types[at] in keys.FEED_ENTRY_TYPES:
                self._feed.append((index, entries[at]))
        await self._after_durable(pending, event_index, entries, entry_types, positions, sealed)

    async def _after_durable(
        self,
        pending: _Pending,
        event_index: list[int | None],
        entries: list[bytes],
        entry_types: list[str],
        positions: list[int | None],
        sealed: list[tuple[str, str, bytes]],
    ) -> None:
        confirmations: list[list[Any]] = []
        records: list[tuple[OrderAccepted, str]] = []
        sale_events: list[Event] = []
        calls = [event for event in pending.events if isinstance(event, ProviderCall)]
        async with self.client.pipeline(transaction=False) as pipe:
            for event, index, at in zip(pending.events, event_index, positions, strict=True):
                if index is None or at is None:
                    continue
                if isinstance(event, TIMELINE_EVENTS):
                    self.timelines.add_event(event, index)
                self.reviews.add_event(event, index)
                take_operating(self.ledger_metrics, event)
                if isinstance(event, OrderAccepted):
                    self._index_of[(event.buyer_id, event.order_id)] = index
                    confirmations.append(self._confirmation(event, index))
                    records.append((event, "held"))
                    self._receipts.append((index, event.sale_id, event.buyer_id, event.order_id))
                    continue
                if isinstance(event, OrderPaid):
                    self._paid_index_of[(event.buyer_id, event.order_id)] = index
                if isinstance(event, OrderPaid | OrderExpired):
                    accepted = self.core.orders.accepted(event.buyer_id, event.order_id)
                    if accepted is not None:
                        status = "paid" if isinstance(event, OrderPaid) else "expired"
                        records.append((accepted, status))
                elif isinstance(event, (SaleScheduled, SaleOpened, SaleClosed, *AUCTION_EVENTS)):
                    sale_events.append(event)
                if entry_types[at] in keys.FEED_ENTRY_TYPES:
                    pipe.xadd(keys.feed_key(self._epoch), {"index": index, "entry": entries[at]})
            for accepted in pending.reconfirm:
                known = self._index_of.get((accepted.buyer_id, accepted.order_id))
                if known is not None:
                    confirmations.append(self._confirmation(accepted, known))
                    # Its record too: the write that stored it may not have reached Redis
                    # (a crash, of Redis or of this writer, between the append and it).
                    now = self.core.orders.status(accepted.buyer_id, accepted.order_id)
                    recorded = self.core.orders.accepted(accepted.buyer_id, accepted.order_id)
                    if recorded is not None and now is not None:
                        records.append((recorded, str(now)))
            for buyer_id, order_id, box in sealed:
                paid = self.core.orders.accepted(buyer_id, order_id)
                if paid is not None:
                    pipe.hset(
                        keys.sale_shipping_key(paid.sale_id),
                        keys.order_field(buyer_id, order_id),
                        box,
                    )
            await self._write_records(records, pipe)
            if pending.positions:
                positions_map: dict[Any, Any] = dict(pending.positions)
                pipe.hset(keys.POSITIONS, mapping=positions_map)
            if confirmations:
                pipe.publish(keys.CONFIRM_CHANNEL, orjson.dumps(confirmations))
            for channel, request, first, end in pending.replies:
                reply = self._reply(request, pending.events, event_index, first, end)
                pipe.publish(channel, reply)
            for channel, request, query in pending.queries:
                answer = {"request": request, "data": self._answer_query(query)}
                pipe.publish(channel, orjson.dumps(answer))
            assert self.ledger is not None
            size = self.ledger.size
            grown = str(size) != self._redis_size
            if grown:
                # Refused (the pipeline raises, the writer resyncs) if Redis no longer
                # holds what this writer set last: it went back to an older snapshot.
                await self._set_ledger_size(
                    keys=[keys.LEDGER_SIZE], args=[self._redis_size, size], client=pipe
                )
            await pipe.execute()
        if grown:
            self._redis_size = str(size)
            await self._mirrored(size)
        self._positions.update(pending.positions)
        if self._receipts:
            self._receipt_wake.set()
        if calls:  # asked only now: the entries that ask for them are durable
            self.caller.call_soon(calls)
        auctions: dict[str, None] = {}
        for event in sale_events:
            if isinstance(event, AUCTION_EVENTS):
                auctions[auction_id_of(event)] = None  # once per batch: the newest state
            else:
                await self._publish_sale(event)
        for auction_id in auctions:
            await self._publish_auction(auction_id)

    def _answer_query(self, query: dict[str, Any]) -> Any:
        """A web process's read of the escrow (views.py), from this core."""
        what, arguments = query.get("what"), query.get("arguments") or {}
        try:
            if what == "order_life":
                key = (str(arguments["buyer_id"]), str(arguments["order_id"]))
                view = order_life_view(self.core, *key, self.timelines.of(key))
                if view is not None:
                    view["ledger_index"] = self._index_of.get(key)
                return view
            if what == "product_reviews":
                return product_reviews_view(
                    self.core,
                    self.reviews,
                    self.timelines,
                    str(arguments["product_id"]),
                    int(arguments["limit"]),
                )
            if what == "auctions":
                return auctions_view(
                    self.core, str(arguments["kind"]), str(arguments["key"]), self.clock_ms()
                )
            if what == "groups":
                return groups_view(
                    self.core, str(arguments["kind"]), str(arguments["key"]), self.clock_ms()
                )
            if what == "merchant_money":
                return merchant_money(self.core, str(arguments["merchant_id"]))
            if what == "statement":
                return statement_rows(
                    self.core,
                    str(arguments["merchant_id"]),
                    int(arguments["from_ms"]),
                    int(arguments["to_ms"]),
                )
            if what == "recommendations":
                return recommendations_view(
                    self.core,
                    str(arguments["room_id"]),
                    str(arguments["buyer_id"]),
                    str(arguments["beside"]),
                    int(arguments["count"]),
                    self.clock_ms(),
                )
            if what == "operating":
                points = self.ledger_metrics.counts(
                    Scope(arguments["scope"]),
                    str(arguments["scope_id"]),
                    Period(arguments["period"]),
                    int(arguments["from_ms"]),
                    int(arguments["to_ms"]),
                )
                return {str(start): counts for start, counts in points.items()}
            if what == "seen":
                self.core.recommender.seen(
                    Signal(arguments["signal"]),
                    str(arguments["room_id"]),
                    str(arguments["product_id"]),
                    str(arguments["buyer_id"]),
                    self.clock_ms(),
                )
                return {}
        except (KeyError, TypeError, ValueError) as error:
            log.error("a bad query: %r", error)
        return None

    def _confirmation(self, accepted: OrderAccepted, index: int) -> list[Any]:
        return [
            accepted.sale_id,
            accepted.buyer_id,
            accepted.order_id,
            index,
            accepted.hold_expires_at_ms,
            accepted.quantity,
        ]

    async def _write_records(self, records: Iterable[tuple[OrderAccepted, str]], pipe: Any) -> None:
        """Each order's record for lookups (confirmation, payment, receipts, merchants): one
        HSET per sale for a batch's records (and one per buyer for its order list)."""
        own = pipe is None
        if own:
            pipe = self.client.pipeline(transaction=False)
        by_sale: dict[str, dict[str, bytes]] = {}
        for count, (accepted, status) in enumerate(records, 1):
            key = (accepted.buyer_id, accepted.order_id)
            record = {
                "order_id": accepted.order_id,
                "sale_id": accepted.sale_id,
                "buyer_id": accepted.buyer_id,
                "quantity": accepted.quantity,
                "price_cents": accepted.price_cents,
                "currency": accepted.currency,
                "hold_expires_at_ms": accepted.hold_expires_at_ms,
                "accepted_at_ms": accepted.time_ms,
                "status": status,
                "ledger_index": self._index_of.get(key),
                "paid_index": self._paid_index_of.get(key),
            }
            fields = by_sale.setdefault(accepted.sale_id, {})
            fields[keys.order_field(*key)] = orjson.dumps(record)
            pipe.hset(keys.buyer_key(accepted.buyer_id), accepted.order_id, accepted.sale_id)
            if own and count % FEED_CHUNK == 0:
                for sale_id, mapping in by_sale.items():
                    pipe.hset(keys.sale_ledger_key(sale_id), mapping=mapping)
                by_sale = {}
                await pipe.execute()
        for sale_id, mapping in by_sale.items():
            pipe.hset(keys.sale_ledger_key(sale_id), mapping=mapping)
        if own:
            await pipe.execute()
            await pipe.aclose()

    def _reply(
        self,
        request: str,
        events: list[Event],
        event_index: list[int | None],
        first: int,
        end: int,
    ) -> bytes:
        rejection = None
        recorded: list[list[Any]] = []
        feed_index = -1
        for event, index in zip(events[first:end], event_index[first:end], strict=True):
            if isinstance(event, CommandRejected):
                rejection = [str(event.reason), event.detail]
            elif index is not None:
                recorded.append([type(event).__name__, index])
                entry = event.to_entry()
                if entry is not None and entry[0] in keys.FEED_ENTRY_TYPES:
                    feed_index = index
            elif hasattr(event, "reason") and hasattr(event, "detail"):
                rejection = [str(event.reason), event.detail]  # PaymentRefused
        return orjson.dumps(
            {
                "request": request,
                "rejection": rejection,
                "recorded": recorded,
                "feed_index": feed_index,
            }
        )

    async def _publish_auction(self, auction_id: str) -> None:
        """An auction's change to every screen of its room (auction/v1)."""
        auction = self.core.auctions.get(auction_id)
        if auction is None:
            return
        view = auction_view(self.core, auction, self.clock_ms())
        message = m.AuctionChanged(auction=view, ts_ms=self.clock_ms())
        try:
            await self.broker.publish(auction.spec.room_id, message, m.encode_event(message))
        except BrokerUnavailable as error:
            log.info("auction %s: no room to tell (%s)", auction_id, error)

    async def _publish_sale(self, event: Event) -> None:
        sale_id = (
            event.spec.sale_id
            if isinstance(event, SaleScheduled)
            else getattr(event, "sale_id", "")
        )
        sale = self.core.sales.get(sale_id)
        if sale is None:
            return
        if sale_id.startswith(LOT_SALE_PREFIX):  # an auction's lot: its auction says it
            self._closed_later(event)
            return
        view = sale_view(sale, self.core.catalog)
        view["change"] = type(event).__name__.removeprefix("Sale").lower()
        message = m.SaleChanged(sale=view, ts_ms=self.clock_ms())
        try:
            await self.broker.publish(sale.spec.room_id, message, m.encode_event(message))
        except BrokerUnavailable as error:
            log.info("sale %s: no room to tell (%s)", sale_id, error)
        self._closed_later(event)

    def _closed_later(self, event: Event) -> None:
        if isinstance(event, SaleClosed):
            self._streams[event.sale_id] = self.clock_ms()
            self._closed.closed(event.sale_id, event.time_ms)

    def _forget_closed_streams(self) -> None:
        now_ms = self.clock_ms()
        for sale_id, closed_at_ms in list(self._streams.items()):
            if closed_at_ms is not None and now_ms - closed_at_ms > CLOSED_STREAM_KEEP_MS:
                del self._streams[sale_id]

    # Beside the main task: receipts and stock counts

    async def _receipts_forever(self) -> None:
        assert self.ledger is not None
        while True:
            if not self._receipts:
                self._receipt_wake.clear()
                await self._receipt_wake.wait()
                continue
            try:
                note = await self.ledger.wait_covered(self._receipts[0][0])
            except LedgerClosed as error:
                log.warning("receipts stopped: %s", error)
                return
            covered = checkpoint_size(note)
            ready: list[tuple[int, str, str, str]] = []
            while (
                self._receipts
                and self._receipts[0][0] < covered
                and len(ready) < RECEIPTS_PER_PASS_MAX
            ):
                ready.append(self._receipts.popleft())
            # One pass over the tree for all the receipts this checkpoint covers, and one
            # HSET per sale for them.
            proofs = self.ledger.proofs([index for index, _, _, _ in ready])
            by_sale: dict[str, dict[Any, Any]] = {}  # redis-py's mapping type is invariant
            for (_, sale_id, buyer_id, order_id), proof in zip(ready, proofs, strict=True):
                by_sale.setdefault(sale_id, {})[keys.order_field(buyer_id, order_id)] = proof
            try:
                async with self.client.pipeline(transaction=False) as pipe:
                    for sale_id, mapping in by_sale.items():
                        pipe.hset(keys.sale_receipts_key(sale_id), mapping=mapping)
                    pipe.publish(
                        keys.RECEIPTS_CHANNEL,
                        orjson.dumps([[s, b, o] for _, s, b, o in ready]),
                    )
                    # Every receipt below the next one owed is stored now.
                    through = self._receipts[0][0] if self._receipts else ready[-1][0] + 1
                    if through > self._receipts_through:
                        pipe.set(keys.RECEIPTS_THROUGH, through)
                    await pipe.execute()
                if through > self._receipts_through:
                    self._receipts_through = through
            except (RedisError, OSError) as error:
                log.warning("storing receipts failed (%r); retrying", error)
                self._receipts.extendleft(reversed(ready))
                await asyncio.sleep(1)

    async def _stock_forever(self) -> None:
        failing = False  # said once per outage, not every 100 ms
        while True:
            await asyncio.sleep(STOCK_PUSH_INTERVAL_S)
            dirty, self._stock_dirty = self._stock_dirty, set()
            failed = False
            for sale_id in dirty:
                sale = self.core.sales.get(sale_id)
                if sale is None:
                    continue
                try:
                    remaining = await self.store.remaining(sale_id)
                    if remaining is not None:
                        await self.broker.flush_counters(
                            sale.spec.room_id, 0, 0, 0, {sale.spec.product_id: remaining}
                        )
                except (StockStoreError, BrokerUnavailable) as error:
                    if not failing:
                        log.info("stock pushes failing, retried until redis is back: %s", error)
                        failing = True
                    failed = True
                    self._stock_dirty.add(sale_id)
            if failing and dirty and not failed:
                log.info("stock pushes resumed")
                failing = False


def main(settings: Settings, serve_http: bool = False) -> int:
    """Run the writer until SIGTERM or SIGINT. With `serve_http`, also serve the ledger
    (checkpoint, tiles, proofs, vkey: docs/ledger.md) at http://host:port/ledger/."""
    import signal

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    async def run() -> int:
        writer = LedgerWriter(settings)
        await writer.open()
        loop = asyncio.get_running_loop()
        for signal_number in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signal_number, writer.stop)
        http = None
        if serve_http:
            http = await serve_ledger(writer, settings)
        try:
            await writer.run()
        finally:
            if http is not None:
                server, task = http
                server.should_exit = True
                await task
            await writer.close()
        return 0

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        return asyncio.run(run())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(run())


async def serve_ledger(writer: LedgerWriter, settings: Settings) -> tuple[Any, asyncio.Task[None]]:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route

    from livecommerce import __version__

    ledger = writer.ledger
    assert ledger is not None

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # the writer handles SIGTERM and SIGINT itself

    async def healthz(request: Request) -> JSONResponse:
        """As the web processes': 503 with the reason once the writer stopped (its disk
        failed, or its ledger did on a checkpoint's write before any order came)."""
        failure = writer.failure or ledger.failure
        if failure is not None:
            return JSONResponse(
                {"status": "unavailable", "reason": failure, "version": __version__},
                status_code=503,
            )
        return JSONResponse({"status": "ok", "version": __version__})

    app = Starlette(
        routes=[Route("/healthz", healthz), Mount("/ledger", app=create_ledger_app(ledger))]
    )
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, lifespan="off", log_level="warning"
    )
    server = Server(config)
    task = asyncio.create_task(server.serve(), name="ledger-http")
    return server, task
