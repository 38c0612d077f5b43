"""Flash sale: signed orders per second, answer latency and oversold units, end to end.

    python bench/flash_sale.py [--mode embedded|redis|both] [--buyers 2000]
        [--client-processes 4] [--seconds 10] [--rates 2000,5000] [--sellout-units 5000]
        [--client-nice 0] [--profile FILE]

Each mode starts the real server as separate OS processes (embedded: one `serve`; redis:
a private redis-server without persistence, the `ledger-writer` and two `serve --redis`
web processes), makes a merchant, a product, a room and two sales over HTTP, then starts
`--client-processes` client processes. Every buyer is a registered Ed25519 key with its
own WebSocket to the room (spread over the web processes) and signs every order (PyNaCl).
The throughput steps' orders are signed and framed just before each step starts, so that
during the step the clients (which share the machine with the server) only send them;
their `time_ms` is when they were signed, seconds before they leave, well within the
server's freshness window (30 s). The sockets are `raw_websocket.RawClientSocket`s (the upgrade by
hand, masked frames out, only `order.result/v1` frames decoded), so that the clients, which
share the machine with the server, take as little of it as they can.

1. Throughput: each buyer orders 1 unit on its own fixed schedule, `--rates` orders a
   second in all, one step of `--seconds` per rate (an open loop: a slow answer does not
   lower the offered load), against a sale with more units than get ordered. Figures:
   accepted orders per second (answers "accepted", which the server gives only after the
   ledger append is durable), answer latency p50, p99 and max (send to
   `order.result/v1`, measured in the clients), and the clients' send lag p99 (how late
   orders left against their schedule: large when the clients lack CPU).
2. Sell-out: a fresh sale of `--sellout-units`; every buyer sends 3 orders of 1 unit at
   once (per-buyer limit 3), more than offered. Oversold units = accepted units beyond
   the offer, plus any difference between the units the buyers were told were accepted
   and the units the ledger holds (read after the servers stop) and the server's own
   count. Must be 0.

The redis mode also measures the bare reserve script (the one the web processes run,
which also appends the order to the sale's stream) with redis-benchmark on the same
Redis: the ceiling one Redis gives a single hot sale. Figures only: no assertion on speed.
Viewers' stock pushes (state/v1 to every socket, as often as the hub's state budget lets
it: 5 a second at 2,000 viewers on one process) and receipts (receipt/v1 for every
accepted order) are all sent as in production and are part of the load.

On Linux each offered rate also gets a CPU line: CPU seconds used during the step (its
seconds and the 3 s after) by the server processes (web, writer, redis, the signature
checker if on), by the client processes, the whole machine's idle time and its steal time
(CPU the hypervisor gave to other machines while this one wanted it: the host's noise),
read from /proc; and the server's CPU per accepted order. `--client-nice N` runs the
clients at that niceness, so that on a machine they share with the server the server gets
the CPU first (the clients still use whatever it leaves); the figures then say less about
how the clients fare and more about the server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import orjson  # noqa: E402
from raw_websocket import OPCODE_TEXT, RawClientSocket, masked_frame, upgrade_request  # noqa: E402

from livecommerce.clients.signing import KeyPair  # noqa: E402

PRICE_CENTS = 1800
THROUGHPUT_UNITS = 1_000_000
SELLOUT_LIMIT = 3
ANSWER_WAIT_S = 30.0
CONNECT_CONCURRENCY = 100
CONNECT_TIMEOUT_S = 60.0
REGISTER_ATTEMPTS = 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"nothing listening on {port}") from None
            time.sleep(0.05)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Processes:
    """The server side of one mode, as OS processes; stopped in reverse order."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.running: list[subprocess.Popen[bytes]] = []
        self.names: list[str] = []
        self.web_ports: list[int] = []
        self.redis_url = ""
        self.environment = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "LIVECOMMERCE_CONNECTIONS_PER_ADDRESS_MAX": "20000",
        }

    def spawn(self, command: list[str], log_name: str) -> subprocess.Popen[bytes]:
        log = (self.directory / log_name).open("wb")
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=self.environment
        )
        self.running.append(process)
        self.names.append(log_name.removesuffix(".log"))
        return process

    def start_redis(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not on PATH")
        port = free_port()
        self.spawn(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            "redis.log",
        )  # fmt: skip
        wait_for_port(port)
        self.redis_url = f"redis://127.0.0.1:{port}/0"

    def start_writer(self) -> None:
        self.spawn(
            [sys.executable, "-m", "livecommerce", "ledger-writer", "--redis", self.redis_url,
             "--data", str(self.directory / "writer")],
            "writer.log",
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while "ledger writer ready" not in (self.directory / "writer.log").read_text():
            if time.monotonic() > deadline:
                raise SystemExit("the ledger writer did not start")
            time.sleep(0.05)

    def start_web(self, name: str, profile: Path | None = None) -> None:
        port = free_port()
        if profile:
            python = [sys.executable, __file__, "_profiled", str(profile)]
        elif os.environ.get("FLASH_SALE_GC_LOG"):
            python = [sys.executable, __file__, "_gc_logged"]
        else:
            python = [sys.executable, "-m", "livecommerce"]
        command = [*python, "serve", "--port", str(port),
                   "--data", str(self.directory / name)]  # fmt: skip
        if self.redis_url:
            command += ["--redis", self.redis_url]
        self.spawn(command, f"{name}.log")
        wait_for_port(port)
        self.web_ports.append(port)

    def stop(self) -> None:
        for process in reversed(self.running):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)


def setup_sales(base: str, bases: list[str], throughput_units: int, sellout_units: int) -> Any:
    """Merchant, product and stock, a room linked to the merchant, two open sales."""
    merchant = KeyPair()
    with httpx.Client(timeout=30) as client:

        def post(url: str, body: dict[str, Any], token: str = "") -> Any:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            response = client.post(url, json=body, headers=headers)
            if response.status_code >= 300:
                raise SystemExit(f"{url}: {response.status_code} {response.text}")
            return response.json()

        post(f"{base}/api/identities", merchant.registration("Bench merchant", now_ms()))
        post(
            f"{base}/api/products", merchant.listing("mug", "Stoneware mug", PRICE_CENTS, now_ms())
        )
        for number, units in enumerate((throughput_units, sellout_units)):
            post(
                f"{base}/api/products/mug/stock",
                merchant.stock(f"bench-{number}", "mug", units, now_ms()),
            )
        challenge = post(f"{base}/api/sessions/challenge", {})["challenge"]
        token = post(f"{base}/api/sessions", merchant.session(challenge))["token"]
        room = post(f"{base}/api/rooms", {"title": "Bench", "host_name": "Bench"})
        room_id, host_token = room["room_id"], room["host_token"]
        post(f"{base}/api/rooms/{room_id}/merchant", {"merchant_token": token}, host_token)
        for sale_id, units, limit in (
            ("throughput", throughput_units, 100),
            ("sellout", sellout_units, SELLOUT_LIMIT),
        ):
            post(
                f"{base}/api/rooms/{room_id}/sales",
                {
                    "sale_id": sale_id,
                    "product_id": "mug",
                    "units_offered": units,
                    "per_buyer_limit": limit,
                    "duration_ms": 3_600_000,
                    "payment_hold_ms": 3_600_000,
                },
                host_token,
            )
        for other in bases:  # every web process knows both sales before anyone buys
            deadline = time.monotonic() + 10
            while client.get(f"{other}/api/sales/sellout").status_code != 200:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{other} never learned the sales")
                time.sleep(0.05)
    return room_id


# Client processes


def wait_ready(ready: Any, results: Any, clients: list[Any], timeout_s: float = 300) -> None:
    """One client's "ready"; a client that failed meanwhile ends the run with its error
    (its outcome is on `results`) instead of a wait until the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            ready.get(timeout=0.5)
            return
        with contextlib.suppress(queue.Empty):
            raise SystemExit(f"a client failed: {results.get_nowait()}")
        if any(client.exitcode not in (None, 0) for client in clients):
            raise SystemExit("a client process died")
    raise SystemExit(f"no client was ready within {timeout_s:.0f} s")


def client_main(
    number: int,
    buyers: int,
    web_ports: list[int],
    room_id: str,
    rates_per_process: list[float],
    seconds: float,
    ready: Any,
    signing: list[Any],
    steps: list[Any],
    results: Any,
    niceness: int,
) -> None:
    if niceness:
        os.nice(niceness)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        outcome = asyncio.run(
            client_run(
                number,
                buyers,
                web_ports,
                room_id,
                rates_per_process,
                seconds,
                ready,
                signing,
                steps,
                results,
            )
        )
    except BaseException as error:  # the orchestrator must hear about it, not wait forever
        results.put({"error": repr(error)})
        raise
    results.put(outcome)


class BuyerSocket(RawClientSocket):
    """One buyer's WebSocket: only `order.result/v1` frames are decoded, the rest (stock
    pushes, sale events, receipts) are skipped after one `find`."""

    def __init__(
        self, request: bytes, ready: asyncio.Future[bool], crowd: Buyers, index: int
    ) -> None:
        super().__init__(request, ready)
        self.crowd = crowd
        self.index = index

    def text(self, buffer: bytes, start: int, end: int, frame_bytes: int) -> None:
        if buffer.find(b'"order.result/v1"', start, end) >= 0:
            self.crowd.answered(self.index, orjson.loads(buffer[start:end]))


class Buyers:
    """One process's buyers: a key and a socket each, and the orders waiting for answers
    (each with its send time and the step it belongs to)."""

    def __init__(self, keys: list[KeyPair]) -> None:
        self.keys = keys
        self.sockets: list[BuyerSocket] = []
        self.waiting: dict[tuple[int, str], tuple[float, int]] = {}
        self.answers: dict[int, list[dict[str, Any]]] = {}
        self.drained = asyncio.Event()

    async def connect(self, ports: list[int], room_id: str) -> None:
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        path = f"/ws/rooms/{room_id}"

        async def one(index: int, port: int) -> BuyerSocket:
            async with gate:
                ready: asyncio.Future[bool] = loop.create_future()
                request = upgrade_request("127.0.0.1", port, path)
                sock = BuyerSocket(request, ready, self, index)
                await loop.create_connection(lambda: sock, "127.0.0.1", port)
                if not await asyncio.wait_for(ready, CONNECT_TIMEOUT_S):
                    raise RuntimeError(f"buyer {index}: the upgrade to {path} failed")
                return sock

        self.sockets = list(await asyncio.gather(*(one(i, p) for i, p in enumerate(ports))))

    def order(self, index: int, order_id: str, sale_id: str, step: int) -> None:
        """Sign and send; the answer lands in `answers[step]` with its latency."""
        self.send(index, order_id, self.signed(index, order_id, sale_id), step)

    def signed(self, index: int, order_id: str, sale_id: str) -> bytes:
        """Buyer `index`'s order of 1 unit, signed now, as a masked frame."""
        fields = self.keys[index].order(order_id, sale_id, 1, PRICE_CENTS, now_ms())
        return masked_frame(OPCODE_TEXT, orjson.dumps({"type": "order/v1", **fields}))

    def sign_step(self, rate: float, seconds: float, step: int) -> list[tuple[int, str, bytes]]:
        """A throughput step's orders, signed: (buyer, order id, frame) for order n, from
        buyer n mod buyers, in the order they are to be sent."""
        buyers = len(self.keys)
        orders = []
        for n in range(int(rate * seconds)):
            order_id = f"r{step}-{n // buyers}"
            orders.append((n % buyers, order_id, self.signed(n % buyers, order_id, "throughput")))
        return orders

    def send(self, index: int, order_id: str, frame: bytes, step: int) -> None:
        """Send a `signed` order; its answer lands in `answers[step]` with its latency."""
        self.waiting[(index, order_id)] = (time.perf_counter(), step)
        self.drained.clear()
        self.sockets[index].send_frame(frame)

    def answered(self, index: int, result: dict[str, Any]) -> None:
        waiting = self.waiting.pop((index, result["order_id"]), None)
        if waiting is None:
            return
        sent_s, step = waiting
        result["answered_s"] = time.perf_counter()
        result["latency_s"] = result["answered_s"] - sent_s
        self.answers.setdefault(step, []).append(result)
        if not self.waiting:
            self.drained.set()

    async def settle(self, step: int) -> tuple[list[dict[str, Any]], int]:
        """The step's answers once every order sent has one (or ANSWER_WAIT_S passed), and
        how many went unanswered (forgotten, so a late answer is not counted later)."""
        if self.waiting:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.drained.wait(), ANSWER_WAIT_S)
        unanswered = [key for key, (_, of_step) in self.waiting.items() if of_step == step]
        for key in unanswered:
            del self.waiting[key]
        return self.answers.pop(step, []), len(unanswered)

    def close(self) -> None:
        for sock in self.sockets:
            if sock.transport is not None:
                sock.transport.close()


