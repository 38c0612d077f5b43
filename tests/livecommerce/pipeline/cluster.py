"""What the scaled-out order tests and the fault tests share: the writer and web processes
on one Redis, and reading a stopped process's ledger from its data directory."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as redis

from ledger import Ledger, LedgerSettings, decode_entry
from ledger.note import Signer, Verifier
from ledger.storage import KEY_FILE
from ledger.verify import verify_directory
from livecommerce.clients.signing import KeyPair
from livecommerce.commerce.core import CommerceCore
from livecommerce.commerce.replay import apply_entry
from livecommerce.stock.redis_lua import RedisStockStore
from tests.livecommerce.pipeline.flows import now_ms
from tests.livecommerce.processes import ServerProcess, WriterProcess

Json = dict[str, Any]
Entries = list[tuple[str, dict[str, Any]]]


@contextlib.asynccontextmanager
async def scaled(
    tmp_path: Path,
    redis_url: str,
    web_processes: int = 2,
    environment: Mapping[str, str] | None = None,
) -> AsyncIterator[tuple[WriterProcess, list[ServerProcess]]]:
    """A flushed Redis, the ledger writer (serving its log) and `web_processes` web
    processes; all stopped on the way out (the lists may be changed meanwhile)."""
    admin = redis.Redis.from_url(redis_url)
    await admin.flushdb()
    await admin.aclose()
    writer = await asyncio.to_thread(
        WriterProcess, tmp_path / "writer", redis_url, None, True, environment
    )
    webs: list[ServerProcess] = []
    try:
        for number in range(web_processes):
            web = await asyncio.to_thread(
                ServerProcess, tmp_path / f"web{number}", redis_url, None, environment
            )
            webs.append(web)
        yield writer, webs
    finally:
        for process in [*webs, writer]:
            await asyncio.to_thread(process.stop)


async def sale_known_everywhere(
    client: httpx.AsyncClient, webs: list[ServerProcess], sale_id: str
) -> None:
    async with asyncio.timeout(10):
        for web in webs:
            while (await client.get(f"{web.http}/api/sales/{sale_id}")).status_code != 200:
                await asyncio.sleep(0.05)


def ledger_verifier(data_dir: Path) -> Verifier:
    """The verifier key of the ledger in a data directory (the writer's or the server's)."""
    return Signer.parse((data_dir / "ledger" / KEY_FILE).read_text()).verifier


async def ledger_entries(data_dir: Path) -> Entries:
    """Every entry of a stopped process's ledger, after checking the whole log."""
    ledger_dir = data_dir / "ledger"
    await asyncio.to_thread(verify_directory, ledger_dir, ledger_verifier(data_dir))
    ledger = await Ledger.open(ledger_dir, LedgerSettings())
    try:
        return [decode_entry(ledger.entry(index)) for index in range(ledger.size)]
    finally:
        await ledger.close()


def replay(entries: Entries) -> CommerceCore:
    core = CommerceCore()
    for entry_type, fields in entries:
        apply_entry(core, (entry_type, fields))
    return core


async def redis_remaining(redis_url: str, sale_id: str) -> int | None:
    store = RedisStockStore.from_url(redis_url)
    try:
        return await store.remaining(sale_id)
    finally:
        await store.close()


async def remaining_or_none(url: str, sale_id: str) -> int | None:
    """The sale's units left in Redis, or None while Redis does not answer."""
    try:
        return await redis_remaining(url, sale_id)
    except Exception:
        return None


def accepted_in(entries: Entries) -> dict[str, tuple[int, int]]:
    """order id -> (ledger index, quantity) of every accepted order."""
    return {
        fields["order_id"]: (index, fields["quantity"])
        for index, (entry_type, fields) in enumerate(entries)
        if entry_type == "order/v1" and fields["action"] == "accepted"
    }


async def register_retrying(client: httpx.AsyncClient, base: str, keys: KeyPair) -> None:
    async with asyncio.timeout(20):
        while True:
            response = await client.post(
                f"{base}/api/identities", json=keys.registration("Late", now_ms())
            )
            if response.status_code == 201:
                return
            await asyncio.sleep(0.2)


async def order_retrying(client: httpx.AsyncClient, base: str, order: Json) -> Json:
    async with asyncio.timeout(20):
        while True:
            response = await client.post(f"{base}/api/orders", json=order)
            body: Json = response.json()
            if body.get("reason") not in ("unavailable", "stock_unavailable", "busy"):
                return body
            await asyncio.sleep(0.2)
