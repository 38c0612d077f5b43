"""Which merchant sells in which room: the link that lets a room's host run sales.

A room (the hub's) is linked once to one merchant identity, by the room's host together
with the merchant's session (the adapter checks both). From then on the host schedules
sales in that room only for that merchant's products. The link is a ledger entry
(`room/v1`), so it survives restarts and every process learns it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Final

from livecommerce.commerce.events import Entry, Event
from livecommerce.commerce.identity import IdentityRegistry
from livecommerce.commerce.results import Reason, Rejected, all_text
from livecommerce.commerce.sales import ROOM_ID

ROOMS_MAX: Final = 100_000


@dataclass(frozen=True, slots=True)
class LinkRoom:
    """Command: link `room_id` to `merchant_id` (host credential + merchant session)."""

    room_id: str
    merchant_id: str


@dataclass(frozen=True, slots=True)
class RoomLinked(Event):
    room_id: str
    merchant_id: str
    time_ms: int

    def to_entry(self) -> Entry:
        return "room/v1", {"action": "linked", **asdict(self)}


class RoomBook:
    def __init__(self, identities: IdentityRegistry, rooms_max: int = ROOMS_MAX) -> None:
        assert rooms_max > 0
        self.identities = identities
        self.rooms_max = rooms_max
        self._merchants: dict[str, str] = {}

    def merchant_of(self, room_id: str) -> str | None:
        return self._merchants.get(room_id)

    def link(self, command: LinkRoom, now_ms: int) -> RoomLinked | Rejected:
        if not all_text(command.room_id, command.merchant_id):
            return Rejected(Reason.BAD_FIELD, "room_id and merchant_id are text")
        if ROOM_ID.fullmatch(command.room_id) is None:
            return Rejected(Reason.BAD_FIELD, "room_id must be 1..64 of [A-Za-z0-9_-]")
        if self.identities.get(command.merchant_id) is None:
            return Rejected(Reason.UNKNOWN_IDENTITY, "merchant key is not registered")
        linked = self._merchants.get(command.room_id)
        if linked is not None:
            return Rejected(Reason.ROOM_LINKED, "this room is already linked to a merchant")
        if len(self._merchants) >= self.rooms_max:
            return Rejected(Reason.CAPACITY, "room table is full")
        self._merchants[command.room_id] = command.merchant_id
        return RoomLinked(command.room_id, command.merchant_id, now_ms)

    def restore_linked(self, room_id: str, merchant_id: str) -> None:
        """Replay from the ledger (a trusted entry)."""
        assert room_id not in self._merchants, room_id
        self._merchants[room_id] = merchant_id
