"""The Redis stock store: one Lua script per reservation, release and settlement.

Key layout (one hash tag per sale, so every key of a sale is in one Redis Cluster slot,
which a script touching several keys requires):

- `{sale:<sale_id>}:meta`: hash `offered` -> units offered, `remaining` -> units left.
- `{sale:<sale_id>}:orders`: hash `<buyer_id>:<order_id>` ->
  `<first status>:<first quantity>:<record>` where record is `a` (accepted, units held),
  `p` (paid: units sold, never released), `r` (released) or `-` (refused). Ids never
  contain `:` (they are [A-Za-z0-9_-]).
- `{sale:<sale_id>}:buyers`: hash `<buyer_id>` -> units the buyer holds or bought (not released).

Redis runs a script atomically: no other command runs between the script's reads and
writes, so the checks (idempotency, per-buyer limit, stock), the decrement and the record
happen in one step, whatever the number of clients or processes. Scripts are sent once
with SCRIPT LOAD and run by EVALSHA (redis-py `register_script`, which reloads them
after a Redis restart).

A Redis that is down or unreachable raises `StockStoreUnavailable`. A Redis that lost its
data answers `unknown_sale`: rebuild the sale from the ledger with `rebuild`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

import redis.asyncio as redis
from redis.exceptions import RedisError, ResponseError

from livecommerce.commerce.reservations import (
    ORDERS_PER_SALE_MAX,
    OrderRecord,
    RecordStatus,
    ReleaseResult,
    ReserveResult,
    ReserveStatus,
    SaleStock,
    check_ids,
)
from livecommerce.stock.base import SaleConflict, StockStoreError, StockStoreUnavailable

REBUILD_FIELDS_PER_COMMAND: Final = 5_000

RESERVE_LUA: Final = """
-- KEYS: meta, orders, buyers. ARGV: buyer_id, order_id, quantity, per_buyer_limit,
-- orders_max. Returns {status, quantity, remaining, duplicate (0/1), conflict (0/1)}.
local quantity = tonumber(ARGV[3])
local per_buyer_limit = tonumber(ARGV[4])
if not quantity or quantity < 1 or quantity % 1 ~= 0 then
  return redis.error_reply('quantity must be a positive integer')
end
if not per_buyer_limit or per_buyer_limit < 1 then
  return redis.error_reply('per_buyer_limit must be a positive integer')
end
local remaining = redis.call('HGET', KEYS[1], 'remaining')
if not remaining then
  return {'unknown_sale', quantity, 0, 0, 0}
end
remaining = tonumber(remaining)
local field = ARGV[1] .. ':' .. ARGV[2]
local first = redis.call('HGET', KEYS[2], field)
if first then
  local status, first_quantity = string.match(first, '^([a-z_]+):(%d+):')
  first_quantity = tonumber(first_quantity)
  local conflict = 0
  if first_quantity ~= quantity then conflict = 1 end
  return {status, first_quantity, remaining, 1, conflict}
end
if redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[5]) then
  return {'capacity', quantity, remaining, 0, 0}
end
local held = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
local status = 'accepted'
local record = 'a'
if held + quantity > per_buyer_limit then
  status = 'limit_reached'
  record = '-'
elseif quantity > remaining then
  status = 'sold_out'
  record = '-'
else
  remaining = redis.call('HINCRBY', KEYS[1], 'remaining', -quantity)
  redis.call('HINCRBY', KEYS[3], ARGV[1], quantity)
end
redis.call('HSET', KEYS[2], field, status .. ':' .. quantity .. ':' .. record)
return {status, quantity, remaining, 0, 0}
"""

# The same checks, and an accepted order is also appended to the sale's stream of accepted
# orders (KEYS[4]) in the same atomic step: Redis holds stock for an order exactly when the
# order is on the stream the ledger writer reads, whatever process dies when.
# Extra ARGV: [6] the order record to append, [7] the stream's length cap.
_ACCEPT = """  remaining = redis.call('HINCRBY', KEYS[1], 'remaining', -quantity)
  redis.call('HINCRBY', KEYS[3], ARGV[1], quantity)
"""
RESERVE_RECORD_LUA: Final = RESERVE_LUA.replace(
    _ACCEPT,
    _ACCEPT
    + """  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[7], '*', 'order', ARGV[6],
    'remaining', remaining)
""",
)
assert RESERVE_RECORD_LUA != RESERVE_LUA

RELEASE_LUA: Final = """
-- KEYS: meta, orders, buyers. ARGV: buyer_id, order_id.
-- Returns {released units, remaining}; remaining is -1 for an unknown sale.
local remaining = redis.call('HGET', KEYS[1], 'remaining')
if not remaining then return {0, -1} end
local field = ARGV[1] .. ':' .. ARGV[2]
local first = redis.call('HGET', KEYS[2], field)
if not first then return {0, tonumber(remaining)} end
local status, quantity, record = string.match(first, '^([a-z_]+):(%d+):(.)$')
if record ~= 'a' then return {0, tonumber(remaining)} end
quantity = tonumber(quantity)
redis.call('HSET', KEYS[2], field, status .. ':' .. quantity .. ':r')
remaining = redis.call('HINCRBY', KEYS[1], 'remaining', quantity)
if redis.call('HINCRBY', KEYS[3], ARGV[1], -quantity) <= 0 then
  redis.call('HDEL', KEYS[3], ARGV[1])
