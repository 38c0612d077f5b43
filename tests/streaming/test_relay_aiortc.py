"""aiortc host -> the relay -> aiortc viewers, over real WHIP/WHEP HTTP and loopback ICE."""

from __future__ import annotations

import asyncio

import av
from aiortc.mediastreams import MediaStreamTrack, VideoStreamTrack

from streaming import client
from tests.streaming.conftest import HOST_TOKEN, RunningServer

FRAME_WIDTH = 320
FRAME_HEIGHT = 240


class GeneratedVideo(VideoStreamTrack):
    """Moving gradient frames at 30 fps (aiortc's VideoStreamTrack paces them)."""

    def __init__(self) -> None:
        super().__init__()
        self.frames = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        shade = (self.frames * 7) % 256
        frame = av.VideoFrame(FRAME_WIDTH, FRAME_HEIGHT, "yuv420p")
        for index, plane in enumerate(frame.planes):
            value = shade if index == 0 else 128
            plane.update(bytes([value]) * plane.buffer_size)
        frame.pts = pts
        frame.time_base = time_base
        self.frames += 1
        return frame


async def receive_frames(
    track: MediaStreamTrack, count: int, timeout_s: float
) -> list[av.VideoFrame]:
    frames: list[av.VideoFrame] = []

    async def gather() -> None:
        while len(frames) < count:
            frames.append(await track.recv())

    await asyncio.wait_for(gather(), timeout_s)
    return frames


def video_track(session: client.ClientSession) -> MediaStreamTrack:
    return next(t for t in session.tracks if t.kind == "video")


async def test_viewers_receive_and_decode_the_hosts_frames(streaming_server: RunningServer) -> None:
    host = await client.publish(streaming_server.whip(), HOST_TOKEN, [GeneratedVideo()])
    viewers = [await client.play(streaming_server.whep(), kinds=("video",)) for _ in range(3)]
    try:
        for viewer in viewers:
            frames = await receive_frames(video_track(viewer), 10, timeout_s=20)
            assert all(f.width == FRAME_WIDTH and f.height == FRAME_HEIGHT for f in frames)
        status = streaming_server.service.room_status("room-1")
        assert status["live"] is True
        assert status["viewers"] == 3
    finally:
        for viewer in viewers:
            await viewer.stop()
        await host.stop()
