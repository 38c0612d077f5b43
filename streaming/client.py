"""A WHIP/WHEP client on aiortc, for tests, benchmarks and tools (not for the browser).

The browser's client is `static/js/webrtc.js`; this one mirrors it: one HTTP POST with
the whole offer (no trickle ICE), the answer back, DELETE on the `Location` to stop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urljoin

import httpx
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

HTTP_TIMEOUT_S = 20.0


@dataclass(eq=False)
class ClientSession:
    """One WHIP or WHEP session: the peer connection, its resource URL, its tracks."""

    peer_connection: RTCPeerConnection
    resource_url: str
    token: str | None = None
    tracks: list[MediaStreamTrack] = field(default_factory=list)

    async def stop(self) -> None:
        """DELETE the session resource (RFC 9725 section 4.2), then close the peer."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as http:
                await http.delete(self.resource_url, headers=headers)
        finally:
            await self.peer_connection.close()


class SignalingError(Exception):
    """The server refused the offer: `status_code` and its text explain why."""

    def __init__(self, status_code: int, text: str) -> None:
        super().__init__(f"{status_code}: {text.strip()}")
        self.status_code = status_code
        self.text = text


async def _exchange(peer_connection: RTCPeerConnection, url: str, token: str | None) -> str:
    await peer_connection.setLocalDescription(await peer_connection.createOffer())
    headers = {"Content-Type": "application/sdp"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as http:
        response = await http.post(
            url, content=peer_connection.localDescription.sdp, headers=headers
        )
    if response.status_code != 201:
        raise SignalingError(response.status_code, response.text)
    await peer_connection.setRemoteDescription(
        RTCSessionDescription(sdp=response.text, type="answer")
    )
    return urljoin(url, response.headers["location"])


async def publish(url: str, token: str, tracks: Sequence[MediaStreamTrack]) -> ClientSession:
    """WHIP: send `tracks` to `url` (e.g. http://127.0.0.1:8000/whip/room-1)."""
    peer_connection = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for track in tracks:
        peer_connection.addTransceiver(track, direction="sendonly")
    try:
        location = await _exchange(peer_connection, url, token)
    except BaseException:
        await peer_connection.close()
        raise
    return ClientSession(peer_connection, location, token, list(tracks))


async def play(url: str, kinds: Sequence[str] = ("video", "audio")) -> ClientSession:
    """WHEP: receive a room from `url`; the remote tracks are in `session.tracks`."""
    peer_connection = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    session = ClientSession(peer_connection, "")

    @peer_connection.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        session.tracks.append(track)

    for kind in kinds:
        peer_connection.addTransceiver(kind, direction="recvonly")
    try:
        session.resource_url = await _exchange(peer_connection, url, None)
    except BaseException:
        await peer_connection.close()
        raise
    return session
