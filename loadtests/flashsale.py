"""The locustfile: a flash sale in one room.

    PYTHONPATH=. locust -f loadtests/flashsale.py --headless --host URL --run-file DIR/run.json

(`python -m loadtests run` makes the run file, runs this and the check.) Locust runs it
under gevent, which is why the sockets are websocket-client's (blocking, made cooperative
by gevent's monkey-patching): an asyncio client would block every other user of the
process. Never import this module outside a Locust process.

- ViewerUser: joins the room's WebSocket, reads the live feed in a greenlet of its own,
  likes and now and then comments. Every pushed event with a server timestamp is a Locust
  request event "push <type>" whose time is receive time minus `ts_ms` (same clock on one
  machine; across machines the clock skew is in it).
- BuyerUser: makes an Ed25519 identity (POST /api/identities), joins the room, waits for
  the sale to open, then buys with signed `order/v1` messages on its socket until it is
  told `sold_out` or `limit_reached`: a first order of 1..limit units, then one unit at a
  time. Rows "order accepted", "order sold_out", "order limit_reached" are successes
  timed from send to `order.result/v1`; any other answer is a failure. Each accepted order
  then waits for its `receipt/v1`, whose proof is checked against the ledger's key.
- FlashSaleShape: viewers ramp up, buyers arrive, the sale opens at T0 (the countdown
  set up by `prepare.py`), the sale ends, Locust stops.

Every process appends what its clients were told (orders, receipts, errors) to
`records-<host>-<pid>.jsonl` next to the run file; `python -m loadtests.check` reads them.
"""

from __future__ import annotations

import contextlib
import random
import secrets
import time
from pathlib import Path
from typing import Any

import gevent
import orjson
import websocket
from gevent.event import AsyncResult, Event
from locust import FastHttpUser, LoadTestShape, User, constant, events, runners, task
from locust.env import Environment
from locust.runners import MasterRunner

from ledger.entry import decode_entry
from ledger.note import Verifier
from ledger.receipt import ReceiptError, verify_receipt
from livecommerce.clients.signing import KeyPair
from loadtests.runfile import RecordWriter, RunFileError, RunInfo

CONNECT_TIMEOUT_S = 30.0
ORDER_TIMEOUT_S = 30.0
RECEIPT_TIMEOUT_S = 15.0
RETRY_REASONS = frozenset({"busy", "unavailable", "capacity", "stock_unavailable"})
RETRIES_MAX = 3
# Pushes that are replies, not the live feed.
NOT_PUSHES = frozenset({"welcome/v1", "snapshot/v1", "pong/v1", "ack/v1"})
TOO_MANY_FROM_ONE_ADDRESS = 4029
PER_ADDRESS_HINT = "raise LIVECOMMERCE_CONNECTIONS_PER_ADDRESS_MAX on the server, default 200"
WORDS = ("love it", "how much?", "does it ship to Lyon?", "ready!", "3 2 1", "want one")


# A worker that misses 3 one-second heartbeats is dropped, and when the last one goes the
# master stops the test: on a busy load generator (2 shared cores here) a worker starved
# for 3 s ended a full run one minute in. 10 s of slack; Locust still warns about CPU.
runners.HEARTBEAT_LIVENESS = 10


class OrderRefused(Exception):
    """A rejection that is neither sold out nor limit reached."""


class SocketClosed(Exception):
    pass


class _Process:
    """What this Locust process knows: the run, where its records go, its viewer counts."""

    run: RunInfo | None = None
    records: RecordWriter | None = None
    verifier: Verifier | None = None
    viewers_connected = 0
    viewers_connected_max = 0
    viewers_at_open: int | None = None
    server_viewers_max = 0
    frames = 0  # text frames received by this process's sockets
    cpu_at_start = 0.0


PROCESS = _Process()


def run_info() -> RunInfo:
    assert PROCESS.run is not None, "the init event loads the run file"
    return PROCESS.run


def record(entry: dict[str, Any]) -> None:
    if PROCESS.records is not None:
        PROCESS.records.write(entry)


