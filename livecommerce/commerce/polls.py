"""A poll's final tally on the ledger: the room's hub runs the poll (host command, one
answer per viewer, live counts); when it closes, the server records its result once.

`RecordPoll` is made by the server, not signed by a person: the host holds a credential,
not a key, and the counts are the hub's. The entry (`poll/v1`) says what was asked, the
options, each option's count and when it opened and closed, so the result a stream showed
is public and cannot be changed afterwards. A poll is recorded once per (room, poll).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from livecommerce.commerce.events import Entry, Event
from livecommerce.commerce.results import Reason, Rejected, all_integers, all_text
from livecommerce.commerce.sales import ROOM_ID

POLL_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
QUESTION_CHARS_MAX: Final = 200
OPTION_CHARS_MAX: Final = 80
OPTIONS_MIN: Final = 2
OPTIONS_MAX: Final = 6
ANSWERS_MAX: Final = 10**9
POLLS_MAX: Final = 100_000


@dataclass(frozen=True, slots=True)
class RecordPoll:
    room_id: str
    poll_id: str
    question: str
    options: list[str]
    counts: list[int]
    opened_at_ms: int
    closed_at_ms: int
    kind: str = "poll"  # poll (options) | question (options are the answers offered)


@dataclass(frozen=True, slots=True)
class PollRecorded(Event):
    poll: RecordPoll
    time_ms: int

    def to_entry(self) -> Entry:
        poll = self.poll
        return "poll/v1", {
            "action": "closed",
            "room_id": poll.room_id,
            "poll_id": poll.poll_id,
            "kind": poll.kind,
            "question": poll.question,
            "options": list(poll.options),
            "counts": list(poll.counts),
            "answers": sum(poll.counts),
            "opened_at_ms": poll.opened_at_ms,
            "closed_at_ms": poll.closed_at_ms,
            "time_ms": self.time_ms,
        }


@dataclass
class PollBook:
    polls_max: int = POLLS_MAX
    _recorded: dict[tuple[str, str], RecordPoll] = field(default_factory=dict)

    def get(self, room_id: str, poll_id: str) -> RecordPoll | None:
        return self._recorded.get((room_id, poll_id))

    def record(self, command: RecordPoll, now_ms: int) -> PollRecorded | list[Event] | Rejected:
        refused = check_poll(command)
        if refused is not None:
            return refused
        key = (command.room_id, command.poll_id)
        known = self._recorded.get(key)
        if known is not None:
            if known == command:
                return []  # the same result again: recorded already
            return Rejected(Reason.POLL_EXISTS, "this poll's result is recorded already")
        if len(self._recorded) >= self.polls_max:
            return Rejected(Reason.CAPACITY, "the poll table is full")
        self._recorded[key] = command
        return PollRecorded(command, now_ms)

    def restore(self, fields: dict[str, object]) -> None:
        options, counts = fields["options"], fields["counts"]
        assert isinstance(options, list)
        assert isinstance(counts, list)
        command = RecordPoll(
            str(fields["room_id"]), str(fields["poll_id"]), str(fields["question"]),
            [str(o) for o in options], [int(c) for c in counts],
            int(fields["opened_at_ms"]), int(fields["closed_at_ms"]),  # type: ignore[call-overload]
            str(fields.get("kind", "poll")),
        )  # fmt: skip
        self._recorded[(command.room_id, command.poll_id)] = command


def check_poll(command: RecordPoll) -> Rejected | None:
    def bad(detail: str) -> Rejected:
        return Rejected(Reason.BAD_FIELD, detail)

    if not all_text(command.room_id, command.poll_id, command.question, command.kind):
        return bad("room_id, poll_id, question and kind are text")
    if ROOM_ID.fullmatch(command.room_id) is None or POLL_ID.fullmatch(command.poll_id) is None:
        return bad("room_id and poll_id are 1..64 of [A-Za-z0-9_-]")
    if command.kind not in ("poll", "question"):
        return bad("kind is poll or question")
    if not 1 <= len(command.question) <= QUESTION_CHARS_MAX:
        return bad(f"a question is 1..{QUESTION_CHARS_MAX} characters")
    options: object = command.options
    counts: object = command.counts
    if not isinstance(options, list) or not isinstance(counts, list):
        return bad("options and counts are lists")
    if not OPTIONS_MIN <= len(options) <= OPTIONS_MAX or len(counts) != len(options):
        return bad(f"{OPTIONS_MIN}..{OPTIONS_MAX} options, one count each")
    if not all_text(*options) or not all(1 <= len(o) <= OPTION_CHARS_MAX for o in options):
        return bad(f"an option is 1..{OPTION_CHARS_MAX} characters")
    if not all_integers(*counts, command.opened_at_ms, command.closed_at_ms):
        return bad("counts and times are integers")
    if any(not 0 <= count <= ANSWERS_MAX for count in counts):
        return bad(f"a count is 0..{ANSWERS_MAX}")
    if command.closed_at_ms < command.opened_at_ms:
        return bad("a poll closes after it opens")
    return None
