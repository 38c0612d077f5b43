"""`python -m livecommerce buy`: a buyer in a terminal. Makes a key, registers it, joins the
room's socket, waits for the sale to open (the countdown), signs an order, prints the
answer and then the receipt (verified against the log's key at /ledger/vkey)."""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import urllib.request
from typing import Any

import websockets

from livecommerce.clients.signing import KeyPair
from livecommerce.clock import wall_clock_ms

WAIT_FOR_SALE_S = 600.0
RECEIPT_WAIT_S = 10.0


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def _get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        text: str = response.read().decode()
        return text


async def buy(base_url: str, room_id: str, quantity: int, name: str) -> int:
    from ledger.note import Verifier
    from ledger.receipt import verify_receipt

    base = base_url.rstrip("/")
    keys = KeyPair()
    now_ms = wall_clock_ms()
    await asyncio.to_thread(_post, f"{base}/api/identities", keys.registration(name, now_ms))
    print(f"registered {name} as {keys.identity_id}")
    socket_url = base.replace("http", "ws", 1) + f"/ws/rooms/{room_id}"
    async with websockets.connect(socket_url) as ws, asyncio.timeout(WAIT_FOR_SALE_S):
        sale: dict[str, Any] | None = None
        async for frame in ws:
            message = json.loads(frame)
            if message["type"] in ("snapshot/v1", "sale/v1"):
                sale = message.get("sale") or sale
            if sale is None:
                continue
            if sale["state"] == "closed":
                print(f"sale {sale['sale_id']} is closed ({sale['close_reason']})")
                return 1
            if sale["state"] == "scheduled":
                left_s = max(0, sale["starts_at_ms"] - wall_clock_ms()) / 1000
                print(f"sale {sale['sale_id']} opens in {left_s:.1f} s")
                continue
            break
        assert sale is not None
        order_id = secrets.token_urlsafe(12)
        order = keys.order(
            order_id, sale["sale_id"], quantity, sale["price_cents"], wall_clock_ms()
        )
        await ws.send(json.dumps({"type": "order/v1", **order}))
        receipt = None
        async for frame in ws:
            message = json.loads(frame)
            if message["type"] == "order.result/v1" and message["order_id"] == order_id:
                print(json.dumps(message))
                if message["status"] != "accepted":
                    return 1
            elif message["type"] == "receipt/v1" and message["order_id"] == order_id:
                receipt = message
                break
    assert receipt is not None
    verifier = Verifier.parse((await asyncio.to_thread(_get_text, f"{base}/ledger/vkey")).strip())
    proven = verify_receipt(receipt["proof"].encode(), verifier)
    print(f"receipt verified: entry {proven.index} is in the signed log\n{receipt['proof']}")
    return 0


def main(base_url: str, room_id: str, quantity: int, name: str) -> int:
    try:
        return asyncio.run(buy(base_url, room_id, quantity, name))
    except (OSError, TimeoutError, websockets.WebSocketException) as error:
        print(f"buy: {error}", file=sys.stderr)
        return 1