async def client_run(
    number: int,
    buyers: int,
    web_ports: list[int],
    room_id: str,
    rates_per_process: list[float],
    seconds: float,
    ready: Any,
    signing: list[Any],
    steps: list[Any],
    results: Any,
) -> dict[str, Any]:
    keys = [KeyPair() for _ in range(buyers)]
    ports = [web_ports[(number + i) % len(web_ports)] for i in range(buyers)]
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        gate = asyncio.Semaphore(50)

        async def register(key: KeyPair, port: int) -> None:
            # A registration failed with a transport error in 2 of about 25 runs (a
            # kept-alive connection closed as a request went out, it seems): try again,
            # and then take "already registered" as done (the first try may have landed).
            for attempt in range(REGISTER_ATTEMPTS):
                async with gate:
                    try:
                        response = await client.post(
                            f"http://127.0.0.1:{port}/api/identities",
                            json=key.registration("buyer", now_ms()),
                        )
                    except httpx.TransportError:
                        if attempt + 1 == REGISTER_ATTEMPTS:
                            raise
                        continue
                if response.status_code == 201 or (
                    attempt > 0 and response.json().get("error") == "already_registered"
                ):
                    return
                raise RuntimeError(f"registration: {response.status_code} {response.text}")

        await asyncio.gather(*(register(k, p) for k, p in zip(keys, ports, strict=True)))
    crowd = Buyers(keys)
    await crowd.connect(ports, room_id)
    ready.put(number)
    step_outcomes = []
    for step, rate in enumerate(rates_per_process):
        await asyncio.to_thread(signing[step].wait)
        orders = crowd.sign_step(rate, seconds, step)
        ready.put(number)
        await asyncio.to_thread(steps[step].wait)
        step_outcomes.append(await open_loop(crowd, orders, rate, step))
    # Sell-out: every buyer of every process at once, SELLOUT_LIMIT orders of 1 unit.
    await asyncio.to_thread(steps[-1].wait)
    sellout_step = len(rates_per_process)
    for index in range(buyers):
        for n in range(SELLOUT_LIMIT):
            crowd.order(index, f"s{n}", "sellout", sellout_step)
    answers, unanswered = await crowd.settle(sellout_step)
    crowd.close()
    return {
        "steps": step_outcomes,
        "sellout_units": sum(a["quantity"] for a in answers if a["status"] == "accepted"),
        "sellout_reasons": count_reasons(answers),
        "sellout_unanswered": unanswered,
    }


