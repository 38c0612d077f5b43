"""aiortc host -> the relay -> aiortc viewers, over real WHIP/WHEP HTTP and loopback ICE."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import av
import pytest
from aiortc.mediastreams import (
    AudioStreamTrack,
    MediaStreamError,
    MediaStreamTrack,
    VideoStreamTrack,
)

from streaming import client
from streaming.aiortc_internals import EncodedFrame, tap_encoded_frames, vp8_frame_is_keyframe
from tests.streaming.conftest import HOST_TOKEN, RunningServer

FRAME_WIDTH = 320
FRAME_HEIGHT = 240


class GeneratedVideo(VideoStreamTrack):
    """Moving gradient frames at 30 fps (aiortc's VideoStreamTrack paces them)."""

    def __init__(self, width: int = FRAME_WIDTH, height: int = FRAME_HEIGHT) -> None:
        super().__init__()
        self.frames = 0
        self.width = width
        self.height = height

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        shade = (self.frames * 7) % 256
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        for index, plane in enumerate(frame.planes):
            value = shade if index == 0 else 128
            plane.update(bytes([value]) * plane.buffer_size)
        frame.pts = pts
        frame.time_base = time_base
        self.frames += 1
        return frame


async def receive_frames(track: MediaStreamTrack, count: int, timeout_s: float) -> list[Any]:
    frames: list[Any] = []

    async def gather() -> None:
        while len(frames) < count:
            frames.append(await track.recv())

    await asyncio.wait_for(gather(), timeout_s)
    return frames


def video_track(session: client.ClientSession) -> MediaStreamTrack:
    return next(t for t in session.tracks if t.kind == "video")


async def test_viewers_receive_and_decode_the_hosts_frames(streaming_server: RunningServer) -> None:
    tracks = [GeneratedVideo(), AudioStreamTrack()]
    host = await client.publish(streaming_server.whip(), HOST_TOKEN, tracks)
    viewers = [await client.play(streaming_server.whep()) for _ in range(3)]
    try:
        for viewer in viewers:
            frames = await receive_frames(video_track(viewer), 10, timeout_s=20)
            assert all(f.width == FRAME_WIDTH and f.height == FRAME_HEIGHT for f in frames)
            audio = next(t for t in viewer.tracks if t.kind == "audio")
            sounds = await receive_frames(audio, 10, timeout_s=10)
            assert all(s.sample_rate == 48000 for s in sounds)
        status = streaming_server.service.room_status("room-1")
        assert status["live"] is True
        assert status["viewers"] == 3
    finally:
        for viewer in viewers:
            await viewer.stop()
        await host.stop()


def count_keyframe_requests(session: client.ClientSession) -> list[int]:
    """Count the PLI/FIR that reach the host's video sender (routed by its main SSRC)."""
    sender = next(
        s for s in session.peer_connection.getSenders() if s.track and s.track.kind == "video"
    )
    calls: list[int] = []
    original = sender._send_keyframe

    def counting() -> None:
        calls.append(1)
        original()

    sender._send_keyframe = counting
    return calls


async def test_a_late_viewer_starts_at_a_keyframe(streaming_server: RunningServer) -> None:
    host = await client.publish(streaming_server.whip(), HOST_TOKEN, [GeneratedVideo()])
    requests = count_keyframe_requests(host)
    early = await client.play(streaming_server.whep(), kinds=("video",))
    late: client.ClientSession | None = None
    try:
        await receive_frames(video_track(early), 30, timeout_s=20)
        requests_before = len(requests)
        late = await client.play(streaming_server.whep(), kinds=("video",))
        # Look at the late viewer's encoded frames (before any await, so before its
        # receiver starts): the first must be a keyframe, and a fresh decoder must decode
        # every one of them.
        encoded: list[EncodedFrame] = []
        receiver = late.peer_connection.getReceivers()[0]
        tap_encoded_frames(receiver, encoded.append)
        for _ in range(200):
            if len(encoded) >= 10:
                break
            await asyncio.sleep(0.05)
        assert len(encoded) >= 10
        assert encoded[0].keyframe, "the late viewer's first frame must be a keyframe"
        assert vp8_frame_is_keyframe(encoded[0].data)
        decoder = av.CodecContext.create("libvpx", "r")
        decoded = [f for e in encoded for f in decoder.decode(av.Packet(e.data))]
        assert len(decoded) == len(encoded)
        assert decoded[0].width == FRAME_WIDTH
        assert len(requests) > requests_before, "the late viewer's PLI must reach the host"
        # The early viewer is unaffected: it keeps receiving.
        await receive_frames(video_track(early), 5, timeout_s=10)
    finally:
        for session in (late, early, host):
            if session is not None:
                await session.stop()


async def test_the_host_leaving_ends_the_viewers_tracks(streaming_server: RunningServer) -> None:
    host = await client.publish(streaming_server.whip(), HOST_TOKEN, [GeneratedVideo()])
    viewers = [await client.play(streaming_server.whep(), kinds=("video",)) for _ in range(2)]
    try:
        for viewer in viewers:
            await receive_frames(video_track(viewer), 3, timeout_s=20)
        await host.stop()  # DELETE on the WHIP session: the broadcast is over

        async def until_ended(track: MediaStreamTrack) -> None:
            with contextlib.suppress(MediaStreamError):
                while True:
                    await track.recv()

        await asyncio.wait_for(
            asyncio.gather(*(until_ended(video_track(v)) for v in viewers)), timeout=15
        )
        assert streaming_server.service.room_status("room-1") == {"live": False, "viewers": 0}
        assert streaming_server.service.peers_total == 0
    finally:
        for viewer in viewers:
            await viewer.peer_connection.close()


async def test_the_host_reconnects_without_viewers_reconnecting(
    streaming_server: RunningServer,
) -> None:
    first = await client.publish(streaming_server.whip(), HOST_TOKEN, [GeneratedVideo()])
    viewer = await client.play(streaming_server.whep(), kinds=("video",))
    second: client.ClientSession | None = None
    try:
        await receive_frames(video_track(viewer), 5, timeout_s=20)
        # The host's browser reloads: its old connection just goes away, a new one comes.
        await first.peer_connection.close()
        # The new camera has another size, so the viewer's frames tell the hosts apart.
        second = await client.publish(
            streaming_server.whip(), HOST_TOKEN, [GeneratedVideo(width=160, height=120)]
        )
        frames = await receive_frames(video_track(viewer), 60, timeout_s=20)
        assert viewer.peer_connection.connectionState == "connected"
        assert (frames[-1].width, frames[-1].height) == (160, 120)
        status = streaming_server.service.room_status("room-1")
        assert status["live"] is True
        assert status["viewers"] == 1
        assert streaming_server.service.peers_total == 2
    finally:
        await viewer.stop()
        if second is not None:
            await second.stop()


async def test_a_viewer_that_vanishes_is_cleaned_up(streaming_server: RunningServer) -> None:
    host = await client.publish(streaming_server.whip(), HOST_TOKEN, [GeneratedVideo()])
    viewer = await client.play(streaming_server.whep(), kinds=("video",))
    try:
        await receive_frames(video_track(viewer), 3, timeout_s=20)
        assert streaming_server.service.room_status("room-1")["viewers"] == 1
        await viewer.peer_connection.close()  # no DELETE: the peer just goes away
        for _ in range(150):
            if streaming_server.service.room_status("room-1")["viewers"] == 0:
                break
            await asyncio.sleep(0.1)
        assert streaming_server.service.room_status("room-1")["viewers"] == 0
        assert streaming_server.service.peers_total == 1
    finally:
        await host.stop()


async def test_end_room_closes_host_and_viewers(streaming_server: RunningServer) -> None:
    host = await client.publish(streaming_server.whip(), HOST_TOKEN, [GeneratedVideo()])
    viewer = await client.play(streaming_server.whep(), kinds=("video",))
    try:
        await receive_frames(video_track(viewer), 3, timeout_s=20)
        await streaming_server.service.end_room("room-1")
        assert streaming_server.service.room_status("room-1") == {"live": False, "viewers": 0}
        assert streaming_server.service.peers_total == 0
        with pytest.raises(MediaStreamError):
            await asyncio.wait_for(receive_frames(video_track(viewer), 1000, 15), 16)
    finally:
        await viewer.peer_connection.close()
        await host.peer_connection.close()


async def test_a_host_that_vanishes_ends_the_broadcast_after_the_grace_period(
    streaming_server: RunningServer,
) -> None:
    host = await client.publish(streaming_server.whip(), HOST_TOKEN, [GeneratedVideo()])
    viewer = await client.play(streaming_server.whep(), kinds=("video",))
    try:
        await receive_frames(video_track(viewer), 3, timeout_s=20)
        await host.peer_connection.close()  # no DELETE: the host's network is gone
        await asyncio.sleep(0.5)
        # Within the grace period the viewer stays, waiting for the host to come back.
        assert streaming_server.service.room_status("room-1")["viewers"] == 1
        assert streaming_server.service.room_status("room-1")["live"] is False
        grace_s = streaming_server.settings.host_reconnect_grace_ms / 1000
        with pytest.raises(MediaStreamError):
            await asyncio.wait_for(receive_frames(video_track(viewer), 10_000, 60), grace_s + 10)
        assert streaming_server.service.peers_total == 0
    finally:
        await viewer.peer_connection.close()
