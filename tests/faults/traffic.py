"""Traffic for fault tests: buyers and viewers on real sockets while a process dies.

Each buyer is a registered Ed25519 key that places signed orders one after another, over
its room socket (`order/v1`) or over HTTP (`POST /api/orders`), and records every answer
it got. An answer that means "not done, retry" (`unavailable`, `busy`,
`stock_unavailable`, `capacity`), a connection that fails or a request that times out
makes it send the very same signed order again (as docs/protocol.md tells clients to),
after a short backoff and on the next server it knows of if its own does not answer; it
never sends a second copy while the first may still be answered on a live connection.
Every few orders it sends an answered order again on purpose: the first answer must come
back. Viewers keep a room socket open, reconnect with `since` and their viewer token when
it drops, and record what they got.

`Told` gathers what the clients were told, `check_ledger` compares it with a ledger read
from a stopped process's data directory; the rest checks a process after a fault (every
read path answers, receipts verify, a comment reaches every viewer, the CPU is idle).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil
import websockets
from websockets.asyncio.client import ClientConnection

from ledger import decode_entry
from ledger.note import Verifier
from ledger.receipt import verify_receipt
from livecommerce.clients.signing import KeyPair
from tests.livecommerce.pipeline.flows import now_ms

Json = dict[str, Any]

# "Not done, retry later with the same order_id" (docs/protocol.md, "Buying").
RETRY_REASONS = frozenset({"unavailable", "busy", "stock_unavailable", "capacity"})
BACKOFF_S_MIN = 0.05
BACKOFF_S_MAX = 1.0
CONNECT_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Endpoint:
    """One server process as a client reaches it."""

    http: str
    ws: str


@dataclass
class Answer:
    """One answer a client got for an order (or why it got none)."""

    at_s: float  # seconds since the traffic started
    status: str  # accepted, rejected, or "error" (connection failed, timed out)
    reason: str = ""
    ledger_index: int = -1
    quantity: int = 0
    repeated: bool = False
    via: str = ""  # the server's HTTP base
    sent_at_s: float = 0.0  # when this send began

    @property
    def final(self) -> bool:
        return self.status == "accepted" or (
            self.status == "rejected" and self.reason not in RETRY_REASONS
        )


@dataclass
class OrderLog:
    """Everything one order went through, from its first send to its final answer."""

    order_id: str
    buyer_id: str
    quantity: int
    fields: Json
    channel: str  # "ws" or "http"
    sent_at_s: float
    answers: list[Answer] = field(default_factory=list)
    final: Answer | None = None
    # The answer to sending the order again on purpose after its final answer.
    again: Answer | None = None

    @property
    def attempts(self) -> int:
        return len(self.answers)


@dataclass
class Settings:
    """How the traffic behaves. Times in seconds."""

    pace_s: float = 0.05  # between a buyer's orders (jittered)
    quantity_max: int = 2
    attempt_timeout_s: float = 10.0  # one send: longer than the server's own bound
    order_deadline_s: float = 60.0  # then the order is given up, unanswered
    again_every: int = 7  # every n-th answered order is sent again on purpose
    # The first viewer posts a comment this often (0: never); at most 5 per 10 s are taken.
    comment_every_s: float = 2.5


class _RoomSocket:
    """A buyer's room socket: sends orders, hands each `order.result/v1` to its waiter and
    keeps `receipt/v1` frames by order id."""

    def __init__(self, ws: ClientConnection, via: str, receipts: dict[str, str]) -> None:
        self.ws = ws
        self.via = via
        self._receipts = receipts
        self._waiting: dict[str, asyncio.Future[Json]] = {}
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                message = json.loads(frame)
                kind = message.get("type")
                if kind == "order.result/v1":
                    waiter = self._waiting.pop(message["order_id"], None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(message)
                elif kind == "receipt/v1":
                    self._receipts[message["order_id"]] = message["proof"]
        except (websockets.ConnectionClosed, OSError):
            pass
        finally:
            for waiter in self._waiting.values():
                if not waiter.done():
                    waiter.set_exception(ConnectionError("the room socket closed"))
            self._waiting.clear()

    @property
    def open(self) -> bool:
        return not self._reader.done()

    async def order(self, fields: Json, timeout_s: float) -> Json:
        waiter: asyncio.Future[Json] = asyncio.get_running_loop().create_future()
        self._waiting[fields["order_id"]] = waiter
        try:
            await self.ws.send(json.dumps({"type": "order/v1", **fields}))
            async with asyncio.timeout(timeout_s):
                return await waiter
        finally:
            # Given up (closed, timed out): a late answer finds no one waiting.
            self._waiting.pop(fields["order_id"], None)
            waiter.cancel()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 2)
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class Buyer:
    """One buyer: orders one after another on its channel, each until a final answer."""

    def __init__(
        self,
        traffic: Traffic,
        number: int,
        keys: KeyPair,
        channel: str,
        endpoints: Sequence[Endpoint],
    ) -> None:
        self.traffic = traffic
        self.number = number
        self.keys = keys
        self.channel = channel
        self.endpoints = list(endpoints)
        self._at = 0  # which endpoint it uses now
        self._socket: _RoomSocket | None = None
        self.receipts: dict[str, str] = {}
        self.reconnects = 0
        self.random = random.Random(traffic.seed * 1_000 + number)

    @property
    def endpoint(self) -> Endpoint:
        return self.endpoints[self._at % len(self.endpoints)]

    def _next_endpoint(self) -> None:
        self._at += 1

    async def run(self) -> None:
        traffic = self.traffic
        count = 0
        try:
            while not traffic.stopping.is_set():
                count += 1
                order_id = f"{traffic.prefix}-b{self.number}-{count}"
                quantity = self.random.randint(1, traffic.settings.quantity_max)
                fields = self.keys.order(
                    order_id, traffic.sale_id, quantity, traffic.price_cents, now_ms()
                )
                log = OrderLog(
                    order_id,
                    self.keys.identity_id,
                    quantity,
                    fields,
                    self.channel,
                    traffic.elapsed_s(),
                )
                traffic.orders[order_id] = log
                log.final = await self._until_final(log)
                if log.final is not None and count % traffic.settings.again_every == 0:
                    log.again = await self._until_final(log, again=True)
                await asyncio.sleep(traffic.settings.pace_s * self.random.uniform(0.5, 1.5))
        finally:
            if self._socket is not None:
                await self._socket.close()

    async def _until_final(self, log: OrderLog, again: bool = False) -> Answer | None:
        """Send the order until an answer is final, or the deadline passes (None)."""
        traffic = self.traffic
        settings = traffic.settings
        deadline_s = time.monotonic() + settings.order_deadline_s
        backoff_s = BACKOFF_S_MIN
        while (left_s := deadline_s - time.monotonic()) > 0:
            answer = await self._send(log.fields, min(settings.attempt_timeout_s, left_s))
            if not again:
                log.answers.append(answer)
            if answer.final:
                return answer
            if answer.status == "error":
                traffic.errors[answer.reason] += 1
            else:
                traffic.retried[answer.reason] += 1
            await asyncio.sleep(backoff_s * self.random.uniform(0.5, 1.0))
            backoff_s = min(BACKOFF_S_MAX, backoff_s * 2)
        return None

    async def _send(self, fields: Json, timeout_s: float) -> Answer:
        via = self.endpoint.http
        sent_at_s = self.traffic.elapsed_s()
        try:
            if self.channel == "http":
                message = await self._send_http(fields, timeout_s)
            else:
                message = await self._send_ws(fields, timeout_s)
        except (TimeoutError, httpx.ReadTimeout):
            # The server holds the order but has not answered in the bounded time: drop
            # the connection, so that the retry is the only copy this client waits for.
            self.traffic.hangs.append((fields["order_id"], via))
            await self._drop()
            self._next_endpoint()
            return Answer(
                self.traffic.elapsed_s(), "error", "timeout", via=via, sent_at_s=sent_at_s
            )
        except (OSError, ConnectionError, websockets.WebSocketException, httpx.HTTPError) as error:
            await self._drop()
            self._next_endpoint()
            return Answer(
                self.traffic.elapsed_s(),
                "error",
                type(error).__name__,
                via=via,
                sent_at_s=sent_at_s,
            )
        return Answer(
            self.traffic.elapsed_s(),
            message["status"],
            message.get("reason", ""),
            message.get("ledger_index", -1),
            message.get("quantity", 0),
            message.get("repeated", False),
            via,
            sent_at_s,
        )

    async def _send_http(self, fields: Json, timeout_s: float) -> Json:
        response = await self.traffic.http.post(
            f"{self.endpoint.http}/api/orders", json=fields, timeout=timeout_s
        )
        try:
            body: Json = response.json()
        except ValueError:
            raise ConnectionError(f"HTTP {response.status_code}: {response.text[:200]}") from None
        if "status" not in body:  # an error body ({"error", "message"}), not an answer
            return {"status": "rejected", "reason": body.get("error", str(response.status_code))}
        return body

    async def _send_ws(self, fields: Json, timeout_s: float) -> Json:
        if self._socket is None or not self._socket.open:
            await self._drop()
            try:
                ws = await websockets.connect(
                    f"{self.endpoint.ws}/ws/rooms/{self.traffic.room_id}",
                    open_timeout=CONNECT_TIMEOUT_S,
                )
            except TimeoutError:
                raise ConnectionError("the room socket did not open in time") from None
            self._socket = _RoomSocket(ws, self.endpoint.http, self.receipts)
            self.reconnects += 1
        return await self._socket.order(fields, timeout_s)

    async def _drop(self) -> None:
        if self._socket is not None:
            socket, self._socket = self._socket, None
            await socket.close()


class Viewer:
    """A room socket that only watches: reconnects with `since` and its viewer token,
    records every message and how each connection began (snapshot or resume)."""

    def __init__(self, traffic: Traffic, number: int, endpoints: Sequence[Endpoint]) -> None:
        self.traffic = traffic
        self.number = number
        self.endpoints = list(endpoints)
        self._at = 0
        self.messages: list[Json] = []
        self.modes: list[str] = []  # the welcome's mode, per connection
        self.closes: list[int | None] = []
        self.last_seq: int | None = None
        self.viewer_token = ""
        self.comment_errors: Counter[str] = Counter()
        self._ws: ClientConnection | None = None
        self._comments_sent = 0

    def _url(self) -> str:
        endpoint = self.endpoints[self._at % len(self.endpoints)]
        query = []
        if self.viewer_token:
            query.append(f"viewer={self.viewer_token}")
        if self.last_seq is not None:
            query.append(f"since={self.last_seq}")
        suffix = "?" + "&".join(query) if query else ""
        return f"{endpoint.ws}/ws/rooms/{self.traffic.room_id}{suffix}"

    async def run(self) -> None:
        backoff_s = BACKOFF_S_MIN
        while not self.traffic.finished.is_set():
            try:
                async with websockets.connect(self._url(), open_timeout=CONNECT_TIMEOUT_S) as ws:
                    self._ws = ws
                    backoff_s = BACKOFF_S_MIN
                    try:
                        await self._read(ws)
                    finally:
                        self.closes.append(ws.close_code)
            except (OSError, TimeoutError, websockets.WebSocketException):
                pass
            finally:
                self._ws = None
            if self.traffic.finished.is_set():
                return
            self._at += 1
            await asyncio.sleep(backoff_s)
            backoff_s = min(BACKOFF_S_MAX, backoff_s * 2)

    async def _read(self, ws: ClientConnection) -> None:
        async for frame in ws:
            message = json.loads(frame)
            self.messages.append(message)
            kind = message.get("type")
            if kind == "welcome/v1":
                self.modes.append(message["mode"])
                self.viewer_token = message["viewer_token"]
            elif kind == "error/v1":
                self.comment_errors[message["code"]] += 1
            if kind == "snapshot/v1":
                self.last_seq = message["seq"]  # a snapshot is where the room is now
            elif isinstance(message.get("seq"), int) and (
                self.last_seq is None or message["seq"] > self.last_seq
            ):
                self.last_seq = message["seq"]

    async def comment(self, text: str) -> bool:
        """Post a comment if connected (False: not connected now)."""
        ws = self._ws
        if ws is None:
            return False
        with contextlib.suppress(websockets.ConnectionClosed):
            await ws.send(json.dumps({"type": "comment/v1", "name": "Viewer", "text": text}))
            self._comments_sent += 1
            return True
        return False

    async def comment_forever(self, every_s: float) -> None:
        number = 0
        while not self.traffic.stopping.is_set():
            await asyncio.sleep(every_s)
            number += 1
            await self.comment(f"{self.traffic.prefix} viewer {self.number} says {number}")

    def saw_comment(self, text: str) -> bool:
        return any(m.get("type") == "comment/v1" and m.get("text") == text for m in self.messages)

    def stock_seen(self, product_id: str) -> int | None:
        """The newest stock count the viewer was sent: in a state, or a snapshot."""
        for message in reversed(self.messages):
            stock = message.get("stock") or {}
            if message.get("type") in ("state/v1", "snapshot/v1") and product_id in stock:
                value: int = stock[product_id]
                return value
        return None


class Traffic:
    """Buyers and viewers against one sale until `stop`; then `told()` says what they heard."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        room_id: str,
        sale_id: str,
        price_cents: int,
        buyers: Sequence[tuple[KeyPair, str, Sequence[Endpoint]]],
        viewers: Sequence[Sequence[Endpoint]] = (),
        settings: Settings | None = None,
        seed: int = 0,
        prefix: str = "t",
    ) -> None:
        self.http = http
        self.room_id = room_id
        self.sale_id = sale_id
        self.price_cents = price_cents
        self.settings = settings or Settings()
        self.seed = seed
        self.prefix = prefix
        self.buyers = [
            Buyer(self, number, keys, channel, endpoints)
            for number, (keys, channel, endpoints) in enumerate(buyers)
        ]
        self.viewers = [Viewer(self, number, endpoints) for number, endpoints in enumerate(viewers)]
        self.orders: dict[str, OrderLog] = {}
        self.errors: Counter[str] = Counter()  # connection errors and timeouts, by kind
        self.retried: Counter[str] = Counter()  # "retry" answers, by reason
        self.hangs: list[tuple[str, str]] = []  # (order id, server) with no answer in time
        self.stopping = asyncio.Event()  # buyers finish their order and stop
        self.finished = asyncio.Event()  # viewers stop
        self._started = time.monotonic()
        self._tasks: list[asyncio.Task[None]] = []

    def elapsed_s(self) -> float:
        return time.monotonic() - self._started

    def start(self) -> None:
        self._started = time.monotonic()
        for viewer in self.viewers:
            self._tasks.append(asyncio.create_task(viewer.run()))
        for buyer in self.buyers:
            self._tasks.append(asyncio.create_task(buyer.run()))
        if self.settings.comment_every_s and self.viewers:
            every_s = self.settings.comment_every_s
            self._tasks.append(asyncio.create_task(self.viewers[0].comment_forever(every_s)))

    async def stop_buyers(self) -> None:
        """Each buyer finishes the order it is on (bounded by the order deadline)."""
        self.stopping.set()
        buyers = self._tasks[len(self.viewers) :]
        async with asyncio.timeout(self.settings.order_deadline_s * 2 + 10):
            await asyncio.gather(*buyers)

    async def close(self) -> None:
        self.stopping.set()
        self.finished.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for viewer in self.viewers:
            if viewer._ws is not None:
                with contextlib.suppress(Exception):
                    await viewer._ws.close()

    def receipts(self) -> dict[str, str]:
        return {order_id: proof for b in self.buyers for order_id, proof in b.receipts.items()}

    def told(self) -> Told:
        return Told.of(self.orders.values())


