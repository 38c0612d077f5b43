"""streaming/aiortc_internals.py on its own, against aiortc's real receiver and sender.

These tests pin what the module assumes about aiortc 1.16.0's private API: if an
upgrade renames an attribute or changes a code path, they fail here first.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aioice.ice
import pytest
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
)
from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import (
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    RtpPacket,
)

from streaming import aiortc_internals
from streaming.aiortc_internals import (
    EncodedFrame,
    FrameAssembler,
    h264_frame_is_keyframe,
    tap_encoded_frames,
    vp8_frame_is_keyframe,
)

VP8_PAYLOAD_TYPE = 96
# A VP8 frame tag (RFC 6386 section 9.1): bit 0 clear means key frame.
VP8_KEYFRAME = bytes([0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A]) + b"K" * 40
VP8_DELTA = bytes([0x11, 0x02, 0x00]) + b"D" * 40


class FakeTransport:
    """Just enough of RTCDtlsTransport for a receiver or sender that is never started."""

    state = "connected"
    _stats_id = "transport"

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def _send_rtp(self, data: bytes) -> None:
        self.sent.append(data)


def vp8_packets(
    frame: bytes, sequence: int, timestamp: int, size: int = 16, ssrc: int = 1111
) -> list[RtpPacket]:
    """Packetize like a VP8 sender: descriptor with S=1 on the first packet, marker last."""
    chunks = [frame[i : i + size] for i in range(0, len(frame), size)]
    packets = []
    for index, chunk in enumerate(chunks):
        descriptor = VpxPayloadDescriptor(partition_start=int(index == 0), partition_id=0)
        packet = RtpPacket(
            payload_type=VP8_PAYLOAD_TYPE,
            sequence_number=(sequence + index) % 65536,
            timestamp=timestamp % (1 << 32),
            marker=int(index == len(chunks) - 1),
            ssrc=ssrc,
            payload=bytes(descriptor) + chunk,
        )
        packets.append(packet)
    return packets


def depayloaded(packet: RtpPacket) -> RtpPacket:
    _, packet._data = VpxPayloadDescriptor.parse(packet.payload)  # type: ignore[attr-defined]
    return packet


def video_assembler() -> tuple[FrameAssembler, list[EncodedFrame]]:
    frames: list[EncodedFrame] = []
    return FrameAssembler("video", lambda pt: "VP8", frames.append), frames


def test_keyframe_detection() -> None:
    assert vp8_frame_is_keyframe(VP8_KEYFRAME)
    assert not vp8_frame_is_keyframe(VP8_DELTA)
    assert h264_frame_is_keyframe(b"\x00\x00\x00\x01\x67abc\x00\x00\x01\x65xyz")  # SPS, IDR
    assert not h264_frame_is_keyframe(b"\x00\x00\x00\x01\x41abc")  # non-IDR slice


def test_assembler_emits_a_frame_on_its_marker_packet() -> None:
    assembler, frames = video_assembler()
    packets = vp8_packets(VP8_KEYFRAME, sequence=65534, timestamp=1000)  # wraps
    for packet in packets[:-1]:
        assert assembler.add(depayloaded(packet)) == (False, None)
        assert frames == []
    assembler.add(depayloaded(packets[-1]))
    assert frames == [EncodedFrame("video", VP8_KEYFRAME, timestamp=0, keyframe=True)]
    assert assembler.media_ssrc == 1111
    # The next frame follows the marker: emitted with its timestamp relative to the first.
    next_sequence = (packets[-1].sequence_number + 1) % 65536
    for packet in vp8_packets(VP8_DELTA, next_sequence, timestamp=1000 + 3000):
        assembler.add(depayloaded(packet))
    assert frames[-1] == EncodedFrame("video", VP8_DELTA, timestamp=3000, keyframe=False)


def test_assembler_reorders_within_a_frame() -> None:
    assembler, frames = video_assembler()
    packets = vp8_packets(VP8_KEYFRAME, sequence=10, timestamp=5)
    for packet in reversed(packets):
        assembler.add(depayloaded(packet))
    assert [f.data for f in frames] == [VP8_KEYFRAME]


def test_assembler_waits_for_a_keyframe_and_asks_after_loss() -> None:
    assembler, frames = video_assembler()
    # Starting on a delta frame: dropped, and the sender is asked for a keyframe.
    plis = [assembler.add(depayloaded(p))[0] for p in vp8_packets(VP8_DELTA, 0, 0)]
    assert plis[-1] is True
    assert frames == []
    sequence = 100
    for packet in vp8_packets(VP8_KEYFRAME, sequence, 3000):
        assembler.add(depayloaded(packet))
    assert len(frames) == 1
    # A lost packet in the middle of a delta frame: the frame is dropped when the next
    # one starts, and later deltas are dropped until a keyframe.
    last = frames[-1]
    delta = vp8_packets(VP8_DELTA, sequence + 3, 6000)
    for packet in delta[:1] + delta[2:]:
        assembler.add(depayloaded(packet))
    next_sequence = sequence + 3 + len(delta)
    for packet in vp8_packets(VP8_DELTA, next_sequence, 9000):
        assembler.add(depayloaded(packet))
    assert frames[-1] is last
    assert assembler.frames_dropped >= 2
    for packet in vp8_packets(VP8_KEYFRAME, next_sequence + 10, 12000):
        assembler.add(depayloaded(packet))
    assert frames[-1].keyframe
    assert frames[-1].timestamp == 9000


def test_assembler_passes_audio_packets_through() -> None:
    frames: list[EncodedFrame] = []
    assembler = FrameAssembler("audio", lambda pt: "opus", frames.append)
    for index in range(3):
        packet = RtpPacket(payload_type=111, sequence_number=index, timestamp=960 * index)
        packet._data = bytes([index]) * 10  # type: ignore[attr-defined]
        assert assembler.add(packet) == (False, None)
    assert [f.timestamp for f in frames] == [0, 960, 1920]
    assert all(f.keyframe for f in frames)


async def test_tap_takes_frames_from_a_real_receiver_and_never_decodes() -> None:
    receiver = RTCRtpReceiver("video", FakeTransport())
    codecs: dict[int, Any] = receiver._RTCRtpReceiver__codecs  # type: ignore[attr-defined]
    codecs[VP8_PAYLOAD_TYPE] = RTCRtpCodecParameters(
        mimeType="video/VP8", clockRate=90000, payloadType=VP8_PAYLOAD_TYPE
    )
    frames: list[EncodedFrame] = []
    assembler = tap_encoded_frames(receiver, frames.append)
    for packet in vp8_packets(VP8_KEYFRAME, 500, 90000):
        await receiver._handle_rtp_packet(packet, arrival_time_ms=0)
    assert [f.data for f in frames] == [VP8_KEYFRAME]
    assert assembler.frames_emitted == 1
    decoder_queue = receiver._RTCRtpReceiver__decoder_queue  # type: ignore[attr-defined]
    assert decoder_queue.empty(), "the receiver must not decode tapped frames"


async def test_picture_loss_indication_is_aimed_at_the_media_ssrc() -> None:
    transport = FakeTransport()
    receiver = RTCRtpReceiver("video", transport)
    receiver._set_rtcp_ssrc(4242)
    await aiortc_internals.send_picture_loss_indication(receiver, media_ssrc=1111)
    (packet,) = RtcpPacket.parse(transport.sent[0])
    assert isinstance(packet, RtcpPsfbPacket)
    assert packet.fmt == RTCP_PSFB_PLI
    assert (packet.ssrc, packet.media_ssrc) == (4242, 1111)


async def test_keyframe_requests_to_a_sender_reach_the_callback() -> None:
    sender = RTCRtpSender("video", FakeTransport())
    calls: list[int] = []
    aiortc_internals.on_keyframe_request(sender, lambda: calls.append(1))
    pli = RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=sender._ssrc)
    await sender._handle_rtcp_packet(pli)
    assert calls == [1]
    await asyncio.sleep(0)


def test_loopback_candidates_are_gathered_once_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda ipv4, ipv6: ["192.0.2.7"])
    aiortc_internals.enable_loopback_candidates()
    aiortc_internals.enable_loopback_candidates()  # idempotent
    assert aioice.ice.get_host_addresses(True, False) == ["192.0.2.7", "127.0.0.1"]
    assert aioice.ice.get_host_addresses(False, True) == ["192.0.2.7"]


class ParkedTrack(MediaStreamTrack):
    """A track aiortc's sender reads and never gets anything from (DirectRtpSender sends)."""

    kind = "video"

    async def recv(self) -> Any:
        await asyncio.Event().wait()


