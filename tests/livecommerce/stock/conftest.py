from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as redis

from livecommerce.stock.base import StockStore
from livecommerce.stock.memory import MemoryStockStore
from livecommerce.stock.redis_lua import RedisStockStore

StoreFactory = Callable[[], Awaitable[StockStore]]


@pytest.fixture(params=["memory", "redis"])
async def store_factory(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    """Makes stores that share one backend: for memory, the same object (one process);
    for Redis, independent clients with their own connection pools (several processes)."""
    made: list[StockStore] = []
    if request.param == "memory":
        shared = MemoryStockStore()

        async def make_memory() -> StockStore:
            return shared

        yield make_memory
        return
    server = request.getfixturevalue("redis_server")
    admin = redis.Redis.from_url(server.url)
    await admin.flushdb()
    await admin.aclose()

    async def make_redis() -> StockStore:
        store = RedisStockStore.from_url(server.url, connections_max=16)
        made.append(store)
        return store

    try:
        yield make_redis
    finally:
        for store in made:
            await store.close()


@pytest.fixture
async def store(store_factory: StoreFactory) -> StockStore:
    return await store_factory()
