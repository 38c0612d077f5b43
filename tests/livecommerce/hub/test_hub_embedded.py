"""The hub end to end in the embedded mode: a real uvicorn server, real WebSocket clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from pathlib import Path
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

from tests.livecommerce.server import RunningServer, running_server

Json = dict[str, Any]


async def recv(ws: ClientConnection, timeout_s: float = 5) -> Json:
    message = json.loads(await asyncio.wait_for(ws.recv(), timeout_s))
    assert isinstance(message, dict)
    return message


async def recv_type(ws: ClientConnection, wanted: str, timeout_s: float = 5) -> Json:
    """The next message of type `wanted`, skipping state pushes and other types."""
    async with asyncio.timeout(timeout_s):
        while True:
            message = await recv(ws, timeout_s)
            if message["type"] == wanted:
                return message


async def join(
    server: RunningServer, room_id: str, query: str = ""
) -> tuple[ClientConnection, Json, Json]:
    ws = await websockets.connect(f"{server.ws}/ws/rooms/{room_id}{query}")
    welcome = await recv(ws)
    first = await recv(ws)
    return ws, welcome, first


async def closed_with(ws: ClientConnection, timeout_s: float = 5) -> int | None:
    """Read until the server closes the connection; its close code."""
    with contextlib.suppress(websockets.ConnectionClosed):
        async with asyncio.timeout(timeout_s):
            async for _ in ws:
                pass
    assert ws.close_code is not None, "the server did not close the connection"
    return ws.close_code


async def room_snapshot(server: RunningServer, room_id: str) -> Json:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{server.http}/api/rooms/{room_id}")
    assert response.status_code == 200
    body: Json = response.json()
    return body


async def create_room(server: RunningServer, title: str = "Live") -> tuple[str, str]:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{server.http}/api/rooms", json={"title": title, "host_name": "Mia"}
        )
    assert response.status_code == 201
    body = response.json()
    return body["room_id"], body["host_token"]


async def test_join_comment_like_share_and_counts(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        room_id, _ = await create_room(server)
        alice, welcome, snapshot = await join(server, room_id)
        assert welcome["type"] == "welcome/v1"
        assert welcome["mode"] == "snapshot"
        assert snapshot["type"] == "snapshot/v1"
        assert snapshot["title"] == "Live"
        assert snapshot["seq"] == 0
        bob, _, _ = await join(server, room_id)
        await alice.send(
            json.dumps(
                {"type": "comment/v1", "text": "<img src=x onerror=alert(1)>", "name": "Alice"}
            )
        )
        for ws in (alice, bob):
            seen = await recv_type(ws, "comment/v1")
            assert seen["text"] == "<img src=x onerror=alert(1)>"  # text, never markup
            assert seen["seq"] == 1
            assert seen["viewer_id"] == welcome["viewer_id"]
        for _ in range(30):
            await bob.send(json.dumps({"type": "like/v1", "count": 2}))
        await bob.send(json.dumps({"type": "share/v1"}))
        async with asyncio.timeout(5):
            while True:
                state = await recv_type(alice, "state/v1")
                if state.get("likes") == 60 and state.get("viewers", 2) == 2:
                    break
        snapshot = await room_snapshot(server, room_id)
        assert snapshot["likes"] == 60
        assert snapshot["shares"] == 1
        assert snapshot["viewers"] == 2
        assert [c["text"] for c in snapshot["comments"]] == ["<img src=x onerror=alert(1)>"]
        await alice.close()
        await bob.close()


async def test_likes_are_coalesced_not_relayed(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        room_id, _ = await create_room(server)
        watcher, _, _ = await join(server, room_id)
        likers = [(await join(server, room_id))[0] for _ in range(5)]
        for _ in range(10):
            for liker in likers:
                await liker.send(json.dumps({"type": "like/v1"}))
        states = []
        async with asyncio.timeout(5):
            while not states or states[-1].get("likes") != 50:
                message = await recv(watcher)
                if message["type"] == "state/v1" and "likes" in message:
                    states.append(message)
        # 50 likes reached the watcher as a handful of totals, at most ten a second.
        assert len(states) < 10
        for ws in (watcher, *likers):
            await ws.close()


async def test_resume_replays_missed_events_or_sends_a_snapshot(tmp_path: Path) -> None:
    async with running_server(tmp_path, history_events_max=5) as server:
        room_id, token = await create_room(server)
        poster, _, _ = await join(server, room_id)
        viewer, welcome, _ = await join(server, room_id)
        await poster.send(json.dumps({"type": "comment/v1", "text": "one", "name": "P"}))
        first = await recv_type(viewer, "comment/v1")
        await viewer.close()
        for text in ("two", "three"):
            await poster.send(json.dumps({"type": "comment/v1", "text": text, "name": "P"}))
            await recv_type(poster, "comment/v1")
        query = f"?since={first['seq']}&viewer={welcome['viewer_token']}"
        again, rewelcome, replayed = await join(server, room_id, query)
        assert rewelcome["mode"] == "resume"
        assert rewelcome["viewer_id"] == welcome["viewer_id"]  # the token kept the identity
        second = await recv(again)
        assert [replayed["text"], second["text"]] == ["two", "three"]
        assert replayed["seq"] == first["seq"] + 1
        assert (await recv(again))["type"] == "state/v1"
        # Far behind the bounded history: a fresh snapshot instead.
        async with httpx.AsyncClient() as client:
            for index in range(6):
                response = await client.post(
                    f"{server.http}/api/rooms/{room_id}/host",
                    headers={"authorization": f"Bearer {token}"},
                    json={"type": "host.live/v1", "live": index % 2 == 0},
                )
                assert response.status_code == 200
        late, late_welcome, late_first = await join(server, room_id, f"?since={first['seq']}")
        assert late_welcome["mode"] == "snapshot"
        assert late_first["type"] == "snapshot/v1"
        assert late_first["seq"] == first["seq"] + 2 + 6
        for ws in (poster, again, late):
            await ws.close()


async def test_host_moderation_over_the_socket(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        room_id, token = await create_room(server)
        host, _, _ = await join(server, room_id)
        troll, troll_welcome, _ = await join(server, room_id)
        await host.send(
            json.dumps({"type": "host.ban/v1", "viewer_id": troll_welcome["viewer_id"]})
        )
        assert (await recv_type(host, "error/v1"))["code"] == "not_host"
        await host.send(json.dumps({"type": "host.auth/v1", "token": "wrong"}))
        assert (await recv_type(host, "error/v1"))["code"] == "bad_credential"
        await host.send(json.dumps({"type": "host.auth/v1", "token": token}))
        assert (await recv_type(host, "ack/v1"))["ref"] == "host.auth/v1"

        await troll.send(json.dumps({"type": "comment/v1", "text": "buy cheap stuff", "name": "T"}))
        posted = await recv_type(host, "comment/v1")
        await host.send(json.dumps({"type": "host.delete_comment/v1", "comment_id": posted["id"]}))
        assert (await recv_type(troll, "comment.removed/v1"))["id"] == posted["id"]

        await host.send(json.dumps({"type": "host.keywords/v1", "words": ["cheap"]}))
        await recv_type(host, "ack/v1")
        await troll.send(json.dumps({"type": "comment/v1", "text": "so CHEAP", "name": "T"}))
        assert (await recv_type(troll, "error/v1"))["code"] == "blocked_word"

        calm, _, _ = await join(server, room_id)
        await host.send(json.dumps({"type": "host.slow_mode/v1", "interval_ms": 60000}))
        assert (await recv_type(calm, "slow_mode/v1"))["interval_ms"] == 60000
        await calm.send(json.dumps({"type": "comment/v1", "text": "once", "name": "C"}))
        await recv_type(calm, "comment/v1")
        await calm.send(json.dumps({"type": "comment/v1", "text": "twice", "name": "C"}))
        assert (await recv_type(calm, "error/v1"))["code"] == "slow_mode"
        await calm.close()

        await host.send(
            json.dumps({"type": "host.ban/v1", "viewer_id": troll_welcome["viewer_id"]})
        )
        assert await closed_with(troll) == 4003
        # The ban holds on reconnect with the same viewer token.
        back = await websockets.connect(
            f"{server.ws}/ws/rooms/{room_id}?viewer={troll_welcome['viewer_token']}"
        )
        assert (await recv(back))["code"] == "banned"
        assert await closed_with(back) == 4003

        await host.send(json.dumps({"type": "host.end/v1"}))
        assert await closed_with(host) == 4010
        ended = await websockets.connect(f"{server.ws}/ws/rooms/{room_id}")
        await recv(ended)
        assert (await recv(ended))["ended"] is True
        assert await closed_with(ended) == 4010


async def test_bad_input_gets_clear_errors_and_changes_nothing(tmp_path: Path) -> None:
    async with running_server(
        tmp_path, frame_bytes_max=4096, connections_per_address_max=4
    ) as server:
        room_id, _ = await create_room(server)
        ws, _, snapshot = await join(server, room_id)
        for frame, code in [
            ("not json", "malformed_json"),
            ('{"type":"teleport/v1"}', "unknown_type"),
            ('{"type":"like/v1","count":-5}', "invalid_message"),
            ('{"type":"comment/v1","text":"","name":"A"}', "empty_comment"),
            ('{"type":"comment/v1","text":"' + "x" * 301 + '","name":"A"}', "comment_too_long"),
        ]:
            await ws.send(frame)
            error = await recv_type(ws, "error/v1")
            assert error["code"] == code
            assert error["message"]
        after = await room_snapshot(server, room_id)
        assert after["seq"] == snapshot["seq"]
        assert after["likes"] == 0
        assert after["comments"] == []

        await ws.send(b"\x00\x01")
        assert await closed_with(ws) == 1003
        big, _, _ = await join(server, room_id)
        await big.send("x" * 5000)
        assert await closed_with(big) == 1009
        flooder, _, _ = await join(server, room_id)
        with contextlib.suppress(websockets.ConnectionClosed):
            for _ in range(200):
                await flooder.send('{"type":"ping/v1"}')
        assert await closed_with(flooder) == 1008
        missing = await websockets.connect(f"{server.ws}/ws/rooms/nope")
        assert (await recv(missing))["code"] == "room_not_found"
        assert await closed_with(missing) == 4004

        held = [(await join(server, room_id))[0] for _ in range(4)]
        extra = await websockets.connect(f"{server.ws}/ws/rooms/{room_id}")
        assert (await recv(extra))["code"] == "too_many_connections"
        assert await closed_with(extra) == 4029
        # Everyone else is still served.
        await held[0].send(json.dumps({"type": "comment/v1", "text": "still here", "name": "A"}))
        for other in held:
            assert (await recv_type(other, "comment/v1"))["text"] == "still here"
            await other.close()

        async with httpx.AsyncClient() as client:
            url = f"{server.http}/api/rooms/{room_id}/host"
            assert (await client.post(url, json={"type": "host.end/v1"})).status_code == 401
            wrong = await client.post(
                url, headers={"authorization": "Bearer x"}, json={"type": "host.end/v1"}
            )
            assert wrong.status_code == 403
            assert (await client.post(f"{server.http}/api/rooms", content=b"{")).status_code == 400


def raw_handshake(port: int, path: str) -> socket.socket:
    """A client that completes the handshake, then never reads (default buffers)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    assert b" 101 " in sock.recv(1024)
    return sock


