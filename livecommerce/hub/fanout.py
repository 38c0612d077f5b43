"""Fan-out: one encoding per broadcast, the same bytes to every socket, no task per client.

Each connection has a bounded outgoing buffer. Events (comments, pins, sales) must all
arrive, so a connection whose buffer is past `buffer_bytes_max` is closed with 4008 and
resumes from its last sequence number. State (likes, shares, viewers, stock) is coalesced:
a connection past `buffer_bytes_soft` skips state messages and is sent the newest state
once it has drained, so only the newest value ever waits.

Frames that may wait a little (receipts) are held and ride with the next frame the
connection is written, most often its next state: one socket write instead of two, for
the server and for the client (on loopback each write also runs the receiver's TCP
path). `release_held`, called once per state interval, writes what is still held after a
whole interval, so nothing waits more than two.
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from typing import Protocol

from starlette.websockets import WebSocket

CLOSE_TOO_SLOW = 4008


def text_frame(payload: bytes) -> bytes:
    """An unmasked, final text frame (RFC 6455 §5.2): servers never mask."""
    length = len(payload)
    if length < 126:
        return bytes((0x81, length)) + payload
    if length < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, length) + payload
    return struct.pack("!BBQ", 0x81, 127, length) + payload


class Outgoing:
    """A message encoded once; its frame and text forms are made once, when first asked."""

    __slots__ = ("_frame", "_text", "payload")

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self._frame: bytes | None = None
        self._text: str | None = None

    @property
    def frame(self) -> bytes:
        if self._frame is None:
            self._frame = text_frame(self.payload)
        return self._frame

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = self.payload.decode()
        return self._text


class Sink(Protocol):
    """Where a connection's messages go: the socket itself (uvicorn_fanout) or a queue."""

    @property
    def open(self) -> bool: ...
    def buffered_bytes(self) -> int: ...
    def write(self, message: Outgoing) -> None: ...
    def write_many(self, messages: list[Outgoing]) -> None: ...
    def close(self, code: int, reason: str) -> None: ...


