"""A poll's final tally: recorded once, checked, replayed."""

from __future__ import annotations

import dataclasses

import pytest

from livecommerce.commerce.core import CommandRejected, CommerceCore
from livecommerce.commerce.polls import PollRecorded, RecordPoll
from livecommerce.commerce.replay import replay
from livecommerce.commerce.results import Reason

POLL = RecordPoll("room1", "p1", "Which colour?", ["red", "blue"], [3, 5], 1_000, 31_000)


def test_a_tally_is_recorded_once_and_replayed() -> None:
    core = CommerceCore()
    (recorded,) = core.handle(POLL, 40_000)
    assert isinstance(recorded, PollRecorded)
    entry = recorded.to_entry()
    assert entry[0] == "poll/v1"
    assert (entry[1]["counts"], entry[1]["answers"], entry[1]["options"]) == (
        [3, 5],
        8,
        ["red", "blue"],
    )
    assert core.handle(POLL, 40_001) == []  # the same result again
    (refused,) = core.handle(dataclasses.replace(POLL, counts=[4, 5]), 40_002)
    assert isinstance(refused, CommandRejected)
    assert refused.reason is Reason.POLL_EXISTS
    again = replay([entry])
    assert again.polls.get("room1", "p1") == POLL


@pytest.mark.parametrize(
    "changes",
    [
        {"options": ["only one"], "counts": [1]},
        {"options": ["a"] * 7, "counts": [0] * 7},
        {"counts": [1]},
        {"counts": [1, -1]},
        {"counts": [1, True]},
        {"question": ""},
        {"question": "q" * 201},
        {"options": ["a", ""]},
        {"poll_id": "bad id"},
        {"room_id": 7},
        {"kind": "vote"},
        {"closed_at_ms": 0},
    ],
)
def test_a_bad_tally_is_refused_and_changes_nothing(changes: dict[str, object]) -> None:
    core = CommerceCore()
    (refused,) = core.handle(dataclasses.replace(POLL, **changes), 40_000)  # type: ignore[arg-type]
    assert isinstance(refused, CommandRejected)
    assert refused.reason is Reason.BAD_FIELD
    assert core.polls.get("room1", "p1") is None