async def test_a_slow_client_is_closed_and_never_slows_the_others(tmp_path: Path) -> None:
    async with running_server(
        tmp_path, viewer_buffer_bytes_max=64 * 1024, viewer_buffer_bytes_soft=16 * 1024
    ) as server:
        room_id, _ = await create_room(server)
        healthy, _, _ = await join(server, room_id)
        stalled = await asyncio.to_thread(raw_handshake, server.port, f"/ws/rooms/{room_id}")
        hub = server.hub
        async with asyncio.timeout(5):
            while hub.connections < 2:
                await asyncio.sleep(0.01)
        received: list[int] = []

        async def read_all() -> None:
            while len(received) < 300:
                message = await recv(healthy)
                if message["type"] == "sale/v1":
                    received.append(message["sale"]["n"])

        reader = asyncio.create_task(read_all())
        filler = "x" * 8000
        # 2.4 MB in bursts of 32 KB: a reading client keeps up; one that never reads must be
        # cut off well before that, though the kernel would happily buffer 4 MiB for it.
        for number in range(300):
            await hub.publish_sale(room_id, {"n": number, "filler": filler})
            if number % 4 == 3:
                await asyncio.sleep(0.003)
        await asyncio.wait_for(reader, 30)
        assert received == list(range(300))  # every event, in order, to the healthy client
        assert hub.connections == 1  # the stalled client was cut loose
        # What the stalled client finally reads ends with a close frame: 4008, too slow.
        stalled.settimeout(5)
        tail = b""
        while chunk := await asyncio.to_thread(stalled.recv, 1 << 20):
            tail = (tail + chunk)[-256:]
        stalled.close()
        assert b"\x88" in tail
        close_payload = tail[tail.rindex(b"\x88") + 2 :]
        assert int.from_bytes(close_payload[:2], "big") == 4008
        async with httpx.AsyncClient() as client:
            exposition = (await client.get(f"{server.http}/metrics")).text
        assert "livecommerce_closed_too_slow_total 1.0" in exposition
        assert "livecommerce_connections 1.0" in exposition
        await healthy.close()