def vp8_only(transceiver: RTCRtpTransceiver) -> None:
    codecs = RTCRtpSender.getCapabilities("video").codecs
    transceiver.setCodecPreferences([c for c in codecs if c.mimeType in ("video/VP8", "video/rtx")])


@pytest.mark.parametrize("offload", [True, False], ids=["udp-segmentation", "one-by-one"])
async def test_direct_sender_frames_reach_a_real_receiver_and_nacks_are_answered(
    offload: bool,
) -> None:
    aiortc_internals.enable_loopback_candidates()
    sending = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    receiving = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        sender_transceiver = sending.addTransceiver(ParkedTrack(), direction="sendonly")
        vp8_only(sender_transceiver)
        receiver_transceiver = receiving.addTransceiver("video", direction="recvonly")
        vp8_only(receiver_transceiver)
        received: list[EncodedFrame] = []
        tap_encoded_frames(receiver_transceiver.receiver, received.append)
        started: list[bool] = []
        direct = aiortc_internals.DirectRtpSender(sender_transceiver.sender, started.append)
        direct.segmentation_offload = offload
        assert not direct.send_frame([b"too early"], 0), "nothing goes out before the start"

        await sending.setLocalDescription(await sending.createOffer())
        await receiving.setRemoteDescription(sending.localDescription)
        await receiving.setLocalDescription(await receiving.createAnswer())
        await sending.setRemoteDescription(receiving.localDescription)
        for _ in range(200):
            if started:
                break
            await asyncio.sleep(0.05)
        assert started == [True]
        assert direct.ready

        keyframe = VP8_KEYFRAME + bytes(range(256)) * 12  # several RTP packets
        frames = [(keyframe, 1000), (VP8_DELTA, 4000), (VP8_DELTA + b"2", 7000)]
        for picture_id, (data, timestamp) in enumerate(frames):
            payloads = aiortc_internals.packetize("video", data, picture_id)
            assert direct.send_frame(payloads, timestamp)
        for _ in range(100):
            if len(received) == len(frames):
                break
            await asyncio.sleep(0.05)
        assert [f.data for f in received] == [data for data, _ in frames]
        assert [f.timestamp for f in received] == [0, 3000, 6000]
        assert [f.keyframe for f in received] == [True, False, False]

        if offload:  # Linux >= 4.18: one sendmsg per frame
            assert direct.segmentation_offload
            assert direct.send_calls == len(frames)
        else:
            assert direct.send_calls == direct.packets_sent
        stats = await sender_transceiver.sender.getStats()
        (outbound,) = [s for s in stats.values() if s.type == "outbound-rtp"]
        assert outbound.packetsSent == direct.packets_sent > len(frames)

        last = (direct.next_sequence_number - 1) % 65536
        nack = RtcpRtpfbPacket(
            fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=sender_transceiver.sender._ssrc, lost=[last]
        )
        await sender_transceiver.sender._handle_rtcp_packet(nack)
        assert direct.retransmissions == 1
    finally:
        await sending.close()
        await receiving.close()
    assert not direct.send_frame([b"late"], 10000), "nothing goes out after the close"
    assert direct.closed
    assert direct._socket is None, "the duplicated socket is closed"
