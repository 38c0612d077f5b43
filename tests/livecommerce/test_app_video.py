"""Video inside the whole app: WHIP takes the hub's host credential, ending a room ends it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from aiortc.mediastreams import MediaStreamError

from streaming import client
from tests.livecommerce.server import running_server
from tests.streaming.test_relay_aiortc import GeneratedVideo, receive_frames, video_track


async def test_whip_uses_the_room_credential_and_room_end_stops_the_video(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        room_id, host_token = await server.hub.create_room("Video room", "Mia")
        whip = f"{server.http}/whip/{room_id}"
        with pytest.raises(client.SignalingError) as refused:
            await client.publish(whip, "not-the-credential", [GeneratedVideo()])
        assert refused.value.status_code in (401, 403)
        with pytest.raises(client.SignalingError) as missing:
            await client.publish(f"{server.http}/whip/no-such-room", host_token, [GeneratedVideo()])
        # No room has no host: the credential check answers first.
        assert missing.value.status_code == 403

        host = await client.publish(whip, host_token, [GeneratedVideo()])
        viewer = await client.play(f"{server.http}/whep/{room_id}", kinds=("video",))
        try:
            frames = await receive_frames(video_track(viewer), 5, timeout_s=20)
            assert all(frame.width == 320 for frame in frames)
            async with httpx.AsyncClient() as http:
                ended = await http.post(
                    f"{server.http}/api/rooms/{room_id}/host",
                    headers={"authorization": f"Bearer {host_token}"},
                    json={"type": "host.end/v1"},
                )
            assert ended.status_code == 200
            with pytest.raises(MediaStreamError):
                await asyncio.wait_for(receive_frames(video_track(viewer), 10_000, 20), 25)
            assert server.app.state.video.room_status(room_id)["live"] is False
            with pytest.raises(client.SignalingError) as after:
                await client.play(f"{server.http}/whep/{room_id}", kinds=("video",))
            assert after.value.status_code == 404
        finally:
            await viewer.peer_connection.close()
            await host.peer_connection.close()
