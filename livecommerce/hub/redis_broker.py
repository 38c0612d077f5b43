"""The scaled-out broker: room events numbered, kept and published by Redis.

One Lua script per event takes the room's next sequence number, appends the event to a
capped history, applies its effect on the room's stored state, and publishes it, so every
process sees the same numbers in the same order. Each process holds one subscription
connection and one channel per room it serves, not one per viewer. Keys carry the room in
a hash tag (`lc:room:{ID}:…`) so a room's keys live on one Redis Cluster slot.

If Redis goes away, calls raise `BrokerUnavailable` (the hub answers "retry") and the
subscriber reconnects with backoff, then asks the hub to resynchronise every room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from typing import Any

import msgspec
import orjson
import redis.asyncio as redis
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from livecommerce import protocol as m
from livecommerce.hub.broker import (
    BrokerUnavailable,
    EventHandler,
    LoadedRoom,
    StateHandler,
    Totals,
)
from livecommerce.hub.room import RoomInfo

log = logging.getLogger("livecommerce.redis_broker")

# Each process refreshes its viewer count every second; a count older than this is a
# process that died, and is dropped from the total.
VIEWER_COUNT_STALE_MS = 5000
RECONNECT_DELAY_S_MAX = 5.0

PUBLISH_SCRIPT = """
if redis.call('EXISTS', KEYS[6]) == 0 then return 0 end
local seq = redis.call('INCR', KEYS[1])
local entry = seq .. ' ' .. ARGV[1]
redis.call('RPUSH', KEYS[2], entry)
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
local op = ARGV[4]
if op == 'hset' then
  for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1]) end
elseif op == 'ban' then
  redis.call('SADD', KEYS[4], ARGV[5])
elseif op == 'unban' then
  redis.call('SREM', KEYS[4], ARGV[5])
  redis.call('HDEL', KEYS[5], ARGV[5])
elseif op == 'mute' then
  redis.call('HSET', KEYS[5], ARGV[5], ARGV[6])
end
redis.call('PUBLISH', ARGV[2], 'e' .. entry)
return seq
"""

COUNTERS_SCRIPT = """
local likes = redis.call('HINCRBY', KEYS[1], 'likes', ARGV[1])
local shares = redis.call('HINCRBY', KEYS[1], 'shares', ARGV[2])
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4] .. ':' .. now_ms)
local viewers = 0
local entries = redis.call('HGETALL', KEYS[2])
for i = 1, #entries, 2 do
  local count, at = string.match(entries[i + 1], '^(%d+):(%d+)$')
  if count and now_ms - tonumber(at) <= tonumber(ARGV[5]) then
    viewers = viewers + tonumber(count)
  else
    redis.call('HDEL', KEYS[2], entries[i])
  end
end
for i = 7, #ARGV, 2 do redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1]) end
local stock = redis.call('HGETALL', KEYS[3])
local parts = {}
for i = 1, #stock, 2 do parts[#parts + 1] = cjson.encode(stock[i]) .. ':' .. stock[i + 1] end
local message = '{"likes":' .. likes .. ',"shares":' .. shares .. ',"viewers":' .. viewers
  .. ',"stock":{' .. table.concat(parts, ',') .. '}}'
redis.call('PUBLISH', ARGV[6], 's' .. message)
return message
"""


# One answer per voter per poll: the voter joins the poll's set, or nothing is counted.
ANSWER_SCRIPT = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return false end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
redis.call('PEXPIRE', KEYS[2], ARGV[5])
local counts = {}
for i = 0, tonumber(ARGV[3]) - 1 do
  counts[#counts + 1] = tonumber(redis.call('HGET', KEYS[2], tostring(i)) or '0')
end
local message = '{"poll_id":' .. cjson.encode(ARGV[6]) .. ',"counts":['
  .. table.concat(counts, ',') .. ']}'
redis.call('PUBLISH', ARGV[4], 'p' .. message)
return 1
"""
POLL_KEEP_MS = 24 * 3600 * 1000


class _PollMessage(msgspec.Struct):
    poll_id: str
    counts: list[int]


_poll_decoder = msgspec.json.Decoder(_PollMessage)


class _TotalsMessage(msgspec.Struct):
    likes: int
    shares: int
    viewers: int
    stock: dict[str, int]


_totals_decoder = msgspec.json.Decoder(_TotalsMessage)


def _keys(room_id: str) -> dict[str, str]:
    prefix = f"lc:room:{{{room_id}}}:"
    return {
        name: prefix + name
        for name in (
            "seq",
            "history",
            "state",
            "banned",
            "muted",
            "info",
            "counters",
            "viewers",
            "stock",
        )
    }


def poll_keys(room_id: str, poll_id: str) -> list[str]:
    """The poll's voters (a set) and counts (a hash), in the room's hash slot."""
    prefix = f"lc:room:{{{room_id}}}:poll:{poll_id}:"
    return [prefix + "voters", prefix + "counts"]