@dataclass
class Told:
    """What the clients were told, order by order."""

    accepted: dict[str, tuple[int, int]]  # order id -> (ledger index, quantity)
    rejected: dict[str, str]  # order id -> final reason
    unanswered: list[str]  # no final answer before the deadline
    contradictions: list[str]  # an order told two different things
    reasons: Counter[str]
    attempts: int
    orders: int

    @classmethod
    def of(cls, logs: Any) -> Told:
        accepted: dict[str, tuple[int, int]] = {}
        rejected: dict[str, str] = {}
        unanswered: list[str] = []
        contradictions: list[str] = []
        reasons: Counter[str] = Counter()
        attempts = orders = 0
        for log in logs:
            orders += 1
            attempts += log.attempts
            if log.final is None:
                unanswered.append(log.order_id)
                continue
            first = log.final
            reasons[first.reason or first.status] += 1
            # A rejection is evaluated afresh after a restart (docs/commerce.md, "Replay"),
            # so its reason may change; an acceptance, its index and quantity never.
            finals = [a for a in [*log.answers, log.again] if a is not None and a.final]
            for answer in finals:
                if answer.status != first.status or (
                    first.status == "accepted"
                    and (answer.ledger_index, answer.quantity)
                    != (first.ledger_index, first.quantity)
                ):
                    contradictions.append(f"{log.order_id}: {first} then {answer}")
            if first.status == "accepted":
                accepted[log.order_id] = (first.ledger_index, first.quantity)
            else:
                rejected[log.order_id] = first.reason
        return cls(accepted, rejected, unanswered, contradictions, reasons, attempts, orders)

    def accepted_units(self) -> int:
        return sum(quantity for _, quantity in self.accepted.values())

    def line(self) -> str:
        top = ", ".join(f"{reason} {count}" for reason, count in self.reasons.most_common(6))
        return (
            f"{self.orders} orders ({self.attempts} sends): {len(self.accepted)} accepted "
            f"({self.accepted_units()} units); {top}; unanswered {len(self.unanswered)}"
        )


