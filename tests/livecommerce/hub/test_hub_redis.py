"""Scaled out: two server processes share a real redis-server and serve one room."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis
import websockets
from websockets.asyncio.client import ClientConnection

from livecommerce.hub.redis_broker import RedisBroker
from tests.conftest import RedisServer
from tests.livecommerce.hub.test_hub_embedded import Json, closed_with, recv, recv_type
from tests.livecommerce.processes import ServerProcess
from tests.support import require_binary

pytestmark = pytest.mark.redis


@contextlib.asynccontextmanager
async def two_servers(
    tmp_path: Path, redis_url: str
) -> AsyncIterator[tuple[ServerProcess, ServerProcess]]:
    redis.Redis.from_url(redis_url).flushdb()
    first = await asyncio.to_thread(ServerProcess, tmp_path / "a", redis_url)
    try:
        second = await asyncio.to_thread(ServerProcess, tmp_path / "b", redis_url)
        try:
            yield first, second
        finally:
            await asyncio.to_thread(second.stop)
    finally:
        await asyncio.to_thread(first.stop)


async def create_room(server: ServerProcess) -> tuple[str, str]:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{server.http}/api/rooms", json={"title": "Scaled", "host_name": "Mia"}
        )
    assert response.status_code == 201, response.text
    body: Json = response.json()
    return body["room_id"], body["host_token"]


async def join(
    server: ServerProcess, room_id: str, query: str = ""
) -> tuple[ClientConnection, Json, Json]:
    ws = await websockets.connect(f"{server.ws}/ws/rooms/{room_id}{query}")
    return ws, await recv(ws), await recv(ws)


async def wait_for_viewers(ws: ClientConnection, count: int) -> None:
    async with asyncio.timeout(10):
        while (await recv_type(ws, "state/v1", timeout_s=10)).get("viewers") != count:
            pass


async def test_comments_counts_and_resume_across_processes(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with two_servers(tmp_path, redis_server.url) as (a, b):
        room_id, _ = await create_room(a)
        on_a = [await join(a, room_id) for _ in range(2)]
        on_b = [await join(b, room_id) for _ in range(3)]
        everyone = [ws for ws, _, _ in on_a + on_b]
        for _, welcome, snapshot in on_a + on_b:
            assert welcome["type"] == "welcome/v1"
            assert snapshot["title"] == "Scaled"
        # Viewer counts are totals over both processes.
        await wait_for_viewers(everyone[0], 5)
        await wait_for_viewers(everyone[-1], 5)
        # A comment posted on one process reaches viewers on both, with one sequence per room.
        await everyone[0].send(json.dumps({"type": "comment/v1", "text": "from a", "name": "A"}))
        await everyone[-1].send(json.dumps({"type": "comment/v1", "text": "from b", "name": "B"}))
        orders = []
        for ws in everyone:
            seen = [await recv_type(ws, "comment/v1") for _ in range(2)]
            orders.append([(message["seq"], message["text"]) for message in seen])
        assert all(order == orders[0] for order in orders), orders
        assert [seq for seq, _ in orders[0]] == [1, 2]
        # Likes on both processes add up.
        await everyone[1].send(json.dumps({"type": "like/v1", "count": 4}))
        await everyone[2].send(json.dumps({"type": "like/v1", "count": 6}))
        async with asyncio.timeout(10):
            while (await recv_type(everyone[3], "state/v1")).get("likes") != 10:
                pass
        # A viewer of A leaves, misses events, and resumes on B.
        leaving_ws, leaving_welcome, _ = on_a[1]
        last_seen = orders[0][-1][0]
        await leaving_ws.close()
        await everyone[2].send(json.dumps({"type": "comment/v1", "text": "missed", "name": "B"}))
        await recv_type(everyone[2], "comment/v1")
        query = f"?since={last_seen}&viewer={leaving_welcome['viewer_token']}"
        back, welcome, replayed = await join(b, room_id, query)
        assert welcome["mode"] == "resume"
        assert welcome["viewer_id"] == leaving_welcome["viewer_id"]  # tokens work on every process
        assert replayed["text"] == "missed"
        assert replayed["seq"] == last_seen + 1
        for ws in [*everyone, back]:
            if ws is not leaving_ws:
                await ws.close()


async def test_host_moderation_reaches_every_process(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with two_servers(tmp_path, redis_server.url) as (a, b):
        room_id, token = await create_room(a)
        host, _, _ = await join(a, room_id)
        troll, troll_welcome, _ = await join(b, room_id)
        await host.send(json.dumps({"type": "host.auth/v1", "token": token}))
        await recv_type(host, "ack/v1")
        await host.send(json.dumps({"type": "host.keywords/v1", "words": ["spam"]}))
        await recv_type(host, "ack/v1")
        # The keyword list is private, yet process B enforces it. B hears of it through
        # Redis a moment after A's ack, so a comment sent before then is still published
        # (the troll sees it come back): try again until B refuses one.
        async with asyncio.timeout(10):
            while True:
                await troll.send(json.dumps({"type": "comment/v1", "text": "SPAM!", "name": "T"}))
                while (message := await recv(troll))["type"] not in ("error/v1", "comment/v1"):
                    pass
                if message["type"] == "error/v1" and message["code"] == "blocked_word":
                    break
                await asyncio.sleep(2.1)  # rate limit
        await host.send(
            json.dumps({"type": "host.ban/v1", "viewer_id": troll_welcome["viewer_id"]})
        )
        assert await closed_with(troll) == 4003
        # A third process-local view: a late joiner on B loads the room with the ban applied.
        again = await websockets.connect(
            f"{b.ws}/ws/rooms/{room_id}?viewer={troll_welcome['viewer_token']}"
        )
        assert (await recv(again))["code"] == "banned"
        await host.close()


async def test_redis_going_away_gives_clear_errors_then_recovers(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # A private Redis that keeps its data on disk, so a restart loses nothing.
    durable = RedisServer(
        require_binary("redis-server"),
        tmp_path_factory.mktemp("durable-redis"),
        extra_args=("--appendonly", "yes", "--appendfsync", "always"),
    )
    durable.start()
    try:
        async with two_servers(tmp_path, durable.url) as (a, b):
            room_id, _ = await create_room(a)
            viewer_a, _, _ = await join(a, room_id)
            viewer_b, _, _ = await join(b, room_id)
            await viewer_a.send(json.dumps({"type": "comment/v1", "text": "before", "name": "A"}))
            assert (await recv_type(viewer_b, "comment/v1"))["text"] == "before"

            await asyncio.to_thread(durable.stop)
            await viewer_a.send(json.dumps({"type": "comment/v1", "text": "during", "name": "A"}))
            error = await recv_type(viewer_a, "error/v1", timeout_s=15)
            assert error["code"] == "unavailable"
            assert a.alive()
            assert b.alive()
            async with httpx.AsyncClient() as client:
                assert (await client.get(f"{a.http}/healthz")).status_code == 200

            await asyncio.to_thread(durable.start)
            # Both processes reconnect by themselves; the same sockets keep working.
            # Each try is answered by its comment or an `unavailable` error; under load an
            # answer can take several seconds while the broker reconnects.
            async with asyncio.timeout(60):
                while True:
                    await viewer_a.send(
                        json.dumps({"type": "comment/v1", "text": "after", "name": "A"})
                    )
                    message = await recv(viewer_a, timeout_s=20)
                    while message["type"] not in ("comment/v1", "error/v1"):
                        message = await recv(viewer_a, timeout_s=20)
                    if message["type"] == "comment/v1":
                        assert message["text"] == "after"
                        break
                    assert message["code"] in ("unavailable", "rate_limited"), message
                    await asyncio.sleep(2.1)  # stay under the comment rate limit
            seen = await recv_type(viewer_b, "comment/v1", timeout_s=15)
            assert seen["text"] == "after"
            assert seen["seq"] == 2  # "during" was refused, never numbered
            await viewer_a.close()
            await viewer_b.close()
    finally:
        durable.stop()


async def test_counters_published_while_a_process_was_not_subscribed_reach_its_viewers(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A stock count published (by the ledger writer, say) just after Redis comes back,
    before a process has subscribed again, is lost for that process; its resync reads
    the room's counters, and they must go to its viewers, or their screens keep the old
    count until the next change, which after a sell-out never comes."""
    durable = RedisServer(
        require_binary("redis-server"),
        tmp_path_factory.mktemp("durable-redis"),
        extra_args=("--appendonly", "yes", "--appendfsync", "always"),
    )
    durable.start()
    try:
        async with two_servers(tmp_path, durable.url) as (a, _):
            room_id, _ = await create_room(a)
            viewer, _, _ = await join(a, room_id)
            publisher = RedisBroker(durable.url, history_events_max=100, process_id="writer")
            await durable_stop_for(durable, 1.6)
            # a's next try to subscribe is 1.5 s after it lost Redis, then 3.1 s: before it.
            await publisher.flush_counters(room_id, 0, 0, 0, {"mug": 7})
            async with asyncio.timeout(15):
                while (await recv_type(viewer, "state/v1", timeout_s=15)).get("stock") != {
                    "mug": 7
                }:
                    pass
            await publisher.close()
            await viewer.close()
    finally:
        durable.stop()


async def durable_stop_for(server: RedisServer, seconds: float) -> None:
    await asyncio.to_thread(server.stop)
    await asyncio.sleep(seconds)
    await asyncio.to_thread(server.start)
