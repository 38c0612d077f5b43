"""Streaming settings: every limit, with its unit in its name, validated once."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class IceServer:
    """One STUN or TURN server (W3C WebRTC `RTCIceServer`), e.g. `turn:turn.example:3478`."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("an ICE server needs at least one URL")
        for url in self.urls:
            if not url.startswith(("stun:", "stuns:", "turn:", "turns:")):
                raise ValueError(f"ICE server URL must be stun:, stuns:, turn: or turns:: {url}")


@dataclass(frozen=True, slots=True)
class StreamingSettings:
    """Limits and network settings of the WHIP/WHEP service.

    `peers_per_room_max` counts the host and the viewers of one room (the host always has
    its place: viewers get `peers_per_room_max - 1`). `peers_total_max` counts every peer
    connection in the process. Empty `ice_servers` (the default) means host candidates
    only, which is right on loopback and on a server with a public address; behind NAT,
    list a STUN server and a TURN server (see docs/video.md).
    """

    peers_per_room_max: int = 201
    peers_total_max: int = 1_000
    # 15 frames is half a second at 30 fps: past that a viewer skips to a keyframe
    # rather than falling further behind the host.
    viewer_video_queue_frames_max: int = 15
    viewer_audio_queue_frames_max: int = 50
    # Repeat a keyframe request this often while a viewer waits; never send two closer
    # than the spacing (a join wave must not turn the stream into keyframes).
    keyframe_request_interval_ms: int = 500
    keyframe_request_spacing_ms_min: int = 50
    sdp_bytes_max: int = 32_768
    peer_connect_timeout_ms: int = 15_000
    host_reconnect_grace_ms: int = 15_000
    ice_servers: tuple[IceServer, ...] = field(default_factory=tuple)
    # Gather 127.0.0.1 candidates too (aioice skips them): tests and one-machine demos.
    ice_loopback: bool = False
    # Send viewers' RTP from the relay's fan-out (aiortc_internals.DirectRtpSender). False
    # uses aiortc's own sender task per viewer: about twice the CPU per viewer, kept as
    # a fallback and as the benchmark's baseline.
    viewer_direct_send: bool = True

    def __post_init__(self) -> None:
        if self.peers_per_room_max < 2:
            raise ValueError("peers_per_room_max must leave room for a host and one viewer")
        if self.peers_total_max < 1:
            raise ValueError("peers_total_max must be at least 1")
        if self.viewer_video_queue_frames_max < 1 or self.viewer_audio_queue_frames_max < 1:
            raise ValueError("viewer queues must hold at least one frame")
        if self.keyframe_request_interval_ms < 1:
            raise ValueError("keyframe_request_interval_ms must be positive")
        if not 0 <= self.keyframe_request_spacing_ms_min <= self.keyframe_request_interval_ms:
            raise ValueError("keyframe_request_spacing_ms_min must be within the interval")
        if self.sdp_bytes_max < 256:
            raise ValueError("sdp_bytes_max is too small for any offer")
        if self.peer_connect_timeout_ms < 1 or self.host_reconnect_grace_ms < 0:
            raise ValueError("timeouts must be positive")

    @property
    def viewers_per_room_max(self) -> int:
        return self.peers_per_room_max - 1
