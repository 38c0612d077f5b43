"""Where room events get their sequence numbers and reach every process serving the room.

`InProcessBroker` is the embedded default: numbering and delivery happen in this process,
synchronously. `RedisBroker` (redis_broker.py) does the same across processes. The hub
talks to either through `Broker`; it never knows which one it has.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from livecommerce import protocol as m
from livecommerce.hub.room import RoomInfo

# (room_id, sequence, event body without its sequence number)
EventHandler = Callable[[str, int, bytes], None]
# (room_id, totals: any of likes, shares, viewers, stock)
StateHandler = Callable[[str, "Totals"], None]


@dataclass
class Totals:
    likes: int | None = None
    shares: int | None = None
    viewers: int | None = None
    stock: dict[str, int] | None = None
    poll: tuple[str, list[int]] | None = None  # (poll_id, counts): a poll's answers so far


@dataclass
class LoadedRoom:
    """A room as the broker holds it, consistent as of `sequence`."""

    info: RoomInfo
    sequence: int
    history: list[tuple[int, bytes]] = field(default_factory=list)
    pinned: m.PinnedProduct | None = None
    live: bool = False
    ended: bool = False
    slow_mode_ms: int = 0
    sale: dict[str, object] | None = None
    keywords: tuple[str, ...] = ()
    banned: set[str] = field(default_factory=set)
    muted_until_ms: dict[str, int] = field(default_factory=dict)
    poll: dict[str, object] | None = None
    totals: Totals = field(default_factory=Totals)


class BrokerUnavailable(RuntimeError):
    """The broker cannot be reached now; the operation did not happen. Retry later."""


class Broker(Protocol):
    async def start(
        self,
        on_event: EventHandler,
        on_state: StateHandler,
        on_resync: Callable[[str], None] | None = None,
    ) -> None: ...
    async def close(self) -> None: ...
    async def create_room(self, info: RoomInfo) -> bool: ...
    async def load_room(self, room_id: str) -> LoadedRoom | None: ...
    async def subscribe(self, room_id: str) -> None: ...
    async def publish(self, room_id: str, event: m.RoomEvent, body: bytes) -> int: ...
    async def flush_counters(
        self,
        room_id: str,
        likes_delta: int,
        shares_delta: int,
        viewers_here: int,
        stock: dict[str, int],
    ) -> None: ...
    async def answer_poll(
        self, room_id: str, poll_id: str, voter_id: str, option: int, options_count: int
    ) -> bool:
        """Count one answer: False (nothing counted) when `voter_id` answered this poll
        already. Every process holding the room then gets the counts (`Totals.poll`)."""
        ...

    async def poll_counts(self, room_id: str, poll_id: str, options_count: int) -> list[int]: ...


class InProcessBroker:
    """Sequence numbers and delivery in this process; nothing leaves it."""

    def __init__(self) -> None:
        self._rooms: dict[str, RoomInfo] = {}
        self._sequences: dict[str, int] = {}
        self._totals: dict[str, Totals] = {}
        self._on_event: EventHandler | None = None
        self._on_state: StateHandler | None = None
        # Each room's newest poll only: (poll_id, voters, counts).
        self._polls: dict[str, tuple[str, set[str], list[int]]] = {}

    async def start(
        self,
        on_event: EventHandler,
        on_state: StateHandler,
        on_resync: Callable[[str], None] | None = None,
    ) -> None:
        # Nothing is ever missed in-process, so there is never a resync.
        self._on_event = on_event
        self._on_state = on_state

    async def close(self) -> None:
        self._on_event = None
        self._on_state = None

    async def create_room(self, info: RoomInfo) -> bool:
        if info.room_id in self._rooms:
            return False
        self._rooms[info.room_id] = info
        self._sequences[info.room_id] = 0
        self._totals[info.room_id] = Totals(likes=0, shares=0, viewers=0, stock={})
        return True

    async def load_room(self, room_id: str) -> LoadedRoom | None:
        info = self._rooms.get(room_id)
        if info is None:
            return None
        # The hub keeps an embedded room's replica for as long as the process lives, so a
        # load only ever happens before the first event.
        return LoadedRoom(info=info, sequence=self._sequences[room_id])

    async def subscribe(self, room_id: str) -> None:
        pass

    async def publish(self, room_id: str, event: m.RoomEvent, body: bytes) -> int:
        assert self._on_event is not None, "publish before start"
        sequence = self._sequences[room_id] + 1
        self._sequences[room_id] = sequence
        self._on_event(room_id, sequence, body)
        return sequence

    async def flush_counters(
        self,
        room_id: str,
        likes_delta: int,
        shares_delta: int,
        viewers_here: int,
        stock: dict[str, int],
    ) -> None:
        assert self._on_state is not None, "flush before start"
        totals = self._totals[room_id]
        assert totals.likes is not None
        assert totals.shares is not None
        assert totals.stock is not None
        totals.likes += likes_delta
        totals.shares += shares_delta
        totals.viewers = viewers_here
        totals.stock.update(stock)
        self._on_state(
            room_id, Totals(totals.likes, totals.shares, viewers_here, dict(totals.stock))
        )

    async def answer_poll(
        self, room_id: str, poll_id: str, voter_id: str, option: int, options_count: int
    ) -> bool:
        assert self._on_state is not None, "answer before start"
        assert 0 <= option < options_count
        known = self._polls.get(room_id)
        if known is None or known[0] != poll_id:
            known = self._polls[room_id] = (poll_id, set(), [0] * options_count)
        _, voters, counts = known
        if voter_id in voters:
            return False
        voters.add(voter_id)
        counts[option] += 1
        self._on_state(room_id, Totals(poll=(poll_id, list(counts))))
        return True

    async def poll_counts(self, room_id: str, poll_id: str, options_count: int) -> list[int]:
        known = self._polls.get(room_id)
        if known is None or known[0] != poll_id:
            return [0] * options_count
        return list(known[2])