def server_error(message: dict[str, Any]) -> OrderRefused:
    """An `error/v1` from the server as a Locust failure."""
    code = message.get("code")
    hint = f" ({PER_ADDRESS_HINT})" if code == "too_many_connections" else ""
    return OrderRefused(f"{code}: {message.get('message')}{hint}")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _arguments(parser: Any) -> None:
    parser.add_argument(
        "--run-file",
        default="",
        env_var="LOCUST_RUN_FILE",
        help="run.json written by `python -m loadtests setup` (room, sale, timeline)",
    )


def _init(environment: Environment, **_kwargs: Any) -> None:
    options = environment.parsed_options
    path = getattr(options, "run_file", "") if options is not None else ""
    if not path:
        raise SystemExit("flashsale: --run-file is required (python -m loadtests setup makes it)")
    try:
        PROCESS.run = RunInfo.read(Path(path))
    except RunFileError as error:
        raise SystemExit(f"flashsale: {error}") from None
    PROCESS.verifier = Verifier.parse(PROCESS.run.vkey)
    if not isinstance(environment.runner, MasterRunner):
        PROCESS.records = RecordWriter(Path(path).resolve().parent)


def _record_failures(
    request_type: str, name: str, exception: BaseException | None, **_kwargs: Any
) -> None:
    if exception is not None:
        record({"kind": "error", "request": f"{request_type} {name}", "error": str(exception)})


def _record_viewers(environment: Environment, **_kwargs: Any) -> None:
    if PROCESS.records is None:
        return
    record(
        {
            "kind": "viewers",
            "connected_max": PROCESS.viewers_connected_max,
            "connected_at_open": PROCESS.viewers_at_open,
            "server_viewers_max": PROCESS.server_viewers_max,
            # This process's CPU from its first socket on (all its Locust work) and the
            # frames its sockets received: what one worker process can hold.
            "cpu_s": round(time.process_time() - PROCESS.cpu_at_start, 3),
            "frames": PROCESS.frames,
        }
    )


# Registered by call: the decorators are untyped.
events.init_command_line_parser.add_listener(_arguments)  # type: ignore[no-untyped-call]
events.init.add_listener(_init)  # type: ignore[no-untyped-call]
events.request.add_listener(_record_failures)  # type: ignore[no-untyped-call]
events.test_stop.add_listener(_record_viewers)  # type: ignore[no-untyped-call]


class RoomSocket:
    """One WebSocket to the room and a greenlet reading it; `handle` sees every message."""

    def __init__(self, user: User, kind: str) -> None:
        self.user = user
        self.kind = kind
        self.ws: websocket.WebSocket | None = None
        self.closing = False  # we are closing it
        self.dead = False  # it has ended, whoever closed it
        self.reader: gevent.Greenlet | None = None

    def fire(
        self, name: str, started: float, length: int = 0, error: BaseException | None = None
    ) -> None:
        self.user.environment.events.request.fire(
            request_type="WS",
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=length,
            exception=error,
            context={},
        )

    def connect(self) -> bool:
        run = run_info()
        if not PROCESS.cpu_at_start:
            PROCESS.cpu_at_start = time.process_time()
        started = time.perf_counter()
        try:
            ws = websocket.create_connection(
                f"{run.ws_url}/ws/rooms/{run.room_id}",
                timeout=CONNECT_TIMEOUT_S,
                skip_utf8_validation=True,
            )
            ws.settimeout(None)
        except (OSError, websocket.WebSocketException) as error:
            self.fire(f"connect {self.kind}", started, error=error)
            return False
        self.fire(f"connect {self.kind}", started)
        self.ws = ws
        self.reader = gevent.spawn(self._read)
        return True

    def send(self, message: dict[str, Any]) -> bool:
        if self.ws is None or self.dead:
            return False  # the failure is already recorded (connect, or the socket row)
        try:
            self.ws.send(orjson.dumps(message).decode())
        except (OSError, websocket.WebSocketException) as error:
            self.fire(f"send {message['type']}", time.perf_counter(), error=error)
            return False
        return True

    def close(self) -> None:
        self.closing = True
        if self.ws is not None:
            with contextlib.suppress(OSError, websocket.WebSocketException):
                self.ws.close(timeout=1)
        if self.reader is not None:
            self.reader.kill(block=False)

    def handle(self, message: dict[str, Any], received: float, length: int) -> None:
        raise NotImplementedError

    def closed(self, reason: str) -> None:
        """The connection ended; the subclass decides whether that is an error."""

    def _read(self) -> None:
        assert self.ws is not None
        ws = self.ws
        while True:
            try:
                opcode, data = ws.recv_data()
            except (OSError, websocket.WebSocketException) as error:
                self._end(f"{type(error).__name__}: {error}")
                return
            received = time.perf_counter()
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
                reason = f"closed by the server: {code} {data[2:].decode(errors='replace')}"
                if code == TOO_MANY_FROM_ONE_ADDRESS:
                    reason += f" ({PER_ADDRESS_HINT})"
                self._end(reason)
                return
            if opcode != websocket.ABNF.OPCODE_TEXT:
                continue
            PROCESS.frames += 1
            try:
                message = orjson.loads(data)
            except orjson.JSONDecodeError as error:
                self._end(f"the server sent a frame that is not JSON: {error}")
                return
            self.handle(message, received, len(data))

    def _end(self, reason: str) -> None:
        self.dead = True
        self.closed(reason)
        if not self.closing:
            self.fire(f"{self.kind} socket", time.perf_counter(), error=SocketClosed(reason))


