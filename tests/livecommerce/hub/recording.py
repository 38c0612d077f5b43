"""A hub member that records what it is sent, for tests that drive the `Hub` directly."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

from livecommerce.hub.broker import InProcessBroker
from livecommerce.hub.fanout import Outgoing
from livecommerce.hub.hub import Connection, Hub, HubLimits


class RecordingSink:
    """A socket that keeps what it was sent, decoded."""

    def __init__(self) -> None:
        self.sent: list[dict[str, object]] = []
        self.writes = 0  # socket writes: `write_many` is one
        self.closed: tuple[int, str] | None = None

    @property
    def open(self) -> bool:
        return self.closed is None

    def buffered_bytes(self) -> int:
        return 0

    def write(self, message: Outgoing) -> None:
        self.sent.append(json.loads(message.payload))
        self.writes += 1

    def write_many(self, messages: list[Outgoing]) -> None:
        self.sent.extend(json.loads(message.payload) for message in messages)
        self.writes += 1

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def of_type(self, wanted: str) -> list[dict[str, object]]:
        return [message for message in self.sent if message["type"] == wanted]


async def join(hub: Hub, room_id: str, address: str) -> tuple[Connection, RecordingSink]:
    sink = RecordingSink()
    return await hub.join(room_id, sink, address, "", None), sink


@contextlib.asynccontextmanager
async def room_with_viewers(
    limits: HubLimits, clock: list[int], viewers: int
) -> AsyncIterator[tuple[Hub, list[Connection], list[RecordingSink]]]:
    """A started hub (in-process broker, `clock[0]` its time) with one room of `viewers`
    recording viewers; closed on the way out."""
    hub = Hub(InProcessBroker(), limits, b"k" * 32, lambda: clock[0])
    await hub.start()
    try:
        room_id, _ = await hub.create_room("Live", "Mia")
        joined = [await join(hub, room_id, f"10.0.{n // 200}.{n % 200}") for n in range(viewers)]
        yield hub, [connection for connection, _ in joined], [sink for _, sink in joined]
    finally:
        await hub.close()
