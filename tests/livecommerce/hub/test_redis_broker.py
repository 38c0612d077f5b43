"""The Redis broker on its own against a real redis-server: its subscription through an
outage that lasts as long as real ones do (seconds), not one a reconnect papers over."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time

import pytest

from livecommerce import protocol as m
from livecommerce.hub.broker import BrokerUnavailable, Totals
from livecommerce.hub.redis_broker import RedisBroker
from livecommerce.hub.room import RoomInfo
from tests.conftest import RedisServer
from tests.support import require_binary

pytestmark = pytest.mark.redis

AOF = ("--appendonly", "yes", "--appendfsync", "always")


# The broken reader spins without ever yielding, so only pytest-timeout's signal stops it.
@pytest.mark.timeout(30)
async def test_the_subscription_comes_back_after_redis_is_away_for_seconds(
    tmp_path_factory: pytest.TempPathFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis away for 1.5 s: the first resubscription (after 0.1 s) fails. The reader
    must keep trying with backoff, not read a pubsub that has no connection in a loop
    that logs an error per turn and never subscribes again."""
    server = RedisServer(require_binary("redis-server"), tmp_path_factory.mktemp("redis"), AOF)
    server.start()
    broker = RedisBroker(server.url, history_events_max=100)
    events: list[int] = []
    resyncs: list[str] = []

    def on_event(room_id: str, sequence: int, body: bytes) -> None:
        events.append(sequence)

    def on_state(room_id: str, totals: Totals) -> None:
        return None

    try:
        await broker.start(on_event, on_state, resyncs.append)
        digest = hashlib.sha256(b"token").hexdigest()
        assert await broker.create_room(RoomInfo("r1", "Live", "Mia", digest))
        await broker.subscribe("r1")
        live = m.LiveChanged(live=True, ts_ms=1)
        await broker.publish("r1", live, m.encode_event(live))
        async with asyncio.timeout(5):
            while events != [1]:
                await asyncio.sleep(0.01)
        caplog.clear()
        await asyncio.to_thread(server.stop)
        await asyncio.sleep(1.5)
        await asyncio.to_thread(server.start)
        started_s = time.monotonic()
        async with asyncio.timeout(15):
            while not resyncs:
                await asyncio.sleep(0.05)
        assert time.monotonic() - started_s < 6  # the backoff is capped at 5 s
        while True:
            try:
                await broker.publish("r1", live, m.encode_event(live))
                break
            except BrokerUnavailable:
                await asyncio.sleep(0.1)
        async with asyncio.timeout(5):
            while events[-1:] != [2]:
                await asyncio.sleep(0.01)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert not errors, errors[:3]
        # A warning per try with backoff, not one per turn of a loop.
        assert len(caplog.records) < 20, len(caplog.records)
    finally:
        await broker.close()
        server.stop()
