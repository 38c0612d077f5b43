"""Room sockets served by the uvicorn protocol itself (livecommerce/hub/uvicorn_fanout.py),
against a real server: keepalive, memory per idle socket, the hand-over of other paths,
and the corners of the WebSocket protocol the ASGI path used to handle."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import socket
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.livecommerce.hub.test_hub_embedded import (
    closed_with,
    create_room,
    join,
    recv,
    recv_type,
)
from tests.livecommerce.server import running_server

HANDSHAKE = (
    "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}"
    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def client_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A masked client frame (RFC 6455 §5.2); the zero mask key leaves the payload as is."""
    assert len(payload) < 126
    return bytes(((0x80 if fin else 0) | opcode, 0x80 | len(payload))) + b"\0\0\0\0" + payload


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Split unmasked server frames (opcode, payload); the data must hold whole frames."""
    frames = []
    while data:
        length = data[1] & 0x7F
        start = 2
        if length == 126:
            length, start = int.from_bytes(data[2:4], "big"), 4
        elif length == 127:
            length, start = int.from_bytes(data[2:10], "big"), 10
        frames.append((data[0] & 0x0F, data[start : start + length]))
        data = data[start + length :]
    return frames


def read_until_closed(sock: socket.socket, timeout_s: float) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(timeout_s)
    received = b""
    while chunk := sock.recv(1 << 16):
        received += chunk
    return received


def open_raw(port: int, path: str, extra: str = "", then: bytes = b"") -> socket.socket:
    """Handshake (and `then`, in the same write); returns after the 101 response."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(HANDSHAKE.format(path=path, extra=extra).encode() + then)
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


async def test_keepalive_closes_a_silent_peer_and_keeps_one_that_answers(tmp_path: Path) -> None:
    async with running_server(tmp_path, viewer_ping_interval_ms=300) as server:
        room_id, _ = await create_room(server)
        answering, _, _ = await join(server, room_id)  # websockets answers pings itself
        silent = await asyncio.to_thread(open_raw, server.port, f"/ws/rooms/{room_id}")
        # It reads (so the kernel never pushes back) but sends nothing, not even a pong.
        received = await asyncio.to_thread(read_until_closed, silent, 10)
        silent.close()
        frames = server_frames(received)
        assert (0x9, b"") in frames  # it was pinged
        assert frames[-1][0] == 0x8  # then closed: 1011, keepalive ping timeout
        assert int.from_bytes(frames[-1][1][:2], "big") == 1011
        async with asyncio.timeout(5):
            while server.hub.connections != 1:
                await asyncio.sleep(0.01)
        # The answering client was pinged too, lived through the same intervals, and is
        # still served.
        await asyncio.sleep(1.0)
        await answering.send(json.dumps({"type": "ping/v1", "id": 7}))
        assert (await recv_type(answering, "pong/v1"))["id"] == 7
        await answering.close()


async def test_keepalive_releases_a_peer_that_stopped_reading(tmp_path: Path) -> None:
    """A vanished peer with bytes still waiting for it: closing would wait for them to be
    written, which never happens, so the socket is cut (its buffer limit is set high so
    that it is the keepalive, not 4008, that finds it)."""
    async with running_server(
        tmp_path,
        viewer_ping_interval_ms=300,
        viewer_buffer_bytes_max=64 * 1024 * 1024,
        viewer_socket_send_buffer_bytes=4096,
    ) as server:
        room_id, _ = await create_room(server)
        stalled = await asyncio.to_thread(open_raw, server.port, f"/ws/rooms/{room_id}")
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        async with asyncio.timeout(5):
            while server.hub.connections < 1:
                await asyncio.sleep(0.01)
        for number in range(100):  # 800 KB: far more than both kernels hold
            await server.hub.publish_sale(room_id, {"n": number, "filler": "x" * 8000})
        replica = server.hub.replicas[room_id]
        (member,) = replica.group.members
        protocol = member.sink
        assert protocol.buffered_bytes() > 0
        # uvicorn's open connections: the protocol leaves them when its socket is closed.
        connections = server.server.server_state.connections
        assert protocol in connections
        async with asyncio.timeout(5):
            while protocol in connections:
                await asyncio.sleep(0.05)
        assert server.hub.connections == 0
        stalled.close()


