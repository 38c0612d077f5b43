"""Process crashes during a sale, as rounds: sale, traffic, fault, recovery, checks.

Shared by tests/faults/ (a few short rounds) and bench/chaos.py (many long ones). Each
round schedules a fresh sale, runs `Traffic` against it, injects one fault at a random
moment (seeded), holds it, recovers, lets the traffic run on, stops the buyers (each
finishes its order), and checks the process after the fault. `Round.problems` lists
every broken promise; a round is good when it is empty. The ledger is compared with
what the clients were told whenever it can be read (from a dead or stopped process's
data directory): at each kill of the process that holds it, and at the end.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ledger.checkpoint import Checkpoint
from ledger.note import Verifier, open_note
from livecommerce.clients.signing import KeyPair
from tests.conftest import RedisServer
from tests.faults.traffic import (
    Endpoint,
    Settings,
    Told,
    Traffic,
    check_ledger,
    check_receipts,
    children_of,
    comment_reaches_every_viewer,
    idle_cpu_seconds,
    ledger_view,
    still_running,
    viewers_see_stock,
)
from tests.livecommerce.pipeline.cluster import Entries, ledger_entries, remaining_or_none
from tests.livecommerce.pipeline.flows import now_ms, register, session
from tests.livecommerce.processes import ServerProcess, WriterProcess

DEMO_ROOM = "demo"
DEMO_PRODUCT = "mug-1"
HOLD_MS = 3_600_000  # the longest hold: no unit comes back by expiry during a round
SALE_DURATION_MS = 3_600_000
# After the traffic stops, one quiet second: a recovered process must be idle. Bounded
# well above what a process at rest uses here (its tickers: 10 to 40 ms a second).
IDLE_CPU_SECONDS_MAX = 0.25
# A fault may cost a few lines of log: a start's banner, a warning per retry with
# backoff, one when something starts failing and one when it works again. An error per
# order (or per 100 ms tick) would be hundreds during a fault with traffic running.
FAULT_LOG_LINES_MAX = 30


def log_lines_max(down_s: float) -> int:
    """Backoff doubles up to 5 s: one more retry line per 5 s of a long fault."""
    return FAULT_LOG_LINES_MAX + round(down_s / 5)


@dataclass
class Round:
    number: int
    fault: str
    sale_id: str
    units_offered: int
    fault_at_s: float = 0.0
    down_s: float = 0.0
    told: Told | None = None
    ledger_units: int | None = None  # accepted units in the ledger when last read
    ledger_read: str = ""  # when that was
    units_remaining: int | None = None  # as the recovered process reports it
    problems: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    traffic: Traffic | None = None

    def line(self) -> str:
        told = self.told.line() if self.told else "no answers"
        figures = " ".join(f"{name}={value}" for name, value in self.figures.items())
        status = "ok" if not self.problems else f"{len(self.problems)} PROBLEMS"
        ledger = (
            f"the ledger holds {self.ledger_units} units of {self.units_offered} "
            f"({self.ledger_read})"
            if self.ledger_units is not None
            else f"{self.units_offered} offered, the ledger is read at the end"
        )
        return (
            f"round {self.number} {self.fault} at {self.fault_at_s:.2f} s for "
            f"{self.down_s:.2f} s: {told}; {ledger}; {self.units_remaining} reported left; "
            f"{figures}; {status}"
        )


@dataclass
class Shape:
    """How big a round is."""

    buyers: int = 12
    ws_share: float = 0.5  # of buyers on room sockets (the rest over HTTP)
    viewers: int = 2
    units_offered: int = 600
    per_buyer_limit: int = 60
    before_s: tuple[float, float] = (0.3, 2.0)  # the fault comes this long after traffic
    hold_s: tuple[float, float] = (0.3, 1.5)  # the fault lasts this long
    after_s: float = 2.0  # traffic after recovery, before the buyers stop
    settings: Settings = field(default_factory=Settings)


def demo_host_token(log: str) -> str:
    """The demo room's host credential, printed by `serve --demo` at every start."""
    found: list[str] = re.findall(r"host credential: (\S+)", log)
    assert found, f"no host credential in the log:\n{log[-2000:]}"
    return found[-1]