@dataclass
class LedgerView:
    """A sale as its ledger holds it."""

    accepted: dict[str, tuple[int, int]]  # order id -> (index, quantity)
    accepted_twice: list[str]
    units_offered: int
    units_remaining: int


def ledger_view(entries: list[tuple[str, dict[str, Any]]], sale_id: str) -> LedgerView:
    accepted: dict[str, tuple[int, int]] = {}
    twice: list[str] = []
    offered = remaining = -1
    for index, (entry_type, fields) in enumerate(entries):
        if entry_type == "order/v1" and fields.get("sale_id") == sale_id:
            if fields["action"] == "accepted":
                key = fields["order_id"]
                if key in accepted:
                    twice.append(key)
                accepted[key] = (index, fields["quantity"])
        elif entry_type == "sale/v1" and fields.get("sale_id") == sale_id:
            if fields.get("action") == "scheduled":
                offered = fields["units_offered"]
        elif entry_type == "stock/v1" and fields.get("sale_id") == sale_id:
            remaining = fields["units_remaining"]
    return LedgerView(accepted, twice, offered, remaining)


def check_ledger(told: Told, view: LedgerView, complete: bool, sent: set[str]) -> list[str]:
    """Problems (empty: none) between what clients were told and what the ledger holds.
    `complete`: every order has had its final answer, so the two must match exactly;
    otherwise (a process just died) the ledger may hold orders nobody heard of yet."""
    problems: list[str] = []
    for order_id, (index, quantity) in told.accepted.items():
        recorded = view.accepted.get(order_id)
        if recorded != (index, quantity):
            problems.append(f"LOST: {order_id} told accepted at {index}, ledger has {recorded}")
    for order_id in view.accepted_twice:
        problems.append(f"{order_id} accepted twice in the ledger")
    units = sum(quantity for _, quantity in view.accepted.values())
    if units > view.units_offered:
        problems.append(f"OVERSOLD: {units} units accepted of {view.units_offered}")
    for order_id in set(view.accepted) - sent:
        problems.append(f"{order_id} in the ledger but no client sent it")
    for order_id, reason in told.rejected.items():
        if order_id in view.accepted:
            problems.append(f"{order_id} told {reason} but accepted in the ledger")
    if complete:
        for order_id in set(view.accepted) - set(told.accepted):
            problems.append(f"{order_id} accepted in the ledger, its buyer never told so")
    return problems


