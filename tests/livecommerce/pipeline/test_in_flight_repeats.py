"""The same signed order sent again before its first copy is answered (a client that
retries at once, or sends over HTTP and the room socket together): every copy is
answered, with the first copy's ledger index, only the copy that took the stock says it
is not a repeat, and the ledger holds the order once. Embedded and scaled out, over every
pair of transports."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from ledger import decode_entry
from livecommerce.clients.signing import KeyPair
from tests.conftest import RedisServer
from tests.livecommerce.pipeline.cluster import (
    accepted_in,
    ledger_entries,
    sale_known_everywhere,
    scaled,
)
from tests.livecommerce.pipeline.flows import now_ms, register, room_with_sale
from tests.livecommerce.server import running_server

Json = dict[str, Any]
Send = Callable[[Json], Awaitable[Json]]
ANSWER_TIMEOUT_S = 10
# Orders per pair of transports: the old defect (an answer lost when the repeat's batch
# was answered before the first copy's was durable) showed in about half of them.
ORDERS_PER_PAIR = 12
PAIRS = ["http+http", "http+socket", "socket+same socket", "socket+other socket"]


class Transports:
    """Ways to send one order and wait for its answer: HTTP, or one of two room sockets
    (answers on a socket come back in the order its orders were sent)."""

    def __init__(self, client: httpx.AsyncClient, http: list[str], sockets: list[ClientConnection]):
        self.client = client
        self.http = http
        self.sockets = sockets
        self._answers: list[asyncio.Queue[Json]] = [asyncio.Queue() for _ in sockets]
        self._readers = [
            asyncio.create_task(self._read(ws, queue))
            for ws, queue in zip(sockets, self._answers, strict=True)
        ]

    async def _read(self, ws: ClientConnection, queue: asyncio.Queue[Json]) -> None:
        async for frame in ws:
            message = json.loads(frame)
            if message["type"] == "order.result/v1":
                queue.put_nowait(message)

    def over_http(self, number: int) -> Send:
        async def send(order: Json) -> Json:
            response = await self.client.post(f"{self.http[number]}/api/orders", json=order)
            answer: Json = response.json()
            return answer

        return send

    def over_socket(self, number: int) -> Send:
        async def send(order: Json) -> Json:
            await self.sockets[number].send(json.dumps({"type": "order/v1", **order}))
            return await self._answers[number].get()

        return send

    def pair(self, name: str) -> tuple[Send, Send]:
        """The two senders of a pair; the second's HTTP or socket is another process's
        when there are two."""
        other = len(self.http) - 1
        return {
            "http+http": (self.over_http(0), self.over_http(other)),
            "http+socket": (self.over_http(0), self.over_socket(other)),
            "socket+same socket": (self.over_socket(0), self.over_socket(0)),
            "socket+other socket": (self.over_socket(0), self.over_socket(1)),
        }[name]

    async def close(self) -> None:
        for reader in self._readers:
            reader.cancel()
        for ws in self.sockets:
            await ws.close()


async def send_copies_at_once(
    buyer: KeyPair, order_id: str, sale_id: str, price: int, senders: tuple[Send, Send]
) -> list[Json]:
    order = buyer.order(order_id, sale_id, 1, price, now_ms())
    async with asyncio.timeout(ANSWER_TIMEOUT_S):
        return list(await asyncio.gather(*(send(order) for send in senders)))


def check_copies(order_id: str, answers: list[Json]) -> int:
    """Both copies accepted at one ledger index, exactly one of them not a repeat."""
    assert [a["status"] for a in answers] == ["accepted", "accepted"], (order_id, answers)
    assert len({a["ledger_index"] for a in answers}) == 1, (order_id, answers)
    assert sorted(a.get("repeated", False) for a in answers) == [False, True], (order_id, answers)
    index: int = answers[0]["ledger_index"]
    return index


async def known_everywhere(client: httpx.AsyncClient, http: list[str], buyer: KeyPair) -> None:
    """Every process knows the buyer (scaled out, the others learn of a registration from
    the writer's feed a moment later): each opens a session for the key."""
    async with asyncio.timeout(ANSWER_TIMEOUT_S):
        for base in http:
            while True:
                challenge = (await client.post(f"{base}/api/sessions/challenge")).json()
                opened = await client.post(
                    f"{base}/api/sessions", json=buyer.session(challenge["challenge"])
                )
                if opened.status_code == 200:
                    break
                await asyncio.sleep(0.05)


async def buy_in_every_pair(
    client: httpx.AsyncClient, http: list[str], ws: list[str], room_id: str, sale: Json
) -> dict[str, int]:
    """ORDERS_PER_PAIR orders for each pair of transports, both copies at once; the
    ledger index every order was told."""
    sockets = [await websockets.connect(f"{base}/ws/rooms/{room_id}") for base in ws]
    transports = Transports(client, http, sockets)
    told: dict[str, int] = {}
    try:
        for pair in PAIRS:
            senders = transports.pair(pair)
            buyer = KeyPair()
            await register(client, http[0], buyer, "Ann")
            await known_everywhere(client, http, buyer)
            for number in range(ORDERS_PER_PAIR):
                order_id = f"{pair.replace(' ', '-').replace('+', '-')}-{number}"
                answers = await send_copies_at_once(
                    buyer, order_id, sale["sale_id"], sale["price_cents"], senders
                )
                told[order_id] = check_copies(order_id, answers)
    finally:
        await transports.close()
    return told


@pytest.mark.parametrize("signatures_in_child", [True, False])
async def test_copies_in_flight_embedded(tmp_path: Path, signatures_in_child: bool) -> None:
    async with (
        running_server(tmp_path, order_signatures_in_child=signatures_in_child) as server,
        httpx.AsyncClient(timeout=ANSWER_TIMEOUT_S) as client,
    ):
        orders = len(PAIRS) * ORDERS_PER_PAIR
        setup = await room_with_sale(client, server.http, units_offered=orders, per_buyer_limit=99)
        told = await buy_in_every_pair(
            client, [server.http], [server.ws, server.ws], setup.room_id, setup.sale
        )
        ledger = server.app.state.ledger
        entries = [decode_entry(ledger.entry(index)) for index in range(ledger.size)]
        remaining = (await client.get(f"{server.http}/api/sales/{setup.sale_id}")).json()
    assert {order_id: index for order_id, (index, _) in accepted_in(entries).items()} == told
    assert remaining["units_remaining"] == 0


@pytest.mark.redis
async def test_copies_in_flight_scaled_out(tmp_path: Path, redis_server: RedisServer) -> None:
    """The second copy goes to the other web process (or the same socket): copies meet in
    Redis's reserve script or in one process's wait for the writer."""
    async with scaled(tmp_path, redis_server.url) as (writer, webs):
        async with httpx.AsyncClient(timeout=ANSWER_TIMEOUT_S) as client:
            orders = len(PAIRS) * ORDERS_PER_PAIR
            setup = await room_with_sale(
                client, webs[0].http, units_offered=orders, per_buyer_limit=99
            )
            await sale_known_everywhere(client, webs, setup.sale_id)
            told = await buy_in_every_pair(
                client,
                [web.http for web in webs],
                [web.ws for web in webs],
                setup.room_id,
                setup.sale,
            )
        await asyncio.to_thread(writer.stop)
        entries = await ledger_entries(writer.data_dir)
    assert {order_id: index for order_id, (index, _) in accepted_in(entries).items()} == told