async def wait_for_log(process: ServerProcess, text: str, timeout_s: float = 20) -> str:
    async with asyncio.timeout(timeout_s):
        while text not in (log := process.log_since_start()):
            await asyncio.sleep(0.05)
    return log


def log_lines(process: ServerProcess | WriterProcess) -> int:
    return process.log_since_start().count("\n")


async def read_paths(
    http: httpx.AsyncClient, base: str, sale_id: str, ledger_base: str, verifier: Verifier
) -> dict[str, Any]:
    """Every read path answers: the sale, its product, the room, the log's checkpoint
    (signed by the log's key). Returns the sale."""
    sale = await http.get(f"{base}/api/sales/{sale_id}")
    assert sale.status_code == 200, sale.text
    view: dict[str, Any] = sale.json()
    product = await http.get(f"{base}/api/products/{view['product_id']}")
    assert product.status_code == 200, product.text
    room = await http.get(f"{base}/api/rooms/{view['room_id']}")
    assert room.status_code == 200, room.text
    assert (await http.get(f"{base}/healthz")).status_code == 200
    checkpoint = await http.get(f"{ledger_base}/checkpoint")
    assert checkpoint.status_code == 200, checkpoint.text
    opened = open_note(checkpoint.content, (verifier,))
    assert Checkpoint.parse(opened.text).size > 0
    return view


@dataclass
class Shop:
    """A merchant whose product is sold in a room: what it takes to run a sale."""

    merchant: KeyPair
    room_id: str
    host_token: str
    product_id: str

    async def sale(
        self, http: httpx.AsyncClient, base: str, sale_id: str, units: int, limit: int
    ) -> int:
        """Restock the product by `units` and schedule a sale of them, open now and for
        longer than any round; returns its price."""
        stocked = await http.post(
            f"{base}/api/products/{self.product_id}/stock",
            json=self.merchant.stock(f"{sale_id}-stock", self.product_id, units, now_ms()),
        )
        assert stocked.status_code == 201, stocked.text
        scheduled = await http.post(
            f"{base}/api/rooms/{self.room_id}/sales",
            headers={"Authorization": f"Bearer {self.host_token}"},
            json={
                "sale_id": sale_id,
                "product_id": self.product_id,
                "units_offered": units,
                "per_buyer_limit": limit,
                "duration_ms": SALE_DURATION_MS,
                "payment_hold_ms": HOLD_MS,
            },
        )
        assert scheduled.status_code == 201, scheduled.text
        price: int = scheduled.json()["price_cents"]
        return price


async def open_shop(http: httpx.AsyncClient, base: str) -> Shop:
    """A merchant with a listed product and a room linked to it (no stock yet)."""
    merchant = KeyPair()
    await register(http, base, merchant, "Mugs & Co")
    listed = await http.post(
        f"{base}/api/products",
        json=merchant.listing("mug", "Stoneware mug", 1800, now_ms()),
    )
    assert listed.status_code == 201, listed.text
    token = await session(http, base, merchant)
    created = await http.post(f"{base}/api/rooms", json={"title": "Live", "host_name": "Mia"})
    assert created.status_code == 201, created.text
    room_id, host_token = created.json()["room_id"], created.json()["host_token"]
    linked = await http.post(
        f"{base}/api/rooms/{room_id}/merchant",
        json={"merchant_token": token},
        headers={"Authorization": f"Bearer {host_token}"},
    )
    assert linked.status_code == 201, linked.text
    return Shop(merchant, room_id, host_token, "mug")