async def test_portable_asgi_path_serves_the_same_protocol(tmp_path: Path) -> None:
    """Without the fan-out extension (stock uvicorn, any ASGI server) the queue sink is used."""
    async with running_server(tmp_path, stock_protocol=True) as server:
        room_id, _ = await create_room(server)
        alice, welcome, snapshot = await join(server, room_id)
        bob, _, _ = await join(server, room_id)
        assert welcome["type"] == "welcome/v1"
        assert snapshot["type"] == "snapshot/v1"
        await alice.send(json.dumps({"type": "comment/v1", "text": "hi", "name": "A"}))
        for ws in (alice, bob):
            message = await recv_type(ws, "comment/v1")
            assert message["text"] == "hi"
            assert message["seq"] == 1
        await bob.send(b"binary")
        assert await closed_with(bob) == 1003
        await alice.close()


async def test_closed_connections_are_freed(tmp_path: Path) -> None:
    """Nothing keeps a closed connection alive: no leak per viewer over a server's life."""
    import gc
    import weakref

    async with running_server(tmp_path) as server:
        room_id, _ = await create_room(server)
        sockets = [(await join(server, room_id))[0] for _ in range(20)]
        replica = server.hub.replicas[room_id]
        async with asyncio.timeout(5):
            while len(replica.group) < 20:
                await asyncio.sleep(0.01)
        protocols = [weakref.ref(member.sink) for member in replica.group.members]
        await asyncio.sleep(1.5)  # live across the server's periodic work (ticks, any freeze)
        for ws in sockets:
            await ws.close()
        async with asyncio.timeout(5):
            while server.hub.connections:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        gc.collect()
        assert [ref for ref in protocols if ref() is not None] == []