class ViewerSocket(RoomSocket):
    counted = False  # in PROCESS.viewers_connected

    def uncount(self) -> None:
        if self.counted:
            self.counted = False
            PROCESS.viewers_connected -= 1

    def closed(self, reason: str) -> None:
        self.uncount()

    def handle(self, message: dict[str, Any], received: float, length: int) -> None:
        kind = message.get("type")
        if kind == "error/v1":
            self.fire("viewer error/v1", received, length, server_error(message))
            return
        ts_ms = message.get("ts_ms")
        if kind in NOT_PUSHES or not isinstance(ts_ms, int):
            return
        if kind == "state/v1":
            viewers = message.get("viewers")
            if isinstance(viewers, int) and viewers > PROCESS.server_viewers_max:
                PROCESS.server_viewers_max = viewers
        elif kind == "sale/v1" and PROCESS.viewers_at_open is None:
            sale = message.get("sale") or {}
            if sale.get("change") == "opened":
                PROCESS.viewers_at_open = PROCESS.viewers_connected
        self.user.environment.events.request.fire(
            request_type="WS",
            name=f"push {kind}",
            response_time=max(0, time.time_ns() // 1_000_000 - ts_ms),
            response_length=length,
            exception=None,
            context={},
        )


class ViewerUser(User):
    """Joins the room over a WebSocket, reads the feed, likes and comments now and then."""

    def wait_time(self) -> float:
        run = run_info()
        rate = 1 / run.like_every_s + 1 / run.comment_every_s
        return random.expovariate(rate)

    def on_start(self) -> None:
        self.socket = ViewerSocket(self, "viewer")
        self.name = f"viewer-{secrets.token_hex(3)}"
        if self.socket.connect():
            self.socket.counted = True
            PROCESS.viewers_connected += 1
            PROCESS.viewers_connected_max = max(
                PROCESS.viewers_connected_max, PROCESS.viewers_connected
            )

    def on_stop(self) -> None:
        self.socket.uncount()
        self.socket.close()

    @task
    def act(self) -> None:
        if self.socket.ws is None or self.socket.dead or self.socket.closing:
            return
        run = run_info()
        like_rate, comment_rate = 1 / run.like_every_s, 1 / run.comment_every_s
        if random.random() < comment_rate / (like_rate + comment_rate):
            self.socket.send(
                {"type": "comment/v1", "name": self.name, "text": random.choice(WORDS)}
            )
        else:
            self.socket.send({"type": "like/v1", "count": random.randint(1, 5)})


class BuyerSocket(RoomSocket):
    def __init__(self, user: User) -> None:
        super().__init__(user, "buyer")
        self.sale: dict[str, Any] | None = None
        self.sale_changed = Event()
        self.answers: dict[str, AsyncResult] = {}
        self.receipts: dict[str, AsyncResult] = {}

    def handle(self, message: dict[str, Any], received: float, length: int) -> None:
        kind = message.get("type")
        if kind == "order.result/v1":
            self.answers.setdefault(message["order_id"], AsyncResult()).set((message, received))
        elif kind == "receipt/v1":
            self.receipts.setdefault(message["order_id"], AsyncResult()).set((message, received))
        elif kind in ("snapshot/v1", "sale/v1"):
            sale = message.get("sale")
            if isinstance(sale, dict) and sale.get("sale_id") == run_info().sale_id:
                self.sale = sale
                self.sale_changed.set()
        elif kind == "error/v1":
            self.fire("buyer error/v1", received, length, server_error(message))

    def closed(self, reason: str) -> None:
        for pending in (*self.answers.values(), *self.receipts.values()):
            if not pending.ready():
                pending.set_exception(SocketClosed(reason))
        self.sale_changed.set()


class BuyerUser(FastHttpUser):
    """Registers, joins the room, waits for the sale, buys until sold out or at the limit,
    and waits for a receipt for every accepted order. One sale per buyer, then idle."""

    wait_time = constant(1)

    def on_start(self) -> None:
        self.done = False
        self.keys = KeyPair()
        self.socket = BuyerSocket(self)
        body = self.keys.registration(f"buyer-{secrets.token_hex(3)}", now_ms())
        with self.client.post(
            "/api/identities", json=body, name="POST /api/identities", catch_response=True
        ) as response:
            if response.status_code != 201:
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:200]}")
                self.done = True
                return
        if not self.socket.connect():
            self.done = True

    def on_stop(self) -> None:
        self.socket.close()

    @task
    def buy(self) -> None:
        if self.done:
            return
        self.done = True
        sale = self._wait_for_open()
        if sale is None:
            return
        accepted = self._order_until_done(sale)
        self._wait_for_receipts(accepted)

    def _wait_for_open(self) -> dict[str, Any] | None:
        run = run_info()
        deadline = time.monotonic() + max(0, run.stop_local_ms - now_ms()) / 1000
        started = time.perf_counter()
        while True:
            sale = self.socket.sale
            if sale is not None and sale["state"] == "open":
                return sale
            if sale is not None and sale["state"] == "closed":
                error = OrderRefused(f"the sale closed ({sale['close_reason']}) before this buyer")
                self.socket.fire("buyer waits for the sale", started, error=error)
                return None
            if self.socket.dead or self.socket.closing or self.socket.ws is None:
                return None  # the socket row has the failure
            self.socket.sale_changed.clear()
            if not self.socket.sale_changed.wait(timeout=max(0.0, deadline - time.monotonic())):
                error = OrderRefused("the sale never opened")
                self.socket.fire("buyer waits for the sale", started, error=error)
                return None

    def _order_until_done(self, sale: dict[str, Any]) -> list[tuple[str, int, float]]:
        """Orders until told sold_out (for one unit) or limit_reached; the accepted orders
        as (order_id, ledger_index, answer time)."""
        accepted: list[tuple[str, int, float]] = []
        quantity = random.randint(1, sale["per_buyer_limit"])
        order_id = secrets.token_urlsafe(12)
        retries = 0
        while True:
            answer = self._order(order_id, sale, quantity)
            if answer is None:
                return accepted
            message, received = answer
            status, reason = message["status"], message.get("reason", "")
            if status == "accepted":
                accepted.append((order_id, message["ledger_index"], received))
            elif reason in RETRY_REASONS and retries < RETRIES_MAX:
                retries += 1  # "not done, retry later with the same order_id"
                gevent.sleep(0.5 * retries)
                continue
            elif reason != "sold_out" or quantity == 1:
                return accepted  # limit reached, the last unit gone, or an error
            quantity = 1  # after an accepted order, or sold out for more than one: one more
            order_id = secrets.token_urlsafe(12)
            retries = 0

    def _order(
        self, order_id: str, sale: dict[str, Any], quantity: int
    ) -> tuple[dict[str, Any], float] | None:
        fields = self.keys.order(order_id, sale["sale_id"], quantity, sale["price_cents"], now_ms())
        pending = self.socket.answers.setdefault(order_id, AsyncResult())
        started = time.perf_counter()
        sent_ms = now_ms()
        if not self.socket.send({"type": "order/v1", **fields}):
            return None
        try:
            message, received = pending.get(timeout=ORDER_TIMEOUT_S)
        except gevent.Timeout:
            self.socket.fire("order unanswered", started, error=OrderRefused(f"{order_id}"))
            record(
                {
                    "kind": "order",
                    "order_id": order_id,
                    "buyer_id": self.keys.identity_id,
                    "quantity": quantity,
                    "status": "unanswered",
                    "sent_ms": sent_ms,
                }
            )
            return None
        except SocketClosed:
            return None  # the socket row has the failure
        self.socket.answers.pop(order_id, None)  # a retry of this id waits afresh
        response_time = (received - started) * 1000
        status, reason = message["status"], message.get("reason", "")
        record(
            {
                "kind": "order",
                "order_id": order_id,
                "buyer_id": self.keys.identity_id,
                "quantity": quantity,
                "status": status,
                "reason": reason,
                "ledger_index": message.get("ledger_index"),
                "sent_ms": sent_ms,
                "rtt_ms": round(response_time, 3),
            }
        )
        name = "order accepted" if status == "accepted" else f"order {reason}"
        error = None
        if status != "accepted" and reason not in ("sold_out", "limit_reached"):
            name = "order rejected"
            error = OrderRefused(f"{reason}: {message.get('detail', '')}")
        self.environment.events.request.fire(
            request_type="WS",
            name=name,
            response_time=response_time,
            response_length=0,
            exception=error,
            context={},
        )
        return message, received

    def _wait_for_receipts(self, accepted: list[tuple[str, int, float]]) -> None:
        verifier = PROCESS.verifier
        assert verifier is not None
        deadline = time.monotonic() + RECEIPT_TIMEOUT_S
        for order_id, ledger_index, answered in accepted:
            pending = self.socket.receipts.setdefault(order_id, AsyncResult())
            try:
                message, received = pending.get(timeout=max(0.0, deadline - time.monotonic()))
            except gevent.Timeout:
                late = OrderRefused(f"no receipt for {order_id} in {RECEIPT_TIMEOUT_S:.0f} s")
                self.socket.fire("receipt/v1", answered, error=late)
                continue
            except SocketClosed:
                return
            error: OrderRefused | None = None
            try:
                receipt = verify_receipt(message["proof"].encode(), verifier)
                assert receipt.entry is not None
                entry_type, fields = decode_entry(receipt.entry)
                if receipt.index != ledger_index or (entry_type, fields.get("order_id")) != (
                    "order/v1",
                    order_id,
                ):
                    raise ReceiptError(f"proves entry {receipt.index}, not this order's")
            except (ReceiptError, ValueError) as problem:
                error = OrderRefused(f"receipt for {order_id}: {problem}")
            record({"kind": "receipt", "order_id": order_id, "ok": error is None})
            self.environment.events.request.fire(
                request_type="WS",
                name="receipt/v1",
                response_time=(received - answered) * 1000,
                response_length=len(message["proof"]),
                exception=error,
                context={},
            )