async def check_receipts(
    http: httpx.AsyncClient,
    base: str,
    traffic: Traffic,
    verifier: Verifier,
    sample_max: int = 20,
    wait_s: float = 10,
) -> tuple[int, int, list[str]]:
    """Every receipt pushed to a buyer verifies against the log's key and names its order
    at the index it was told; a sample (the first and last accepted orders among them) is
    also fetched over HTTP, from a process that may have restarted since. Returns the
    counts pushed and fetched, and the problems."""
    told = traffic.told()
    problems: list[str] = []
    pushed = traffic.receipts()
    for order_id, proof in pushed.items():
        if order_id in told.accepted:
            problems += _receipt_problems(
                proof.encode(), order_id, told.accepted[order_id][0], verifier
            )
    by_index = sorted(told.accepted, key=lambda order_id: told.accepted[order_id][0])
    step = max(1, len(by_index) // sample_max)
    sample = sorted({*by_index[::step], *by_index[-3:]})
    for order_id in sample:
        buyer_id = traffic.orders[order_id].buyer_id
        index = told.accepted[order_id][0]
        try:
            async with asyncio.timeout(wait_s):
                while True:
                    response = await http.get(
                        f"{base}/api/orders/{order_id}/receipt", params={"buyer_id": buyer_id}
                    )
                    if response.status_code != 409:  # 409: not covered by a checkpoint yet
                        break
        except TimeoutError:
            problems.append(f"no receipt for {order_id} (index {index}) from {base}")
            continue
        if response.status_code != 200:
            problems.append(f"receipt of {order_id}: {response.status_code} {response.text}")
            continue
        problems += _receipt_problems(response.content, order_id, index, verifier)
    return len(pushed), len(sample), problems


def _receipt_problems(proof: bytes, order_id: str, index: int, verifier: Verifier) -> list[str]:
    try:
        receipt = verify_receipt(proof, verifier)
    except ValueError as error:
        return [f"receipt of {order_id} does not verify: {error}"]
    if receipt.index != index or receipt.entry is None:
        return [f"receipt of {order_id} is for index {receipt.index}, it was told {index}"]
    entry_type, fields = decode_entry(receipt.entry)
    if (entry_type, fields["order_id"], fields["action"]) != ("order/v1", order_id, "accepted"):
        return [f"receipt of {order_id} proves another entry: {entry_type} {fields}"]
    return []


async def comment_reaches_every_viewer(traffic: Traffic, text: str, timeout_s: float = 10) -> None:
    """A comment posted now (by the last viewer, which posts nothing else, once it is
    connected) reaches every viewer: deliveries resumed after the fault."""
    async with asyncio.timeout(timeout_s):
        while not await traffic.viewers[-1].comment(text):
            await asyncio.sleep(0.1)
        while not all(viewer.saw_comment(text) for viewer in traffic.viewers):
            await asyncio.sleep(0.05)


async def viewers_see_stock(
    traffic: Traffic, product_id: str, units: int, timeout_s: float = 10
) -> None:
    """Every viewer's newest stock for the product reads `units` (stock pushes resumed)."""
    async with asyncio.timeout(timeout_s):
        while any(viewer.stock_seen(product_id) != units for viewer in traffic.viewers):
            await asyncio.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a process and its children (the signature checker)."""
    process = psutil.Process(pid)
    total = 0.0
    for each in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = each.cpu_times()
            total += times.user + times.system
    return total


async def idle_cpu_seconds(pids: Sequence[int], quiet_s: float = 1.0) -> dict[int, float]:
    """CPU seconds each process used over `quiet_s` with no client traffic."""
    before = {pid: cpu_seconds(pid) for pid in pids}
    await asyncio.sleep(quiet_s)
    return {pid: cpu_seconds(pid) - before[pid] for pid in pids}


def children_of(pid: int) -> list[int]:
    return [child.pid for child in psutil.Process(pid).children(recursive=True)]


async def still_running(pids: Sequence[int], wait_s: float = 5.0) -> list[int]:
    """Of these processes (a killed server's children), those still running after
    `wait_s`: they should go with their parent, not linger as orphans."""

    def running() -> list[int]:
        alive = []
        for pid in pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
        return alive

    deadline_s = time.monotonic() + wait_s
    while (alive := running()) and time.monotonic() < deadline_s:
        await asyncio.sleep(0.05)
    return alive