class EmbeddedServer:
    """`serve --demo` on one data directory and one port, killed and started again.

    The demo room is made again at every start (rooms live in memory; docs/operations.md),
    so buyers and viewers find it after a restart; its merchant's key stays in the data
    directory, so the test can restock as that merchant."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.process: ServerProcess | None = None
        self.port: int | None = None
        self.host_token = ""
        self.merchant: KeyPair | None = None

    @property
    def endpoint(self) -> Endpoint:
        assert self.process is not None
        return Endpoint(self.process.http, self.process.ws)

    async def start(self) -> None:
        self.process = await asyncio.to_thread(
            ServerProcess, self.data_dir, demo=True, port=self.port
        )
        self.port = self.process.port
        log = await wait_for_log(self.process, "livecommerce demo is ready")
        self.host_token = demo_host_token(log)
        self.merchant = KeyPair((self.data_dir / "demo_merchant.key").read_bytes())

    async def kill(self) -> list[int]:
        """SIGKILL; returns the children (the signature checker) still running after."""
        assert self.process is not None
        children = children_of(self.process.process.pid)
        await asyncio.to_thread(self.process.kill)
        return await still_running(children)

    async def stop(self) -> None:
        if self.process is not None:
            await asyncio.to_thread(self.process.stop)

    def shop(self) -> Shop:
        assert self.merchant is not None
        return Shop(self.merchant, DEMO_ROOM, self.host_token, DEMO_PRODUCT)


async def register_buyers(
    http: httpx.AsyncClient, base: str, count: int, seed: int
) -> list[KeyPair]:
    chooser = random.Random(seed)
    buyers = [KeyPair(chooser.randbytes(32)) for _ in range(count)]
    for buyer in buyers:
        await register(http, base, buyer, f"Buyer {buyer.identity_id[:6]}")
    return buyers


def _channels(shape: Shape, count: int) -> list[str]:
    on_sockets = round(count * shape.ws_share)
    return ["ws" if number < on_sockets else "http" for number in range(count)]


async def embedded_rounds(
    tmp_path: Path,
    rounds: int,
    seed: int,
    shape: Shape,
    report: Any = print,
    deadline_s: float | None = None,
) -> list[Round]:
    """`rounds` sales on one embedded server (fewer if time.monotonic() passes
    `deadline_s`), each with a SIGKILL at a random moment and a restart on the same data
    directory; the ledger is read at each kill and at the end."""
    chooser = random.Random(seed)
    server = EmbeddedServer(tmp_path / "data")
    done: list[Round] = []
    await server.start()
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            keys = await register_buyers(http, server.endpoint.http, shape.buyers, seed)
            for number in range(1, rounds + 1):
                if deadline_s is not None and time.monotonic() > deadline_s:
                    break
                this = Round(number, "kill -9 server", f"chaos-{seed}-{number}", 0)
                done.append(this)
                await _embedded_round(http, server, this, keys, chooser, shape, done)
                report(this.line())
                await asyncio.sleep(0)
        await server.stop()
        final = await ledger_entries(server.data_dir)
        for each in done:
            _compare(each, final, True, "read at the end")
    finally:
        await server.stop()
    return done


async def _embedded_round(
    http: httpx.AsyncClient,
    server: EmbeddedServer,
    this: Round,
    keys: list[KeyPair],
    chooser: random.Random,
    shape: Shape,
    done: list[Round],
) -> None:
    this.units_offered = shape.units_offered
    price = await server.shop().sale(
        http, server.endpoint.http, this.sale_id, shape.units_offered, shape.per_buyer_limit
    )
    endpoints = [server.endpoint]
    traffic = Traffic(
        http,
        DEMO_ROOM,
        this.sale_id,
        price,
        [(k, c, endpoints) for k, c in zip(keys, _channels(shape, len(keys)), strict=True)],
        [endpoints] * shape.viewers,
        shape.settings,
        seed=chooser.randrange(2**31),
        prefix=f"r{this.number}",
    )
    this.traffic = traffic
    traffic.start()
    try:
        this.fault_at_s = chooser.uniform(*shape.before_s)
        await asyncio.sleep(this.fault_at_s)
        killed_at_s = time.monotonic()
        orphans = await server.kill()
        if orphans:
            this.problems.append(f"children still running after the kill: {orphans}")
        # The server is dead: its ledger is at rest. Everything anyone heard is in it.
        entries = await ledger_entries(server.data_dir)
        for each in done:
            _compare(each, entries, each is not this, f"read after kill {this.number}")
        hold_s = chooser.uniform(*shape.hold_s)
        await asyncio.sleep(max(0.0, killed_at_s + hold_s - time.monotonic()))
        await server.start()
        this.down_s = time.monotonic() - killed_at_s
        await asyncio.sleep(shape.after_s)
        await traffic.stop_buyers()
        assert server.process is not None
        base = server.endpoint.http
        await _after_recovery(http, this, traffic, [base], f"{base}/ledger")
        this.figures["log_lines"] = log_lines(server.process)
        if this.figures["log_lines"] > log_lines_max(this.down_s):
            this.problems.append(f"the restarted server logged {this.figures['log_lines']} lines")
        await _idle(this, {"server": server.process.process.pid})
        # A viewer that reconnected to the restarted server (a room made again) was
        # sent a snapshot: the events it knew of were another run's.
        for viewer in traffic.viewers:
            if len(viewer.modes) < 2 or viewer.modes[1] != "snapshot":
                this.problems.append(f"viewer {viewer.number} reconnected as {viewer.modes}")
    finally:
        await traffic.close()


async def _after_recovery(
    http: httpx.AsyncClient,
    this: Round,
    traffic: Traffic,
    bases: Sequence[str],
    ledger_base: str,
    rooms_kept: bool = True,
) -> None:
    """The checks of a recovered deployment with the buyers stopped: what they were told,
    every read path and receipts on every process, the stock on viewers' screens, and a
    comment to every viewer (or, where Redis lost the rooms, its refusal)."""
    told = traffic.told()
    this.told = told
    sold_out_at = [
        answer.at_s
        for log in traffic.orders.values()
        for answer in log.answers
        if answer.reason == "sold_out"
    ]
    this.figures["sold_out_at_s"] = round(min(sold_out_at), 2) if sold_out_at else None
    this.figures["retried"] = dict(traffic.retried + traffic.errors)
    for contradiction in told.contradictions:
        this.problems.append(f"contradiction: {contradiction}")
    for order_id in told.unanswered:
        this.problems.append(f"no final answer for {order_id}")
    if traffic.hangs:
        this.figures["hangs"] = len(traffic.hangs)
    verifier = Verifier.parse((await http.get(f"{ledger_base}/vkey")).text.strip())
    expected = this.units_offered - told.accepted_units()
    product_id = ""
    for base in bases:
        sale = await read_paths(http, base, this.sale_id, ledger_base, verifier)
        product_id = sale["product_id"]
        this.units_remaining = sale["units_remaining"]
        if sale["units_remaining"] != expected:
            this.problems.append(
                f"{base} reports {sale['units_remaining']} left; offered minus accepted is "
                f"{expected}"
            )
        pushed, fetched, problems = await check_receipts(http, base, traffic, verifier)
        this.figures["receipts"] = f"{pushed}+{fetched}"
        this.problems += problems
    try:
        await viewers_see_stock(traffic, product_id, expected)
    except TimeoutError:
        seen = [viewer.stock_seen(product_id) for viewer in traffic.viewers]
        this.problems.append(f"viewers' screens show {seen} left, not {expected}")
    text = f"after round {this.number}"
    try:
        await comment_reaches_every_viewer(traffic, text)
        if not rooms_kept:
            this.problems.append("a comment went out in a room Redis had lost")
    except TimeoutError:
        if rooms_kept:
            this.problems.append(
                f"a comment after recovery did not reach every viewer (modes "
                f"{[v.modes for v in traffic.viewers]}, closes "
                f"{[v.closes for v in traffic.viewers]})"
            )
    if not rooms_kept and not traffic.viewers[-1].comment_errors["unavailable"]:
        this.problems.append("a comment in a room Redis lost was not refused as unavailable")


async def _idle(this: Round, pids: dict[str, int]) -> None:
    used = await idle_cpu_seconds(list(pids.values()))
    for name, pid in pids.items():
        this.figures[f"idle_cpu_{name}"] = round(used[pid], 3)
        if used[pid] > IDLE_CPU_SECONDS_MAX:
            this.problems.append(f"{name} used {used[pid]:.2f} CPU s in a quiet second")


def _compare(this: Round, entries: Entries, complete: bool, when: str) -> None:
    """What this round's clients were told against a ledger read from its data dir."""
    if this.traffic is None:
        return
    view = ledger_view(entries, this.sale_id)
    told = this.traffic.told()
    this.ledger_units = sum(quantity for _, quantity in view.accepted.values())
    this.ledger_read = when
    for problem in check_ledger(told, view, complete, set(this.traffic.orders)):
        if problem not in this.problems:
            this.problems.append(problem)
    if complete and view.units_remaining != view.units_offered - this.ledger_units:
        this.problems.append(
            f"the ledger's last stock count {view.units_remaining} is not offered minus "
            f"accepted ({view.units_offered} - {this.ledger_units})"
        )


