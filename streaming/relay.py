"""The relay: the host's encoded frames fanned out to every viewer, never re-encoded.

One `Broadcast` per room. The host's receivers push `EncodedFrame`s into it; it cuts each
frame into RTP payloads once, for every viewer, and offers it to every `ViewerTrack`
without awaiting any of them. A `ViewerTrack` holds one viewer's rules and queue. Once
the viewer's connection is up it sends each frame at once, from the push, through its
`FrameSender` (`aiortc_internals.DirectRtpSender`: header, SRTP, `sendto`, no task hop).
Until then frames wait in its queue, flushed when the sender starts. Without a
`FrameSender` (or if the sender cannot take the codec), the track is what aiortc's
sender reads: it yields `av.Packet`s, which aiortc packs into RTP without encoding.

Video rules (each viewer on its own):
- a new viewer, or one whose host reconnected, waits for a keyframe;
- its queue is bounded; on overflow it empties and waits for the next keyframe;
- while any viewer waits, the broadcast asks the host for a keyframe (PLI): one request
  serves every viewer that starts waiting before its answer arrives, requests are spaced
  by `keyframe_request_spacing_ms_min`, and repeated every
  `keyframe_request_interval_ms` until a keyframe arrives.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from streaming.aiortc_internals import EncodedFrame, packetize

logger = logging.getLogger(__name__)

# RTP clock rates (RFC 7741 section 6.1 for VP8, RFC 7587 section 4.1 for Opus).
VIDEO_CLOCK_RATE_HZ = 90_000
AUDIO_CLOCK_RATE_HZ = 48_000
# Timestamp step put between two host sessions, so viewers' timestamps keep growing.
VIDEO_TIMESTAMP_GAP = VIDEO_CLOCK_RATE_HZ // 30
AUDIO_TIMESTAMP_GAP = AUDIO_CLOCK_RATE_HZ // 50
# VP8 picture IDs are 15 bits (RFC 7741 section 4.2, M=1).
PICTURE_ID_MODULUS = 1 << 15


class FrameSender(Protocol):
    """Sends a viewer's frames as RTP (`aiortc_internals.DirectRtpSender`)."""

    ready: bool
    closed: bool

    def send_frame(self, payloads: Sequence[bytes], timestamp: int) -> bool: ...

    def close(self) -> None: ...


# A queued frame: the host's frame, its timestamp for this viewer, its RTP payloads.
_Queued = tuple[EncodedFrame, int, Sequence[bytes] | None]


