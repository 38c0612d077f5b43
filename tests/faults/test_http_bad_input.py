"""Bad input over HTTP that schemathesis does not send: bodies far over the limit, host and
session routes without a credential, with a wrong one and with another room's, and paths
that try to leave the served directories. Each gets a clear refusal and changes nothing."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import httpx

from livecommerce.api.openapi import document
from livecommerce.clock import wall_clock_ms as now_ms
from livecommerce.payments.webhooks import SIGNATURE_HEADER, signature_header
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


def host_requests(world: World) -> list[tuple[str, str, Json | None]]:
    """Every request that needs the room's host credential, each with a body that is valid,
    so that only the credential can be why it is refused."""
    room = world.room_id
    commands: list[Json] = [
        {"type": "host.pin/v1", "product": None},
        {"type": "host.live/v1", "live": False},
        {"type": "host.end/v1"},
        {"type": "host.delete_comment/v1", "comment_id": world.comment_id},
        {"type": "host.mute/v1", "viewer_id": world.banned_viewer},
        {"type": "host.ban/v1", "viewer_id": world.muted_viewer},
        {"type": "host.unban/v1", "viewer_id": world.banned_viewer},
        {"type": "host.keywords/v1", "words": []},
        {"type": "host.slow_mode/v1", "interval_ms": 0},
    ]
    sale = {
        "sale_id": "flash-2",
        "product_id": world.sale.product_id,
        "units_offered": 5,
        "per_buyer_limit": 1,
        "duration_ms": 60_000,
        "payment_hold_ms": 60_000,
    }
    return [
        *(("POST", f"/api/rooms/{room}/host", command) for command in commands),
        ("POST", f"/api/rooms/{room}/merchant", {"merchant_token": world.sale.merchant_token}),
        ("POST", f"/api/rooms/{room}/sales", sale),
        ("POST", f"/api/rooms/{room}/sales/{world.sale.sale_id}/stop", None),
        ("GET", f"/api/rooms/{room}/stats", None),
        ("POST", f"/whip/{room}", None),
        ("DELETE", f"/whip/{room}/any-session", None),
    ]


async def test_host_routes_refuse_no_credential_a_wrong_one_and_another_rooms(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path) as server, httpx.AsyncClient() as client:
        world = await populated(server)
        before = observe(world)
        refused = 0
        for method, path, body in host_requests(world):
            for authorization, status, code in [
                (None, 401, "unauthorized"),
                ("Basic " + world.host_token, 401, "unauthorized"),
                ("Bearer", 401, "unauthorized"),
                ("Bearer wrong", 403, "bad_credential"),
                ("Bearer " + world.host_token + "x", 403, "bad_credential"),
                ("Bearer " + world.other_host_token, 403, "bad_credential"),
            ]:
                headers = {"Authorization": authorization} if authorization else {}
                if path.startswith("/whip/"):
                    headers["Content-Type"] = "application/sdp"
                response = await client.request(
                    method, f"{server.http}{path}", json=body, headers=headers
                )
                assert response.status_code == status, (method, path, authorization)
                if not path.startswith("/whip/"):  # the video routes answer in plain text
                    assert response.json()["error"] == code, (method, path, response.text)
                refused += 1
        assert refused == len(host_requests(world)) * 6
        after = observe(world)
        assert after == before, differences(before, after)


async def test_session_routes_refuse_no_token_a_forged_one_and_anothers(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server, httpx.AsyncClient() as client:
        world = await populated(server)
        before = observe(world)
        pay = f"{server.http}/api/orders/{world.order_id}/pay"
        orders = f"{server.http}/api/merchant/orders"
        forged = world.buyer_token[:-4] + (
            "AAAA" if not world.buyer_token.endswith("AAAA") else "BBBB"
        )
        for url, method in [(pay, "POST"), (orders, "GET")]:
            for authorization, code in [
                (None, "unauthorized"),
                ("Bearer", "unauthorized"),
                ("Bearer nonsense", "bad_token"),
                ("Bearer " + forged, "bad_token"),
                ("Bearer " + world.host_token, "bad_token"),
            ]:
                headers = {"Authorization": authorization} if authorization else {}
                response = await client.request(method, url, headers=headers, json={})
                assert response.status_code == 401, (url, authorization, response.text)
                assert response.json()["error"] == code, (url, authorization, response.text)
        # The merchant's own valid session cannot pay the buyer's order.
        response = await client.post(
            pay, headers={"Authorization": f"Bearer {world.sale.merchant_token}"}, json={}
        )
        assert response.status_code in (403, 404), response.text
        assert response.json()["status"] == "refused", response.text
        after = observe(world)
        assert after == before, differences(before, after)


TRAVERSALS = [
    "/../{secret}",
    "/..%2f{secret}",
    "/%2e%2e/{secret}",
    "/%2e%2e%2f{secret}",
    "/%2E%2E%2F%2E%2E%2F{secret}",
    "/%252e%252e%252f{secret}",
    "/..\\{secret}",
    "/..%5c{secret}",
    "/./../{secret}",
    "/img/../../{secret}",
    "/img/..%2f..%2f{secret}",
    "/....//{secret}",
    "/..;/{secret}",
    "//{absolute}",
    "/%2f{absolute_encoded}",
    "/{absolute_encoded}",
    "/%00/../{secret}",
    "/" + "../" * 40 + "{secret}",
    "/../data/viewer_secret",
    "/%2e%2e/data/session_secret",
    "/%2e%2e/data/ledger/signing.key",
    "/ledger/../../{secret}",
    "/ledger/%2e%2e/%2e%2e/{secret}",
    "/ledger/tile/../../{secret}",
    "/ledger/tile/%2e%2e/%2e%2e/%2e%2e/{secret}",
    "/ledger/tile/0/..%2f..%2f..%2f{secret}",
    "/ledger/tile/entries/../../../data/ledger/signing.key",
    "/ledger/tile/%2f{absolute_encoded}",
    "/ledger/tile//{absolute}",
    "/ledger/proof/..%2f..%2f{secret}",
    "/ledger/blocks/..%2f..%2f{secret}",
    "/ledger/%2e%2e%2fdata%2fledger%2fsigning.key",
    "/api/products/..%2f..%2f..%2f{secret}",
    "/whep/..%2f..%2f{secret}",
]


def raw_get(port: int, target: str) -> tuple[int, bytes]:
    """GET with the request target as given, byte for byte (clients normalise `..`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    status = int(received.split(b" ", 2)[1])
    return status, received


async def test_no_path_reaches_a_file_outside_the_served_directories(tmp_path: Path) -> None:
    """A secret planted next to the data and static directories, the data directory's own
    keys and /etc/passwd: no path of any shape, raw or encoded, gets their bytes."""
    import shutil

    from tests.support import ROOT

    static = tmp_path / "static"
    shutil.copytree(ROOT / "static", static)
    secret = tmp_path / "planted-secret.txt"
    secret_bytes = b"PLANTED-" + __import__("secrets").token_hex(16).encode()
    secret.write_bytes(secret_bytes)
    data = tmp_path / "data"
    async with running_server(data, static_dir=static) as server:
        world = await populated(server)
        before = observe(world)
        forbidden = [secret_bytes, b"root:x:0:0"]
        forbidden += [(data / name).read_bytes() for name in ("viewer_secret", "session_secret")]
        forbidden.append((data / "ledger" / "signing.key").read_bytes().strip())
        absolute = str(secret).lstrip("/")
        names = {
            "secret": secret.name,
            "absolute": absolute,
            "absolute_encoded": absolute.replace("/", "%2f"),
        }
        targets = [pattern.format(**names) for pattern in TRAVERSALS]
        targets += [t.replace(secret.name, "etc/passwd") for t in targets if secret.name in t]
        targets += ["//etc/passwd", "/%2fetc%2fpasswd", "/ledger/tile/%2fetc%2fpasswd"]
        for target in targets:
            status, received = await asyncio.to_thread(raw_get, server.port, target)
            assert status in (400, 404), (target, status, received[:300])
            for bytes_ in forbidden:
                assert bytes_ not in received, (target, received[:300])
        # The pages themselves are still served.
        status, received = await asyncio.to_thread(raw_get, server.port, "/img/../index.html")
        assert status == 200
        assert (static / "index.html").read_bytes() in received
        after = observe(world)
        assert after == before, differences(before, after)


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


async def test_json_nested_too_deeply_is_a_400_in_every_body(tmp_path: Path) -> None:
    """A member nested 3,000 deep ahead of the one the decoder dispatches on made msgspec
    raise RecursionError, which the host route did not catch: a 500 (the socket: see
    test_socket_fuzz.py). Every JSON body, with the right credential, gets a 400 (the
    webhook, signed with the provider's secret, its own `bad_webhook`)."""
    async with running_server(tmp_path) as server, httpx.AsyncClient() as client:
        webhook_secret = (tmp_path / "webhook_secret").read_bytes()
        world = await populated(server)
        before = observe(world)
        for method, template in json_body_operations():
            operation = document()["paths"][template][method.lower()]
            session = {"session": []} in operation.get("security", [])
            token = world.buyer_token if session else world.host_token
            for body in [
                b'{"x":' + nested(3000) + b',"type":"host.end/v1"}',
                b'{"x":' + b'{"a":' * 2000 + b"1" + b"}" * 2001,
                nested(5000),
            ]:
                headers = {"Authorization": f"Bearer {token}"}
                expected = "invalid_request"
                if template == "/api/payments/webhook":
                    headers = {SIGNATURE_HEADER: signature_header(webhook_secret, body, now_ms())}
                    expected = "bad_webhook"
                response = await client.request(
                    method,
                    f"{server.http}{concrete(template, world)}",
                    content=body,
                    headers=headers,
                )
                assert response.status_code == 400, (method, template, response.text)
                assert response.json()["error"] == expected, response.text
        after = observe(world)
        assert after == before, differences(before, after)
