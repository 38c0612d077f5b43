"""Frames that can wait (receipts, `Connection.send_soon`) ride with the connection's next
write, one socket write for both; what nothing else carries goes out by itself at the
second due tick; a member never holds more than `HELD_FRAMES_MAX`; closing the hub writes
what is held before the close frame.

The hub is driven directly with a clock the test moves; the flush interval is a minute so
that the hub's own ticker (real time) never runs while the test calls `tick()`."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator

from livecommerce import protocol as m
from livecommerce.app import hub_limits
from livecommerce.hub.fanout import HELD_FRAMES_MAX
from livecommerce.hub.hub import Connection, Hub
from livecommerce.settings import Settings
from tests.livecommerce.hub.recording import RecordingSink, room_with_viewers

TICK_MS = 60_000
LIKE = json.dumps({"type": "like/v1"})


@contextlib.asynccontextmanager
async def room_of_three() -> AsyncIterator[
    tuple[Hub, list[int], list[RecordingSink], list[Connection]]
]:
    limits = dataclasses.replace(hub_limits(Settings.load({})), state_flush_interval_ms=TICK_MS)
    clock = [1_000_000]
    async with room_with_viewers(limits, clock, 3) as (hub, connections, sinks):
        clock[0] += TICK_MS
        await hub.tick()  # the joins' viewer count goes out
        yield hub, clock, sinks, connections


def receipt(n: int) -> m.OrderReceipt:
    return m.OrderReceipt(order_id=f"o{n}", ledger_index=n, proof=f"proof {n}")


def types(sink: RecordingSink) -> list[object]:
    return [message["type"] for message in sink.sent]


async def tick(hub: Hub, clock: list[int]) -> None:
    clock[0] += TICK_MS
    await hub.tick()


async def test_a_held_frame_rides_with_the_next_state_in_one_write() -> None:
    async with room_of_three() as (hub, clock, sinks, connections):
        buyer, other = sinks[0], sinks[1]
        sent_before, writes_before = len(buyer.sent), buyer.writes
        connections[0].send_soon(receipt(7))
        assert len(buyer.sent) == sent_before  # held
        assert hub.receive(connections[2], LIKE) is None
        await tick(hub, clock)
        assert types(buyer)[sent_before:] == ["receipt/v1", "state/v1"]
        assert buyer.writes == writes_before + 1
        assert buyer.sent[sent_before]["order_id"] == "o7"
        assert types(other)[-1] == "state/v1"
        assert "receipt/v1" not in types(other)


async def test_a_held_frame_rides_with_an_answer_sent_now() -> None:
    async with room_of_three() as (_, _, sinks, connections):
        buyer = sinks[0]
        sent_before, writes_before = len(buyer.sent), buyer.writes
        connections[0].send_soon(receipt(1))
        connections[0].error("busy", "retry")
        assert types(buyer)[sent_before:] == ["receipt/v1", "error/v1"]
        assert buyer.writes == writes_before + 1


async def test_with_nothing_to_ride_a_held_frame_goes_out_at_the_second_due_tick() -> None:
    async with room_of_three() as (hub, clock, sinks, connections):
        buyer = sinks[0]
        sent_before = len(buyer.sent)
        connections[0].send_soon(receipt(3))
        await tick(hub, clock)  # nothing changed in the room: no state
        assert len(buyer.sent) == sent_before
        await tick(hub, clock)
        assert types(buyer)[sent_before:] == ["receipt/v1"]
        await tick(hub, clock)
        assert types(buyer)[sent_before:] == ["receipt/v1"]  # written once


async def test_a_member_holds_at_most_the_limit_then_writes_them_all_at_once() -> None:
    async with room_of_three() as (_, _, sinks, connections):
        buyer = sinks[0]
        sent_before, writes_before = len(buyer.sent), buyer.writes
        for n in range(HELD_FRAMES_MAX):
            connections[0].send_soon(receipt(n))
        assert len(buyer.sent) == sent_before
        connections[0].send_soon(receipt(HELD_FRAMES_MAX))
        written = [message["order_id"] for message in buyer.sent[sent_before:]]
        assert written == [f"o{n}" for n in range(HELD_FRAMES_MAX + 1)]
        assert buyer.writes == writes_before + 1


async def test_closing_the_hub_writes_held_frames_before_the_close() -> None:
    async with room_of_three() as (hub, _, sinks, connections):
        connections[0].send_soon(receipt(5))
        await hub.close()
        assert types(sinks[0])[-1] == "receipt/v1"
        assert sinks[0].closed == (1001, "server shutting down")


async def test_a_connection_that_left_is_written_at_once() -> None:
    async with room_of_three() as (hub, clock, sinks, connections):
        hub.leave(connections[0])
        sent_before = len(sinks[0].sent)
        connections[0].send_soon(receipt(9))
        assert types(sinks[0])[sent_before:] == ["receipt/v1"]
        await tick(hub, clock)
        await tick(hub, clock)
        assert types(sinks[0])[sent_before:] == ["receipt/v1"]
