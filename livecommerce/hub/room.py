"""One room's state, sans-I/O: events in (with their sequence numbers), decisions out.

Every process serving a room holds a replica of this state, built by applying the room's
sequenced events in order. Commands (a comment, a host action) are checked against the
replica and, when accepted, become events; only sequenced events change the state, so all
replicas agree once they have applied the same events.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import deque
from dataclasses import dataclass
from typing import Any, NamedTuple

from livecommerce import protocol as m
from livecommerce.hub.text import clean_text, contains_keyword


@dataclass(frozen=True)
class RoomInfo:
    """What a room is created with; it does not change while the room lives."""

    room_id: str
    title: str
    host_name: str
    host_token_sha256: str  # hex; the token itself is never stored

    def __post_init__(self) -> None:
        if not self.room_id or len(self.room_id) > 64:
            raise ValueError("room_id must be 1..64 characters")
        if not 1 <= len(self.title) <= 120:
            raise ValueError("title must be 1..120 characters")
        if not 1 <= len(self.host_name) <= 40:
            raise ValueError("host_name must be 1..40 characters")
        if len(self.host_token_sha256) != 64:
            raise ValueError("host_token_sha256 must be 64 hex digits")

    def host_token_matches(self, token: str) -> bool:
        digest = hashlib.sha256(token.encode()).hexdigest()
        return hmac.compare_digest(digest, self.host_token_sha256)


@dataclass(frozen=True)
class RoomLimits:
    comment_chars_max: int = 300
    name_chars_max: int = 40
    snapshot_comments_max: int = 50
    history_events_max: int = 1000
    banned_viewers_max: int = 10_000
    muted_viewers_max: int = 10_000
    slow_mode_viewers_max: int = 50_000
    products_max: int = 100


class Rejection(NamedTuple):
    code: str
    message: str


class Room:
    def __init__(self, info: RoomInfo, limits: RoomLimits, sequence: int = 0) -> None:
        self.info = info
        self.limits = limits
        self.sequence = sequence
        self.live = False
        self.ended = False
        self.pinned: m.PinnedProduct | None = None
        self.slow_mode_ms = 0
        self.keywords: tuple[str, ...] = ()
        self.banned: set[str] = set()
        self.muted_until_ms: dict[str, int] = {}
        self.last_comment_ms: dict[str, int] = {}
        self.comments: deque[m.Comment] = deque(maxlen=limits.snapshot_comments_max)
        self.likes = 0
        self.shares = 0
        self.viewers = 0
        self.stock: dict[str, int] = {}
        self.sale: dict[str, Any] | None = None
        # The newest poll (open or closed) and the answers counted so far (the broker's).
        self.poll: dict[str, Any] | None = None
        self.auction: dict[str, Any] | None = None  # the newest auction's last change
        self.poll_counts: tuple[str, list[int]] | None = None
        # The public events after `history_after`, as sent on the wire, for resuming clients.
        self._history: deque[tuple[int, bytes]] = deque()
        self.history_after = sequence

    # Applying sequenced events: the only way the replicated state changes.

    def apply(self, sequence: int, event: m.RoomEvent, wire: bytes) -> None:
        assert sequence > self.sequence, f"event {sequence} after {self.sequence}"
        self.sequence = sequence
        match event:
            case m.CommentPosted():
                self.comments.append(
                    m.Comment(
                        sequence, event.id, event.viewer_id, event.name, event.text, event.ts_ms
                    )
                )
                self._note_comment_time(event.viewer_id, event.ts_ms)
            case m.CommentRemoved():
                kept = [comment for comment in self.comments if comment.id != event.id]
                if len(kept) != len(self.comments):
                    self.comments = deque(kept, maxlen=self.limits.snapshot_comments_max)
            case m.ProductPinned():
                self.pinned = event.product
            case m.LiveChanged():
                self.live = event.live
            case m.RoomEnded():
                self.ended = True
                self.live = False
            case m.SlowModeChanged():
                self.slow_mode_ms = event.interval_ms
            case m.SaleChanged():
                self.sale = event.sale
            case m.AuctionChanged():
                self.auction = event.auction
            case m.PollChanged():
                self.poll = event.poll
                if event.poll.get("closed"):
                    self.poll_counts = (str(event.poll["poll_id"]), list(event.poll["counts"]))
            case m.ViewerMuted():
                self.muted_until_ms[event.viewer_id] = event.until_ms
                if len(self.muted_until_ms) > self.limits.muted_viewers_max:
                    self._prune_mutes(event.ts_ms)
            case m.ViewerBanned():
                self.banned.add(event.viewer_id)
            case m.ViewerUnbanned():
                self.banned.discard(event.viewer_id)
                self.muted_until_ms.pop(event.viewer_id, None)
            case m.KeywordsChanged():
                self.keywords = tuple(word.casefold() for word in event.words)
        if not isinstance(event, m.PRIVATE_EVENTS):
            self._history.append((sequence, wire))
            if len(self._history) > self.limits.history_events_max:
                self.history_after = self._history.popleft()[0]

    def history_since(self, sequence: int) -> list[bytes] | None:
        """The public events after `sequence`, or None when they are no longer all held,
        or were never this room's: a number past its newest event was seen in another run
        of the room (the embedded server restarted and made it again, or Redis lost it),
        whose events this one does not know, so the client needs a snapshot."""
        if sequence > self.sequence:
            return None
        if sequence == self.sequence:
            return []
        if sequence < self.history_after:
            return None
        return [wire for event_sequence, wire in self._history if event_sequence > sequence]

    # Checking commands against the state: decisions, never changes.

    def check_comment(
        self, viewer_id: str, command: m.PostComment, comment_id: str, now_ms: int
    ) -> m.CommentPosted | Rejection:
        if self.ended:
            return Rejection("room_ended", "the room has ended")
        if viewer_id in self.banned:
            return Rejection("banned", "you are banned from this room")
        if self.muted_until_ms.get(viewer_id, 0) > now_ms:
            return Rejection("muted", "you are muted in this room for now")
        name = clean_text(command.name)
        if not 1 <= len(name) <= self.limits.name_chars_max:
            return Rejection("bad_name", f"name must be 1..{self.limits.name_chars_max} characters")
        text = clean_text(command.text)
        if not text:
            return Rejection("empty_comment", "the comment is empty")
        if len(text) > self.limits.comment_chars_max:
            return Rejection(
                "comment_too_long",
                f"comments are at most {self.limits.comment_chars_max} characters",
            )
        if self.slow_mode_ms:
            waited_ms = now_ms - self.last_comment_ms.get(viewer_id, -(10**15))
            if waited_ms < self.slow_mode_ms:
                return Rejection(
                    "slow_mode", f"slow mode: wait {self.slow_mode_ms - waited_ms} ms more"
                )
        if contains_keyword(text, self.keywords) or contains_keyword(name, self.keywords):
            return Rejection("blocked_word", "the comment contains a word this room does not allow")
        return m.CommentPosted(
            id=comment_id, viewer_id=viewer_id, name=name, text=text, ts_ms=now_ms
        )

    def check_host(self, command: m.HostCommand, now_ms: int) -> m.RoomEvent | Rejection:
        if self.ended:
            return Rejection("room_ended", "the room has ended")
        match command:
            case m.HostPin():
                return m.ProductPinned(product=command.product, ts_ms=now_ms)
            case m.HostLive():
                return m.LiveChanged(live=command.live, ts_ms=now_ms)
            case m.HostEnd():
                return m.RoomEnded(ts_ms=now_ms)
            case m.HostDeleteComment():
                return m.CommentRemoved(id=command.comment_id, ts_ms=now_ms)
            case m.HostMute():
                return m.ViewerMuted(
                    viewer_id=command.viewer_id, until_ms=now_ms + command.duration_ms, ts_ms=now_ms
                )
            case m.HostBan():
                if len(self.banned) >= self.limits.banned_viewers_max:
                    return Rejection("too_many_bans", "the ban list is full")
                return m.ViewerBanned(viewer_id=command.viewer_id, ts_ms=now_ms)
            case m.HostUnban():
                return m.ViewerUnbanned(viewer_id=command.viewer_id, ts_ms=now_ms)
            case m.HostKeywords():
                words = sorted({clean_text(word).casefold() for word in command.words} - {""})
                return m.KeywordsChanged(words=words, ts_ms=now_ms)
            case m.HostSlowMode():
                return m.SlowModeChanged(interval_ms=command.interval_ms, ts_ms=now_ms)
            case m.HostPoll():
                if self.open_poll(now_ms) is not None:
                    return Rejection("poll_open", "a poll is open; close it first")
                if self.poll is not None and self.poll["poll_id"] == command.poll_id:
                    return Rejection("poll_exists", "this room had a poll with this id")
                options = [clean_text(option) for option in command.options]
                question = clean_text(command.question)
                if not question or not all(options):
                    return Rejection("bad_poll", "the question and every option need some text")
                poll = {
                    "poll_id": command.poll_id, "kind": command.kind, "question": question,
                    "options": options, "opened_at_ms": now_ms,
                    "closes_at_ms": now_ms + command.duration_ms, "closed": False,
                    "counts": [0] * len(options),
                }  # fmt: skip
                return m.PollChanged(poll=poll, ts_ms=now_ms)
            case m.HostPollClose():
                newest = self.poll
                if newest is None or newest["poll_id"] != command.poll_id or newest["closed"]:
                    return Rejection("no_poll", "no open poll with this id")
                return self.closing(now_ms)

    def open_poll(self, now_ms: int) -> dict[str, Any] | None:
        """The poll taking answers now (open, and not past its closing time)."""
        poll = self.poll
        if poll is None or poll["closed"] or now_ms >= poll["closes_at_ms"]:
            return None
        return poll

    def closing(self, now_ms: int) -> m.PollChanged:
        """The event that closes the newest poll, with the counts this replica knows (the
        hub puts the broker's exact ones in before publishing it)."""
        assert self.poll is not None
        return m.PollChanged(
            poll={**self.poll, "closed": True, "closed_at_ms": now_ms, "counts": self.counts()},
            ts_ms=now_ms,
        )

    def counts(self) -> list[int]:
        assert self.poll is not None
        known = self.poll_counts
        if known is not None and known[0] == self.poll["poll_id"]:
            return list(known[1])
        return list(self.poll["counts"])

    def poll_view(self) -> dict[str, Any] | None:
        """The newest poll with its counts now (for snapshots)."""
        if self.poll is None:
            return None
        return {**self.poll, "counts": self.counts()}

    def check_answer(
        self, viewer_id: str, answer: m.PollAnswer, now_ms: int
    ) -> dict[str, Any] | Rejection:
        """The open poll an answer is for, or why not (once per viewer: the broker's)."""
        if self.ended:
            return Rejection("room_ended", "the room has ended")
        if viewer_id in self.banned:
            return Rejection("banned", "you are banned from this room")
        poll = self.poll
        if poll is None or poll["poll_id"] != answer.poll_id:
            return Rejection("no_poll", "no such poll in this room")
        if self.open_poll(now_ms) is None:
            return Rejection("poll_closed", "this poll is closed")
        if answer.option >= len(poll["options"]):
            return Rejection("bad_option", f"options are 0..{len(poll['options']) - 1}")
        return poll

    def check_stock(self, product_id: str) -> Rejection | None:
        if product_id not in self.stock and len(self.stock) >= self.limits.products_max:
            return Rejection("too_many_products", "this room tracks too many products")
        return None

    def snapshot(self, now_ms: int) -> m.Snapshot:
        return m.Snapshot(
            seq=self.sequence,
            ts_ms=now_ms,
            room_id=self.info.room_id,
            title=self.info.title,
            host_name=self.info.host_name,
            live=self.live,
            ended=self.ended,
            pinned=self.pinned,
            slow_mode_ms=self.slow_mode_ms,
            likes=self.likes,
            shares=self.shares,
            viewers=self.viewers,
            comments=list(self.comments),
            stock=dict(self.stock),
            sale=self.sale,
            poll=self.poll_view(),
            auction=self.auction,
        )

    def full_state(self, now_ms: int) -> m.State:
        return m.State(
            seq=self.sequence,
            ts_ms=now_ms,
            likes=self.likes,
            shares=self.shares,
            viewers=self.viewers,
            stock=dict(self.stock),
            poll=self.live_counts(),
        )

    def live_counts(self) -> dict[str, Any] | None:
        """The newest poll's counts as state/v1 carries them."""
        if self.poll is None:
            return None
        return {"poll_id": self.poll["poll_id"], "counts": self.counts()}

    def _note_comment_time(self, viewer_id: str, ts_ms: int) -> None:
        self.last_comment_ms[viewer_id] = ts_ms
        if len(self.last_comment_ms) > self.limits.slow_mode_viewers_max:
            horizon_ms = ts_ms - self.slow_mode_ms
            self.last_comment_ms = {
                viewer: at_ms
                for viewer, at_ms in self.last_comment_ms.items()
                if at_ms > horizon_ms
            }

    def _prune_mutes(self, now_ms: int) -> None:
        self.muted_until_ms = {
            viewer: until_ms
            for viewer, until_ms in self.muted_until_ms.items()
            if until_ms > now_ms
        }
