"""A crowd of buyers for one sale: signed orders spread over sockets (and processes),
with retries of the same order and forged ones mixed in, and the checks every crowd
test makes of the answers."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

from livecommerce.clients.signing import KeyPair
from tests.livecommerce.pipeline.flows import now_ms

Json = dict[str, Any]


@dataclass
class Crowd:
    buyers: list[KeyPair]
    wanted: dict[str, int]
    orders: dict[str, Json] = field(default_factory=dict)
    frames_by_socket: list[list[Json]] = field(default_factory=list)
    forged: int = 0


def make_crowd(
    buyers: int,
    sockets: int,
    sale_id: str,
    price_cents: int,
    per_buyer_limit: int,
    seed: int = 11,
    repeat_every: int = 10,
    forge_every: int = 25,
) -> Crowd:
    """Buyer n orders once on socket n % sockets; every `repeat_every`-th sends the very
    same order twice, every `forge_every`-th also sends a copy with a changed id (the
    signature then covers other bytes)."""
    chooser = random.Random(seed)
    keys = [KeyPair() for _ in range(buyers)]
    crowd = Crowd(keys, {k.identity_id: chooser.randint(1, per_buyer_limit) for k in keys})
    crowd.frames_by_socket = [[] for _ in range(sockets)]
    for number, buyer in enumerate(keys):
        order = buyer.order(
            f"o{number}", sale_id, crowd.wanted[buyer.identity_id], price_cents, now_ms()
        )
        crowd.orders[order["order_id"]] = order
        frames = crowd.frames_by_socket[number % sockets]
        frames.append({"type": "order/v1", **order})
        if number % repeat_every == 0:
            frames.append({"type": "order/v1", **order})
        if number % forge_every == 0:
            crowd.forged += 1
            frames.append({"type": "order/v1", **order, "order_id": f"f{number}"})
    return crowd


async def register_crowd(
    client: httpx.AsyncClient, bases: list[str], crowd: Crowd, sockets: int
) -> None:
    """Each buyer registers on the server its socket will use."""
    gate = asyncio.Semaphore(64)

    async def one(number: int, buyer: KeyPair) -> None:
        base = bases[(number % sockets) % len(bases)]
        async with gate:
            response = await client.post(
                f"{base}/api/identities", json=buyer.registration("buyer", now_ms())
            )
        assert response.status_code == 201, response.text

    await asyncio.gather(*(one(n, b) for n, b in enumerate(crowd.buyers)))


async def socket_session(ws: ClientConnection, frames: list[Json], timeout_s: float) -> list[Json]:
    """Send every frame at once, then read until each order has its answer."""
    for frame in frames:
        await ws.send(json.dumps(frame))
    answers: list[Json] = []
    async with asyncio.timeout(timeout_s):
        while len(answers) < len(frames):
            message = json.loads(await ws.recv())
            if message["type"] == "order.result/v1":
                answers.append(message)
    return answers


async def send_crowd(
    ws_bases: list[str], room_id: str, crowd: Crowd, timeout_s: float = 60
) -> list[Json]:
    """Socket i connects to ws_bases[i % len(ws_bases)]; all send at once."""
    sockets = [
        await websockets.connect(f"{ws_bases[i % len(ws_bases)]}/ws/rooms/{room_id}")
        for i in range(len(crowd.frames_by_socket))
    ]
    try:
        answers = await asyncio.gather(
            *(
                socket_session(ws, frames, timeout_s)
                for ws, frames in zip(sockets, crowd.frames_by_socket, strict=True)
            )
        )
    finally:
        for ws in sockets:
            await ws.close()
    return [answer for per_socket in answers for answer in per_socket]


def check_answers(
    answers: list[Json], crowd: Crowd, offered: int, per_buyer_limit: int
) -> dict[str, Json]:
    """The invariants; returns the accepted answers by order id."""
    accepted: dict[str, Json] = {}
    reasons: Counter[str] = Counter()
    for answer in answers:
        if answer["status"] == "accepted":
            seen = accepted.setdefault(answer["order_id"], answer)
            assert seen["ledger_index"] == answer["ledger_index"]  # a repeat: same entry
            assert seen["quantity"] == answer["quantity"]
        else:
            reasons[answer["reason"]] += 1
    demanded = sum(crowd.wanted.values())
    units = sum(answer["quantity"] for answer in accepted.values())
    assert units == min(offered, demanded), (units, offered, demanded, reasons)
    assert reasons["bad_signature"] == crowd.forged
    assert set(reasons) <= {"bad_signature", "sold_out"}, reasons
    assert reasons["sold_out"] > 0
    per_buyer: Counter[str] = Counter()
    for order_id, answer in accepted.items():
        per_buyer[crowd.orders[order_id]["buyer_id"]] += answer["quantity"]
    assert max(per_buyer.values()) <= per_buyer_limit
    return accepted
