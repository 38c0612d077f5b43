"""WHIP/WHEP over HTTP: status codes, headers and limits (RFC 9725 sections 4 and 6)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from streaming import StreamingSettings
from streaming.service import offer_media_kinds
from tests.streaming.conftest import HOST_TOKEN, RunningServer, start_server, stop_server


async def make_offer(direction: str, kinds: tuple[str, ...] = ("video", "audio")) -> str:
    peer_connection = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for kind in kinds:
        peer_connection.addTransceiver(kind, direction=direction)
    await peer_connection.setLocalDescription(await peer_connection.createOffer())
    sdp: str = peer_connection.localDescription.sdp
    await peer_connection.close()
    return sdp


SDP_HEADERS = {"Content-Type": "application/sdp"}
HOST_HEADERS = {**SDP_HEADERS, "Authorization": f"Bearer {HOST_TOKEN}"}


async def test_whip_answers_201_with_sdp_and_location(streaming_server: RunningServer) -> None:
    offer = await make_offer("sendonly")
    async with httpx.AsyncClient(base_url=streaming_server.base_url) as http:
        response = await http.post("/whip/room-1", content=offer, headers=HOST_HEADERS)
        assert response.status_code == 201
        assert response.headers["content-type"].startswith("application/sdp")
        assert response.text.startswith("v=0")
        assert "a=recvonly" in response.text
        assert "VP8/90000" in response.text
        assert "H264" not in response.text  # the relay cannot transcode: one codec
        location = response.headers["location"]
        assert location.startswith("/whip/room-1/")
        # trickle ICE is refused clearly (RFC 9725 section 4.3.2)
        patch = await http.patch(location, headers=HOST_HEADERS)
        assert patch.status_code == 405
        # DELETE needs the host's credential too
        assert (await http.delete(location)).status_code == 401
        assert (await http.delete(location, headers=HOST_HEADERS)).status_code == 200
        assert (await http.delete(location, headers=HOST_HEADERS)).status_code == 404
    assert streaming_server.service.peers_total == 0


async def test_whip_refuses_bad_requests(streaming_server: RunningServer) -> None:
    offer = await make_offer("sendonly")
    async with httpx.AsyncClient(base_url=streaming_server.base_url) as http:
        no_token = await http.post("/whip/room-1", content=offer, headers=SDP_HEADERS)
        assert no_token.status_code == 401
        assert no_token.headers["www-authenticate"].startswith("Bearer")
        wrong = {**SDP_HEADERS, "Authorization": "Bearer nope"}
        assert (await http.post("/whip/room-1", content=offer, headers=wrong)).status_code == 403
        json_body = {**HOST_HEADERS, "Content-Type": "application/json"}
        response = await http.post("/whip/room-1", content=offer, headers=json_body)
        assert response.status_code == 415
        unknown = await http.post("/whip/no-such-room", content=offer, headers=HOST_HEADERS)
        assert unknown.status_code == 404
        huge = offer + "a=x-padding:" + "x" * streaming_server.settings.sdp_bytes_max + "\r\n"
        response = await http.post("/whip/room-1", content=huge, headers=HOST_HEADERS)
        assert response.status_code == 413
        garbage = await http.post("/whip/room-1", content="hello", headers=HOST_HEADERS)
        assert garbage.status_code == 400
        data_only = offer.replace("m=video", "m=application")
        response = await http.post("/whip/room-1", content=data_only, headers=HOST_HEADERS)
        assert response.status_code == 400
    assert streaming_server.service.peers_total == 0
    assert streaming_server.service.room_status("room-1") == {"live": False, "viewers": 0}


async def test_whep_viewer_cap_answers_503_when_full() -> None:
    running = await start_server(
        StreamingSettings(peers_per_room_max=3, peers_total_max=3, ice_loopback=True)
    )
    try:
        offer = await make_offer("recvonly")
        async with httpx.AsyncClient(base_url=running.base_url) as http:
            first = await http.post("/whep/room-1", content=offer, headers=SDP_HEADERS)
            second = await http.post("/whep/room-1", content=offer, headers=SDP_HEADERS)
            assert first.status_code == second.status_code == 201
            assert "a=sendonly" in first.text
            assert first.headers["location"].startswith("/whep/room-1/")
            full = await http.post("/whep/room-1", content=offer, headers=SDP_HEADERS)
            assert full.status_code == 503
            assert "full" in full.text
            assert full.headers["retry-after"].isdigit()
            # The room's cap is 2 viewers; the process cap (3 peers) is next.
            other = await http.post("/whep/room-2", content=offer, headers=SDP_HEADERS)
            assert other.status_code == 201
            total = await http.post("/whep/room-2", content=offer, headers=SDP_HEADERS)
            assert total.status_code == 503
            assert running.service.room_status("room-1")["viewers"] == 2
            # Leaving frees a place.
            assert (await http.delete(first.headers["location"])).status_code == 200
            again = await http.post("/whep/room-1", content=offer, headers=SDP_HEADERS)
            assert again.status_code == 201
            assert (
                await http.post("/whep/nope", content=offer, headers=SDP_HEADERS)
            ).status_code == 404
    finally:
        await stop_server(running)
    assert running.service.peers_total == 0


async def test_a_peer_that_never_connects_is_dropped() -> None:
    running = await start_server(StreamingSettings(ice_loopback=True, peer_connect_timeout_ms=500))
    try:
        offer = await make_offer("recvonly")  # its peer connection is already closed
        async with httpx.AsyncClient(base_url=running.base_url) as http:
            response = await http.post("/whep/room-1", content=offer, headers=SDP_HEADERS)
        assert response.status_code == 201
        assert running.service.peers_total == 1
        for _ in range(50):
            if running.service.peers_total == 0:
                break
            await asyncio.sleep(0.1)
        assert running.service.peers_total == 0
        assert running.service.room_status("room-1") == {"live": False, "viewers": 0}
    finally:
        await stop_server(running)


def test_offer_media_kinds() -> None:
    assert offer_media_kinds("v=0\r\nm=audio 9 x\r\nm=video 9 x\r\n") == ["audio", "video"]


@pytest.mark.parametrize(
    "offer", ["v=0\r\n", "v=0\r\nm=video 9\r\nm=video 9\r\n", "v=0\r\nm=application 9\r\n"]
)
def test_offer_media_kinds_refuses(offer: str) -> None:
    with pytest.raises(ValueError, match="offer"):
        offer_media_kinds(offer)
