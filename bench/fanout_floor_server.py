"""The floor for the fan-out benchmark: no framework, just `transport.write(frame)` per socket.

Not a WebSocket server anyone should run: a bare uvloop protocol that answers any
`GET /ws/...` with a 101 (no key check, no pings, ignores what clients send), and on
`POST /api/rooms/{id}/host` with a `host.pin/v1` body frames one `pin/v1` event and writes the
same bytes to every socket. What it costs per delivery is what the kernel and the event loop
cost on this machine; a real server cannot go below it.

Run: python bench/fanout_floor_server.py --port P (the benchmark does this).
"""

from __future__ import annotations

import argparse
import asyncio
import time

import msgspec

HEADERS_BYTES_MAX = 64 * 1024
BODY_BYTES_MAX = 16 * 1024

viewers: set[asyncio.Transport] = set()
sequence = 0


def text_frame(payload: bytes) -> bytes:
    length = len(payload)
    if length < 126:
        return bytes((0x81, length)) + payload
    if length < 1 << 16:
        return bytes((0x81, 126)) + length.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + length.to_bytes(8, "big") + payload


def response(status: str, body: bytes) -> bytes:
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode()
        + body
    )


class Floor(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.upgraded = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        viewers.discard(self.transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        if self.upgraded:
            return  # pongs and anything else a viewer sends are ignored
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > HEADERS_BYTES_MAX:
                    self.transport.abort()  # type: ignore[union-attr]
                return
            head = self.buffer[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = min(int(value), BODY_BYTES_MAX)
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            self.handle(head.split(" ", 2), body)
            if self.upgraded:
                return

    def handle(self, request_line: list[str], body: bytes) -> None:
        global sequence
        transport = self.transport
        assert transport is not None
        method, path = request_line[0], request_line[1]
        if method == "GET" and path.startswith("/ws/"):
            transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
                + text_frame(b'{"type":"welcome/v1"}')
            )
            self.upgraded = True
            viewers.add(transport)
        elif method == "POST" and path == "/api/rooms":
            transport.write(response("201 Created", b'{"room_id":"floor","host_token":"floor"}'))
        elif method == "POST" and path.endswith("/host"):
            command = msgspec.json.decode(body)
            sequence += 1
            event = {"seq": sequence, "type": "pin/v1", "ts_ms": time.time_ns() // 1_000_000}
            event["product"] = command.get("product")
            frame = text_frame(msgspec.json.encode(event))
            for viewer in viewers:
                viewer.write(frame)
            transport.write(response("200 OK", b'{"ok":true}'))
        else:
            transport.write(response("404 Not Found", b"{}"))


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Floor, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(port))
    else:
        uvloop.run(serve(port))


if __name__ == "__main__":
    main()