class ViewerTrack(MediaStreamTrack):
    """One viewer's frames: sent at once when its sender is up, else a bounded queue."""

    def __init__(
        self,
        kind: str,
        queue_frames_max: int,
        on_waiting_for_keyframe: Callable[[], None],
    ) -> None:
        super().__init__()
        assert kind in ("audio", "video")
        assert queue_frames_max >= 1
        self.kind = kind
        self._queue: deque[_Queued] = deque()
        self._queue_frames_max = queue_frames_max
        self._on_waiting_for_keyframe = on_waiting_for_keyframe
        self._ready: asyncio.Event = asyncio.Event()
        self._ended = False
        self.waiting_for_keyframe = kind == "video"
        self._generation: int | None = None
        self._timestamp_offset = 0
        self._timestamp_last: int | None = None
        clock_rate = VIDEO_CLOCK_RATE_HZ if kind == "video" else AUDIO_CLOCK_RATE_HZ
        self._time_base = fractions.Fraction(1, clock_rate)
        self._timestamp_gap = VIDEO_TIMESTAMP_GAP if kind == "video" else AUDIO_TIMESTAMP_GAP
        self.frames_sent = 0
        self.frames_dropped = 0
        self.overflows = 0
        self._sender: FrameSender | None = None
        self._picture_id = 0

    def attach_sender(self, sender: FrameSender) -> None:
        """Send through `sender` from now on; call `sender_started` when it starts."""
        self._sender = sender

    @property
    def sends_directly(self) -> bool:
        return self._sender is not None

    def sender_started(self, usable: bool) -> None:
        """The sender is up: flush the queue through it; or it cannot be used: read me."""
        if not usable:
            self._sender = None
            self._ready.set()
            return
        sender = self._sender
        while self._queue and sender is not None and sender.ready:
            frame, timestamp, payloads = self._queue.popleft()
            self._send(sender, frame, timestamp, payloads)

    def _send(
        self,
        sender: FrameSender,
        frame: EncodedFrame,
        timestamp: int,
        payloads: Sequence[bytes] | None,
    ) -> None:
        if payloads is None:
            payloads = packetize(self.kind, frame.data, self._picture_id)
            self._picture_id = (self._picture_id + 1) % PICTURE_ID_MODULUS
        if sender.send_frame(payloads, timestamp):
            self.frames_sent += 1
        else:
            self.frames_dropped += 1

    def offer(
        self, frame: EncodedFrame, generation: int, payloads: Sequence[bytes] | None = None
    ) -> None:
        """Take a frame without blocking; drop it if this viewer cannot use it.

        `payloads` are the frame's RTP payloads if the caller cut them already (once for
        every viewer); otherwise this track cuts them when it sends.
        """
        if self._ended:
            return
        sender = self._sender
        if sender is not None and sender.closed:
            self.frames_dropped += 1  # its connection is gone; the service removes it
            return
        if generation != self._generation:
            # A new host session: its timestamps restart, and its first usable video
            # frame is a keyframe.
            self._generation = generation
            if self._timestamp_last is not None:
                self._timestamp_offset = self._timestamp_last + self._timestamp_gap
                self._timestamp_offset -= frame.timestamp
            if self.kind == "video":
                self._start_waiting()
        if self.waiting_for_keyframe:
            if not frame.keyframe:
                self.frames_dropped += 1
                return
            self.waiting_for_keyframe = False
        if len(self._queue) >= self._queue_frames_max:
            self.overflows += 1
            self.frames_dropped += len(self._queue)
            self._queue.clear()
            if self.kind == "video":
                # Later delta frames reference the dropped ones: skip to a keyframe.
                self._start_waiting()
                if not frame.keyframe:
                    self.frames_dropped += 1
                    return
                self.waiting_for_keyframe = False
        timestamp = frame.timestamp + self._timestamp_offset
        self._timestamp_last = timestamp
        if sender is not None and sender.ready and not self._queue:
            self._send(sender, frame, timestamp, payloads)
            return
        self._queue.append((frame, timestamp, payloads))
        if sender is None:
            self._ready.set()

    def _start_waiting(self) -> None:
        self.waiting_for_keyframe = True
        self._on_waiting_for_keyframe()

    @property
    def queued_frames(self) -> int:
        return len(self._queue)

    async def recv(self) -> av.Packet[Any]:
        # With a FrameSender, aiortc's sender task waits here until the track ends.
        while not self._queue or self._sender is not None:
            if self._ended or self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        frame, timestamp, _ = self._queue.popleft()
        packet = av.Packet(frame.data)
        packet.pts = timestamp
        packet.time_base = self._time_base
        self.frames_sent += 1
        return packet

    def end(self) -> None:
        """No more frames: the sender's `recv` raises `MediaStreamError`."""
        self._ended = True
        self._queue.clear()
        if self._sender is not None:
            self._sender.close()
        self._ready.set()
        self.stop()


KeyframeRequester = Callable[[], None]


