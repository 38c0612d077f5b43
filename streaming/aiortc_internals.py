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
- sends a viewer's RTP itself (`DirectRtpSender`): one synchronous call per frame writes
  the RTP header, SRTP-protects and hands each packet to the viewer's UDP socket, instead
  of aiortc's per-viewer task building an `RtpPacket` and awaiting three layers of
  coroutines per packet; the sender's RTCP (reports, NACK, PLI/FIR) stays aiortc's;
- lets aioice gather 127.0.0.1 candidates, which it skips by default.

aiortc is pinned in pyproject.toml; importing this module with another version fails
loudly instead of misbehaving quietly. `tests/streaming/test_aiortc_internals.py` tests
this module on its own.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import random
import socket
import struct
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aioice.ice
import aiortc
from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.codecs import is_rtx
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.rtcrtpparameters import RTCRtpSendParameters
from aiortc.rtp import (
    RTP_HISTORY_SIZE,
    HeaderExtensionsMap,
    RtpPacket,
    pack_header_extensions,
    wrap_rtx,
)

# pylibsrtp's cffi binding (libsrtp 2's srtp_protect(ctx, buffer, &length)), untyped.
_srtp_binding: Any = importlib.import_module("pylibsrtp._binding")
srtp_ffi: Any = _srtp_binding.ffi
srtp_lib: Any = _srtp_binding.lib

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
# RTCRtpSender._retransmit(sequence_number): what its RTCP handler awaits per NACKed packet.
_SENDER_RETRANSMIT = "_retransmit"
# What RTCRtpSender._run_rtcp puts in its sender reports and getStats() reports.
_SENDER_NTP_TIMESTAMP = "_RTCRtpSender__ntp_timestamp"
_SENDER_RTP_TIMESTAMP = "_RTCRtpSender__rtp_timestamp"
_SENDER_OCTET_COUNT = "_RTCRtpSender__octet_count"
_SENDER_PACKET_COUNT = "_RTCRtpSender__packet_count"
# RTCDtlsTransport's counters (its getStats()).
_DTLS_TX_BYTES = "_RTCDtlsTransport__tx_bytes"
_DTLS_TX_PACKETS = "_RTCDtlsTransport__tx_packets"

logger = logging.getLogger(__name__)

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


# RTP header extensions the sender writes (aiortc's sender writes the same two).
_MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
_ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
# Seconds from the NTP epoch (1900) to the Unix epoch (1970), RFC 5905 section 6.
NTP_UNIX_OFFSET_S = 2_208_988_800
# The codecs whose payloads `packetize` builds: what the relay forwards.
DIRECT_MIME_TYPES = ("video/VP8", "audio/opus")
_RTP_HEADER = struct.Struct("!BBHII")
# One frame's protected packets are written into one buffer and sent with one sendmsg.
# UDP_SEGMENT (linux/udp.h): at most 64 segments and 64 KiB per call.
UDP_SEGMENT = 103
SEGMENTS_MAX = 64
SEND_BUFFER_BYTES = 65_000
# libsrtp appends at most this much (pylibsrtp's SRTP_MAX_TRAILER_LEN).
SRTP_TRAILER_BYTES_MAX = 16 + 128


def vp8_payloads(frame: bytes, picture_id: int) -> list[bytes]:
    """RFC 7741 payloads of one VP8 frame, as aiortc's VP8 sender cuts them."""
    return Vp8Encoder._packetize(frame, picture_id)


def packetize(kind: str, frame: bytes, picture_id: int) -> list[bytes]:
    """The RTP payloads of one frame: VP8 (RFC 7741) for video, one Opus packet for audio."""
    return vp8_payloads(frame, picture_id) if kind == "video" else [frame]


