"""Buyers who keep ordering through a fault, and every answer they got.

Each buyer orders one unit at a time, `pace_s` apart, on its own room socket or over
`POST /api/orders`, and waits at most `answer_timeout_s` for each answer: an order left
without an answer is recorded as `no_answer` (a hang), a socket the server closed as
`closed`. Nothing is dropped: the checks after the fault read every answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import websockets

from livecommerce.clients.signing import KeyPair
from tests.livecommerce.pipeline.flows import now_ms

Json = dict[str, Any]
ANSWER_TIMEOUT_S = 5.0


@dataclass
class Answer:
    order_id: str
    buyer_id: str
    quantity: int
    via: str  # "socket" or "http"
    sent_s: float  # time.monotonic() when sent
    waited_s: float
    status: str  # "accepted", "rejected", "no_answer" or "closed"
    reason: str = ""
    detail: str = ""
    ledger_index: int = -1
    http_status: int = 0
    repeated: bool = False


def answer_of(order: Json, via: str, sent_s: float, message: Json, http_status: int = 0) -> Answer:
    return Answer(
        order_id=order["order_id"],
        buyer_id=order["buyer_id"],
        quantity=order["quantity"],
        via=via,
        sent_s=sent_s,
        waited_s=time.monotonic() - sent_s,
        status=message.get("status", "rejected"),
        reason=str(message.get("reason", message.get("error", ""))),
        detail=str(message.get("detail", message.get("message", ""))),
        ledger_index=message.get("ledger_index", -1),
        http_status=http_status,
        repeated=message.get("repeated", False),
    )


def missing(order: Json, via: str, sent_s: float, status: str, detail: str) -> Answer:
    return Answer(
        order["order_id"],
        order["buyer_id"],
        order["quantity"],
        via,
        sent_s,
        time.monotonic() - sent_s,
        status,
        detail=detail,
    )


@dataclass
class Traffic:
    """Buyers `socket_buyers` on room sockets and `http_buyers` over HTTP, until `stop()`."""

    http: str
    ws: str
    room_id: str
    sale_id: str
    price_cents: int
    socket_buyers: list[KeyPair]
    http_buyers: list[KeyPair]
    pace_s: float = 0.2
    answer_timeout_s: float = ANSWER_TIMEOUT_S
    prefix: str = ""  # of order ids, so that two runs for the same buyers never repeat
    answers: list[Answer] = field(default_factory=list)
    orders: dict[str, Json] = field(default_factory=dict)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _numbers: dict[str, int] = field(default_factory=dict)

    def start(self) -> None:
        for number, buyer in enumerate(self.socket_buyers):
            self._tasks.append(asyncio.create_task(self._socket_buyer(f"s{number}", buyer)))
        for number, buyer in enumerate(self.http_buyers):
            self._tasks.append(asyncio.create_task(self._http_buyer(f"h{number}", buyer)))

    async def stop(self) -> None:
        """Stop sending; the orders on their way get their answers (or time out)."""
        self._stopping.set()
        await asyncio.gather(*self._tasks)
        self._tasks = []

    def answers_since(self, since_s: float) -> list[Answer]:
        return [answer for answer in self.answers if answer.sent_s >= since_s]

    def _next_order(self, tag: str, buyer: KeyPair) -> Json:
        number = self._numbers.get(tag, 0)
        self._numbers[tag] = number + 1
        order = buyer.order(
            f"{self.prefix}{tag}o{number}", self.sale_id, 1, self.price_cents, now_ms()
        )
        self.orders[order["order_id"]] = order
        return order

    async def _socket_buyer(self, tag: str, buyer: KeyPair) -> None:
        async with websockets.connect(f"{self.ws}/ws/rooms/{self.room_id}") as ws:
            while not self._stopping.is_set():
                order = self._next_order(tag, buyer)
                sent_s = time.monotonic()
                answer = await self._socket_answer(ws, order, sent_s)
                self.answers.append(answer)
                if answer.status == "closed":
                    return
                await self._pause()

    async def _socket_answer(
        self, ws: websockets.ClientConnection, order: Json, sent_s: float
    ) -> Answer:
        try:
            await ws.send(json.dumps({"type": "order/v1", **order}))
            async with asyncio.timeout(self.answer_timeout_s):
                while True:
                    message = json.loads(await ws.recv())
                    if (
                        message.get("type") == "order.result/v1"
                        and message.get("order_id") == order["order_id"]
                    ):
                        return answer_of(order, "socket", sent_s, message)
        except TimeoutError:
            return missing(order, "socket", sent_s, "no_answer", "no answer in time")
        except websockets.ConnectionClosed as error:
            return missing(order, "socket", sent_s, "closed", f"socket closed: {error}")

    async def _http_buyer(self, tag: str, buyer: KeyPair) -> None:
        async with httpx.AsyncClient(timeout=self.answer_timeout_s) as client:
            while not self._stopping.is_set():
                order = self._next_order(tag, buyer)
                self.answers.append(await post_order(client, self.http, order))
                await self._pause()

    async def _pause(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), self.pace_s)


async def post_order(client: httpx.AsyncClient, base: str, order: Json) -> Answer:
    sent_s = time.monotonic()
    try:
        response = await client.post(f"{base}/api/orders", json=order)
    except httpx.TimeoutException:
        return missing(order, "http", sent_s, "no_answer", "no answer in time")
    except httpx.TransportError as error:
        return missing(order, "http", sent_s, "closed", f"connection failed: {error!r}")
    return answer_of(order, "http", sent_s, response.json(), response.status_code)
