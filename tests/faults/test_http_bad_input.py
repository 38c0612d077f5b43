"""Bad input over HTTP that schemathesis does not send: bodies far over the limit, host and
session routes without a credential, with a wrong one and with another room's, and paths
that try to leave the served directories. Each gets a clear refusal and changes nothing."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import httpx

from livecommerce.openapi import document
from tests.faults.world import World, differences, observe, populated
from tests.livecommerce.server import running_server

Json = dict[str, Any]
BODY_BYTES_MAX = 16 * 1024


def json_body_operations() -> list[tuple[str, str]]:
    """(method, path template) of every operation that takes a JSON body, from the document."""
    return [
        (method.upper(), path)
        for path, operations in document()["paths"].items()
        for method, operation in operations.items()
        if "application/json" in operation.get("requestBody", {}).get("content", {})
    ]


def concrete(path: str, world: World) -> str:
    return (
        path.replace("{room_id}", world.room_id)
        .replace("{sale_id}", world.sale.sale_id)
        .replace("{order_id}", world.order_id)
        .replace("{product_id}", world.sale.product_id)
    )


def send_head_and_some_body(
    port: int, request_head: bytes, body: bytes, timeout_s: float
) -> tuple[bytes, bool]:
    """Send a request head and part of its body, then read what comes back until the server
    closes the connection; what came, and whether it closed within `timeout_s`."""
    received = b""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(request_head)
        sock.sendall(body)
        sock.settimeout(timeout_s)
        try:
            while chunk := sock.recv(4096):
                received += chunk
        except TimeoutError:
            return received, False
        except ConnectionResetError:
            pass
    return received, True


async def test_a_body_over_the_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """A client declaring 50 MB, or sending chunks without a length, is answered 413 as soon
    as the server knows; before the fix it was read to the end (and the declared one was
    waited for: no answer at all while the client kept sending)."""
    async with running_server(tmp_path) as server:
        world = await populated(server)
        before = observe(world)
        operations = json_body_operations()
        assert len(operations) >= 10
        for method, template in operations:
            path = concrete(template, world)
            # The right credential, so that the body is what is refused.
            operation = document()["paths"][template][method.lower()]
            token = (
                world.buyer_token
                if {"session": []} in operation.get("security", [])
                else world.host_token
            )
            head = (
                f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer {token}\r\n"
            )
            declared = (head + "Content-Length: 50000000\r\n\r\n").encode()
            answer, closed = await asyncio.to_thread(
                send_head_and_some_body, server.port, declared, b"x" * (64 * 1024), 3
            )
            assert answer.startswith(b"HTTP/1.1 413 "), (method, path, answer[:200])
            assert closed, "the server went on reading the body after its 413"
            assert b'"too_large"' in answer, answer
            # Chunked: 40 chunks of 1 KiB and no end; refused once past 16 KiB.
            chunked = (head + "Transfer-Encoding: chunked\r\n\r\n").encode()
            chunks = b"400\r\n" + b"x" * 1024 + b"\r\n"
            answer, closed = await asyncio.to_thread(
                send_head_and_some_body, server.port, chunked, chunks * 40, 3
            )
            assert closed
            assert answer.startswith(b"HTTP/1.1 413 "), (method, path, answer[:200])
        # One byte over is refused, the limit itself is read (and refused for what it says).
        async with httpx.AsyncClient() as client:
            url = f"{server.http}/api/rooms"
            over = await client.post(url, content=b" " * (BODY_BYTES_MAX + 1))
            assert over.status_code == 413
            at = await client.post(url, content=b" " * BODY_BYTES_MAX)
            assert at.status_code == 400
            assert at.json()["error"] == "invalid_request"
        after = observe(world)
        assert after == before, differences(before, after)
