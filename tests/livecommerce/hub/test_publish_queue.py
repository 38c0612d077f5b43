"""The hub's bounded queue of client messages that wait for the broker, with the
in-process broker: order, the `busy` answer when full, and nothing done twice."""

from __future__ import annotations

import dataclasses
import json

from livecommerce.app import hub_limits
from livecommerce.hub.broker import InProcessBroker
from livecommerce.hub.hub import Hub
from livecommerce.settings import Settings
from tests.livecommerce.hub.recording import join


def comment(text: str) -> str:
    return json.dumps({"type": "comment/v1", "text": text, "name": "A"})


async def make_hub(publish_queue_max: int) -> tuple[Hub, str]:
    limits = dataclasses.replace(hub_limits(Settings.load({})), publish_queue_max=publish_queue_max)
    hub = Hub(InProcessBroker(), limits, b"k" * 32, lambda: 1_000_000)
    await hub.start()
    room_id, _ = await hub.create_room("Live", "Mia")
    return hub, room_id


async def test_a_full_queue_answers_busy_and_publishes_nothing() -> None:
    hub, room_id = await make_hub(publish_queue_max=1)
    try:
        first, first_sink = await join(hub, room_id, "10.0.0.1")
        second, second_sink = await join(hub, room_id, "10.0.0.2")
        waiting = hub.receive(first, comment("one"))
        assert waiting is not None
        assert not waiting.done()
        assert hub.receive(second, comment("two")) is None  # the queue holds one: full
        assert [e["code"] for e in second_sink.of_type("error/v1")] == ["busy"]
        await waiting
        for sink in (first_sink, second_sink):
            assert [c["text"] for c in sink.of_type("comment/v1")] == ["one"]
        # Room again: the refused comment can be sent now.
        again = hub.receive(second, comment("two"))
        assert again is not None
        await again
        assert [c["text"] for c in first_sink.of_type("comment/v1")] == ["one", "two"]
        assert hub.replicas[room_id].room.sequence == 2
    finally:
        await hub.close()


async def test_queued_messages_are_published_in_the_order_received() -> None:
    hub, room_id = await make_hub(publish_queue_max=100)
    try:
        connections = [await join(hub, room_id, f"10.0.0.{n}") for n in range(5)]
        waiting = [
            hub.receive(connection, comment(f"c{n}"))
            for n, (connection, _) in enumerate(connections)
        ]
        for done in waiting:
            assert done is not None
            await done
        watcher = connections[0][1]
        assert [c["text"] for c in watcher.of_type("comment/v1")] == [f"c{n}" for n in range(5)]
        assert [c["seq"] for c in watcher.of_type("comment/v1")] == [1, 2, 3, 4, 5]
    finally:
        await hub.close()