class Broadcast:
    """One room's relay: the current host's frames to every viewer's tracks."""

    def __init__(
        self,
        keyframe_request_interval_ms: int,
        keyframe_request_spacing_ms_min: int = 50,
        on_viewer_failed: Callable[[ViewerTrack], None] | None = None,
    ) -> None:
        assert keyframe_request_interval_ms > 0
        assert 0 <= keyframe_request_spacing_ms_min <= keyframe_request_interval_ms
        self._keyframe_request_interval_s = keyframe_request_interval_ms / 1000
        self._keyframe_request_spacing_s = keyframe_request_spacing_ms_min / 1000
        self._keyframe_seen_at_s = -1e9
        self._viewer_tracks: set[ViewerTrack] = set()
        # Told when a track raised on a frame (it is already out of the broadcast);
        # without it the track is ended here.
        self._on_viewer_failed = on_viewer_failed
        self._request_keyframe: KeyframeRequester | None = None
        self._keyframe_requested_at_s = -1e9
        self._retry_handle: asyncio.Handle | None = None
        self._retry_at_s = 0.0
        self.generation = 0
        self._picture_id = 0
        self.frames_in = 0
        self.frames_out = 0
        self.keyframe_requests = 0
        self.last_frame_at_s: float | None = None

    # --- the host side -------------------------------------------------------------

    def attach_host(self, request_keyframe: KeyframeRequester) -> int:
        """A host session starts; returns its generation (stamped on its frames)."""
        self.generation += 1
        self._request_keyframe = request_keyframe
        self._keyframe_requested_at_s = -1e9
        return self.generation

    def detach_host(self, generation: int) -> None:
        if generation == self.generation:
            self._request_keyframe = None

    def push(self, frame: EncodedFrame, generation: int) -> None:
        """Fan one frame out. Never awaits: a slow viewer only fills its own queue."""
        if generation != self.generation:
            return  # a replaced host session still delivering its last packets
        self.frames_in += 1
        self.last_frame_at_s = time.monotonic()
        if frame.kind == "video":
            if frame.keyframe:
                self._keyframe_seen_at_s = self.last_frame_at_s
            # One picture ID sequence for every viewer: each viewer's stream starts at a
            # keyframe and skips only to keyframes, so a gap in it never hides a loss.
            picture_id = self._picture_id
            self._picture_id = (picture_id + 1) % PICTURE_ID_MODULUS
        else:
            picture_id = 0
        # Cut into RTP payloads once: the bytes are the same for every viewer.
        payloads: Sequence[bytes] | None = None
        failed: list[ViewerTrack] = []
        for track in self._viewer_tracks:
            if track.kind != frame.kind:
                continue
            if payloads is None and track.sends_directly:
                payloads = packetize(frame.kind, frame.data, picture_id)
            try:
                track.offer(frame, generation, payloads)
            except Exception:
                # This runs inside aiortc's receive path for the host: an exception let
                # through would fail the host's transport and end the broadcast for all.
                logger.exception("a viewer's track failed on a frame; the viewer is dropped")
                failed.append(track)
        self.frames_out += len(self._viewer_tracks)
        for track in failed:
            self._viewer_tracks.discard(track)
            if self._on_viewer_failed is not None:
                self._on_viewer_failed(track)
            else:
                track.end()

    # --- the viewer side -----------------------------------------------------------

    def add_viewer_track(self, track: ViewerTrack) -> None:
        self._viewer_tracks.add(track)

    def remove_viewer_track(self, track: ViewerTrack) -> None:
        self._viewer_tracks.discard(track)
        track.end()

    def viewer_wants_keyframe(self) -> None:
        """A viewer sent PLI/FIR, or one waits for a keyframe: ask the host.

        A request still on its way (sent after the last keyframe, younger than the retry
        interval) serves every viewer that starts waiting before its keyframe arrives, so
        a wave of joins costs one keyframe. Otherwise ask now, but never more often than
        every `keyframe_request_spacing_ms_min`.
        """
        now_s = time.monotonic()
        since_request_s = now_s - self._keyframe_requested_at_s
        outstanding = (
            self._keyframe_requested_at_s > self._keyframe_seen_at_s
            and since_request_s < self._keyframe_request_interval_s
        )
        if outstanding:
            self._schedule(self._keyframe_request_interval_s - since_request_s)
        elif since_request_s >= self._keyframe_request_spacing_s:
            self._send_keyframe_request(now_s)
            self._schedule(self._keyframe_request_interval_s)
        else:
            self._schedule(self._keyframe_request_spacing_s - since_request_s)

    def _send_keyframe_request(self, now_s: float) -> None:
        if self._request_keyframe is None:
            return
        self._keyframe_requested_at_s = now_s
        self.keyframe_requests += 1
        self._request_keyframe()

    def _schedule(self, delay_s: float) -> None:
        # Repeat while any viewer still waits: the PLI or the keyframe may be lost, or the
        # host may not be connected yet. One timer per broadcast, the earliest wins. The
        # due time is kept here: uvloop answers a delay under half a millisecond with a
        # plain `Handle`, which has no `when()`.
        loop = asyncio.get_running_loop()
        when_s = loop.time() + max(delay_s, 0.0)
        if self._retry_handle is not None:
            if self._retry_at_s <= when_s:
                return
            self._retry_handle.cancel()
        self._retry_at_s = when_s
        self._retry_handle = loop.call_at(when_s, self._retry)

    def _retry(self) -> None:
        self._retry_handle = None
        if any(track.waiting_for_keyframe for track in self._viewer_tracks):
            self.viewer_wants_keyframe()

    def close(self) -> None:
        if self._retry_handle is not None:
            self._retry_handle.cancel()
            self._retry_handle = None
        for track in list(self._viewer_tracks):
            self.remove_viewer_track(track)
        self._request_keyframe = None
