"""The shape every core event shares: `to_entry()` turns it into a ledger entry.

An entry is `(entry_type, fields)`, e.g. `("order/v1", {...})`. Fields hold ids, counts,
prices and times, never buyer personal data (display names, shipping details). Events that
change no state (a rejection, a repeated answer) return None: nothing to append.
"""

from __future__ import annotations

Entry = tuple[str, dict[str, object]]


class Event:
    """Base of all core events (frozen dataclasses)."""

    __slots__ = ()

    def to_entry(self) -> Entry | None:
        raise NotImplementedError