def totals(rounds: Sequence[Round]) -> dict[str, int]:
    lost = sum(1 for r in rounds for p in r.problems if p.startswith("LOST"))
    oversold = 0
    for each in rounds:
        if each.ledger_units is not None:
            oversold += max(0, each.ledger_units - each.units_offered)
    return {
        "rounds": len(rounds),
        "told_accepted": sum(len(r.told.accepted) for r in rounds if r.told),
        "lost_acknowledged": lost,
        "oversold_units": oversold,
        "problems": sum(len(r.problems) for r in rounds),
    }


# Scaled out: two web processes, the ledger writer and a private redis-server.

# The web processes wait this long for the writer before answering "unavailable" (20 s by
# default): a writer that is down for a few seconds then shows both outcomes, orders that
# waited and were confirmed, and orders told to retry.
SCALED_CONFIRM_TIMEOUT_MS = 3_000
SCALED_ENVIRONMENT = {"LIVECOMMERCE_ORDER_CONFIRM_TIMEOUT_MS": str(SCALED_CONFIRM_TIMEOUT_MS)}
SCALED_FAULTS = ("kill -9 web", "kill -9 writer", "restart redis")


class Cluster:
    """The ledger writer (serving its log over HTTP) and two web processes on one Redis;
    each can be killed and started again where it was."""

    def __init__(self, tmp_path: Path, redis_server: RedisServer) -> None:
        self.tmp_path = tmp_path
        self.redis = redis_server
        # Rooms live in Redis: a restart without persistence loses them.
        self.redis_keeps_rooms = redis_server.persistence != ""
        self.writer: WriterProcess | None = None
        self.webs: list[ServerProcess] = []

    @property
    def endpoints(self) -> list[Endpoint]:
        return [Endpoint(web.http, web.ws) for web in self.webs]

    @property
    def ledger_url(self) -> str:
        assert self.writer is not None
        return self.writer.ledger_url

    @property
    def writer_dir(self) -> Path:
        return self.tmp_path / "writer"

    async def start(self) -> None:
        await self.start_writer()
        for number in range(2):
            self.webs.append(
                await asyncio.to_thread(
                    ServerProcess,
                    self.tmp_path / f"web{number}",
                    self.redis.url,
                    None,
                    SCALED_ENVIRONMENT,
                )
            )

    async def start_writer(self) -> None:
        port = self.writer.port if self.writer is not None else None
        self.writer = await asyncio.to_thread(
            WriterProcess, self.writer_dir, self.redis.url, None, True, SCALED_ENVIRONMENT, port
        )

    async def restart_web(self, number: int) -> None:
        old = self.webs[number]
        self.webs[number] = await asyncio.to_thread(
            ServerProcess, old.data_dir, self.redis.url, None, SCALED_ENVIRONMENT, old.port
        )

    def processes(self) -> dict[str, ServerProcess | WriterProcess]:
        named: dict[str, ServerProcess | WriterProcess] = {
            f"web{number}": web for number, web in enumerate(self.webs)
        }
        assert self.writer is not None
        named["writer"] = self.writer
        return named

    async def stop(self) -> None:
        for process in self.processes().values():
            await asyncio.to_thread(process.stop)