end
return {quantity, remaining}
"""

SETTLE_LUA: Final = """
-- KEYS: orders. ARGV: buyer_id, order_id. Returns 1 when the order is paid (now or
-- before), 0 when it was never accepted or its units were released.
local field = ARGV[1] .. ':' .. ARGV[2]
local first = redis.call('HGET', KEYS[1], field)
if not first then return 0 end
local status, quantity, record = string.match(first, '^([a-z_]+):(%d+):(.)$')
if record == 'p' then return 1 end
if record ~= 'a' then return 0 end
redis.call('HSET', KEYS[1], field, status .. ':' .. quantity .. ':p')
return 1
"""

LOAD_LUA: Final = """
-- KEYS: meta. ARGV: units_offered. Returns {offered, remaining, created (0/1)}.
local offered = redis.call('HGET', KEYS[1], 'offered')
if offered then
  return {tonumber(offered), tonumber(redis.call('HGET', KEYS[1], 'remaining')), 0}
end
redis.call('HSET', KEYS[1], 'offered', ARGV[1], 'remaining', ARGV[1])
return {tonumber(ARGV[1]), tonumber(ARGV[1]), 1}
"""


def sale_keys(sale_id: str) -> list[str]:
    """[meta, orders, buyers] for a sale; all share the hash tag `{sale:<sale_id>}`."""
    tag = f"{{sale:{sale_id}}}"
    return [f"{tag}:meta", f"{tag}:orders", f"{tag}:buyers"]


def accepted_stream_key(sale_id: str) -> str:
    """The sale's stream of accepted orders, read by the ledger writer (same hash tag)."""
    return f"{{sale:{sale_id}}}:accepted"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisStockStore:
    """Owns or borrows a `redis.asyncio.Redis` client (`from_url` makes an owned one)."""

    def __init__(
        self,
        client: redis.Redis,
        orders_per_sale_max: int = ORDERS_PER_SALE_MAX,
        owns_client: bool = False,
    ) -> None:
        self.client = client
        self.orders_per_sale_max = orders_per_sale_max
        self._owns_client = owns_client
        self._reserve = client.register_script(RESERVE_LUA)
        self._reserve_record = client.register_script(RESERVE_RECORD_LUA)
        self._release = client.register_script(RELEASE_LUA)
        self._load = client.register_script(LOAD_LUA)
        self._settle = client.register_script(SETTLE_LUA)

    @classmethod
    def from_url(
        cls,
        url: str,
        connections_max: int = 32,
        socket_timeout_s: float = 5.0,
        pool_wait_timeout_s: float = 10.0,
        orders_per_sale_max: int = ORDERS_PER_SALE_MAX,
    ) -> RedisStockStore:
        """A client with its own bounded pool: callers beyond `connections_max` wait up to
        `pool_wait_timeout_s` for a connection instead of opening more."""
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=connections_max,
            timeout=pool_wait_timeout_s,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
        )
        client = redis.Redis(connection_pool=pool)
        return cls(client, orders_per_sale_max, owns_client=True)

    async def close(self) -> None:
        if self._owns_client:
            await self.client.aclose()
            await self.client.connection_pool.disconnect()

    async def _run(self, script: Any, keys: Sequence[str], args: Sequence[object]) -> list[Any]:
        try:
            reply = await script(keys=keys, args=args)
        except ResponseError as error:
            raise StockStoreError(f"redis refused the stock script: {error}") from error
        except (RedisError, OSError) as error:
            raise StockStoreUnavailable(f"redis is unavailable: {error!r}") from error
        assert isinstance(reply, list), reply
        return reply

    async def load_sale(self, sale_id: str, units_offered: int) -> int:
        assert units_offered > 0, units_offered
        reply = await self._run(self._load, sale_keys(sale_id)[:1], [units_offered])
        offered, remaining = int(reply[0]), int(reply[1])
        if offered != units_offered:
            raise SaleConflict(f"sale {sale_id} has {offered} units offered, not {units_offered}")
        return remaining

    async def reserve(
        self, sale_id: str, buyer_id: str, order_id: str, quantity: int, per_buyer_limit: int
    ) -> ReserveResult:
        check_ids(sale_id, buyer_id, order_id)
        assert quantity > 0, quantity
        assert per_buyer_limit > 0, per_buyer_limit
        reply = await self._run(
            self._reserve,
            sale_keys(sale_id),
            [buyer_id, order_id, quantity, per_buyer_limit, self.orders_per_sale_max],
        )
        return ReserveResult(
            ReserveStatus(_text(reply[0])),
            int(reply[1]),
            int(reply[2]),
            duplicate=int(reply[3]) == 1,
            conflict=int(reply[4]) == 1,
        )

    async def reserve_and_record_many(
        self, requests: Sequence[tuple[str, str, str, int, int, bytes]]
    ) -> list[ReserveResult | StockStoreError]:
        """Reserve many orders in one round trip (a pipeline of scripts, each atomic on
        its own); an accepted order is appended to its sale's accepted stream in the same
        script. Each request is (sale_id, buyer_id, order_id, quantity, per_buyer_limit,
        record). A script Redis refuses gives that request a StockStoreError; an
        unreachable Redis raises StockStoreUnavailable for all (unknown which ran)."""
        async with self.client.pipeline(transaction=False) as pipe:
            for sale_id, buyer_id, order_id, quantity, per_buyer_limit, record in requests:
                check_ids(sale_id, buyer_id, order_id)
                assert quantity > 0, quantity
                assert per_buyer_limit > 0, per_buyer_limit
                # Queued, not sent: the pipeline sends everything in `execute`.
                await self._reserve_record(
                    keys=[*sale_keys(sale_id), accepted_stream_key(sale_id)],
                    args=[
                        buyer_id,
                        order_id,
                        quantity,
                        per_buyer_limit,
                        self.orders_per_sale_max,
                        record,
                        self.orders_per_sale_max,
                    ],
                    client=pipe,
                )
            try:
                replies = await pipe.execute(raise_on_error=False)
            except (RedisError, OSError) as error:
                raise StockStoreUnavailable(f"redis is unavailable: {error!r}") from error
        results: list[ReserveResult | StockStoreError] = []
        for reply in replies:
            if isinstance(reply, Exception):
                results.append(StockStoreError(f"redis refused the stock script: {reply}"))
                continue
            results.append(
                ReserveResult(
                    ReserveStatus(_text(reply[0])),
                    int(reply[1]),
                    int(reply[2]),
                    duplicate=int(reply[3]) == 1,
                    conflict=int(reply[4]) == 1,
                )
            )
        return results

    async def release(self, sale_id: str, buyer_id: str, order_id: str) -> ReleaseResult:
        check_ids(sale_id, buyer_id, order_id)
        reply = await self._run(self._release, sale_keys(sale_id), [buyer_id, order_id])
        return ReleaseResult(int(reply[0]), max(int(reply[1]), 0))

    async def settle(self, sale_id: str, buyer_id: str, order_id: str) -> bool:
        check_ids(sale_id, buyer_id, order_id)
        try:
            reply = await self._settle(keys=sale_keys(sale_id)[1:2], args=[buyer_id, order_id])
        except (RedisError, OSError) as error:
            raise StockStoreUnavailable(f"redis is unavailable: {error!r}") from error
        return int(reply) == 1

    async def remaining(self, sale_id: str) -> int | None:
        try:
            value = await self.client.hget(sale_keys(sale_id)[0], "remaining")
        except (RedisError, OSError) as error:
            raise StockStoreUnavailable(f"redis is unavailable: {error!r}") from error
        return None if value is None else int(value)

    async def rebuild(
        self, sale_id: str, units_offered: int, records: Iterable[OrderRecord]
    ) -> int:
        """Replace the sale's keys with the state the records describe, in one MULTI/EXEC
        transaction (no client sees a half-written sale). The records are checked first by
        `SaleStock.rebuild`, which refuses a history that oversells. The sale's stream of
        accepted orders is emptied in the same step: what it held was taken against the
        state being replaced, and the records say which of those orders stand."""
        stock = SaleStock.rebuild(units_offered, records, self.orders_per_sale_max)
        meta, orders, buyers = sale_keys(sale_id)
        order_fields: dict[str, str] = {}
        for buyer_id, order_id, status, quantity, record in stock.order_items():
            check_ids(sale_id, buyer_id, order_id)
            mark = {
                RecordStatus.ACCEPTED: "a",
                RecordStatus.PAID: "p",
                RecordStatus.RELEASED: "r",
                None: "-",
            }[record]
            order_fields[f"{buyer_id}:{order_id}"] = f"{status}:{quantity}:{mark}"
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.delete(meta, orders, buyers, accepted_stream_key(sale_id))
                pipe.hset(meta, mapping={"offered": units_offered, "remaining": stock.remaining})
                items = list(order_fields.items())
                for start in range(0, len(items), REBUILD_FIELDS_PER_COMMAND):
                    pipe.hset(
                        orders, mapping=dict(items[start : start + REBUILD_FIELDS_PER_COMMAND])
                    )
                buyer_items = stock.buyer_units_items()
                for start in range(0, len(buyer_items), REBUILD_FIELDS_PER_COMMAND):
                    chunk = buyer_items[start : start + REBUILD_FIELDS_PER_COMMAND]
                    pipe.hset(buyers, mapping=dict(chunk))
                await pipe.execute()
        except (RedisError, OSError) as error:
            raise StockStoreUnavailable(f"redis is unavailable: {error!r}") from error
        return stock.remaining
