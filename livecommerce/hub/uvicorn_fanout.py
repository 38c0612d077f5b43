"""A uvicorn WebSocket protocol that lets the hub write pre-framed bytes to the socket.

The ASGI send path costs a coroutine, a message dict and a frame encoding per message per
client. A broadcast is the same bytes for every viewer (no compression is negotiated), so
the hub frames it once and writes it straight to each transport. This module is the only
place that knows uvicorn's protocol internals; it adds one scope extension,
`livecommerce.fanout`, holding a `TransportChannel`. Without it (another ASGI server, or
Starlette's TestClient) the hub falls back to the portable ASGI path.
"""

from __future__ import annotations

import socket
from asyncio import BaseTransport
from typing import Any, ClassVar

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request
from websockets.protocol import State

FANOUT_EXTENSION = "livecommerce.fanout"
# After a close frame the peer has this long to answer before the socket is cut.
CLOSE_TIMEOUT_S = 2.0


class TransportChannel:
    """Synchronous writes of complete frames to one client's transport."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: FanoutWebSocketProtocol) -> None:
        self._protocol = protocol

    @property
    def open(self) -> bool:
        protocol = self._protocol
        return (
            protocol.handshake_complete
            and not protocol.close_sent
            and not protocol.disconnected
            and protocol.conn.state is State.OPEN
        )

    def buffered_bytes(self) -> int:
        return self._protocol.transport.get_write_buffer_size()

    def write(self, frame: bytes) -> None:
        """Write one whole frame (RFC 6455 §5.2); frames never interleave on the event loop."""
        if self.open:
            self._protocol.transport.write(frame)

    def close(self, code: int, reason: str) -> None:
        """Send a close frame now, whatever the buffer holds, and cut the socket soon after.

        The ASGI close would wait for the transport to become writable, which a client that
        stopped reading never lets happen.
        """
        protocol = self._protocol
        if not self.open:
            return
        protocol.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        protocol.conn.send_close(code, reason)
        protocol.transport.write(b"".join(protocol.conn.data_to_send()))
        protocol.close_sent = True
        if protocol.read_paused:
            protocol.read_paused = False
            protocol.transport.resume_reading()
        protocol.close_timer = protocol.loop.call_later(CLOSE_TIMEOUT_S, protocol.transport.abort)


class FanoutWebSocketProtocol(WebSocketsSansIOProtocol):
    # The kernel's send buffer for a WebSocket, fixed. Left to autotuning it grows to
    # net.ipv4.tcp_wmem's maximum (4 MiB here) for a client that stopped reading, and the
    # hub's byte limit, which counts only what waits in the process, would never trip:
    # such a client would sit on megabytes until keepalive noticed. Linux doubles the value
    # given for its own bookkeeping. None leaves the kernel's default.
    socket_send_buffer_bytes: ClassVar[int | None] = None

    def connection_made(self, transport: BaseTransport) -> None:
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if self.socket_send_buffer_bytes is not None and sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.socket_send_buffer_bytes)

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope: dict[str, Any] | None = getattr(self, "scope", None)  # absent when refused
        if scope is not None and not self.conn.extensions:
            scope["extensions"][FANOUT_EXTENSION] = TransportChannel(self)