async def scaled_rounds(
    tmp_path: Path,
    redis_server: RedisServer,
    faults: Sequence[str],
    seed: int,
    shape: Shape,
    report: Any = print,
    deadline_s: float | None = None,
) -> list[Round]:
    """One sale per fault on one cluster (fewer if time.monotonic() passes `deadline_s`);
    the ledger is read when the writer is killed and at the end, after a clean stop."""
    chooser = random.Random(seed)
    cluster = Cluster(tmp_path, redis_server)
    done: list[Round] = []
    await cluster.start()
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            base = cluster.endpoints[0].http
            shop = await open_shop(http, base)
            keys = await register_buyers(http, base, shape.buyers, seed)
            await _known_everywhere(http, cluster, [k.identity_id for k in keys])
            for number, fault in enumerate(faults, start=1):
                if deadline_s is not None and time.monotonic() > deadline_s:
                    break
                this = Round(number, fault, f"chaos-{seed}-{number}", shape.units_offered)
                done.append(this)
                await _scaled_round(http, cluster, shop, this, keys, chooser, shape, done)
                report(this.line())
        await cluster.stop()
        final = await ledger_entries(cluster.writer_dir)
        for each in done:
            _compare(each, final, True, "read at the end")
    finally:
        await cluster.stop()
    return done


