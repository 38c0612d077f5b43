"""Every reach into aiortc's private API, in one place.

aiortc decodes every received track and encodes again for every sender. A relay wants
neither: it takes the host's *encoded* frames and hands them, as `av.Packet`s, to the
viewers' senders (which pack pre-encoded data without encoding: the public half).
Receiving encoded frames is not public API, so this module:

- replaces an `RTCRtpReceiver`'s jitter buffer with a `FrameAssembler` that rebuilds
  frames from depayloaded RTP packets and hands them to a sink, and never returns a frame
  to the receiver, so its decoder thread stays idle (it still ends the receiver's track
  when the receiver stops, which is how we learn that the host's media ended);
- sends a Picture Loss Indication (RFC 4585 section 6.3.1) through a receiver;
- catches the keyframe requests (PLI/FIR) a viewer sends to one of our senders;
- lets aioice gather 127.0.0.1 candidates, which it skips by default.

aiortc is pinned in pyproject.toml; importing this module with another version fails
loudly instead of misbehaving quietly. `tests/streaming/test_aiortc_internals.py` tests
this module on its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aioice.ice
import aiortc
from aiortc import RTCRtpReceiver, RTCRtpSender

AIORTC_VERSION_PINNED = "1.16.0"
if aiortc.__version__ != AIORTC_VERSION_PINNED:  # pragma: no cover - guards an upgrade
    raise ImportError(
        f"streaming.aiortc_internals is written against aiortc {AIORTC_VERSION_PINNED}, "
        f"found {aiortc.__version__}: re-read rtcrtpreceiver.py and rtcrtpsender.py first"
    )

# Name-mangled private attributes of aiortc 1.16.0 (double underscore inside the class).
_RECEIVER_JITTER_BUFFER = "_RTCRtpReceiver__jitter_buffer"
_RECEIVER_KIND = "_RTCRtpReceiver__kind"
_RECEIVER_CODECS = "_RTCRtpReceiver__codecs"
# RTCRtpSender._send_keyframe: what its RTCP handler calls on PLI and FIR.
_SENDER_SEND_KEYFRAME = "_send_keyframe"

# A frame larger than this many RTP packets is dropped (a 1080p keyframe is ~200).
FRAME_PACKETS_MAX = 1024
RTP_TIMESTAMP_MODULUS = 1 << 32
SEQUENCE_MODULUS = 1 << 16
# At most one PLI per this many seconds from one receiver's own loss detection.
PLI_INTERVAL_S_MIN = 0.3


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One encoded media frame as the host's encoder produced it.

    `timestamp` is the RTP timestamp unwrapped to a growing integer, counted from the
    first frame of this receiver (90 kHz for video, 48 kHz for Opus).
    """

    kind: str
    data: bytes
    timestamp: int
    keyframe: bool


FrameSink = Callable[[EncodedFrame], None]


def _sequence_add(sequence: int, delta: int) -> int:
    return (sequence + delta) % SEQUENCE_MODULUS


def vp8_payload_starts_frame(payload: bytes) -> bool:
    """True if this VP8 RTP payload starts a frame (RFC 7741 section 4.2: S=1, PID=0)."""
    if not payload:
        return False
    first = payload[0]
    return bool(first & 0x10) and (first & 0x0F) == 0


def vp8_frame_is_keyframe(frame: bytes) -> bool:
    """RFC 6386 section 9.1: the frame tag's lowest bit is 0 for a key frame."""
    return len(frame) >= 3 and (frame[0] & 0x01) == 0


def h264_frame_is_keyframe(frame: bytes) -> bool:
    """True if the Annex B access unit holds an IDR slice or SPS (RFC 6184 section 1.3)."""
    position = 0
    while True:
        position = frame.find(b"\x00\x00\x01", position)
        if position < 0 or position + 3 >= len(frame):
            return False
        nal_type = frame[position + 3] & 0x1F
        if nal_type in (5, 7):
            return True
        position += 3