def channel_of(room_id: str) -> str:
    return f"lc:room:{{{room_id}}}:events"


def _state_effect(event: m.RoomEvent) -> list[str]:
    """What an event changes in the room's stored state, as the publish script's op args."""
    match event:
        case m.ProductPinned():
            return ["hset", "pinned", m.encode(event.product).decode() if event.product else ""]
        case m.LiveChanged():
            return ["hset", "live", "1" if event.live else "0"]
        case m.RoomEnded():
            return ["hset", "ended", "1", "live", "0"]
        case m.SlowModeChanged():
            return ["hset", "slow_mode_ms", str(event.interval_ms)]
        case m.SaleChanged():
            return ["hset", "sale", orjson.dumps(event.sale).decode()]
        case m.PollChanged():
            return ["hset", "poll", orjson.dumps(event.poll).decode()]
        case m.KeywordsChanged():
            return ["hset", "keywords", orjson.dumps(event.words).decode()]
        case m.ViewerBanned():
            return ["ban", event.viewer_id]
        case m.ViewerUnbanned():
            return ["unban", event.viewer_id]
        case m.ViewerMuted():
            return ["mute", event.viewer_id, str(event.until_ms)]
        case _:
            return [""]


class RedisBroker:
    def __init__(self, url: str, history_events_max: int, process_id: str = "") -> None:
        self._client = redis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=10
        )
        self._url = url
        self._history_events_max = history_events_max
        self.process_id = process_id or secrets.token_hex(6)
        self._publish = self._client.register_script(PUBLISH_SCRIPT)
        self._counters = self._client.register_script(COUNTERS_SCRIPT)
        self._answer = self._client.register_script(ANSWER_SCRIPT)
        self._channels: dict[str, str] = {}  # channel -> room_id
        self._on_event: EventHandler | None = None
        self._on_state: StateHandler | None = None
        self._on_resync: Callable[[str], None] | None = None
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(
        self,
        on_event: EventHandler,
        on_state: StateHandler,
        on_resync: Callable[[str], None] | None = None,
    ) -> None:
        self._on_event = on_event
        self._on_state = on_state
        self._on_resync = on_resync
        await self._call(self._client.ping())
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        self._reader = asyncio.create_task(self._read_forever(), name="redis-broker-reader")

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.aclose()
        await self._client.aclose()

    async def shared_secret(self) -> bytes:
        """The secret every process signs viewer tokens with, made once per Redis."""
        key = "lc:viewer_secret"
        await self._call(self._client.set(key, secrets.token_bytes(32), nx=True))
        secret = await self._call(self._client.get(key))
        assert isinstance(secret, bytes)
        assert len(secret) == 32
        return secret

    async def create_room(self, info: RoomInfo) -> bool:
        keys = _keys(info.room_id)
        fields: dict[FieldT, EncodableT] = {
            "title": info.title,
            "host_name": info.host_name,
            "host_token_sha256": info.host_token_sha256,
        }
        created = await self._call(self._client.hsetnx(keys["info"], "room_id", info.room_id))
        if not created:
            return False
        await self._call(self._client.hset(keys["info"], mapping=fields))
        return True

    async def load_room(self, room_id: str) -> LoadedRoom | None:
        keys = _keys(room_id)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hgetall(keys["info"])
            pipe.get(keys["seq"])
            pipe.lrange(keys["history"], 0, -1)
            pipe.hgetall(keys["state"])
            pipe.smembers(keys["banned"])
            pipe.hgetall(keys["muted"])
            pipe.hgetall(keys["counters"])
            pipe.hgetall(keys["stock"])
            info, sequence, history, state, banned, muted, counters, stock = await self._call(
                pipe.execute()
            )
        if not info or b"host_token_sha256" not in info:
            return None
        entries = []
        for entry in history:
            sequence_text, _, body = entry.partition(b" ")
            entries.append((int(sequence_text), body))
        pinned = state.get(b"pinned", b"")
        sale = state.get(b"sale")
        poll = state.get(b"poll")
        return LoadedRoom(
            info=RoomInfo(
                room_id=room_id,
                title=info[b"title"].decode(),
                host_name=info[b"host_name"].decode(),
                host_token_sha256=info[b"host_token_sha256"].decode(),
            ),
            sequence=int(sequence or 0),
            history=entries,
            pinned=msgspec.json.decode(pinned, type=m.PinnedProduct) if pinned else None,
            live=state.get(b"live") == b"1",
            ended=state.get(b"ended") == b"1",
            slow_mode_ms=int(state.get(b"slow_mode_ms", 0)),
            sale=orjson.loads(sale) if sale else None,
            keywords=tuple(orjson.loads(state.get(b"keywords", b"[]"))),
            banned={viewer.decode() for viewer in banned},
            muted_until_ms={viewer.decode(): int(until) for viewer, until in muted.items()},
            poll=orjson.loads(poll) if poll else None,
            totals=Totals(
                likes=int(counters.get(b"likes", 0)),
                shares=int(counters.get(b"shares", 0)),
                stock={product.decode(): int(left) for product, left in stock.items()},
            ),
        )

    async def subscribe(self, room_id: str) -> None:
        channel = channel_of(room_id)
        if channel in self._channels:
            return
        self._channels[channel] = room_id
        try:
            await self._call(self._pubsub.subscribe(channel))
        except BrokerUnavailable:
            # Not subscribed: the next try (the room is not loaded) subscribes again.
            del self._channels[channel]
            raise
        self._subscribed.set()

    async def publish(self, room_id: str, event: m.RoomEvent, body: bytes) -> int:
        keys = _keys(room_id)
        arguments: list[str | bytes | int] = [
            body,
            channel_of(room_id),
            self._history_events_max,
            *_state_effect(event),
        ]
        sequence = await self._call(
            self._publish(
                keys=[
                    keys[name] for name in ("seq", "history", "state", "banned", "muted", "info")
                ],
                args=arguments,
            )
        )
        if not sequence:
            raise BrokerUnavailable(f"room {room_id!r} does not exist")
        return int(sequence)

    async def flush_counters(
        self,
        room_id: str,
        likes_delta: int,
        shares_delta: int,
        viewers_here: int,
        stock: dict[str, int],
    ) -> None:
        keys = _keys(room_id)
        arguments: list[str | int] = [
            likes_delta,
            shares_delta,
            self.process_id,
            viewers_here,
            VIEWER_COUNT_STALE_MS,
            channel_of(room_id),
        ]
        for product_id, remaining in stock.items():
            arguments += [product_id, remaining]
        await self._call(
            self._counters(keys=[keys["counters"], keys["viewers"], keys["stock"]], args=arguments)
        )

    async def answer_poll(
        self, room_id: str, poll_id: str, voter_id: str, option: int, options_count: int
    ) -> bool:
        counted = await self._call(
            self._answer(
                keys=poll_keys(room_id, poll_id),
                args=[voter_id, option, options_count, channel_of(room_id), POLL_KEEP_MS, poll_id],
            )
        )
        return bool(counted)

    async def poll_counts(self, room_id: str, poll_id: str, options_count: int) -> list[int]:
        fields = [str(option) for option in range(options_count)]
        values = await self._call(self._client.hmget(poll_keys(room_id, poll_id)[1], fields))
        return [int(value or 0) for value in values]

    async def _call(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except (RedisError, OSError) as error:
            raise BrokerUnavailable(f"redis: {error}") from error

    async def _read_forever(self) -> None:
        delay_s = 0.1
        connected = True
        while True:
            try:
                if not connected:
                    # Until a subscription is back, the pubsub has no connection to read:
                    # wait, try again, and wait longer the next time (never spin).
                    await asyncio.sleep(delay_s)
                    delay_s = min(RECONNECT_DELAY_S_MAX, delay_s * 2)
                    connected = await self._resubscribe()
                    continue
                if not self._channels:
                    self._subscribed.clear()
                    await self._subscribed.wait()
                message = await self._pubsub.get_message(timeout=1.0)
                delay_s = 0.1
                if message is not None and message["type"] == "message":
                    self._dispatch(message["channel"].decode(), message["data"])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as error:
                log.warning("redis subscription lost (%s); reconnecting in %.1f s", error, delay_s)
                connected = False
            except Exception:
                log.exception("bad message on the redis subscription")

    async def _resubscribe(self) -> bool:
        """A new subscription to every channel, then a resync of every room; False (and
        nothing resynced) while Redis does not take it."""
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.aclose()
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            if self._channels:
                await self._pubsub.subscribe(*self._channels)
        except (RedisError, OSError) as error:
            log.warning("redis still unavailable: %s", error)
            return False
        if self._on_resync is not None:
            for room_id in list(self._channels.values()):
                self._on_resync(room_id)
        return True

    def _dispatch(self, channel: str, data: bytes) -> None:
        room_id = self._channels.get(channel)
        if room_id is None:
            return
        kind, payload = data[:1], data[1:]
        if kind == b"e":
            assert self._on_event is not None
            sequence_text, _, body = payload.partition(b" ")
            self._on_event(room_id, int(sequence_text), body)
        elif kind == b"p":
            assert self._on_state is not None
            poll = _poll_decoder.decode(payload)
            self._on_state(room_id, Totals(poll=(poll.poll_id, poll.counts)))
        elif kind == b"s":
            assert self._on_state is not None
            totals = _totals_decoder.decode(payload)
            self._on_state(
                room_id,
                Totals(
                    likes=totals.likes,
                    shares=totals.shares,
                    viewers=totals.viewers,
                    stock=totals.stock,
                ),
            )