async def _known_everywhere(http: httpx.AsyncClient, cluster: Cluster, buyers: list[str]) -> None:
    """Registrations reach every web process's replica (the writer's feed) before orders."""
    async with asyncio.timeout(10):
        for endpoint in cluster.endpoints:
            for buyer_id in buyers[-1:]:
                while True:
                    # A sale-less order from a buyer the replica does not know is refused
                    # `unknown_identity`; once known, `unknown_sale`.
                    response = await http.post(
                        f"{endpoint.http}/api/orders",
                        json={
                            "order_id": "probe",
                            "sale_id": "none",
                            "buyer_id": buyer_id,
                            "quantity": 1,
                            "price_cents": 1,
                            "time_ms": now_ms(),
                            "signature": "x" * 86,
                        },
                    )
                    if response.json().get("reason") != "unknown_identity":
                        break
                    await asyncio.sleep(0.05)


async def _scaled_round(
    http: httpx.AsyncClient,
    cluster: Cluster,
    shop: Shop,
    this: Round,
    keys: list[KeyPair],
    chooser: random.Random,
    shape: Shape,
    done: list[Round],
) -> None:
    base = cluster.endpoints[0].http
    price = await shop.sale(http, base, this.sale_id, shape.units_offered, shape.per_buyer_limit)
    async with asyncio.timeout(10):
        for endpoint in cluster.endpoints:
            while (await http.get(f"{endpoint.http}/api/sales/{this.sale_id}")).status_code != 200:
                await asyncio.sleep(0.05)
    endpoints = cluster.endpoints
    # Buyer n starts on web n % 2 and moves to the other when its own does not answer.
    buyers = [
        (k, c, [endpoints[n % 2], endpoints[(n + 1) % 2]])
        for n, (k, c) in enumerate(zip(keys, _channels(shape, len(keys)), strict=True))
    ]
    viewers = [[endpoints[n % 2], endpoints[(n + 1) % 2]] for n in range(shape.viewers)]
    settings = shape.settings
    # Longer than the web processes' wait for the writer: they answer within it.
    settings.attempt_timeout_s = max(
        settings.attempt_timeout_s, SCALED_CONFIRM_TIMEOUT_MS / 1000 + 5
    )
    traffic = Traffic(
        http,
        shop.room_id,
        this.sale_id,
        price,
        buyers,
        viewers,
        settings,
        seed=chooser.randrange(2**31),
        prefix=f"r{this.number}",
    )
    this.traffic = traffic
    before = {name: (p, log_lines(p)) for name, p in cluster.processes().items()}
    traffic.start()
    try:
        this.fault_at_s = chooser.uniform(*shape.before_s)
        await asyncio.sleep(this.fault_at_s)
        fault_started_s = time.monotonic()
        hold_s = chooser.uniform(*shape.hold_s)
        if this.fault == "kill -9 web":
            await asyncio.to_thread(cluster.webs[0].kill)
            await _sleep_until(fault_started_s + hold_s)
            await cluster.restart_web(0)
        elif this.fault == "kill -9 writer":
            assert cluster.writer is not None
            await asyncio.to_thread(cluster.writer.kill)
            entries = await ledger_entries(cluster.writer_dir)
            for each in done:
                _compare(each, entries, each is not this, f"read after kill {this.number}")
            # Longer than the web processes wait: some orders are told to retry.
            await _sleep_until(fault_started_s + max(hold_s, SCALED_CONFIRM_TIMEOUT_MS / 1000 + 1))
            await cluster.start_writer()
        elif this.fault == "restart redis":
            await asyncio.to_thread(cluster.redis.stop)
            await _sleep_until(fault_started_s + hold_s)
            await asyncio.to_thread(cluster.redis.start)
        else:
            raise ValueError(f"no such fault: {this.fault}")
        this.down_s = time.monotonic() - fault_started_s
        await asyncio.sleep(shape.after_s)
        await traffic.stop_buyers()
        bases = [endpoint.http for endpoint in cluster.endpoints]
        rooms_kept = this.fault != "restart redis" or cluster.redis_keeps_rooms
        await _after_recovery(http, this, traffic, bases, cluster.ledger_url, rooms_kept)
        await _commands_answer(http, this, bases)
        _viewers_reconnected_as_promised(this, traffic, rooms_kept)
        if this.fault == "kill -9 writer":
            _orders_waited_or_were_told_to_retry(this, traffic)
        remaining = await remaining_or_none(cluster.redis.url, this.sale_id)
        this.figures["redis_left"] = remaining
        assert this.told is not None
        if remaining != this.units_offered - this.told.accepted_units():
            this.problems.append(
                f"Redis holds {remaining} units; offered minus accepted is "
                f"{this.units_offered - this.told.accepted_units()}"
            )
        processes = cluster.processes()
        for name, process in processes.items():
            # A process started again has a log of its own since its start.
            was, lines = before[name]
            grown = log_lines(process) - (lines if process is was else 0)
            this.figures[f"log_{name}"] = grown
            if grown > log_lines_max(this.down_s):
                this.problems.append(f"{name} logged {grown} lines during the fault")
        await _idle(this, {name: p.process.pid for name, p in processes.items()})
    finally:
        await traffic.close()


