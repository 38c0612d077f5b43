"""WHIP ingest (RFC 9725) and WHEP egress over aiortc: endpoints, sessions, limits, cleanup.

Endpoints (RFC 9725 section 4; WHEP follows the same shape):
- `POST /whip/{room_id}`: the host's SDP offer (`application/sdp`, Bearer token) ->
  `201 Created`, the SDP answer and `Location: /whip/{room_id}/{session_id}`.
- `DELETE /whip/{room_id}/{session_id}`: the host ends the broadcast.
- `POST /whep/{room_id}`, `DELETE /whep/{room_id}/{session_id}`: a viewer, no credential.
- `PATCH` on a session: 405. ICE is not trickled: the answer carries every candidate
  (RFC 9725 section 4.3.2 lets a server refuse trickle ICE this way).

Lifecycle: a new WHIP session for a live room replaces the old one, and viewers keep
their connections (they wait for the new host's first keyframe). A host whose connection
fails or whose media ends gets `host_reconnect_grace_ms` to come back; after that, or on
its DELETE, or on `end_room`, every viewer of the room is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.exceptions import InternalError, InvalidAccessError, InvalidStateError, OperationError
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from streaming import aiortc_internals
from streaming.relay import Broadcast, ViewerTrack
from streaming.settings import StreamingSettings

logger = logging.getLogger(__name__)

SDP_CONTENT_TYPE = "application/sdp"
# The relay forwards what the host encodes, so host and viewers must agree on a codec.
# VP8 (RFC 7741) and Opus (RFC 7587): every browser sends and plays both.
VIDEO_MIME_TYPE = "video/VP8"
AUDIO_MIME_TYPE = "audio/opus"
VIEWER_RETRY_AFTER_S = 10
# What a malformed offer (or a session closed mid-negotiation) raises inside aiortc.
NEGOTIATION_ERRORS = (
    ValueError,
    LookupError,
    InternalError,
    InvalidAccessError,
    InvalidStateError,
    OperationError,
)


def offer_media_kinds(offer: str) -> list[str]:
    """The offer's media sections, in order; at most one audio and one video, no data."""
    kinds = [line[2:].split(" ", 1)[0] for line in offer.splitlines() if line.startswith("m=")]
    if not kinds:
        raise ValueError("the offer has no media section")
    if any(kind not in ("audio", "video") for kind in kinds) or len(set(kinds)) != len(kinds):
        raise ValueError("the offer must have at most one audio and one video section")
    return kinds


def _codec_preferences(kind: str) -> list[Any]:
    wanted = VIDEO_MIME_TYPE if kind == "video" else AUDIO_MIME_TYPE
    capabilities = RTCRtpSender.getCapabilities(kind).codecs
    return [c for c in capabilities if c.mimeType in (wanted, "video/rtx")]


@dataclass(eq=False)
class _Session:
    session_id: str
    room_id: str
    role: str  # "host" or "viewer"
    peer_connection: RTCPeerConnection
    viewer_tracks: list[ViewerTrack] = field(default_factory=list)
    assemblers: dict[str, aiortc_internals.FrameAssembler] = field(default_factory=dict)
    generation: int = 0
    frames_failed: int = 0
    closed: bool = False
    ending_broadcast: bool = False


@dataclass(eq=False)
class _Room:
    room_id: str
    broadcast: Broadcast
    host: _Session | None = None
    viewers: dict[str, _Session] = field(default_factory=dict)
    host_grace_handle: asyncio.TimerHandle | None = None