HOLDER = """
import socket, sys
port, path, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
request = (
    f"GET {path} HTTP/1.1\\r\\nHost: x\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\nSec-WebSocket-Version: 13\\r\\n\\r\\n"
).encode()
sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
for sock in sockets:
    sock.sendall(request)
for sock in sockets:
    response = b""
    while b"\\r\\n\\r\\n" not in response:
        response += sock.recv(65536)
    assert b" 101 " in response, response[:100]
print("ready", flush=True)
sys.stdin.read()
"""


async def test_an_idle_viewer_holds_no_task_and_little_memory(tmp_path: Path) -> None:
    """Under the ASGI path an idle viewer held an asyncio task and about 25 KB of Python
    heap; served by the protocol it holds neither. The clients live in another process so
    that only the server's allocations are counted."""
    count = 300
    async with running_server(tmp_path, connections_per_address_max=count + 10) as server:
        room_id, _ = await create_room(server)

        async def hold(number: int) -> asyncio.subprocess.Process:
            holder = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                HOLDER,
                str(server.port),
                f"/ws/rooms/{room_id}",
                str(number),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            assert holder.stdout is not None
            assert (await asyncio.wait_for(holder.stdout.readline(), 60)).strip() == b"ready"
            return holder

        warm = await hold(2)  # the room is loaded, the code paths have run once
        async with asyncio.timeout(10):
            while server.hub.connections < 2:
                await asyncio.sleep(0.01)
        gc.collect()
        tasks_before = len(asyncio.all_tasks())
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            holder = await hold(count)
            async with asyncio.timeout(30):
                while server.hub.connections < count + 2:
                    await asyncio.sleep(0.01)
            await asyncio.sleep(0.5)
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        tasks_after = len(asyncio.all_tasks())
        ignored = (tracemalloc.Filter(False, tracemalloc.__file__),)
        grown = sum(
            stat.size_diff
            for stat in after.filter_traces(ignored).compare_to(
                before.filter_traces(ignored), "filename"
            )
        )
        per_connection = grown / count
        for process in (holder, warm):
            assert process.stdin is not None
            process.stdin.close()
            await process.wait()
        assert tasks_after - tasks_before < 5, f"{tasks_after - tasks_before} tasks for {count}"
        # About 3.6 KB here (about 1.3 KB of it the test loop's Python transport, which
        # uvloop keeps in C); the ASGI path took about 25 KB.
        assert per_connection < 8 * 1024, f"{per_connection:.0f} bytes per idle connection"