class FrameAssembler:
    """Stands in for aiortc's `JitterBuffer` in one receiver: same `add()` signature.

    Video: a frame is complete when the packets from its first one to the one with the
    marker bit (RFC 3550 section 5.1, RFC 7741 section 4.1) are all present. A frame's
    first packet is the one after the previous frame's marker, or (VP8) a payload that
    starts partition 0. A gap drops to the next keyframe and asks the sender for one
    (`add` returns `pli=True`, which the receiver turns into a PLI). Emitting on the
    marker bit, not on the next frame's first packet as aiortc does, saves a frame
    interval of latency.

    Audio: every packet is a frame (one Opus packet, RFC 7587 section 4.2).
    """

    def __init__(self, kind: str, codec_name: Callable[[int], str | None], sink: FrameSink):
        self.kind = kind
        self._codec_name = codec_name
        self._sink = sink
        self.media_ssrc: int | None = None
        self.frames_emitted = 0
        self.frames_dropped = 0
        # unwrapping the 32-bit RTP timestamp
        self._timestamp_origin: int | None = None
        self._timestamp_last: int | None = None
        self._timestamp_cycles = 0
        # the video frame being gathered
        self._frame_timestamp: int | None = None
        self._frame_packets: dict[int, tuple[bytes, bool]] = {}
        self._frame_start_sequence: int | None = None
        self._last_marker_sequence: int | None = None
        self._waiting_for_keyframe = True
        self._codec: str | None = None
        self._pli_last_s = -PLI_INTERVAL_S_MIN
        self.picture_loss_indications = 0

    # Name and signature are aiortc's JitterBuffer.add: (pli_flag, frame or None).
    def add(self, packet: Any) -> tuple[bool, None]:
        self.media_ssrc = packet.ssrc
        data: bytes = packet._data
        if self.kind == "audio":
            self._emit(data, packet.timestamp, keyframe=True)
            return False, None
        self._codec = self._codec_name(packet.payload_type)
        pli = self._add_video(packet, data)
        if pli:
            # One request per interval: the answer (a keyframe) takes a round trip.
            now_s = time.monotonic()
            if now_s - self._pli_last_s < PLI_INTERVAL_S_MIN:
                return False, None
            self._pli_last_s = now_s
            self.picture_loss_indications += 1
        return pli, None

    def _add_video(self, packet: Any, data: bytes) -> bool:
        timestamp: int = packet.timestamp
        sequence: int = packet.sequence_number
        pli = False
        if timestamp != self._frame_timestamp:
            if self._frame_timestamp is not None and self._is_older(timestamp):
                return False  # a straggler from a frame already emitted or dropped
            if self._frame_packets:
                pli = self._drop_frame()
            self._frame_timestamp = timestamp
            self._frame_start_sequence = None
        if len(self._frame_packets) >= FRAME_PACKETS_MAX:
            return self._drop_frame()
        self._frame_packets[sequence] = (data, bool(packet.marker))
        follows_marker = self._last_marker_sequence is not None and sequence == _sequence_add(
            self._last_marker_sequence, 1
        )
        starts_vp8_frame = self._codec == "VP8" and vp8_payload_starts_frame(packet.payload)
        if follows_marker or starts_vp8_frame:
            self._frame_start_sequence = sequence
        return self._try_complete() or pli

    def _is_older(self, timestamp: int) -> bool:
        assert self._frame_timestamp is not None
        difference = (timestamp - self._frame_timestamp) % RTP_TIMESTAMP_MODULUS
        return difference >= RTP_TIMESTAMP_MODULUS // 2

    def _drop_frame(self) -> bool:
        self._frame_packets.clear()
        self._frame_start_sequence = None
        self.frames_dropped += 1
        self._waiting_for_keyframe = True
        self._last_marker_sequence = None
        return True

    def _try_complete(self) -> bool:
        start = self._frame_start_sequence
        if start is None:
            return False
        parts: list[bytes] = []
        sequence = start
        for _ in range(len(self._frame_packets)):
            entry = self._frame_packets.get(sequence)
            if entry is None:
                return False
            parts.append(entry[0])
            if entry[1]:
                break
            sequence = _sequence_add(sequence, 1)
        else:
            return False
        contiguous = self._last_marker_sequence is not None and start == _sequence_add(
            self._last_marker_sequence, 1
        )
        assert self._frame_timestamp is not None
        timestamp = self._frame_timestamp
        self._frame_packets.clear()
        self._frame_start_sequence = None
        self._last_marker_sequence = sequence
        frame = b"".join(parts)
        keyframe = (
            h264_frame_is_keyframe(frame) if self._codec == "H264" else vp8_frame_is_keyframe(frame)
        )
        if self._waiting_for_keyframe and not keyframe:
            self.frames_dropped += 1
            return True
        if not contiguous and not keyframe and self.frames_emitted:
            # Lost a whole frame between two markers: the decoder's reference is gone.
            self._waiting_for_keyframe = True
            self.frames_dropped += 1
            return True
        self._waiting_for_keyframe = False
        self._emit(frame, timestamp, keyframe=keyframe)
        return False

    def _emit(self, data: bytes, timestamp: int, keyframe: bool) -> None:
        if self._timestamp_origin is None:
            self._timestamp_origin = timestamp
        elif (
            self._timestamp_last is not None
            and timestamp < self._timestamp_last
            and (self._timestamp_last - timestamp > RTP_TIMESTAMP_MODULUS // 2)
        ):
            self._timestamp_cycles += RTP_TIMESTAMP_MODULUS
        self._timestamp_last = timestamp
        unwrapped = timestamp + self._timestamp_cycles - self._timestamp_origin
        self.frames_emitted += 1
        self._sink(EncodedFrame(kind=self.kind, data=data, timestamp=unwrapped, keyframe=keyframe))


def tap_encoded_frames(receiver: RTCRtpReceiver, sink: FrameSink) -> FrameAssembler:
    """Send `receiver`'s encoded frames to `sink` instead of its decoder.

    Call before the receiver starts (in the peer connection's "track" event, or after
    `setRemoteDescription`), so that no packet reaches aiortc's own jitter buffer.
    """
    kind: str = getattr(receiver, _RECEIVER_KIND)
    codecs: dict[int, Any] = getattr(receiver, _RECEIVER_CODECS)

    def codec_name(payload_type: int) -> str | None:
        codec = codecs.get(payload_type)
        return None if codec is None else str(codec.name)

    assembler = FrameAssembler(kind, codec_name, sink)
    setattr(receiver, _RECEIVER_JITTER_BUFFER, assembler)
    return assembler


async def send_picture_loss_indication(receiver: RTCRtpReceiver, media_ssrc: int) -> None:
    """Ask the remote sender for a keyframe (RFC 4585 section 6.3.1), aimed at `media_ssrc`.

    The SSRC must be the main media SSRC: Chrome ignores a PLI aimed at its RTX SSRC.
    """
    await receiver._send_rtcp_pli(media_ssrc)


def on_keyframe_request(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """Call `callback` when the remote peer sends PLI or FIR for this sender.

    aiortc's sender answers both by setting a "force keyframe" flag that only its encoder
    reads; a relay has no encoder and must pass the request upstream instead.
    """
    setattr(sender, _SENDER_SEND_KEYFRAME, callback)


def enable_loopback_candidates() -> None:
    """Make aioice gather 127.0.0.1 host candidates too (it skips them by default).

    Process-wide and idempotent. Only for loopback setups (tests, one-machine demos).
    """
    if getattr(aioice.ice.get_host_addresses, "_livecommerce_loopback", False):
        return
    original: Callable[[bool, bool], list[str]] = aioice.ice.get_host_addresses

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        addresses = original(use_ipv4, use_ipv6)
        if use_ipv4 and "127.0.0.1" not in addresses:
            addresses.append("127.0.0.1")
        return addresses

    get_host_addresses._livecommerce_loopback = True  # type: ignore[attr-defined]
    aioice.ice.get_host_addresses = get_host_addresses