class QueueSink:
    """The portable path for any ASGI server: a byte-bounded queue that `drain` empties.

    `drain` runs in the connection's own ASGI task beside its receive loop; writes never
    wait, and the bound is enforced by the fan-out rules, which read `buffered_bytes`.
    """

    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket
        self._queue: deque[Outgoing] = deque()
        self._queued_bytes = 0
        self._wakeup = asyncio.Event()
        self._close: tuple[int, str] | None = None

    @property
    def open(self) -> bool:
        return self._close is None

    def buffered_bytes(self) -> int:
        return self._queued_bytes

    def write(self, message: Outgoing) -> None:
        if self._close is None:
            self._queue.append(message)
            self._queued_bytes += len(message.payload)
            self._wakeup.set()

    def write_many(self, messages: list[Outgoing]) -> None:
        for message in messages:
            self.write(message)

    def close(self, code: int, reason: str) -> None:
        if self._close is None:
            self._close = (code, reason)
            self._queue.clear()
            self._queued_bytes = 0
            self._wakeup.set()

    async def drain(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                message = self._queue.popleft()
                self._queued_bytes -= len(message.payload)
                await self._websocket.send_text(message.text)
            if self._close is not None:
                await self._websocket.close(*self._close)
                return


HELD_FRAMES_MAX = 16  # a member holding more writes them all at once


class Member:
    """What a room group needs of a connection: its sink, whether state is owed, and the
    frames it holds until its next write."""

    __slots__ = ("held", "sink", "stale")

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.stale = False
        self.held: list[Outgoing] = []

    def write(self, message: Outgoing) -> None:
        """Write `message` now, after the frames held so far."""
        if self.held:
            self.held.append(message)
            self.release()
        else:
            self.sink.write(message)

    def release(self) -> None:
        """Write the held frames now."""
        if self.held:
            held, self.held = self.held, []
            self.sink.write_many(held)


class RoomGroup:
    """The connections one process holds for one room."""

    def __init__(self, buffer_bytes_max: int, buffer_bytes_soft: int) -> None:
        self.members: set[Member] = set()
        self.buffer_bytes_max = buffer_bytes_max
        self.buffer_bytes_soft = buffer_bytes_soft
        self.stale: set[Member] = set()
        self.closed_too_slow = 0
        self.state_message: Outgoing | None = None
        self.state_waiting: list[Member] = []
        # Members that held a frame since the last `release_held`, and before it.
        self.holding: dict[Member, None] = {}
        self.holding_before: dict[Member, None] = {}

    def __len__(self) -> int:
        return len(self.members)

    def add(self, member: Member) -> None:
        self.members.add(member)

    def discard(self, member: Member) -> None:
        self.members.discard(member)
        self.stale.discard(member)
        self.holding.pop(member, None)
        self.holding_before.pop(member, None)

    def hold(self, member: Member, message: Outgoing) -> None:
        """Write `message` with the member's next frame, or at the latest at the second
        `release_held` from now; at once for a member no longer in the group."""
        if member not in self.members:
            member.write(message)
            return
        if len(member.held) >= HELD_FRAMES_MAX:
            member.write(message)
            return
        if not member.held:
            self.holding[member] = None
        member.held.append(message)

    def release_held(self) -> int:
        """Write what members held since before the previous call. Returns how many
        members were written."""
        released = 0
        for member in self.holding_before:
            if member.held:
                member.release()
                released += 1
        self.holding_before, self.holding = self.holding, {}
        return released

    def broadcast(self, message: Outgoing, resume_hint: str) -> int:
        """Write an event to every member; close those that fell behind. Returns deliveries."""
        frame_limit = self.buffer_bytes_max
        behind: list[Member] = []
        delivered = 0
        for member in self.members:
            sink = member.sink
            if sink.buffered_bytes() > frame_limit:
                behind.append(member)
            else:
                member.write(message)
                delivered += 1
        for member in behind:
            self.discard(member)
            member.sink.close(CLOSE_TOO_SLOW, resume_hint)
        self.closed_too_slow += len(behind)
        return delivered

    def start_state(self, message: Outgoing) -> None:
        """Owe coalesced state to every member; `write_state` writes it a slice at a time.
        A newer state replaces one not yet written to everyone: the members still waiting
        get only the newer, and before the others (so that when a fan-out never finishes
        before the next one starts, nobody waits for ever)."""
        self.state_message = message
        still_waiting = self.state_waiting
        if still_waiting:
            owed = set(still_waiting)
            # `write_state` serves from the end of the list.
            self.state_waiting = [m for m in self.members if m not in owed] + still_waiting
        else:
            self.state_waiting = list(self.members)

    def write_state(self, members_max: int) -> int:
        """Write the owed state to up to `members_max` more members (those still here); a
        member whose buffer is past the soft limit is marked stale instead, to be sent the
        newest whole state once drained. Returns deliveries; `state_waiting` is empty when
        everyone has been served."""
        message = self.state_message
        waiting = self.state_waiting
        if message is None or not waiting:
            return 0
        turn = waiting[-members_max:]
        del waiting[-members_max:]
        soft_limit = self.buffer_bytes_soft
        members = self.members
        delivered = 0
        for member in turn:
            if member not in members:
                continue  # left meanwhile
            if member.sink.buffered_bytes() > soft_limit:
                member.stale = True
                self.stale.add(member)
            else:
                member.write(message)
                delivered += 1
        if not waiting:
            self.state_message = None
        return delivered

    def catch_up_stale(self, full_state: Outgoing) -> None:
        """Send the newest full state to stale members that have drained."""
        soft_limit = self.buffer_bytes_soft
        for member in list(self.stale):
            if member.sink.buffered_bytes() <= soft_limit:
                member.write(full_state)
                member.stale = False
                self.stale.discard(member)
