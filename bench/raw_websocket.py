"""A cheap client WebSocket for the benchmarks: one process holds thousands of them.

`RawClientSocket` is a plain `asyncio.Protocol`. It sends the HTTP upgrade by hand, then
splits the server's frames (RFC 6455 §5.2; servers never mask) and hands each complete
text frame to `text(buffer, start, end, frame_bytes)` without copying or decoding it, so a subclass can
skip the frames it does not care about for the price of a `find`. Pings get a pong, a close
frame closes the transport (`close_code` keeps its code). `masked_frame` masks with a fresh
random key per frame, as a browser would (the XOR runs in websockets' C speedups);
`send_frame` writes one, made ahead of time if the caller likes.

Fragmented messages are not reassembled: the servers measured here send every message in
one frame.
"""

from __future__ import annotations

import asyncio
import os

try:
    from websockets.speedups import apply_mask
except ImportError:  # websockets without its C extension
    from websockets.utils import apply_mask

HANDSHAKE_BYTES_MAX = 16 * 1024
OPCODE_TEXT = 0x1
OPCODE_CLOSE = 0x8
OPCODE_PING = 0x9
OPCODE_PONG = 0xA


def upgrade_request(host: str, port: int, path: str) -> bytes:
    """The HTTP/1.1 upgrade request (the fixed key is fine: the answer is not checked)."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """One final client frame: FIN, `opcode`, masked `payload`."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        header = bytes((0x80 | opcode, 0x80 | size))
    elif size < 65536:
        header = bytes((0x80 | opcode, 0xFE)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0xFF)) + size.to_bytes(8, "big")
    return header + mask + apply_mask(payload, mask)


class RawClientSocket(asyncio.Protocol):
    """Subclasses override `text`; `ready` resolves True once upgraded, False if the
    connection failed or closed first."""

    def __init__(self, request: bytes, ready: asyncio.Future[bool]) -> None:
        self.request = request
        self.ready = ready
        self.upgraded = False
        self.buffer = b""
        self.close_code: int | None = None
        self.transport: asyncio.Transport | None = None

    def text(self, buffer: bytes, start: int, end: int, frame_bytes: int) -> None:
        """A complete text frame's payload is `buffer[start:end]`; `frame_bytes` counts its
        header too (what it took on the wire)."""

    def send_frame(self, frame: bytes) -> None:
        """Write a whole client frame (`masked_frame`)."""
        self.transport.write(frame)  # type: ignore[union-attr]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport
        transport.write(self.request)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_result(False)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > HANDSHAKE_BYTES_MAX:
                    self.transport.abort()  # type: ignore[union-attr]
                self.buffer = buffer
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self.transport.abort()  # type: ignore[union-attr]
                return
            self.upgraded = True
            if not self.ready.done():
                self.ready.set_result(True)
            buffer = buffer[end + 4 :]
        position = 0
        size = len(buffer)
        while size - position >= 2:
            length = buffer[position + 1] & 0x7F
            start = position + 2
            if length == 126:
                if size - position < 4:
                    break
                length = int.from_bytes(buffer[position + 2 : position + 4], "big")
                start = position + 4
            elif length == 127:
                if size - position < 10:
                    break
                length = int.from_bytes(buffer[position + 2 : position + 10], "big")
                start = position + 10
            end = start + length
            if end > size:
                break
            opcode = buffer[position] & 0x0F
            if opcode == OPCODE_TEXT:
                self.text(buffer, start, end, end - position)
            elif opcode == OPCODE_PING:
                self.transport.write(masked_frame(OPCODE_PONG, buffer[start:end]))  # type: ignore[union-attr]
            elif opcode == OPCODE_CLOSE:
                self.close_code = (
                    int.from_bytes(buffer[start : start + 2], "big") if length >= 2 else 1005
                )
                self.transport.close()  # type: ignore[union-attr]
                self.buffer = b""
                return
            position = end
        self.buffer = buffer[position:] if position < size else b""
