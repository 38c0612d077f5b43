"""The room core, synchronously: commands checked against state, events applied in order."""

from __future__ import annotations

import hashlib

import pytest

from livecommerce import protocol as m
from livecommerce.hub.room import Rejection, Room, RoomInfo, RoomLimits
from livecommerce.hub.text import clean_text

TOKEN = "host-secret"


def make_room(**limits: int) -> Room:
    info = RoomInfo("r1", "Flash", "Mia", hashlib.sha256(TOKEN.encode()).hexdigest())
    return Room(info, RoomLimits(**limits))


def post(room: Room, event: m.RoomEvent) -> None:
    body = m.encode_event(event)
    sequence = room.sequence + 1
    room.apply(sequence, event, m.with_sequence(sequence, body))


def comment(room: Room, viewer: str, text: str, now_ms: int, name: str = "Ann") -> m.CommentPosted:
    decision = room.check_comment(viewer, m.PostComment(text=text, name=name), f"c{now_ms}", now_ms)
    assert isinstance(decision, m.CommentPosted), decision
    post(room, decision)
    return decision


def refused(room: Room, viewer: str, text: str, now_ms: int, name: str = "Ann") -> str:
    decision = room.check_comment(viewer, m.PostComment(text=text, name=name), "x", now_ms)
    assert isinstance(decision, Rejection), decision
    return decision.code


def test_clean_text_removes_controls_and_bidi_and_folds_whitespace() -> None:
    assert clean_text(" a\x00b\u202ec\n\td  ") == "abc d"
    assert clean_text("<b>bold</b>") == "<b>bold</b>"  # kept as text; clients never render HTML
    assert clean_text("👩\u200d💻") == "👩\u200d💻"  # zero-width joiner survives


def test_comment_limits_and_cleaning() -> None:
    room = make_room(comment_chars_max=10)
    assert refused(room, "v", "\x00 \n", 0) == "empty_comment"
    assert refused(room, "v", "x" * 11, 0) == "comment_too_long"
    assert refused(room, "v", "ok", 0, name=" ") == "bad_name"
    event = comment(room, "v", "  hi\nthere ", 0)
    assert event.text == "hi there"
    assert room.snapshot(1).comments[-1].text == "hi there"


def test_slow_mode_per_viewer() -> None:
    room = make_room()
    post(room, m.SlowModeChanged(interval_ms=5000, ts_ms=0))
    comment(room, "a", "first", 1000)
    assert refused(room, "a", "again", 5999) == "slow_mode"
    comment(room, "b", "other viewer is fine", 2000)
    comment(room, "a", "after the interval", 6000)


def test_ban_mute_and_keywords() -> None:
    room = make_room()
    post(room, m.ViewerBanned(viewer_id="bad", ts_ms=0))
    assert refused(room, "bad", "hello", 1) == "banned"
    post(room, m.ViewerMuted(viewer_id="loud", until_ms=100, ts_ms=0))
    assert refused(room, "loud", "hello", 99) == "muted"
    comment(room, "loud", "hello", 100)
    host = room.check_host(m.HostKeywords(words=["  SPAM ", "scam"]), 0)
    assert isinstance(host, m.KeywordsChanged)
    assert host.words == ["scam", "spam"]
    post(room, host)
    assert refused(room, "v", "cheap Spam here", 1) == "blocked_word"
    post(room, m.ViewerUnbanned(viewer_id="bad", ts_ms=0))
    comment(room, "bad", "back", 2)


def test_deleted_comment_leaves_the_snapshot() -> None:
    room = make_room()
    kept = comment(room, "v", "keep", 1)
    gone = comment(room, "v", "remove me", 2)
    post(room, m.CommentRemoved(id=gone.id, ts_ms=3))
    assert [c.id for c in room.snapshot(4).comments] == [kept.id]


def test_history_since_is_bounded_and_skips_private_events() -> None:
    room = make_room(history_events_max=3)
    assert room.history_since(0) == []
    for number in range(5):
        comment(room, "v", f"c{number}", number)
    post(room, m.KeywordsChanged(words=["x"], ts_ms=9))  # private: numbered, not replayed
    assert room.sequence == 6
    assert room.history_since(1) is None  # event 2 has been dropped
    replay = room.history_since(2)
    assert replay is not None
    assert [wire.split(b",")[0] for wire in replay] == [b'{"seq":3', b'{"seq":4', b'{"seq":5']
    assert room.history_since(6) == []
    assert room.history_since(5) == []


def test_a_sequence_number_the_room_never_gave_gets_a_snapshot() -> None:
    """A client that saw event 9 of an earlier run of the room (a restart made it again)
    has seen none of this run's events: "resume" with nothing would leave it with the
    old run's state and skip this run's events up to 9 when it next reconnects."""
    room = make_room()
    for number in range(3):
        comment(room, "v", f"c{number}", number)
    assert room.history_since(3) == []
    assert room.history_since(9) is None


def test_events_apply_in_order_only() -> None:
    room = make_room()
    post(room, m.LiveChanged(live=True, ts_ms=0))
    event = m.LiveChanged(live=False, ts_ms=0)
    with pytest.raises(AssertionError):
        room.apply(1, event, m.with_sequence(1, m.encode_event(event)))


def test_host_commands_and_ended_room() -> None:
    room = make_room()
    assert room.info.host_token_matches(TOKEN)
    assert not room.info.host_token_matches("guess")
    product = m.PinnedProduct(product_id="p", title="Mug", price_cents=100, currency="EUR")
    pin = room.check_host(m.HostPin(product=product), 5)
    assert isinstance(pin, m.ProductPinned)
    post(room, pin)
    assert room.snapshot(6).pinned == product
    end = room.check_host(m.HostEnd(), 7)
    assert isinstance(end, m.RoomEnded)
    post(room, end)
    assert room.ended
    assert not room.live
    assert refused(room, "v", "hello", 8) == "room_ended"
    assert isinstance(room.check_host(m.HostLive(live=True), 9), Rejection)
