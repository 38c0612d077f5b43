"""The shape every core event shares: `to_entry()` turns it into a ledger entry.

An entry is `(entry_type, fields)`, e.g. `("order/v1", {...})`. Fields hold ids, counts,
prices and times, never buyer personal data (display names, shipping details). Events that
change no state (a rejection, a repeated answer) return None: nothing to append.
"""

from __future__ import annotations

import msgspec

Entry = tuple[str, dict[str, object]]


class Event:
    """Base of all core events (frozen dataclasses)."""

    __slots__ = ()

    def to_entry(self) -> Entry | None:
        raise NotImplementedError


def flat_fields(event: object) -> dict[str, object]:
    """The fields of a dataclass or msgspec Struct whose values are all plain (str, int,
    bool, None): what `dataclasses.asdict` gives, without its recursive deep copy (on the
    hot order path)."""
    if isinstance(event, msgspec.Struct):
        return msgspec.structs.asdict(event)
    return {name: getattr(event, name) for name in event.__dataclass_fields__}  # type: ignore[attr-defined]