class FlashSaleShape(LoadTestShape):
    """Viewers ramp up, then buyers arrive; everyone is in `settle_s` before T0, when the
    sale opens (buyers then order within the same second); Locust stops `grace_s` after
    the sale ends. Times are on this machine's clock, from the run file's T0."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.viewer_rate = 0.0
        self.buyer_rate = 0.0
        self.viewers_in = -1

    def tick(self) -> tuple[int, float, list[type[User]]] | None:
        run = run_info()
        now = now_ms()
        buyers_from = run.t0_local_ms - int((run.buyer_ramp_s + run.settle_s) * 1000)
        if now >= run.stop_local_ms:
            return None
        if now < buyers_from:
            if not self.viewer_rate:  # spread the viewers over the time left
                left_s = (buyers_from - now) / 1000 - run.settle_s / 2
                self.viewer_rate = run.viewers / max(1.0, left_s)
            return run.viewers, self.viewer_rate, [ViewerUser]
        if self.viewers_in < 0:
            # Viewers not yet spawned when the buyers' turn comes are not made up by buyers.
            # Only viewers run so far; a master knows the count its workers reported (its
            # user_classes_count counts its own greenlets: none).
            assert self.runner is not None
            self.viewers_in = min(run.viewers, self.runner.user_count)
            self.buyer_rate = run.buyers / max(1.0, run.buyer_ramp_s)
        return self.viewers_in + run.buyers, self.buyer_rate, [BuyerUser]