async def _commands_answer(http: httpx.AsyncClient, this: Round, bases: Sequence[str]) -> None:
    """A command through the writer (a registration) is answered on every web process."""
    for base in bases:
        try:
            async with asyncio.timeout(10):
                await register(http, base, KeyPair(), "Late buyer")
        except (TimeoutError, AssertionError) as error:
            this.problems.append(f"a registration on {base} after recovery failed: {error!r}")


def _viewers_reconnected_as_promised(this: Round, traffic: Traffic, rooms_kept: bool) -> None:
    """docs/operations.md: viewers stay connected while Redis or the writer is away; a
    viewer whose process died reconnects elsewhere and gets exactly what it missed."""
    for viewer in traffic.viewers:
        again = viewer.modes[1:]
        if this.fault == "kill -9 web":
            if any(mode != "resume" for mode in again):
                this.problems.append(f"viewer {viewer.number} reconnected as {viewer.modes}")
        elif again:
            this.problems.append(f"viewer {viewer.number} was disconnected: {viewer.modes}")
        wrong = set(viewer.comment_errors) - {"unavailable", "rate_limited"}
        if wrong:
            this.problems.append(f"viewer {viewer.number} got errors {dict(viewer.comment_errors)}")
    this.figures["comments_refused"] = sum(v.comment_errors["unavailable"] for v in traffic.viewers)


def _orders_waited_or_were_told_to_retry(this: Round, traffic: Traffic) -> None:
    """docs/operations.md, the writer dies: buyers wait up to order_confirm_timeout_ms,
    then hear `unavailable` and retry. Both happened to orders sent while it was down."""
    started, ended = this.fault_at_s, this.fault_at_s + this.down_s
    sends = [
        answer
        for log in traffic.orders.values()
        for answer in log.answers
        if started <= answer.sent_at_s < ended
    ]
    # Answers take milliseconds; a second or more is a wait for the writer.
    waited = [a for a in sends if a.status == "accepted" and a.at_s - a.sent_at_s >= 1.0]
    told_retry = [a for a in sends if a.reason == "unavailable"]
    this.figures["waited_for_writer"] = len(waited)
    this.figures["told_retry"] = len(told_retry)
    sold_out = this.figures.get("sold_out_at_s")
    if sold_out is not None and sold_out < started:
        return  # nothing left to take: orders were refused at once, with or without it
    if not waited and not told_retry:
        this.problems.append(
            f"of {len(sends)} orders sent with the writer down, none waited for it or was "
            f"told to retry"
        )


async def _sleep_until(deadline_s: float) -> None:
    await asyncio.sleep(max(0.0, deadline_s - time.monotonic()))