class StreamingService:
    """The WHIP/WHEP service the app mounts: `routes`, `end_room`, `room_status`, `close`."""

    def __init__(
        self,
        settings: StreamingSettings,
        authorize_host: Callable[[str, str], Awaitable[bool]],
        room_exists: Callable[[str], Awaitable[bool]],
    ) -> None:
        self.settings = settings
        self._authorize_host = authorize_host
        self._room_exists = room_exists
        self._rooms: dict[str, _Room] = {}
        self._peers_total = 0
        self._tasks: set[asyncio.Future[Any]] = set()
        self._closed = False
        if settings.ice_loopback:
            aiortc_internals.enable_loopback_candidates()

    # --- the interface ---------------------------------------------------------------

    @property
    def routes(self) -> list[BaseRoute]:
        return [
            Route("/whip/{room_id}", self._whip_post, methods=["POST"]),
            Route(
                "/whip/{room_id}/{session_id}",
                self._whip_session,
                methods=["DELETE", "PATCH"],
            ),
            Route("/whep/{room_id}", self._whep_post, methods=["POST"]),
            Route(
                "/whep/{room_id}/{session_id}",
                self._whep_session,
                methods=["DELETE", "PATCH"],
            ),
        ]

    async def end_room(self, room_id: str) -> None:
        room = self._rooms.get(room_id)
        if room is None:
            return
        await self._end_broadcast(room)

    def room_status(self, room_id: str) -> dict[str, Any]:
        room = self._rooms.get(room_id)
        if room is None:
            return {"live": False, "viewers": 0}
        host = room.host
        live = host is not None and host.peer_connection.connectionState == "connected"
        return {
            "live": live,
            "viewers": len(room.viewers),
            "frames_in": room.broadcast.frames_in,
            "keyframe_requests": room.broadcast.keyframe_requests,
        }

    @property
    def peers_total(self) -> int:
        return self._peers_total

    async def close(self) -> None:
        self._closed = True
        for room in list(self._rooms.values()):
            await self._end_broadcast(room)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- HTTP ------------------------------------------------------------------------

    async def _read_offer(self, request: Request) -> str | Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != SDP_CONTENT_TYPE:
            return PlainTextResponse("the offer must be application/sdp\n", status_code=415)
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self._sdp_max):
            return PlainTextResponse("the offer is too large\n", status_code=413)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > self._sdp_max:
                return PlainTextResponse("the offer is too large\n", status_code=413)
        try:
            offer = body.decode("utf-8")
        except UnicodeDecodeError:
            return PlainTextResponse("the offer is not UTF-8\n", status_code=400)
        if not offer.startswith("v=0"):
            return PlainTextResponse("the body is not an SDP offer\n", status_code=400)
        return offer

    @property
    def _sdp_max(self) -> int:
        return self.settings.sdp_bytes_max

    @staticmethod
    def _bearer_token(request: Request) -> str | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return token.strip()

    async def _check_host(self, request: Request, room_id: str) -> Response | None:
        token = self._bearer_token(request)
        if token is None:
            return PlainTextResponse(
                "a Bearer token is required\n",
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="whip"'},
            )
        if not await self._authorize_host(room_id, token):
            return PlainTextResponse("not the host of this room\n", status_code=403)
        return None

    async def _whip_post(self, request: Request) -> Response:
        room_id = request.path_params["room_id"]
        refused = await self._check_host(request, room_id)
        if refused is not None:
            return refused
        offer = await self._read_offer(request)
        if isinstance(offer, Response):
            return offer
        if not await self._room_exists(room_id):
            return PlainTextResponse("no such room\n", status_code=404)
        live = self._rooms.get(room_id)
        # A host replacing its own session takes no new place (it frees the old one).
        replacing = live is not None and live.host is not None
        if self._closed or (self._peers_total >= self.settings.peers_total_max and not replacing):
            return self._busy("the server has no room for another peer")
        room = self._room(room_id)
        session = self._new_session(room_id, "host")
        try:
            answer = await self._negotiate_host(room, session, offer)
        except NEGOTIATION_ERRORS as error:
            await self._close_session(session)
            self._forget_room_if_empty(room)
            return PlainTextResponse(f"cannot use this offer: {error}\n", status_code=400)
        return self._created(request, session, answer)

    async def _whep_post(self, request: Request) -> Response:
        room_id = request.path_params["room_id"]
        offer = await self._read_offer(request)
        if isinstance(offer, Response):
            return offer
        if not await self._room_exists(room_id):
            return PlainTextResponse("no such room\n", status_code=404)
        if self._closed or self._peers_total >= self.settings.peers_total_max:
            return self._busy("the server has no room for another viewer")
        room = self._room(room_id)
        if len(room.viewers) >= self.settings.viewers_per_room_max:
            return self._busy(f"this room is full ({self.settings.viewers_per_room_max} viewers)")
        session = self._new_session(room_id, "viewer")
        room.viewers[session.session_id] = session  # reserve the place before awaiting
        try:
            answer = await self._negotiate_viewer(room, session, offer)
        except NEGOTIATION_ERRORS as error:
            await self._close_session(session)
            return PlainTextResponse(f"cannot use this offer: {error}\n", status_code=400)
        return self._created(request, session, answer)

    async def _whip_session(self, request: Request) -> Response:
        if request.method == "PATCH":
            return self._no_trickle()
        room_id = request.path_params["room_id"]
        refused = await self._check_host(request, room_id)
        if refused is not None:
            return refused
        room = self._rooms.get(room_id)
        session = room.host if room is not None else None
        if (
            room is None
            or session is None
            or session.session_id != request.path_params["session_id"]
        ):
            return PlainTextResponse("no such session\n", status_code=404)
        # RFC 9725 section 4.2: DELETE ends the session; here it ends the broadcast.
        await self._end_broadcast(room)
        return Response(status_code=200)

    async def _whep_session(self, request: Request) -> Response:
        if request.method == "PATCH":
            return self._no_trickle()
        room = self._rooms.get(request.path_params["room_id"])
        session = room.viewers.get(request.path_params["session_id"]) if room else None
        if session is None:
            return PlainTextResponse("no such session\n", status_code=404)
        await self._close_session(session)
        return Response(status_code=200)

    @staticmethod
    def _no_trickle() -> Response:
        return PlainTextResponse(
            "trickle ICE is not supported: the answer has every candidate\n",
            status_code=405,
            headers={"Allow": "DELETE"},
        )

    @staticmethod
    def _busy(reason: str) -> Response:
        return PlainTextResponse(
            reason + "\n",
            status_code=503,
            headers={"Retry-After": str(VIEWER_RETRY_AFTER_S)},
        )

    @staticmethod
    def _created(request: Request, session: _Session, answer: str) -> Response:
        prefix = "whip" if session.role == "host" else "whep"
        return Response(
            answer,
            status_code=201,
            media_type=SDP_CONTENT_TYPE,
            headers={
                "Location": f"/{prefix}/{session.room_id}/{session.session_id}",
                "Cache-Control": "no-store",
            },
        )

    # --- sessions --------------------------------------------------------------------

    def _room(self, room_id: str) -> _Room:
        room = self._rooms.get(room_id)
        if room is None:
            broadcast = Broadcast(
                self.settings.keyframe_request_interval_ms,
                self.settings.keyframe_request_spacing_ms_min,
                on_viewer_failed=lambda track: self._viewer_failed(room_id, track),
            )
            room = _Room(room_id, broadcast)
            self._rooms[room_id] = room
        return room

    def _viewer_failed(self, room_id: str, track: ViewerTrack) -> None:
        room = self._rooms.get(room_id)
        if room is None:
            track.end()
            return
        for session in room.viewers.values():
            if track in session.viewer_tracks:
                self._spawn(self._close_session(session))
                return
        track.end()

    def _forget_room_if_empty(self, room: _Room) -> None:
        if room.host is None and not room.viewers and self._rooms.get(room.room_id) is room:
            if room.host_grace_handle is not None:
                room.host_grace_handle.cancel()
            room.broadcast.close()
            del self._rooms[room.room_id]

    def _new_session(self, room_id: str, role: str) -> _Session:
        servers = [
            RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
            for s in self.settings.ice_servers
        ]
        # An explicit (possibly empty) list: aiortc's default is a public STUN server.
        peer_connection = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        self._peers_total += 1
        session = _Session(secrets.token_urlsafe(16), room_id, role, peer_connection)

        @peer_connection.on("connectionstatechange")
        def on_state() -> None:
            if peer_connection.connectionState in ("failed", "closed"):
                self._spawn(self._peer_lost(session))

        loop = asyncio.get_running_loop()
        loop.call_later(
            self.settings.peer_connect_timeout_ms / 1000, self._check_connected, session
        )
        return session

    def _check_connected(self, session: _Session) -> None:
        if not session.closed and session.peer_connection.connectionState != "connected":
            logger.info("%s %s did not connect in time", session.role, session.session_id)
            self._spawn(self._peer_lost(session))

    async def _negotiate_host(self, room: _Room, session: _Session, offer: str) -> str:
        pc = session.peer_connection
        transceivers = {
            kind: pc.addTransceiver(kind, direction="recvonly") for kind in offer_media_kinds(offer)
        }
        for kind, transceiver in transceivers.items():
            transceiver.setCodecPreferences(_codec_preferences(kind))
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        used = list(transceivers.values())

        # From here on the session is the room's host; the previous one steps aside.
        previous = room.host
        if room.host_grace_handle is not None:
            room.host_grace_handle.cancel()
            room.host_grace_handle = None
        session.generation = room.broadcast.attach_host(
            self._keyframe_requester(session, transceivers.get("video"))
        )
        room.host = session
        if previous is not None:
            await self._close_session(previous)
        for transceiver in used:
            self._tap_host(room, session, transceiver)

        await pc.setLocalDescription(await pc.createAnswer())
        return str(pc.localDescription.sdp)

    def _keyframe_requester(
        self, session: _Session, video: RTCRtpTransceiver | None
    ) -> Callable[[], None]:
        receiver: RTCRtpReceiver | None = None if video is None else video.receiver

        def request() -> None:
            assembler = session.assemblers.get("video")
            if (
                receiver is None
                or assembler is None
                or assembler.media_ssrc is None
                or session.closed
            ):
                return  # no video packet yet: nothing to aim the PLI at
            # The assembler saw the main SSRC (RTX is unwrapped before it): Chrome
            # ignores a PLI aimed at its retransmission SSRC.
            self._spawn(
                aiortc_internals.send_picture_loss_indication(receiver, assembler.media_ssrc)
            )

        return request

    def _tap_host(self, room: _Room, session: _Session, transceiver: RTCRtpTransceiver) -> None:
        broadcast = room.broadcast
        generation = session.generation

        def sink(frame: aiortc_internals.EncodedFrame) -> None:
            # Called from aiortc's receive path: an exception here would fail the host's
            # transport, so a frame the relay cannot handle is logged and dropped.
            try:
                broadcast.push(frame, generation)
            except Exception:
                session.frames_failed += 1
                if session.frames_failed == 1 or session.frames_failed % 1000 == 0:
                    logger.exception(
                        "host %s: the relay failed on a frame (%d so far); it is dropped",
                        session.session_id,
                        session.frames_failed,
                    )

        assembler = aiortc_internals.tap_encoded_frames(transceiver.receiver, sink)
        session.assemblers[transceiver.kind] = assembler
        track = transceiver.receiver.track
        if track is not None:
            self._spawn(self._watch_host_track(session, track))

    async def _watch_host_track(self, session: _Session, track: MediaStreamTrack) -> None:
        # With the tap installed the receiver never decodes, so its track yields nothing
        # until the receiver stops (RTCP BYE, DTLS close, failure): then the media ended.
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()
        await self._peer_lost(session)

    async def _negotiate_viewer(self, room: _Room, session: _Session, offer: str) -> str:
        pc = session.peer_connection
        broadcast = room.broadcast
        for kind in offer_media_kinds(offer):
            queue_max = (
                self.settings.viewer_video_queue_frames_max
                if kind == "video"
                else self.settings.viewer_audio_queue_frames_max
            )
            track = ViewerTrack(kind, queue_max, broadcast.viewer_wants_keyframe)
            transceiver = pc.addTransceiver(track, direction="sendonly")
            transceiver.setCodecPreferences(_codec_preferences(kind))
            aiortc_internals.on_keyframe_request(
                transceiver.sender, broadcast.viewer_wants_keyframe
            )
            if self.settings.viewer_direct_send:
                # Frames go out from the broadcast's push, not from a task per viewer.
                track.attach_sender(
                    aiortc_internals.DirectRtpSender(transceiver.sender, track.sender_started)
                )
            session.viewer_tracks.append(track)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        if session.closed:
            raise ValueError("the session closed during negotiation")
        for track in session.viewer_tracks:
            broadcast.add_viewer_track(track)
        broadcast.viewer_wants_keyframe()
        return str(pc.localDescription.sdp)

    async def _peer_lost(self, session: _Session) -> None:
        """A peer failed, closed or went silent: clean up; a host gets a grace period."""
        if session.closed:
            return
        room = self._rooms.get(session.room_id)
        await self._close_session(session)
        if room is None or session.role != "host" or room.host is not None:
            return
        if not room.viewers:
            self._forget_room_if_empty(room)
            return
        loop = asyncio.get_running_loop()
        room.host_grace_handle = loop.call_later(
            self.settings.host_reconnect_grace_ms / 1000,
            lambda: self._spawn(self._grace_over(room)),
        )

    async def _grace_over(self, room: _Room) -> None:
        room.host_grace_handle = None
        if room.host is None:
            await self._end_broadcast(room)

    async def _close_session(self, session: _Session) -> None:
        if session.closed:
            return
        session.closed = True
        self._peers_total -= 1
        assert self._peers_total >= 0
        room = self._rooms.get(session.room_id)
        if room is not None:
            if session.role == "host" and room.host is session:
                room.host = None
                room.broadcast.detach_host(session.generation)
            if session.role == "viewer":
                room.viewers.pop(session.session_id, None)
                for track in session.viewer_tracks:
                    room.broadcast.remove_viewer_track(track)
        for track in session.viewer_tracks:
            track.end()
        await session.peer_connection.close()
        if room is not None and session.role == "viewer":
            self._forget_room_if_empty(room)

    async def _end_broadcast(self, room: _Room) -> None:
        """The room's broadcast is over: close the host and every viewer, forget the room."""
        if room.host_grace_handle is not None:
            room.host_grace_handle.cancel()
            room.host_grace_handle = None
        sessions = ([room.host] if room.host else []) + list(room.viewers.values())
        await asyncio.gather(*(self._close_session(s) for s in sessions))
        room.broadcast.close()
        if self._rooms.get(room.room_id) is room:
            del self._rooms[room.room_id]

    def _spawn(self, coroutine: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("streaming task failed", exc_info=task.exception())