class DirectRtpSender:
    """Sends pre-packetized frames through one `RTCRtpSender`'s transport, synchronously.

    aiortc's sender runs a task per viewer that reads its track, builds an `RtpPacket`
    per packet, and awaits DTLS, ICE and datagram layers for each one. This writes the
    same packets from the caller's stack. Per frame: one header-extension block, one
    lookup of the ICE pair, and (on Linux) one `sendmsg` for all of the frame's packets
    with UDP generic segmentation offload (UDP_SEGMENT, Linux 4.18): the kernel cuts the
    buffer into datagrams, so a 4-packet frame costs one system call instead of four.
    Per packet: a 12-byte header and SRTP protect (libsrtp, through pylibsrtp's binding,
    in place into the frame's send buffer, so no per-packet output copy).

    The sender itself keeps doing everything else: RTCP reports (this updates the
    counters its sender reports and `getStats()` read), PLI/FIR (see
    `on_keyframe_request`), NACK (its `_retransmit` is replaced by one that resends from
    this sender's history, wrapped in RTX when RTX was negotiated, as aiortc's does).

    `on_start(usable)` is called once the peer connection starts the sender (the DTLS
    transport is then connected): `usable` is False if the negotiated codec is not one
    `packetize` builds, in which case the caller keeps using aiortc's own path.
    """

    def __init__(self, sender: RTCRtpSender, on_start: Callable[[bool], None]) -> None:
        self._sender = sender
        self._on_start = on_start
        self.ready = False
        self.closed = False
        self.kind = sender.kind
        self._dtls: Any = None
        self._nominated: dict[int, Any] = {}
        self._pair: Any = None
        self._sendto: Callable[[bytes, Any], Any] | None = None
        self._socket: socket.socket | None = None
        self._socket_finalizer: weakref.finalize[Any, Any] | None = None
        self.segmentation_offload = True
        self._srtp_session: Any = None
        self._srtp_context: Any = None
        self._buffer = srtp_ffi.new("char[]", SEND_BUFFER_BYTES)
        self._buffer_view = srtp_ffi.buffer(self._buffer)
        self._memory = memoryview(self._buffer_view)
        self._length = srtp_ffi.new("int *")
        self._payload_type = 0
        self._ssrc = 0
        self._rtx_payload_type: int | None = None
        self._rtx_ssrc = 0
        self._rtx_sequence = random.randint(0, 32767)
        # aiortc's choices: sequence numbers start in the lower half (no early wrap, which
        # breaks SRTP in some receivers), timestamps at a random origin.
        self._sequence = random.randint(0, 32767)
        self._timestamp_origin = random.getrandbits(32)
        self._history: list[bytes | None] = [None] * RTP_HISTORY_SIZE
        self._extensions_map = HeaderExtensionsMap()
        self._mid: bytes | None = None
        self._mid_id = 0
        self._abs_send_time_id = 0
        self._one_byte_prefix: bytes | None = None
        self._first_byte = 0x80
        self._tasks: set[Any] = set()
        self.packets_sent = 0
        self.packets_dropped = 0
        self.send_calls = 0
        self.retransmissions = 0
        original_send = sender.send

        async def send(parameters: RTCRtpSendParameters) -> None:
            await original_send(parameters)
            self._start(parameters)

        sender.send = send  # type: ignore[method-assign]
        setattr(sender, _SENDER_RETRANSMIT, self._retransmit)

    def _start(self, parameters: RTCRtpSendParameters) -> None:
        codec = parameters.codecs[0]
        if codec.mimeType not in DIRECT_MIME_TYPES:
            self.closed = True
            self._on_start(False)
            return
        assert codec.payloadType is not None
        self._payload_type = codec.payloadType
        for other in parameters.codecs:
            if is_rtx(other) and other.parameters.get("apt") == codec.payloadType:
                self._rtx_payload_type = other.payloadType
                break
        self._ssrc = self._sender._ssrc
        self._rtx_ssrc = self._sender._rtx_ssrc
        self._extensions_map.configure(parameters)
        ids: dict[str, int] = {
            extension.uri: extension.id or 0 for extension in parameters.headerExtensions
        }
        self._mid = parameters.muxId.encode() if parameters.muxId else None
        self._mid_id = ids.get(_MID_URI, 0) if self._mid is not None else 0
        self._abs_send_time_id = ids.get(_ABS_SEND_TIME_URI, 0)
        if self._mid_id or self._abs_send_time_id:
            self._first_byte = 0x90  # V=2, X=1 (RFC 3550 section 5.1)
        mid_fits = self._mid is None or len(self._mid) <= 16
        if self._mid_id <= 14 and self._abs_send_time_id <= 14 and mid_fits:
            # RFC 8285 one-byte elements; the block's length never changes, so only the
            # send time is written per frame.
            prefix = b""
            if self._mid_id and self._mid is not None:
                prefix = bytes([self._mid_id << 4 | (len(self._mid) - 1)]) + self._mid
            self._one_byte_prefix = prefix
        self._dtls = self._sender.transport
        self._srtp_session = self._dtls._tx_srtp
        # pylibsrtp's Session keeps its libsrtp context (srtp_t *) here; protecting
        # through it directly skips the per-call allocation and output copy.
        self._srtp_context = self._srtp_session._srtp[0]
        self._nominated = self._dtls.transport._connection._nominated
        self.ready = True
        self._on_start(True)

    @property
    def next_sequence_number(self) -> int:
        return self._sequence

    def close(self) -> None:
        """Stop sending and release the duplicated socket. Idempotent."""
        self.ready = False
        self.closed = True
        self._release_socket()

    def _release_socket(self) -> None:
        if self._socket_finalizer is not None:
            self._socket_finalizer()  # closes the duplicate, once
            self._socket_finalizer = None
        self._socket = None

    def _extension_block(self, abs_send_time: int) -> bytes:
        prefix = self._one_byte_prefix
        if prefix is not None:
            if self._abs_send_time_id:
                prefix += (self._abs_send_time_id << 28 | 2 << 24 | abs_send_time).to_bytes(4)
            elif not prefix:
                return b""
            padding = -len(prefix) % 4
            return (
                struct.pack("!HH", 0xBEDE, (len(prefix) + padding) // 4)
                + prefix
                + (b"\x00" * padding)
            )
        extensions: list[tuple[int, bytes]] = []
        if self._mid_id and self._mid is not None:
            extensions.append((self._mid_id, self._mid))
        if self._abs_send_time_id:
            extensions.append((self._abs_send_time_id, abs_send_time.to_bytes(3)))
        profile, value = pack_header_extensions(extensions)
        if not value:
            return b""
        return struct.pack("!HH", profile, len(value) // 4) + value

    def _connected(self) -> bool:
        if self._dtls._state is not DtlsState.CONNECTED:
            self.close()
            return False
        pair = self._nominated.get(1)
        if pair is None:
            return False
        if pair is not self._pair:
            self._pair = pair
            self._release_socket()
            protocol = pair.protocol
            if type(protocol) is aioice.ice.StunProtocol:
                transport = protocol.transport
                self._sendto = transport.sendto
                if self.segmentation_offload and hasattr(socket, "SOL_UDP"):
                    self._duplicate_socket(transport.get_extra_info("socket"))
            else:  # a TURN allocation: its send may wait for a channel binding
                self._sendto = self._send_later
        return True

    def _duplicate_socket(self, original: Any) -> None:
        # uvloop's and asyncio's transports do not expose sendmsg(); a duplicate of the
        # same socket does (same port, so the peer sees no difference).
        try:
            duplicate = socket.socket(
                original.family, socket.SOCK_DGRAM, 0, os.dup(original.fileno())
            )
        except (OSError, AttributeError):
            self.segmentation_offload = False
            return
        # Never block the event loop: a full send buffer must raise BlockingIOError. The
        # duplicate shares the original's file status, which the event loop made
        # non-blocking already; say so rather than rely on it.
        duplicate.setblocking(False)
        self._socket = duplicate
        self._socket_finalizer = weakref.finalize(self, duplicate.close)

    def _send_later(self, data: bytes, address: Any) -> None:
        task = asyncio.ensure_future(self._pair.protocol.send_data(data, address))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def send_frame(self, payloads: Sequence[bytes], timestamp: int) -> bool:
        """Send one frame's payloads (marker bit on the last); False if not connected.

        `timestamp` is in the codec's clock (90 kHz video, 48 kHz Opus) from any origin.
        """
        if not self.ready or not self._connected():
            return False
        now_s = time.time() + NTP_UNIX_OFFSET_S
        ntp = int(now_s * 4294967296.0)
        extension_block = self._extension_block((ntp >> 14) & 0xFFFFFF)
        rtp_timestamp = (self._timestamp_origin + timestamp) & 0xFFFFFFFF
        first_byte = self._first_byte
        payload_type = self._payload_type
        ssrc = self._ssrc
        history = self._history
        pack = _RTP_HEADER.pack
        protect = srtp_lib.srtp_protect
        context = self._srtp_context
        buffer = self._buffer
        view = self._buffer_view
        length = self._length
        start_sequence = sequence = self._sequence
        last = len(payloads) - 1
        octets = 0
        sent_bytes = 0
        offset = 0
        sizes: list[int] = []
        try:
            for index, payload in enumerate(payloads):
                second_byte = payload_type | 0x80 if index == last else payload_type
                packet = (
                    pack(first_byte, second_byte, sequence, rtp_timestamp, ssrc)
                    + extension_block
                    + payload
                )
                history[sequence % RTP_HISTORY_SIZE] = packet
                size = len(packet)
                if offset + size + SRTP_TRAILER_BYTES_MAX > SEND_BUFFER_BYTES or (
                    len(sizes) == SEGMENTS_MAX
                ):
                    sent_bytes += self._transmit(sizes, offset)
                    offset = 0
                    sizes = []
                view[offset : offset + size] = packet
                length[0] = size
                status = protect(context, buffer + offset, length)
                if status:
                    raise RuntimeError(f"srtp_protect failed with status {status}")
                sizes.append(length[0])
                offset += length[0]
                octets += len(payload)
                sequence = (sequence + 1) & 0xFFFF
            sent_bytes += self._transmit(sizes, offset)
        except Exception:
            # aiortc's sender would log and stop: do the same for this viewer only.
            logger.warning("RTP send failed; this viewer's sender stops", exc_info=True)
            self.close()
            return False
        finally:
            sent = (sequence - start_sequence) & 0xFFFF
            self._sequence = sequence
            self.packets_sent += sent
            self._count(sent, octets, sent_bytes, ntp, rtp_timestamp)
        return True

    def _transmit(self, sizes: list[int], total: int) -> int:
        """Send the protected packets in the buffer's first `total` bytes; bytes sent."""
        if not sizes:
            return 0
        address = self._pair.remote_addr
        duplicate = self._socket
        if duplicate is not None:
            first = sizes[0]
            count = len(sizes)
            # One datagram per `first` bytes: every packet but the last must be that size.
            if count == 1 or (sizes.count(first) >= count - 1 and sizes[-1] <= first):
                try:
                    if count == 1:
                        duplicate.sendto(self._memory[:total], address)
                    else:
                        segment = ((socket.SOL_UDP, UDP_SEGMENT, struct.pack("=H", first)),)
                        duplicate.sendmsg((self._memory[:total],), segment, 0, address)
                    self.send_calls += 1
                    return total
                except BlockingIOError:
                    # The socket's send buffer is full: a UDP drop, as on the wire.
                    self.packets_dropped += count
                    return 0
                except OSError:
                    # No offload here (old kernel, a device without checksum offload).
                    logger.info("UDP segmentation offload unavailable", exc_info=True)
                    self.segmentation_offload = False
                    self._release_socket()
        sendto = self._sendto
        assert sendto is not None
        offset = 0
        for size in sizes:
            sendto(bytes(self._memory[offset : offset + size]), address)
            offset += size
        self.send_calls += len(sizes)
        return total

    def _count(self, packets: int, octets: int, sent_bytes: int, ntp: int, rtp: int) -> None:
        sender = self._sender
        setattr(sender, _SENDER_NTP_TIMESTAMP, ntp)
        setattr(sender, _SENDER_RTP_TIMESTAMP, rtp)
        setattr(sender, _SENDER_OCTET_COUNT, getattr(sender, _SENDER_OCTET_COUNT) + octets)
        setattr(sender, _SENDER_PACKET_COUNT, getattr(sender, _SENDER_PACKET_COUNT) + packets)
        dtls = self._dtls
        setattr(dtls, _DTLS_TX_BYTES, getattr(dtls, _DTLS_TX_BYTES) + sent_bytes)
        setattr(dtls, _DTLS_TX_PACKETS, getattr(dtls, _DTLS_TX_PACKETS) + packets)

    async def _retransmit(self, sequence_number: int) -> None:
        """A NACKed packet again, from this sender's history (RFC 4588 RTX if negotiated)."""
        stored = self._history[sequence_number % RTP_HISTORY_SIZE]
        if stored is None or not self.ready or not self._connected():
            return
        packet = RtpPacket.parse(stored, self._extensions_map)
        if packet.sequence_number != sequence_number:
            return  # overwritten: too old
        if self._rtx_payload_type is not None:
            packet = wrap_rtx(
                packet,
                payload_type=self._rtx_payload_type,
                sequence_number=self._rtx_sequence,
                ssrc=self._rtx_ssrc,
            )
            self._rtx_sequence = (self._rtx_sequence + 1) & 0xFFFF
        assert self._sendto is not None
        data = self._srtp_session.protect(packet.serialize(self._extensions_map))
        self._sendto(data, self._pair.remote_addr)
        self.retransmissions += 1
        dtls = self._dtls
        setattr(dtls, _DTLS_TX_BYTES, getattr(dtls, _DTLS_TX_BYTES) + len(data))
        setattr(dtls, _DTLS_TX_PACKETS, getattr(dtls, _DTLS_TX_PACKETS) + 1)


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
