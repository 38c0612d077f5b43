"""A hub member that records what it is sent, for tests that drive the `Hub` directly."""

from __future__ import annotations

import json

from livecommerce.hub.fanout import Outgoing
from livecommerce.hub.hub import Connection, Hub


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
