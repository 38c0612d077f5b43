"""Many buyers at once over real sockets, embedded: never oversold, limits hold, repeats get
the first answer, forgeries are refused, and the ledger replays to the live stock."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

from ledger import decode_entry
from livecommerce.commerce.core import CommerceCore
from livecommerce.commerce.replay import apply_entry
from livecommerce.orders.signing import KeyPair
from tests.livecommerce.orders.flows import now_ms, room_with_sale
from tests.livecommerce.orders.test_orders_embedded import stock_seen
from tests.livecommerce.server import running_server

BUYERS = 1_500
SOCKETS = 150
OFFERED = 500
LIMIT = 2

Json = dict[str, Any]


async def register_all(client: httpx.AsyncClient, base: str, buyers: list[KeyPair]) -> None:
    gate = asyncio.Semaphore(100)

    async def one(buyer: KeyPair) -> None:
        async with gate:
            response = await client.post(
                f"{base}/api/identities", json=buyer.registration("buyer", now_ms())
            )
            assert response.status_code == 201, response.text

    await asyncio.gather(*(one(buyer) for buyer in buyers))


async def socket_session(ws: ClientConnection, frames: list[Json]) -> list[Json]:
    """Send every frame at once, then read until each order has its answer."""
    for frame in frames:
        await ws.send(json.dumps(frame))
    answers: list[Json] = []
    async with asyncio.timeout(60):
        while len(answers) < len(frames):
            message = json.loads(await ws.recv())
            if message["type"] == "order.result/v1":
                answers.append(message)
    return answers


async def test_thousands_of_buyers_never_oversell_and_the_ledger_replays_to_the_stock(
    tmp_path: Path,
) -> None:
    chooser = random.Random(11)
    async with running_server(tmp_path) as server, httpx.AsyncClient(timeout=30) as client:
        setup = await room_with_sale(
            client, server.http, units_offered=OFFERED, per_buyer_limit=LIMIT
        )
        buyers = [KeyPair() for _ in range(BUYERS)]
        await register_all(client, server.http, buyers)
        wanted = {buyer.identity_id: chooser.randint(1, LIMIT) for buyer in buyers}
        orders: dict[str, Json] = {}
        frames_by_socket: list[list[Json]] = [[] for _ in range(SOCKETS)]
        forged = 0
        for number, buyer in enumerate(buyers):
            order = buyer.order(
                f"o{number}", setup.sale_id, wanted[buyer.identity_id], setup.price_cents, now_ms()
            )
            orders[order["order_id"]] = order
            frames = frames_by_socket[number % SOCKETS]
            frames.append({"type": "order/v1", **order})
            if number % 10 == 0:  # a retry of the very same order, sent at once
                frames.append({"type": "order/v1", **order})
            if number % 25 == 0:  # someone else's order with a changed quantity
                forged += 1
                frames.append({"type": "order/v1", **order, "order_id": f"f{number}"})
        watcher = await websockets.connect(f"{server.ws}/ws/rooms/{setup.room_id}")
        sockets = [
            await websockets.connect(f"{server.ws}/ws/rooms/{setup.room_id}")
            for _ in range(SOCKETS)
        ]
        answers_by_socket = await asyncio.gather(
            *(
                socket_session(ws, frames)
                for ws, frames in zip(sockets, frames_by_socket, strict=True)
            )
        )
        answers = [answer for answers in answers_by_socket for answer in answers]

        accepted: dict[str, Json] = {}
        reasons: Counter[str] = Counter()
        for answer in answers:
            if answer["status"] == "accepted":
                seen = accepted.setdefault(answer["order_id"], answer)
                assert seen["ledger_index"] == answer["ledger_index"]  # a repeat: same entry
            else:
                reasons[answer["reason"]] += 1
        demanded = sum(wanted.values())
        units = sum(answer["quantity"] for answer in accepted.values())
        assert units == min(OFFERED, demanded)
        assert reasons["bad_signature"] == forged
        assert set(reasons) <= {"bad_signature", "sold_out"}
        assert reasons["sold_out"] > 0
        per_buyer: Counter[str] = Counter()
        for order_id, answer in accepted.items():
            per_buyer[orders[order_id]["buyer_id"]] += answer["quantity"]
        assert max(per_buyer.values()) <= LIMIT
        await stock_seen(watcher, "mug", 0, timeout_s=10)

        ledger = server.app.state.ledger
        replayed = CommerceCore()
        recorded = 0
        for index in range(ledger.size):
            entry_type, fields = decode_entry(ledger.entry(index))
            apply_entry(replayed, entry_type, fields)
            if entry_type == "order/v1" and fields["action"] == "accepted":
                recorded += 1
                assert accepted[fields["order_id"]]["ledger_index"] == index
        assert recorded == len(accepted)
        live = server.app.state.orders.core.sales.get(setup.sale_id)
        sale = replayed.sales.get(setup.sale_id)
        assert sale is not None
        assert (sale.units_remaining, sale.units_held, sale.units_sold) == (
            live.units_remaining,
            live.units_held,
            live.units_sold,
        )
        assert sale.units_remaining == 0
        for ws in [*sockets, watcher]:
            await ws.close()