def count_reasons(answers: list[dict[str, Any]]) -> dict[str, int]:
    reasons: dict[str, int] = {}
    for answer in answers:
        if answer["status"] != "accepted":
            reasons[answer["reason"]] = reasons.get(answer["reason"], 0) + 1
    return reasons


async def open_loop(
    crowd: Buyers, orders: list[tuple[int, str, bytes]], rate: float, step: int
) -> dict[str, Any]:
    """`rate` orders a second from this process on a fixed schedule (an open loop: a slow
    answer does not slow the offered load): order n is due at n / rate seconds, from buyer
    n mod buyers, so each buyer orders every buyers / rate seconds (`Buyers.sign_step` made
    them). One timer sends whatever is due; how late each order left against its due time
    is kept as the send lag."""
    total = len(orders)
    started = time.perf_counter()
    lags_s: list[float] = []
    sent = 0
    while sent < total:
        now = time.perf_counter()
        while sent < total and started + sent / rate <= now:
            lags_s.append(now - (started + sent / rate))
            crowd.send(*orders[sent], step)
            sent += 1
        if sent < total:
            # At least a millisecond: uvloop's timers count whole milliseconds, and a
            # shorter sleep would return at once and spin until the next order is due.
            await asyncio.sleep(max(0.001, started + sent / rate - time.perf_counter()))
    answers, unanswered = await crowd.settle(step)
    last_answer_s = max((a["answered_s"] for a in answers), default=started) - started
    lags_s.sort()
    return {
        "sent": sent,
        "unanswered": unanswered,
        "accepted": sum(1 for a in answers if a["status"] == "accepted"),
        "reasons": count_reasons(answers),
        "latencies": [a["latency_s"] for a in answers],
        "window_s": total / rate,
        "last_answer_s": last_answer_s,
        "send_lag_p99_s": percentile(lags_s, 0.99),
    }


