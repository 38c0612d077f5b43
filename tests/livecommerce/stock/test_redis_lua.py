"""What only the Redis store has: key layout, EVALSHA, Redis going away, data loss."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from livecommerce.stock.base import (
    OrderRecord,
    RecordStatus,
    ReserveStatus,
    StockStoreError,
    StockStoreUnavailable,
)
from livecommerce.stock.redis_lua import RESERVE_LUA, RedisStockStore, sale_keys
from tests.conftest import RedisServer
from tests.support import free_port


@pytest.fixture
async def admin(redis_server: RedisServer) -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
async def store(redis_server: RedisServer, admin: redis.Redis) -> AsyncIterator[RedisStockStore]:
    store = RedisStockStore.from_url(redis_server.url, connections_max=4)
    yield store
    await store.close()


async def test_keys_share_one_hash_tag_per_sale(store: RedisStockStore, admin: redis.Redis) -> None:
    await store.load_sale("s-1", 5)
    await store.reserve("s-1", "buyer", "o1", 2, 3)
    keys = sorted(await admin.keys("*"))
    assert keys == sorted(sale_keys("s-1"))
    assert all(key.startswith("{sale:s-1}:") for key in keys)
    assert await admin.hgetall("{sale:s-1}:meta") == {"offered": "5", "remaining": "3"}
    assert await admin.hgetall("{sale:s-1}:orders") == {"buyer:o1": "accepted:2:a"}
    assert await admin.hgetall("{sale:s-1}:buyers") == {"buyer": "2"}
    await store.release("s-1", "buyer", "o1")
    assert await admin.hgetall("{sale:s-1}:orders") == {"buyer:o1": "accepted:2:r"}
    assert await admin.hgetall("{sale:s-1}:buyers") == {}


async def test_script_runs_by_sha_and_survives_script_flush(
    store: RedisStockStore, admin: redis.Redis
) -> None:
    await store.load_sale("s1", 5)
    assert (await store.reserve("s1", "b", "o1", 1, 5)).accepted
    sha = hashlib.sha1(RESERVE_LUA.encode()).hexdigest()
    assert await admin.script_exists(sha) == [True]
    await admin.script_flush()
    assert (await store.reserve("s1", "b", "o2", 1, 5)).accepted  # Reloaded on NOSCRIPT.
    assert await store.remaining("s1") == 3


async def test_the_script_refuses_bad_arguments(store: RedisStockStore) -> None:
    await store.load_sale("s1", 5)
    script = store.client.register_script(RESERVE_LUA)
    with pytest.raises(redis.ResponseError, match="positive integer"):
        await script(keys=sale_keys("s1"), args=["b", "o", 0, 5, 100])
    with pytest.raises(redis.ResponseError, match="positive integer"):
        await script(keys=sale_keys("s1"), args=["b", "o", "1.5", 5, 100])
    assert await store.remaining("s1") == 5


async def test_orders_per_sale_are_bounded(redis_server: RedisServer, admin: redis.Redis) -> None:
    store = RedisStockStore.from_url(redis_server.url, orders_per_sale_max=2)
    try:
        await store.load_sale("s1", 5)
        assert (await store.reserve("s1", "b", "o1", 1, 5)).accepted
        assert (await store.reserve("s1", "b", "o2", 9, 5)).status is ReserveStatus.LIMIT_REACHED
        full = await store.reserve("s1", "b", "o3", 1, 5)
        assert full.status is ReserveStatus.CAPACITY
        assert await store.remaining("s1") == 4
    finally:
        await store.close()


async def test_unreachable_redis_raises_a_typed_error() -> None:
    store = RedisStockStore.from_url(
        f"redis://127.0.0.1:{free_port()}/0", socket_timeout_s=0.5, pool_wait_timeout_s=0.5
    )
    try:
        with pytest.raises(StockStoreUnavailable):
            await store.load_sale("s1", 5)
        with pytest.raises(StockStoreUnavailable):
            await store.reserve("s1", "b", "o1", 1, 1)
        with pytest.raises(StockStoreUnavailable):
            await store.release("s1", "b", "o1")
        with pytest.raises(StockStoreUnavailable):
            await store.remaining("s1")
        with pytest.raises(StockStoreUnavailable):
            await store.rebuild("s1", 5, [])
        assert issubclass(StockStoreUnavailable, StockStoreError)
    finally:
        await store.close()


async def test_redis_restart_loses_stock_then_rebuild_from_ledger(
    redis_server: RedisServer, admin: redis.Redis
) -> None:
    store = RedisStockStore.from_url(redis_server.url, connections_max=4)
    try:
        await store.load_sale("s1", 10)
        ledger: list[OrderRecord] = []
        for n in range(4):
            result = await store.reserve("s1", f"b{n}", "o1", 2, 2)
            assert result.accepted
            ledger.append(OrderRecord(f"b{n}", "o1", 2, RecordStatus.ACCEPTED))
        assert (await store.release("s1", "b0", "o1")).released_units == 2
        ledger[0] = OrderRecord("b0", "o1", 2, RecordStatus.RELEASED)

        redis_server.restart()  # No persistence: Redis comes back empty.

        after: ReserveStatus | None = None
        for _ in range(5):  # The pool's old connections fail once, then reconnect.
            try:
                after = (await store.reserve("s1", "b9", "o1", 1, 2)).status
                break
            except StockStoreUnavailable:
                continue
        assert after is ReserveStatus.UNKNOWN_SALE
        assert await store.remaining("s1") is None
        assert await store.rebuild("s1", 10, ledger) == 4
        assert (await store.reserve("s1", "b1", "o1", 2, 2)).duplicate
        assert (await store.reserve("s1", "b1", "o2", 1, 2)).status is ReserveStatus.LIMIT_REACHED
        assert (await store.reserve("s1", "b0", "o2", 2, 2)).accepted
        assert await store.remaining("s1") == 2
    finally:
        await store.close()
