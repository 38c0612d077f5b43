"""Coalesced state and the process's budget of state frames a second
(`state_deliveries_per_s_max`): a room's state goes out every `state_flush_interval_ms`
while the process has few viewers and less often when it has many, always the newest
totals, and the first change after a quiet spell still goes out at the next tick; and the
writing itself goes a slice of sockets at a time, with a pause after each slice; a newer
state goes first to those the older one had not reached.

The hub is driven directly, with the in-process broker and a clock the test moves. The
flush interval is set to a minute so that the hub's own ticker (real time) never runs
while the test calls `tick()`; 120 viewers with a budget of one frame a second then make
the interval two minutes, every other tick."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator

from livecommerce.app import hub_limits
from livecommerce.hub.fanout import Member, Outgoing, RoomGroup
from livecommerce.hub.hub import Connection, Hub
from livecommerce.settings import Settings
from tests.livecommerce.hub.recording import RecordingSink, join, room_with_viewers

TICK_MS = 60_000
VIEWERS = 120
LIKE = json.dumps({"type": "like/v1"})


@contextlib.asynccontextmanager
async def budgeted_room(
    deliveries_per_s_max: int, writes_per_slice: int = VIEWERS, slice_pause_ms: int = 1
) -> AsyncIterator[tuple[Hub, list[int], list[RecordingSink], list[Connection]]]:
    """A started hub with one room of VIEWERS viewers and a clock the test moves; closed
    on the way out. By default a tick's state reaches every viewer in one slice."""
    limits = dataclasses.replace(
        hub_limits(Settings.load({})),
        state_flush_interval_ms=TICK_MS,
        state_deliveries_per_s_max=deliveries_per_s_max,
        state_writes_per_slice=writes_per_slice,
        state_slice_pause_ms=slice_pause_ms,
    )
    clock = [1_000_000]
    async with room_with_viewers(limits, clock, VIEWERS) as (hub, connections, sinks):
        await hub.tick()  # the joins' viewer count goes out
        yield hub, clock, sinks, connections


def likes_seen(sink: RecordingSink) -> list[object]:
    return [state["likes"] for state in sink.of_type("state/v1") if "likes" in state]


async def like_and_tick(hub: Hub, clock: list[int], connection: Connection, ticks: int) -> None:
    for _ in range(ticks):
        assert hub.receive(connection, LIKE) is None
        clock[0] += TICK_MS
        await hub.tick()


async def test_the_interval_grows_with_the_viewers_past_the_budget() -> None:
    async with budgeted_room(deliveries_per_s_max=10_000) as (hub, _, _, _):
        assert hub.state_interval_ms() == TICK_MS  # 120 viewers: far under the budget
    async with budgeted_room(deliveries_per_s_max=1) as (hub, _, _, _):
        assert hub.state_interval_ms() == 2 * TICK_MS  # 120 frames every 120 s


async def test_under_the_budget_every_tick_sends_the_newest_total() -> None:
    async with budgeted_room(deliveries_per_s_max=10_000) as (hub, clock, sinks, connections):
        await like_and_tick(hub, clock, connections[1], ticks=6)
        for sink in (sinks[0], sinks[-1]):
            assert likes_seen(sink) == [1, 2, 3, 4, 5, 6]


async def test_past_the_budget_state_goes_out_every_other_tick_still_the_newest() -> None:
    async with budgeted_room(deliveries_per_s_max=1) as (hub, clock, sinks, connections):
        await like_and_tick(hub, clock, connections[1], ticks=6)
        # The viewer count went out at the first tick; likes then every second tick.
        for sink in (sinks[0], sinks[-1]):
            assert likes_seen(sink) == [2, 4, 6]
        # A quiet spell, then one change: it goes out at the very next tick.
        clock[0] += 5 * TICK_MS
        await hub.tick()
        await like_and_tick(hub, clock, connections[2], ticks=1)
        assert likes_seen(sinks[0]) == [2, 4, 6, 7]
        assert hub.replicas[next(iter(hub.replicas))].room.likes == 7


async def crowd_of(hub: Hub, size: int) -> list[RecordingSink]:
    room_id = next(iter(hub.replicas))
    return [(await join(hub, room_id, f"10.1.{n // 200}.{n % 200}"))[1] for n in range(size)]


async def fanned_out(hub: Hub) -> None:
    """Wait until every room's state has reached all its viewers."""
    for _ in range(1_000):
        if all(replica.state_writer is None for replica in hub.replicas.values()):
            return
        await asyncio.sleep(0.002)
    raise AssertionError("the state fan-out did not finish")


async def test_state_to_many_sockets_goes_out_a_slice_then_a_pause() -> None:
    async with budgeted_room(10_000, writes_per_slice=50) as (hub, clock, sinks, conns):
        per_slice = hub.limits.state_writes_per_slice
        everyone = sinks + await crowd_of(hub, 2 * per_slice + 10)
        await fanned_out(hub)
        # A pause longer than the test: only the slice the tick writes goes out.
        hub.limits = dataclasses.replace(hub.limits, state_slice_pause_ms=3_600_000)
        await like_and_tick(hub, clock, conns[1], ticks=1)
        assert sum(1 for sink in everyone if likes_seen(sink) == [1]) == per_slice
        for _ in range(10):
            await asyncio.sleep(0)
        # Not the next turns of the loop: the next slice waits for the pause.
        assert sum(1 for sink in everyone if likes_seen(sink)) == per_slice


async def test_state_to_many_sockets_reaches_everyone_newest_wins() -> None:
    async with budgeted_room(10_000, writes_per_slice=50) as (hub, clock, sinks, conns):
        per_slice = hub.limits.state_writes_per_slice
        everyone = sinks + await crowd_of(hub, 2 * per_slice + 10)
        await fanned_out(hub)
        await like_and_tick(hub, clock, conns[1], ticks=1)
        told = [sink for sink in everyone if likes_seen(sink) == [1]]
        assert len(told) == per_slice
        # A newer total before the rest were served: they get only the newer one.
        await like_and_tick(hub, clock, conns[1], ticks=1)
        for _ in range(1_000):
            if all(likes_seen(sink)[-1:] == [2] for sink in everyone):
                break
            await asyncio.sleep(0.002)
        for sink in everyone:
            assert likes_seen(sink) in ([1, 2], [2])
        assert sum(1 for sink in everyone if likes_seen(sink) == [2]) == len(everyone) - len(told)


def test_a_newer_state_goes_first_to_those_the_older_did_not_reach() -> None:
    group = RoomGroup(buffer_bytes_max=1 << 20, buffer_bytes_soft=1 << 19)
    sinks = [RecordingSink() for _ in range(10)]
    for sink in sinks:
        group.add(Member(sink))

    def state(likes: int) -> Outgoing:
        return Outgoing(json.dumps({"type": "state/v1", "likes": likes}).encode())

    group.start_state(state(1))
    assert group.write_state(4) == 4
    reached = {id(sink) for sink in sinks if likes_seen(sink) == [1]}
    group.start_state(state(2))
    assert group.write_state(6) == 6
    # The six the first state did not reach, and none of the four it did.
    assert {id(sink) for sink in sinks if likes_seen(sink)[-1:] == [2]} == {
        id(sink) for sink in sinks
    } - reached
    assert group.write_state(10) == 4
    assert all(likes_seen(sink)[-1:] == [2] for sink in sinks)
    assert group.write_state(10) == 0