# Measuring one mode


def ledger_units(data_dir: Path, sale_id: str) -> int:
    """Units of accepted, not expired orders of a sale, read from a stopped server's ledger."""

    async def read() -> int:
        from ledger import Ledger, LedgerSettings, decode_entry

        ledger = await Ledger.open(data_dir / "ledger", LedgerSettings())
        try:
            units = 0
            for index in range(ledger.size):
                entry_type, fields = decode_entry(ledger.entry(index))
                if entry_type == "order/v1" and fields["sale_id"] == sale_id:
                    if fields["action"] == "accepted":
                        units += fields["quantity"]
                    elif fields["action"] == "expired":
                        units -= fields["quantity"]
            return units
        finally:
            await ledger.close()

    return asyncio.run(read())


def run_mode(mode: str, arguments: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        processes = Processes(Path(directory))
        if os.environ.get("FLASH_SALE_GC_LOG"):
            print(f"  server logs in {directory}", flush=True)
        try:
            if mode == "redis":
                processes.start_redis()
                processes.start_writer()
                processes.start_web("web0", arguments.profile)
                processes.start_web("web1")
            else:
                processes.start_web("web0", arguments.profile)
            bases = [f"http://127.0.0.1:{port}" for port in processes.web_ports]
            print(f"  {mode}: servers starting", flush=True)
            room_id = setup_sales(bases[0], bases, THROUGHPUT_UNITS, arguments.sellout_units)
            context = multiprocessing.get_context("spawn")
            ready, results = context.Queue(), context.Queue()
            steps = [context.Event() for _ in range(len(arguments.rates) + 1)]
            signing = [context.Event() for _ in arguments.rates]
            per_client = arguments.buyers // arguments.client_processes
            per_process = [rate / arguments.client_processes for rate in arguments.rates]
            clients = [
                context.Process(
                    target=client_main,
                    args=(
                        n,
                        per_client,
                        processes.web_ports,
                        room_id,
                        per_process,
                        arguments.seconds,
                        ready,
                        signing,
                        steps,
                        results,
                        arguments.client_nice,
                    ),
                )
                for n in range(arguments.client_processes)
            ]
            for client in clients:
                client.daemon = True  # a failed run must not wait for them at exit
                client.start()
            print("  servers up, sales open; clients registering and connecting", flush=True)
            for _ in clients:
                wait_ready(ready, results, clients)
            client_pids = [client.pid for client in clients if client.pid is not None]
            server_pids = [
                (name, process.pid)
                for name, process in zip(processes.names, processes.running, strict=True)
            ]
            cpu_steps = []
            for step, rate in enumerate(arguments.rates):
                signing[step].set()
                for _ in clients:
                    wait_ready(ready, results, clients)  # this step's orders are signed
                print(f"  offering {rate:,.0f} orders/s for {arguments.seconds:.0f} s", flush=True)
                before = cpu_seconds(server_pids, client_pids)
                steps[step].set()
                time.sleep(arguments.seconds + 3)
                cpu_steps.append(cpu_spent(before, cpu_seconds(server_pids, client_pids)))
            steps[-1].set()
            outcomes = [results.get(timeout=300) for _ in clients]
            for client in clients:
                client.join(timeout=30)
            errors = [outcome["error"] for outcome in outcomes if "error" in outcome]
            if errors:
                raise SystemExit(f"client errors: {errors}")
            server_remaining = None
            with httpx.Client(timeout=10) as http:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    # Scaled out, the web replica's count is local; Redis is the truth.
                    sale = http.get(f"{bases[0]}/api/sales/sellout").json()
                    server_remaining = sale["units_remaining"]
                    if mode == "embedded" or server_remaining is not None:
                        break
            redis_remaining = None
            if mode == "redis":
                import redis as redis_sync

                client_redis = redis_sync.Redis.from_url(processes.redis_url)
                value = client_redis.hget("{sale:sellout}:meta", "remaining")
                redis_remaining = None if value is None else int(value)
                client_redis.close()
            bare = bare_script_rate(processes.redis_url) if mode == "redis" else None
        finally:
            processes.stop()
        data_dir = Path(directory) / ("writer" if mode == "redis" else "web0")
        in_ledger = ledger_units(data_dir, "sellout")
    rows = []
    for step, rate in enumerate(arguments.rates):
        parts = [outcome["steps"][step] for outcome in outcomes]
        latencies = sorted(x for part in parts for x in part["latencies"])
        reasons: dict[str, int] = {}
        for part in parts:
            for reason, count in part["reasons"].items():
                reasons[reason] = reasons.get(reason, 0) + count
        accepted = sum(part["accepted"] for part in parts)
        # Answers that come after the window still count, over the time they took.
        span_s = max(max(part["window_s"], part["last_answer_s"]) for part in parts)
        rows.append(
            {
                "cpu": cpu_steps[step],
                "offered_per_s": rate,
                "sent": sum(part["sent"] for part in parts),
                "accepted": accepted,
                "accepted_per_s": accepted / span_s,
                "unanswered": sum(part["unanswered"] for part in parts),
                "p50_ms": 1000 * percentile(latencies, 0.50),
                "p99_ms": 1000 * percentile(latencies, 0.99),
                "max_ms": 1000 * latencies[-1] if latencies else float("nan"),
                "refused": reasons,
                "send_lag_p99_ms": 1000 * max(part["send_lag_p99_s"] for part in parts),
            }
        )
    sellout_reasons: dict[str, int] = {}
    for outcome in outcomes:
        for reason, count in outcome["sellout_reasons"].items():
            sellout_reasons[reason] = sellout_reasons.get(reason, 0) + count
    told = sum(outcome["sellout_units"] for outcome in outcomes)
    offered = arguments.sellout_units
    remaining = redis_remaining if mode == "redis" else server_remaining
    oversold = max(0, told - offered) + abs(in_ledger - told)
    if remaining is not None:
        oversold += abs((offered - remaining) - told)
    return {
        "mode": mode,
        "buyers": per_client * arguments.client_processes,
        "rows": rows,
        "sellout_told": told,
        "sellout_ledger": in_ledger,
        "sellout_remaining": remaining,
        "sellout_reasons": sellout_reasons,
        "sellout_unanswered": sum(outcome["sellout_unanswered"] for outcome in outcomes),
        "offered": offered,
        "oversold": oversold,
        "bare_script_per_s": bare,
    }


def cpu_seconds(servers: list[tuple[str, int]], clients: list[int]) -> dict[str, float]:
    """CPU seconds so far of each server process (and its children, such as the signature
    checker), of the clients together, the machine's idle seconds (all cores) and its
    steal seconds (time the hypervisor gave to other machines while this one had work:
    how noisy the host was), from /proc; empty where there is no /proc."""
    tick = os.sysconf("SC_CLK_TCK")

    def of(pid: int) -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        own = (int(fields[11]) + int(fields[12])) / tick
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return own + sum(of(int(child)) for child in children)

    try:
        spent = {name: of(pid) for name, pid in servers}
        spent["clients"] = sum(of(pid) for pid in clients)
        cores = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        spent["idle"] = (int(cores[3]) + int(cores[4])) / tick
        spent["steal"] = int(cores[7]) / tick
    except (OSError, ValueError, IndexError):
        return {}
    return spent


def cpu_spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before[name] for name in after if name in before}


def percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def bare_script_rate(redis_url: str) -> float | None:
    """The reserve-and-record script alone, driven by redis-benchmark (C, 50 connections),
    random buyers and orders, limit 1 each, on a sale with enough units."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return None
    import redis as redis_sync

    from livecommerce.stock.redis_lua import RESERVE_RECORD_LUA, accepted_stream_key, sale_keys

    requests = 200_000
    client = redis_sync.Redis.from_url(redis_url)
    sha = client.script_load(RESERVE_RECORD_LUA)
    client.hset(sale_keys("bare")[0], mapping={"offered": requests, "remaining": requests})
    client.close()
    host, port = redis_url.split("//", 1)[1].split("/")[0].rsplit(":", 1)
    record = json.dumps({"order_id": "x", "note": "a record of about the real size" * 8})
    completed = subprocess.run(
        [binary, "-h", host, "-p", port, "-c", "50", "-n", str(requests), "-r", "1000000000",
         "-q", "EVALSHA", sha, "4", *sale_keys("bare"), accepted_stream_key("bare"),
         "b__rand_int__", "o__rand_int__", "1", "1", "100000000", record, "2000000"],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    found = re.findall(r"([0-9.]+) requests per second", completed.stdout)
    return float(found[-1]) if found else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["embedded", "redis", "both"], default="both")
    parser.add_argument("--buyers", type=int, default=2000)
    parser.add_argument("--client-processes", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--rates",
        type=lambda text: [float(part) for part in text.split(",")],
        default=[2000.0, 5000.0],
        help="offered orders per second, one step each (comma-separated)",
    )
    parser.add_argument("--sellout-units", type=int, default=5000)
    parser.add_argument(
        "--client-nice", type=int, default=0, help="niceness of the client processes (0-19)"
    )
    parser.add_argument(
        "--profile", type=Path, help="run the (first) web process under cProfile, into this file"
    )
    arguments = parser.parse_args()
    modes = ["embedded", "redis"] if arguments.mode == "both" else [arguments.mode]
    print(
        f"{arguments.buyers} buyers in {arguments.client_processes} client processes,"
        f" one WebSocket each, {arguments.seconds:.0f} s per offered rate; sell-out of"
        f" {arguments.sellout_units} units; load average before: {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    for mode in modes:
        result = run_mode(mode, arguments)
        print(json.dumps(result), flush=True)
        for row in result["rows"]:
            print(
                f"{mode:<9} buyers {result['buyers']}  offered {row['offered_per_s']:>6,.0f}/s"
                f"  accepted {row['accepted_per_s']:>6,.0f}/s  p50 {row['p50_ms']:.1f} ms"
                f"  p99 {row['p99_ms']:.1f} ms  max {row['max_ms']:.0f} ms"
                f"  unanswered {row['unanswered']}  refused {row['refused']}"
                f"  clients' send lag p99 {row['send_lag_p99_ms']:.1f} ms",
                flush=True,
            )
            if row["cpu"]:
                cpu = row["cpu"]
                servers = {k: v for k, v in cpu.items() if k not in ("clients", "idle", "steal")}
                accepted = row["accepted"]
                print(
                    f"{'':<9} CPU-s over the step: "
                    + " ".join(f"{name} {value:.1f}" for name, value in servers.items())
                    + f"  clients {cpu['clients']:.1f}  machine idle {cpu['idle']:.1f}"
                    + f" steal {cpu.get('steal', 0.0):.1f}"
                    + f"  (servers: {sum(servers.values()) * 1e6 / max(1.0, accepted):.0f} us"
                    " per accepted order)",
                    flush=True,
                )
        print(
            f"{mode:<9} sell-out of {result['offered']}: told {result['sellout_told']},"
            f" ledger {result['sellout_ledger']}, remaining {result['sellout_remaining']},"
            f" refused {result['sellout_reasons']}, unanswered {result['sellout_unanswered']}"
            f"  oversold {result['oversold']}"
            + (
                f"  bare script {result['bare_script_per_s']:,.0f}/s"
                if result["bare_script_per_s"]
                else ""
            ),
            flush=True,
        )


def profiled(output: str, argv: list[str]) -> None:
    """`python -m livecommerce <argv>` under cProfile; the profile is written on SIGTERM
    (uvicorn re-raises the signal after its shutdown, which would skip cProfile's own
    writing)."""
    import cProfile

    from livecommerce.__main__ import main as livecommerce_main

    profiler = cProfile.Profile()

    def dump(signal_number: int, frame: Any) -> None:
        profiler.disable()
        profiler.dump_stats(output)
        os._exit(0)

    signal.signal(signal.SIGTERM, dump)
    profiler.enable()
    livecommerce_main(argv)


def gc_logged(argv: list[str]) -> None:
    """`python -m livecommerce <argv>`, appending to the file FLASH_SALE_GC_LOG names (set it
    to use this) every garbage collection over 20 ms, and every 10 s how many collections
    of each generation ran and how long they took in all."""
    import gc

    from livecommerce.__main__ import main as livecommerce_main

    started: list[float] = [0.0]
    window: dict[int, list[float]] = {0: [0, 0.0], 1: [0, 0.0], 2: [0, 0.0]}
    window_started: list[float] = [time.perf_counter()]

    def write(line: str) -> None:
        with open(os.environ["FLASH_SALE_GC_LOG"], "a") as log:
            log.write(f"{time.time():.1f} {line}\n")

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        now = time.perf_counter()
        took = now - started[0]
        generation = info["generation"]
        window[generation][0] += 1
        window[generation][1] += took
        if took > 0.02:
            write(f"gc generation {generation}: {took * 1000:.0f} ms")
        if now - window_started[0] >= 10:
            counts = ", ".join(
                f"generation {g}: {int(window[g][0])} in {window[g][1] * 1000:.0f} ms"
                for g in window
            )
            write(f"last {now - window_started[0]:.0f} s: {counts}")
            window.update({0: [0, 0.0], 1: [0, 0.0], 2: [0, 0.0]})
            window_started[0] = now

    gc.callbacks.append(callback)
    livecommerce_main(argv)


if __name__ == "__main__":
    if sys.argv[1:2] == ["_gc_logged"]:
        gc_logged(sys.argv[2:])
    elif sys.argv[1:2] == ["_profiled"]:
        profiled(sys.argv[2], sys.argv[3:])
    else:
        main()