async def test_other_websocket_paths_go_to_the_starlette_app(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        # Starlette has no such route and refuses the handshake: 403, from the ASGI path.
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(f"{server.ws}/ws/elsewhere")
        assert refused.value.response.status_code == 403
        # The room path still works after a hand-over on the same server.
        room_id, _ = await create_room(server)
        ws, welcome, _ = await join(server, room_id)
        assert welcome["type"] == "welcome/v1"
        await ws.close()


async def test_frames_behind_a_comment_wait_for_it_in_order(tmp_path: Path) -> None:
    """A comment waits for the broker; the ping sent right behind it (in the same TCP
    segment) is held and answered after the comment is out, not before."""
    async with running_server(tmp_path) as server:
        room_id, _ = await create_room(server)
        sock = await asyncio.to_thread(open_raw, server.port, f"/ws/rooms/{room_id}")
        comment = {"type": "comment/v1", "text": "first", "name": "A"}
        sock.sendall(
            client_frame(0x1, json.dumps(comment).encode())
            + client_frame(0x1, json.dumps({"type": "ping/v1", "id": 1}).encode())
            + client_frame(0x8, (1000).to_bytes(2, "big"))
        )
        received = await asyncio.to_thread(read_until_closed, sock, 5)
        sock.close()
        frames = server_frames(received)
        texts = [json.loads(payload) for opcode, payload in frames if opcode == 0x1]
        kinds = [text["type"] for text in texts if text["type"] != "state/v1"]
        assert kinds == ["welcome/v1", "snapshot/v1", "comment/v1", "pong/v1"]
        assert frames[-1] == (0x8, (1000).to_bytes(2, "big"))  # the close, echoed


async def test_fragmented_messages_and_bad_utf8(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        room_id, _ = await create_room(server)
        ws, _, _ = await join(server, room_id)
        await ws.send(['{"type":"ping/v1",', '"id":3}'])  # two frames, one message
        assert (await recv_type(ws, "pong/v1"))["id"] == 3
        await ws.close()
        sock = await asyncio.to_thread(open_raw, server.port, f"/ws/rooms/{room_id}")
        sock.sendall(client_frame(0x1, b'{"type":"comment/v1","text":"\xff"}'))
        received = await asyncio.to_thread(read_until_closed, sock, 5)
        sock.close()
        close = server_frames(received)[-1]
        assert close[0] == 0x8
        assert int.from_bytes(close[1][:2], "big") == 1007


async def test_a_trusted_proxy_names_the_address_that_is_counted(tmp_path: Path) -> None:
    """As uvicorn's proxy-headers middleware does for the ASGI path: 127.0.0.1 is trusted
    by default, so X-Forwarded-For names the client the per-address limit counts."""
    async with running_server(tmp_path, connections_per_address_max=1) as server:
        room_id, _ = await create_room(server)
        path = f"/ws/rooms/{room_id}"
        first = await websockets.connect(
            f"{server.ws}{path}", additional_headers={"X-Forwarded-For": "203.0.113.7"}
        )
        other = await websockets.connect(
            f"{server.ws}{path}", additional_headers={"X-Forwarded-For": "198.51.100.9"}
        )
        for ws in (first, other):
            assert (await recv(ws))["type"] == "welcome/v1"
        again = await websockets.connect(
            f"{server.ws}{path}", additional_headers={"X-Forwarded-For": "203.0.113.7"}
        )
        assert (await recv(again))["code"] == "too_many_connections"
        assert await closed_with(again) == 4029
        for ws in (first, other):
            await ws.close()


async def test_shutdown_closes_room_sockets_with_1001(tmp_path: Path) -> None:
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(running_server(tmp_path))
        room_id, _ = await create_room(server)
        ws, _, _ = await join(server, room_id)
    assert await closed_with(ws) == 1001


def masked_frame(opcode: int, payload: bytes, fin: bool) -> bytes:
    """A client frame of any length (RFC 6455 §5.2), zero mask key."""
    head = bytes(((0x80 if fin else 0) | opcode,))
    if len(payload) < 126:
        head += bytes((0x80 | len(payload),))
    elif len(payload) < 1 << 16:
        head += bytes((0x80 | 126,)) + len(payload).to_bytes(2, "big")
    else:
        head += bytes((0x80 | 127,)) + len(payload).to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


def send_too_much_then_read(port: int, path: str) -> tuple[bytes, str]:
    """A message over the limit in fragments, going on sending for a while after the server
    failed the connection (as a client in the middle of a send does), then reading."""
    sock = open_raw(port, path)
    sock.sendall(masked_frame(0x1, b"x" * 8192, fin=False))
    failure = ""
    try:
        for _ in range(60):  # 480 KB after the 16 KiB limit, over about 0.3 s
            sock.sendall(masked_frame(0x0, b"x" * 8192, fin=False))
            time.sleep(0.005)
    except OSError as error:
        failure = f"sending failed: {error!r}"
    try:
        sock.shutdown(socket.SHUT_WR)
        received = read_until_closed(sock, 5)
    except OSError as error:
        received, failure = b"", failure or f"reading failed: {error!r}"
    sock.close()
    return received, failure


async def test_a_failed_connection_half_closes_so_the_close_code_arrives(tmp_path: Path) -> None:
    """The server fails a connection (1009) while the client is still sending. It used to
    close the socket with the client's bytes unread, so the kernel reset the connection:
    the client's next write failed and it saw 1006, not 1009 (about one in 30 with the
    websockets client). Now it sends its close frame, then FIN, and reads on."""
    async with running_server(tmp_path) as server:
        room_id, _ = await create_room(server)
        received, failure = await asyncio.to_thread(
            send_too_much_then_read, server.port, f"/ws/rooms/{room_id}"
        )
        assert not failure, failure
        close = [payload for opcode, payload in server_frames(received) if opcode == 0x8]
        assert close, "no close frame"
        assert int.from_bytes(close[0][:2], "big") == 1009
        async with asyncio.timeout(5):
            while server.hub.connections:
                await asyncio.sleep(0.01)
