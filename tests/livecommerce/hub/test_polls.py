"""Polls over the room socket: the host opens one, viewers answer once each, the live
counts reach every screen, the close carries the final tally, which goes on the ledger;
and across two processes on a real Redis, one answer per viewer id in all of them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from ledger import decode_entry
from tests.conftest import RedisServer
from tests.livecommerce.hub.test_hub_embedded import create_room, join, recv_type
from tests.livecommerce.hub.test_hub_redis import create_room as create_scaled_room
from tests.livecommerce.hub.test_hub_redis import join as join_scaled
from tests.livecommerce.hub.test_hub_redis import two_servers
from tests.livecommerce.server import running_server

Json = dict[str, Any]
POLL = {"type": "host.poll/v1", "poll_id": "p1", "question": "Which colour next?",
        "options": ["Red", "Blue", "Green"], "duration_ms": 60_000}  # fmt: skip


async def send(ws: ClientConnection, message: Json) -> None:
    await ws.send(json.dumps(message))


async def answer(ws: ClientConnection, option: int, poll_id: str = "p1") -> Json:
    await send(ws, {"type": "poll.answer/v1", "poll_id": poll_id, "option": option})
    async with asyncio.timeout(5):
        while True:
            message = json.loads(await ws.recv())
            if message["type"] in ("ack/v1", "error/v1"):
                return message


def poll_entries(ledger: Any) -> list[Json]:
    entries = [decode_entry(ledger.entry(index)) for index in range(ledger.size)]
    return [fields for kind, fields in entries if kind == "poll/v1"]


async def counts_reach(ws: ClientConnection, counts: list[int]) -> None:
    async with asyncio.timeout(5):
        while True:
            state = await recv_type(ws, "state/v1")
            if state.get("poll") == {"poll_id": "p1", "counts": counts}:
                return


async def test_a_poll_answered_once_per_viewer_live_on_every_screen_then_on_the_ledger(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path) as server:
        room_id, host_token = await create_room(server)
        host, _, _ = await join(server, room_id)
        await send(host, {"type": "host.auth/v1", "token": host_token})
        assert (await recv_type(host, "ack/v1"))["ref"] == "host.auth/v1"
        ann, _, _ = await join(server, room_id)
        bob, _, _ = await join(server, room_id)
        no_poll = await answer(ann, 0)
        assert (no_poll["type"], no_poll["code"]) == ("error/v1", "no_poll")
        await send(ann, POLL)
        assert (await recv_type(ann, "error/v1"))["code"] == "not_host"
        await send(host, POLL)
        opened = await recv_type(bob, "poll/v1")
        assert opened["poll"]["options"] == ["Red", "Blue", "Green"]
        assert opened["poll"]["closed"] is False
        await send(host, {**POLL, "poll_id": "p2"})
        assert (await recv_type(host, "error/v1"))["code"] == "poll_open"
        assert (await answer(ann, 1))["type"] == "ack/v1"
        again = await answer(ann, 2)
        assert again["code"] == "already_answered"
        assert (await answer(bob, 3))["code"] == "bad_option"  # three options: 0..2
        assert (await answer(bob, 6))["code"] == "invalid_message"  # never more than six
        assert (await answer(bob, 2))["type"] == "ack/v1"
        wrong = await answer(bob, 0, poll_id="p9")
        assert wrong["code"] == "no_poll"
        await counts_reach(ann, [0, 1, 1])
        await counts_reach(bob, [0, 1, 1])
        # A viewer that joins now sees the poll and its counts in the snapshot.
        cat, _, snapshot = await join(server, room_id)
        assert snapshot["poll"]["counts"] == [0, 1, 1]
        await send(host, {"type": "host.poll_close/v1", "poll_id": "p1"})
        closed = await recv_type(cat, "poll/v1")
        assert (closed["poll"]["closed"], closed["poll"]["counts"]) == (True, [0, 1, 1])
        late = await answer(cat, 0)
        assert late["code"] == "poll_closed"
        ledger = server.app.state.ledger
        async with asyncio.timeout(5):  # once the pipeline made it durable
            while not (tallies := poll_entries(ledger)):
                await asyncio.sleep(0.05)
        (tally,) = tallies
        assert (tally["room_id"], tally["counts"], tally["answers"]) == (room_id, [0, 1, 1], 2)
        assert tally["question"] == "Which colour next?"
        for ws in (host, ann, bob, cat):
            await ws.close()


async def test_a_poll_closes_by_itself_when_its_time_is_up(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        room_id, host_token = await create_room(server)
        host, _, _ = await join(server, room_id)
        await send(host, {"type": "host.auth/v1", "token": host_token})
        await recv_type(host, "ack/v1")
        await send(host, {**POLL, "duration_ms": 5_000})
        await recv_type(host, "poll/v1")
        async with asyncio.timeout(10):
            closed = await recv_type(host, "poll/v1", timeout_s=10)
        assert closed["poll"]["closed"] is True
        await host.close()


@pytest.mark.redis
async def test_one_answer_per_viewer_across_processes(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with two_servers(tmp_path, redis_server.url) as (a, b):
        room_id, host_token = await create_scaled_room(a)
        host, _, _ = await join_scaled(a, room_id)
        await send(host, {"type": "host.auth/v1", "token": host_token})
        await recv_type(host, "ack/v1")
        ann, welcome, _ = await join_scaled(a, room_id)
        bob, _, _ = await join_scaled(b, room_id)
        await send(host, POLL)
        await recv_type(bob, "poll/v1")
        await recv_type(ann, "poll/v1")
        answered = await answer(ann, 0)
        assert answered["type"] == "ack/v1", answered
        # Ann again, through the other process, with her viewer token: refused there too.
        ann_on_b, _, _ = await join_scaled(b, room_id, f"?viewer={welcome['viewer_token']}")
        assert (await answer(ann_on_b, 1))["code"] == "already_answered"
        assert (await answer(bob, 1))["type"] == "ack/v1"
        await counts_reach(ann, [1, 1, 0])
        await counts_reach(bob, [1, 1, 0])
        await send(host, {"type": "host.poll_close/v1", "poll_id": "p1"})
        closed = await recv_type(bob, "poll/v1")
        assert closed["poll"]["counts"] == [1, 1, 0]
        for ws in (host, ann, bob, ann_on_b):
            await ws.close()
