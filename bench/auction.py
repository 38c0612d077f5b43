"""Auction: 2,000 bidders on room sockets bidding in an auction's last seconds; bids
accepted per second, bid-to-everyone latency, extensions, and a replay of the ledger that
checks the winner.

    python bench/auction.py [--mode embedded|redis] [--bidders 2000] [--bids 4000]
        [--client-processes 4] [--duration-s 25] [--burst-s 5] [--early-fraction 0.1]
        [--proxy-fraction 0.2] [--runs 1] [--client-nice 0] [--json FILE]

Each run starts the real server as separate OS processes (embedded: one `serve`; redis: a
private redis-server, the `ledger-writer` and two `serve --redis` web processes, bidders
spread over both), makes a merchant, a product, a room linked to the merchant over HTTP,
then `--client-processes` client processes. Every bidder is a registered Ed25519 key with
its own room WebSocket (`raw_websocket.RawClientSocket`: only the frames it needs are
decoded, so that the clients, which share the machine with the server, take little of it).
Then the orchestrator starts one `extend` auction of `--duration-s` (a bid accepted in
its last 10 s sets the end to 10 s after it) and the clients bid on a fixed schedule made
up front: `--bids` bids from bidders taken in turn, `--early-fraction` of them at random
times between the start and the burst, the rest at random times in the last `--burst-s`
before the auction's first end. Each bid is signed when it leaves, at the lowest amount
the bidder's process last saw (`minimum_next_cents` of the newest `auction/v1`, or the
`detail` of a `bid_too_low`) plus 0..2 increments of 100; `--proxy-fraction` of them carry
a maximum 2..20 increments above. A bidder has at most one bid in flight: a bid due while
its previous one is unanswered leaves when the answer comes (the send lag says how late).
So bidders race on stale prices, as in a real last-seconds rush: `bid_too_low` is expected.

Figures:

- bids sent, accepted (`bid.result/v1` status accepted: given only once the bid is
  durable in the ledger), refusals by reason, unanswered (must be 0);
- accepted per second: accepted bids over the span from the first burst bid sent to the
  last burst answer;
- answer latency p50/p99 (send to `bid.result/v1`, every bid);
- bid-to-everyone latency p50/p99, defined: an accepted bid is the k-th bid entry of the
  auction in the ledger (k from 1); every bidder socket is also a watcher; a socket has
  "seen" bid k when it has received an `auction/v1` whose `bids` count is at least k (the
  hub sends the newest state once per written batch, so one message covers every bid of
  the batch); the latency of bid k is from the moment its bidder's process sent it to the
  moment the last of all the sockets saw it. Times are CLOCK_MONOTONIC, one clock for
  every process on the machine. A socket that never saw k is counted as a miss;
- extensions: bid entries that moved the end;
- the baseline (why this one: it is the same work without the ledger, the bid path or the
  auction): after the close, the host pins a product over the host API at the rate the
  auction's `auction/v1` messages went out during the burst, for `--burst-s`, padded to
  about the size of an `auction/v1`; the same sockets see each `pin/v1` and its
  publish-to-everyone latency is measured as above (from the request's send to the last
  socket's receipt). The ratio bid-to-everyone / pin-to-everyone is what the bid's way
  through the core and the ledger adds to the hub's fan-out;
- CPU seconds of the server processes and the clients over the bidding (from the start to
  the close) and the machine's idle and steal time (Linux /proc).

Replay check (must pass, or the run fails with exit 1): after the servers stop, the
auction's `auction/v1` entries are read from the ledger and replayed by this script's own
code, from the documented rules (docs/commerce.md, "Auctions"): each bid's signature
checked; taken only before the end (extended by the `extend` rule); the first at least the
starting price, a later one (not the leader's) at least the price plus the increment of its
band; proxies (the leader is the higher maximum, the price the beaten maximum plus its
increment but at most the leader's maximum and at least the new leader's amount; a leader
raising its own maximum leaves the price); ties to the earlier. Each bid entry's recorded
leader, price and end must equal the replay's; the `closed` entry (at or after the end)
and GET /api/auctions/{id} must name the replay's winner and price and count every bid;
every bid the clients were told accepted is in the ledger and every bid entry was told
accepted. Then `python -m livecommerce audit` over the ledger must say OK.

`--json FILE` writes every run's figures. Figures only: no assertion on speed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import queue
import random
import statistics
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
from flash_sale import (  # noqa: E402
    CONNECT_CONCURRENCY,
    CONNECT_TIMEOUT_S,
    REGISTER_ATTEMPTS,
    Processes,
    cpu_seconds,
    cpu_spent,
    now_ms,
    percentile,
    wait_ready,
)
from raw_websocket import OPCODE_TEXT, RawClientSocket, masked_frame, upgrade_request  # noqa: E402

from livecommerce.clients.signing import KeyPair  # noqa: E402

STARTING_CENTS = 1_000
STEP_CENTS = 100  # what the bidders add per "increment" they choose
EXTEND_WINDOW_MS = 10_000  # commerce/auctions.py; the replay has its own copy
EXTENDED_MAX_MS = 3_600_000
DEFAULT_BANDS = [[0, 100], [3_000, 200], [10_000, 500]]
CLOSE_WAIT_S = 120.0  # after the last bid is sent, for the close (10 s after the last bid)
ANSWER_WAIT_S = 30.0
PIN_PAD_BYTES_MAX = 500  # PinnedProduct.image
PHASE_TIMEOUT_S = 300.0
PIN_RATE_MAX = 200.0  # pins a second, one HTTP request at a time
PIN_FRAME_BYTES = 200  # a pin/v1 frame without its image, about

# Room events go out as `{"seq":N,"type":...` (protocol.with_sequence); answers unsequenced.
AUCTION_TYPE = b'"type":"auction/v1"'
BID_RESULT_PREFIX = b'{"type":"bid.result/v1"'
PIN_TYPE = b'"type":"pin/v1"'
TYPE_WITHIN_BYTES = 40
BIDS_FIELD = b'"bids":'
PIN_TITLE = b'"title":"bench '


# Client processes


class BidderSocket(RawClientSocket):
    """One bidder's socket, also a watcher: keeps when the auction's `bids` count first
    rose to each value it saw, and when it saw each pin; decodes `bid.result/v1` (and,
    for the first socket of a process, the whole `auction/v1`)."""

    def __init__(
        self, request: bytes, ready: asyncio.Future[bool], crowd: Bidders, index: int
    ) -> None:
        super().__init__(request, ready)
        self.crowd = crowd
        self.index = index
        self.seen: list[tuple[int, float]] = []  # (bids, first time seen)
        self.bids_seen = 0
        self.pins: dict[int, float] = {}

    def text(self, buffer: bytes, start: int, end: int, frame_bytes: int) -> None:
        head = min(end, start + TYPE_WITHIN_BYTES)
        if buffer.find(AUCTION_TYPE, start, head) >= 0:
            at = buffer.find(BIDS_FIELD, start, end)
            if at < 0:
                return
            digits = at + len(BIDS_FIELD)
            stop = digits
            while 48 <= buffer[stop] <= 57:
                stop += 1
            bids = int(buffer[digits:stop])
            if bids > self.bids_seen:
                self.bids_seen = bids
                self.seen.append((bids, time.monotonic()))
            if self.index == 0:
                self.crowd.auction_seen(orjson.loads(buffer[start:end]), frame_bytes)
        elif buffer.startswith(BID_RESULT_PREFIX, start):
            self.crowd.answered(self.index, orjson.loads(buffer[start:end]))
        elif buffer.find(PIN_TYPE, start, head) >= 0:
            at = buffer.find(PIN_TITLE, start, end)
            if at >= 0:
                digits = at + len(PIN_TITLE)
                stop = digits
                while 48 <= buffer[stop] <= 57:
                    stop += 1
                self.pins.setdefault(int(buffer[digits:stop]), time.monotonic())


class Bidders:
    """One process's bidders: keys, sockets, the bid each has in flight, the answers."""

    def __init__(self, keys: list[KeyPair], auction_id: str) -> None:
        self.keys = keys
        self.auction_id = auction_id
        self.sockets: list[BidderSocket] = []
        self.minimum_cents = STARTING_CENTS
        self.view: dict[str, Any] = {}
        self.auction_frames: list[float] = []  # when socket 0 got each open auction/v1
        self.auction_frame_bytes = 0
        self.closed = asyncio.Event()
        self.in_flight: dict[int, dict[str, Any]] = {}
        self.deferred: dict[int, list[tuple[int, int, int]]] = {}  # index -> bids due
        self.answers: list[dict[str, Any]] = []
        self.drained = asyncio.Event()
        self.drained.set()

    async def connect(self, ports: list[int], room_id: str) -> None:
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        path = f"/ws/rooms/{room_id}"

        async def one(index: int, port: int) -> BidderSocket:
            async with gate:
                ready: asyncio.Future[bool] = loop.create_future()
                sock = BidderSocket(upgrade_request("127.0.0.1", port, path), ready, self, index)
                await loop.create_connection(lambda: sock, "127.0.0.1", port)
                if not await asyncio.wait_for(ready, CONNECT_TIMEOUT_S):
                    raise RuntimeError(f"bidder {index}: the upgrade to {path} failed")
                return sock

        self.sockets = list(await asyncio.gather(*(one(i, p) for i, p in enumerate(ports))))

    def auction_seen(self, message: dict[str, Any], frame_bytes: int) -> None:
        view = message["auction"]
        if view.get("auction_id") != self.auction_id:
            return
        self.view = view
        self.auction_frame_bytes = frame_bytes
        if view["state"] == "open":
            self.auction_frames.append(time.monotonic())  # the close is not a bid's
            self.minimum_cents = max(self.minimum_cents, view["minimum_next_cents"])
        else:
            self.closed.set()

    def bid(self, index: int, extra: int, proxy: int, due_s: float) -> None:
        """Bidder `index` bids now (or, with a bid in flight, once that one is answered)."""
        if index in self.in_flight:
            self.deferred.setdefault(index, []).append((extra, proxy, int(due_s * 1e6)))
            return
        amount = self.minimum_cents + extra * STEP_CENTS
        maximum = amount + proxy * STEP_CENTS if proxy else 0
        fields = self.keys[index].bid(self.auction_id, amount, now_ms(), max_cents=maximum)
        frame = masked_frame(OPCODE_TEXT, orjson.dumps({"type": "bid/v1", **fields}))
        sent = time.monotonic()
        self.in_flight[index] = {
            "signature": fields["signature"], "amount_cents": amount, "max_cents": maximum,
            "sent_s": sent, "lag_s": max(0.0, sent - due_s),
        }  # fmt: skip
        self.drained.clear()
        self.sockets[index].send_frame(frame)

    def answered(self, index: int, result: dict[str, Any]) -> None:
        pending = self.in_flight.pop(index, None)
        if pending is None:
            return
        pending["answered_s"] = time.monotonic()
        pending["status"] = result["status"]
        pending["reason"] = result.get("reason", "")
        if result.get("reason") == "bid_too_low":
            # "the lowest bid now is N" (for the leader raising its maximum: no number)
            words = result.get("detail", "").split()
            if words and words[-1].isdigit():
                self.minimum_cents = max(self.minimum_cents, int(words[-1]))
        self.answers.append(pending)
        later = self.deferred.get(index)
        if later:
            extra, proxy, due_us = later.pop(0)
            if not later:
                del self.deferred[index]
            self.bid(index, extra, proxy, due_us / 1e6)
        if not self.in_flight and not self.deferred:
            self.drained.set()

    def close(self) -> None:
        for sock in self.sockets:
            if sock.transport is not None:
                sock.transport.close()


def everyone_seen(sockets: list[BidderSocket], bids: int) -> tuple[list[float], list[int]]:
    """For k in 0..bids: the latest first-sight of count k over these sockets, and how
    many of them never saw it (index 0 unused)."""
    latest = [0.0] * (bids + 1)
    missed = [0] * (bids + 1)
    for sock in sockets:
        covered = 0
        for count, seen_s in sock.seen:
            top = min(count, bids)
            for k in range(covered + 1, top + 1):
                if seen_s > latest[k]:
                    latest[k] = seen_s
            covered = max(covered, top)
        for k in range(covered + 1, bids + 1):
            missed[k] += 1
    return latest, missed


def client_main(
    number: int,
    bidders: int,
    web_ports: list[int],
    room_id: str,
    plans: Any,
    ready: Any,
    finish: Any,
    results: Any,
    niceness: int,
) -> None:
    if niceness:
        os.nice(niceness)
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    try:
        outcome = asyncio.run(client_run(number, bidders, web_ports, room_id, plans, ready, finish))
    except BaseException as error:  # the orchestrator must hear about it, not wait
        results.put({"error": repr(error)})
        raise
    results.put(outcome)


async def register_all(keys: list[KeyPair], ports: list[int]) -> None:
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        gate = asyncio.Semaphore(50)

        async def register(key: KeyPair, port: int) -> None:
            # Retried on a transport error, then "already registered" is done (bench/flash_sale.py).
            for attempt in range(REGISTER_ATTEMPTS):
                async with gate:
                    try:
                        response = await client.post(
                            f"http://127.0.0.1:{port}/api/identities",
                            json=key.registration("bidder", now_ms()),
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


async def client_run(
    number: int,
    bidders: int,
    web_ports: list[int],
    room_id: str,
    plans: Any,
    ready: Any,
    finish: Any,
) -> dict[str, Any]:
    keys = [KeyPair() for _ in range(bidders)]
    ports = [web_ports[(number + i) % len(web_ports)] for i in range(bidders)]
    await register_all(keys, ports)
    plan = await asyncio.to_thread(plans.get, True, PHASE_TIMEOUT_S)  # the auction id first
    crowd = Bidders(keys, plan["auction_id"])
    await crowd.connect(ports, room_id)
    ready.put(number)
    plan = await asyncio.to_thread(plans.get, True, PHASE_TIMEOUT_S)  # then the schedule
    # (due, index, extra, proxy), due in wall-clock ms: the auction's times are the server's.
    schedule: list[list[int]] = plan["bids"]
    offset_s = time.monotonic() - time.time()
    burst_from_s = plan["burst_from_ms"] / 1000 + offset_s
    burst_first_sent = None
    for due_ms, index, extra, proxy in schedule:
        due_s = due_ms / 1000 + offset_s
        wait_s = due_s - time.monotonic()
        if wait_s > 0:
            await asyncio.sleep(max(0.001, wait_s))
        if burst_first_sent is None and due_s >= burst_from_s:
            burst_first_sent = time.monotonic()
        crowd.bid(index, extra, proxy, due_s)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(crowd.drained.wait(), ANSWER_WAIT_S)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(crowd.closed.wait(), CLOSE_WAIT_S)
    # Closed (or given up): the pins may come. The burst's broadcast rate for them.
    burst = [t for t in crowd.auction_frames if burst_first_sent and t >= burst_first_sent]
    span_s = burst[-1] - burst[0] if len(burst) > 1 else 0.0
    ready.put({
        "number": number, "burst_rate": (len(burst) - 1) / span_s if span_s > 0 else 0.0,
        "frame_bytes": crowd.auction_frame_bytes,
    })  # fmt: skip
    await asyncio.to_thread(finish.wait, PHASE_TIMEOUT_S)
    bids = int(crowd.view.get("bids", 0))
    latest, missed = everyone_seen(crowd.sockets, bids)
    pin_numbers = sorted({n for sock in crowd.sockets for n in sock.pins})
    pins_latest = {n: max(s.pins.get(n, 0.0) for s in crowd.sockets) for n in pin_numbers}
    pins_missed = {n: sum(1 for s in crowd.sockets if n not in s.pins) for n in pin_numbers}
    unanswered = len(crowd.in_flight) + sum(len(v) for v in crowd.deferred.values())
    crowd.close()
    return {
        "number": number,
        "sockets": len(crowd.sockets),
        "answers": crowd.answers,
        "unanswered": unanswered,
        "bids_in_view": bids,
        "view": crowd.view,
        "latest": latest,
        "missed": missed,
        "pins_latest": pins_latest,
        "pins_missed": pins_missed,
        "auction_frames": crowd.auction_frames,
        "auction_frame_bytes": crowd.auction_frame_bytes,
        "burst_first_sent": burst_first_sent,
    }


# The orchestrator


def collect(ready: Any, results: Any, clients: list[Any]) -> Any:
    """One client's report on `ready` (a failed client ends the run with its error)."""
    deadline = time.monotonic() + PHASE_TIMEOUT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            return ready.get(timeout=0.5)
        with contextlib.suppress(queue.Empty):
            raise SystemExit(f"a client failed: {results.get_nowait()}")
        if any(client.exitcode not in (None, 0) for client in clients):
            raise SystemExit("a client process died")
    raise SystemExit(f"no client reported within {PHASE_TIMEOUT_S:.0f} s")


def setup_room(base: str) -> tuple[str, str]:
    """Merchant, product "lot" with stock, a room linked to the merchant: (room, host token)."""
    merchant = KeyPair()
    with httpx.Client(timeout=30) as client:

        def post(url: str, body: dict[str, Any], token: str = "") -> Any:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            response = client.post(url, json=body, headers=headers)
            if response.status_code >= 300:
                raise SystemExit(f"{url}: {response.status_code} {response.text}")
            return response.json()

        post(f"{base}/api/identities", merchant.registration("Bench merchant", now_ms()))
        post(f"{base}/api/products", merchant.listing("lot", "Signed guitar", 50_000, now_ms()))
        post(f"{base}/api/products/lot/stock", merchant.stock("bench-0", "lot", 10, now_ms()))
        challenge = post(f"{base}/api/sessions/challenge", {})["challenge"]
        token = post(f"{base}/api/sessions", merchant.session(challenge))["token"]
        room = post(f"{base}/api/rooms", {"title": "Auction bench", "host_name": "Bench"})
        room_id, host_token = room["room_id"], room["host_token"]
        post(f"{base}/api/rooms/{room_id}/merchant", {"merchant_token": token}, host_token)
    return room_id, host_token


def make_schedule(
    arguments: argparse.Namespace, start_ms: int, ends_at_ms: int, rng: random.Random
) -> tuple[list[list[list[int]]], int]:
    """Per client process, its bids as [due_ms, local index, extra, proxy], by due time;
    and when the burst starts."""
    processes = arguments.client_processes
    burst_from_ms = ends_at_ms - int(arguments.burst_s * 1000)
    early = int(arguments.bids * arguments.early_fraction)
    per_process: list[list[list[int]]] = [[] for _ in range(processes)]
    order = list(range(arguments.bidders))
    rng.shuffle(order)
    for n in range(arguments.bids):
        if n < early:
            due = rng.randint(start_ms + 1_000, burst_from_ms - 1)
        else:
            due = rng.randint(burst_from_ms, ends_at_ms - 200)
        bidder = order[n % arguments.bidders]
        extra = rng.choice((0, 0, 0, 1, 2))
        proxy = rng.randint(2, 20) if rng.random() < arguments.proxy_fraction else 0
        per_process[bidder % processes].append([due, bidder // processes, extra, proxy])
    for bids in per_process:
        bids.sort()
    return per_process, burst_from_ms


def pin_for(
    base: str, room_id: str, token: str, rate: float, seconds: float, pad: int
) -> dict[int, float]:
    """Pin a product `rate` times a second for `seconds`, one request at a time (late ticks
    skipped); the send time (monotonic) of each pin by number."""
    sent: dict[int, float] = {}
    headers = {"Authorization": f"Bearer {token}"}
    interval = 1.0 / rate
    with httpx.Client(timeout=30) as client:
        start = time.monotonic()
        next_at = start
        while (now := time.monotonic()) < start + seconds:
            if next_at > now:
                time.sleep(next_at - now)
                continue
            number = len(sent)
            product = {
                "product_id": f"p{number % 10}", "title": f"bench {number}",
                "price_cents": 1999, "currency": "EUR", "image": "x" * pad,
            }  # fmt: skip
            sent[number] = time.monotonic()
            response = client.post(
                f"{base}/api/rooms/{room_id}/host",
                json={"type": "host.pin/v1", "product": product},
                headers=headers,
            )
            if response.status_code != 200:
                raise SystemExit(f"pin: {response.status_code} {response.text}")
            next_at = max(next_at + interval, time.monotonic())
    return sent


def ledger_auction(data_dir: Path, auction_id: str) -> list[dict[str, Any]]:
    """The auction's `auction/v1` entries, in ledger order, each with its index."""

    async def read() -> list[dict[str, Any]]:
        from ledger import Ledger, LedgerSettings, decode_entry

        ledger = await Ledger.open(data_dir / "ledger", LedgerSettings())
        try:
            found = []
            for index in range(ledger.size):
                entry_type, fields = decode_entry(ledger.entry(index))
                if entry_type == "auction/v1" and fields["auction_id"] == auction_id:
                    found.append({**fields, "index": index})
            return found
        finally:
            await ledger.close()

    return asyncio.run(read())


def increment_at(bands: list[list[int]], price_cents: int) -> int:
    step = bands[0][1]
    for from_cents, increment in bands:
        if price_cents >= from_cents:
            step = increment
    return step


def replay(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The auction again from its entries, by the documented rules (docs/commerce.md,
    "Auctions"), written here independently of commerce/auctions.py. Returns the winner,
    price, bids, extensions and the problems found (empty: the ledger is consistent)."""
    from livecommerce.commerce.canonical import DOMAIN_BID, signing_bytes
    from livecommerce.commerce.identity import verify_signature

    problems: list[str] = []
    started = [e for e in entries if e["action"] == "started"]
    if len(started) != 1:
        return {"problems": [f"{len(started)} started entries"]}
    spec = started[0]
    bands = spec["bands"]
    end = spec["ends_at_ms"]
    end_cap = spec["time_ms"] + spec["duration_ms"] + EXTENDED_MAX_MS
    leader, leader_max, price, bids, extensions = "", 0, 0, 0, 0
    closed: dict[str, Any] | None = None
    for entry in entries:
        if entry["action"] == "started":
            continue
        if closed is not None:
            problems.append(f"entry {entry['index']} after the close: {entry['action']}")
            continue
        if entry["action"] == "closed":
            closed = entry
            if entry["time_ms"] < end:
                problems.append(f"closed at {entry['time_ms']}, before the end {end}")
            continue
        if entry["action"] != "bid":
            continue  # bans, cancels: none in this bench
        where = f"bid entry {entry['index']}"
        signed = signing_bytes(DOMAIN_BID, {
            "amount_cents": entry["amount_cents"], "auction_id": entry["auction_id"],
            "bidder_id": entry["bidder_id"], "max_cents": entry["max_cents"],
            "time_ms": entry["signed_time_ms"],
        })  # fmt: skip
        if verify_signature(entry["bidder_id"], signed, entry["signature"]) is not None:
            problems.append(f"{where}: bad signature")
        now, bidder, amount = entry["time_ms"], entry["bidder_id"], entry["amount_cents"]
        ceiling = max(amount, entry["max_cents"])
        if now >= end:
            problems.append(f"{where}: taken at {now}, at or after the end {end}")
        if entry["max_cents"] and entry["max_cents"] < amount:
            problems.append(f"{where}: a maximum below the amount")
        if bidder == leader:
            if ceiling <= leader_max:
                problems.append(f"{where}: the leader's maximum did not rise")
            leader_max = max(leader_max, ceiling)
        else:
            minimum = price + increment_at(bands, price) if leader else spec["starting_cents"]
            if amount < minimum:
                problems.append(f"{where}: {amount} below the minimum {minimum}")
            if not leader:
                leader, leader_max, price = bidder, ceiling, amount
            elif ceiling > leader_max:
                beaten = leader_max
                price = min(ceiling, max(amount, beaten + increment_at(bands, beaten)))
                leader, leader_max = bidder, ceiling
            else:  # equal or lower maximum: the earlier bid keeps the lead
                price = min(leader_max, ceiling + increment_at(bands, ceiling))
        bids += 1
        if (
            spec["mode"] == "extend"
            and end - now < EXTEND_WINDOW_MS
            and (now + EXTEND_WINDOW_MS <= end_cap)
        ):
            end = now + EXTEND_WINDOW_MS
            extensions += 1
        made = (entry["leader_id"], entry["price_cents"], entry["ends_at_ms"])
        if made != (leader, price, end):
            problems.append(f"{where}: the entry says {made}, the replay {(leader, price, end)}")
    if closed is None:
        problems.append("no closed entry")
    elif (closed["bidder_id"], closed["price_cents"], closed["bids"]) != (leader, price, bids):
        problems.append(
            f"closed names {closed['bidder_id'][:12]} at {closed['price_cents']} after "
            f"{closed['bids']} bids; the replay {leader[:12]} at {price} after {bids}"
        )
    return {
        "winner": leader, "price_cents": price, "bids": bids, "extensions": extensions,
        "end_ms": end, "closed": closed, "problems": problems,
    }  # fmt: skip


def run_audit(data_dir: Path) -> dict[str, Any]:
    from ledger.note import Signer
    from ledger.storage import KEY_FILE

    ledger_dir = data_dir / "ledger"
    vkey = Signer.parse((ledger_dir / KEY_FILE).read_text()).verifier.format()
    done = subprocess.run(
        [sys.executable, "-m", "livecommerce", "audit", str(ledger_dir), "--vkey", vkey],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    lines = (done.stdout + done.stderr).strip().splitlines()
    verdict = next((line for line in reversed(lines) if line.startswith(("OK", "BROKEN"))), "")
    return {"exit": done.returncode, "verdict": verdict or "\n".join(lines[-5:])}


def run_once(arguments: argparse.Namespace, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    auction_id = f"bench{seed}"
    with tempfile.TemporaryDirectory() as directory:
        processes = Processes(Path(directory))
        clients: list[Any] = []
        try:
            if arguments.mode == "redis":
                processes.start_redis()
                processes.start_writer()
                processes.start_web("web0")
                processes.start_web("web1")
            else:
                processes.start_web("web0")
            bases = [f"http://127.0.0.1:{port}" for port in processes.web_ports]
            room_id, host_token = setup_room(bases[0])
            context = multiprocessing.get_context("spawn")
            ready, results, finish = context.Queue(), context.Queue(), context.Event()
            plans = [context.Queue() for _ in range(arguments.client_processes)]
            per_client = arguments.bidders // arguments.client_processes
            clients = [
                context.Process(
                    target=client_main,
                    args=(
                        n,
                        per_client,
                        processes.web_ports,
                        room_id,
                        plans[n],
                        ready,
                        finish,
                        results,
                        arguments.client_nice,
                    ),
                    daemon=True,
                )
                for n in range(arguments.client_processes)
            ]
            for client in clients:
                client.start()
            for plan in plans:
                plan.put({"auction_id": auction_id})
            print(
                f"  run {seed}: {arguments.mode} up; bidders registering and connecting", flush=True
            )
            for _ in clients:
                wait_ready(ready, results, clients)
            with httpx.Client(timeout=30) as http:
                response = http.post(
                    f"{bases[0]}/api/rooms/{room_id}/auctions",
                    json={"auction_id": auction_id, "product_id": "lot", "mode": "extend",
                          "starting_cents": STARTING_CENTS,
                          "duration_ms": int(arguments.duration_s * 1000)},
                    headers={"Authorization": f"Bearer {host_token}"},
                )  # fmt: skip
                if response.status_code != 201:
                    raise SystemExit(f"start: {response.status_code} {response.text}")
                started = response.json()
            schedules, burst_from_ms = make_schedule(
                arguments, started["started_at_ms"], started["ends_at_ms"], rng
            )
            client_pids = [c.pid for c in clients if c.pid is not None]
            server_pids = list(
                zip(processes.names, [p.pid for p in processes.running], strict=True)
            )
            cpu_before = cpu_seconds(server_pids, client_pids)
            for plan, bids in zip(plans, schedules, strict=True):
                plan.put({"bids": bids, "burst_from_ms": burst_from_ms})
            print(
                f"  auction {auction_id} open for {arguments.duration_s:.0f} s; {arguments.bids}"
                f" bids, most in the last {arguments.burst_s:.0f} s",
                flush=True,
            )
            closing = [collect(ready, results, clients) for _ in clients]
            cpu_bidding = cpu_spent(cpu_before, cpu_seconds(server_pids, client_pids))
            with httpx.Client(timeout=30) as http:
                served = http.get(f"{bases[-1]}/api/auctions/{auction_id}").json()
            # The baseline: as many broadcasts a second as the auction made in its burst
            # (seen by the first socket of the first client), each about as large.
            first = next(c for c in closing if c["number"] == 0)
            pin_rate = arguments.pin_rate or min(PIN_RATE_MAX, first["burst_rate"])
            pad = min(PIN_PAD_BYTES_MAX, max(0, first["frame_bytes"] - PIN_FRAME_BYTES))
            pin_sent: dict[int, float] = {}
            cpu_pins: dict[str, float] = {}
            if pin_rate > 0:
                before = cpu_seconds(server_pids, client_pids)
                pin_sent = pin_for(bases[0], room_id, host_token, pin_rate, arguments.burst_s, pad)
                time.sleep(1.0)
                cpu_pins = cpu_spent(before, cpu_seconds(server_pids, client_pids))
            finish.set()
            outcomes = [results.get(timeout=PHASE_TIMEOUT_S) for _ in clients]
            for client in clients:
                client.join(timeout=30)
            errors = [o["error"] for o in outcomes if "error" in o]
            if errors:
                raise SystemExit(f"client errors: {errors}")
        finally:
            for client in clients:
                if client.is_alive():
                    client.kill()
            processes.stop()
        data_dir = Path(directory) / ("writer" if arguments.mode == "redis" else "web0")
        entries = ledger_auction(data_dir, auction_id)
        audit = run_audit(data_dir)
    return figures(arguments, outcomes, entries, served, audit, pin_sent, cpu_bidding, cpu_pins)


def figures(
    arguments: argparse.Namespace,
    outcomes: list[dict[str, Any]],
    entries: list[dict[str, Any]],
    served: dict[str, Any],
    audit: dict[str, Any],
    pin_sent: dict[int, float],
    cpu_bidding: dict[str, float],
    cpu_pins: dict[str, float],
) -> dict[str, Any]:
    replayed = replay(entries)
    problems = list(replayed["problems"])
    answers = [a for o in outcomes for a in o["answers"]]
    accepted = [a for a in answers if a["status"] == "accepted"]
    reasons: dict[str, int] = {}
    for answer in answers:
        if answer["status"] != "accepted":
            reasons[answer["reason"]] = reasons.get(answer["reason"], 0) + 1
    bid_entries = [e for e in entries if e["action"] == "bid"]
    ordinal = {e["signature"]: k for k, e in enumerate(bid_entries, 1)}
    told = {a["signature"] for a in accepted}
    if told - ordinal.keys():
        problems.append(f"{len(told - ordinal.keys())} bids told accepted are not in the ledger")
    if ordinal.keys() - told:
        problems.append(f"{len(ordinal.keys() - told)} bid entries were never told accepted")
    if (served.get("state"), served.get("winner_id"), served.get("price_cents")) != (
        "sold", replayed.get("winner"), replayed.get("price_cents"),
    ):  # fmt: skip
        problems.append(
            f"GET /api/auctions says {served.get('state')} to {served.get('winner_id', '')[:12]}"
            f" at {served.get('price_cents')}; the replay {replayed.get('price_cents')}"
        )
    if served.get("bids") != len(bid_entries):
        problems.append(
            f"GET /api/auctions counts {served.get('bids')} bids, the ledger {len(bid_entries)}"
        )
    if audit["exit"] != 0:
        problems.append(f"the audit: {audit['verdict']}")
    unanswered = sum(o["unanswered"] for o in outcomes)
    if unanswered:
        problems.append(f"{unanswered} bids unanswered")
    # Bid-to-everyone: per k, the latest first sight over every process's sockets.
    total = len(bid_entries)
    latest = [0.0] * (total + 1)
    missed = [0] * (total + 1)
    for outcome in outcomes:
        for k in range(1, min(total, outcome["bids_in_view"]) + 1):
            latest[k] = max(latest[k], outcome["latest"][k])
            missed[k] += outcome["missed"][k]
        for k in range(outcome["bids_in_view"] + 1, total + 1):
            missed[k] += outcome["sockets"]  # that process never saw k at all
    to_everyone = sorted(
        latest[ordinal[a["signature"]]] - a["sent_s"]
        for a in accepted
        if a["signature"] in ordinal and not missed[ordinal[a["signature"]]]
    )
    misses = sum(1 for a in accepted if missed[ordinal.get(a["signature"], 0)])
    answer_latency = sorted(a["answered_s"] - a["sent_s"] for a in answers)
    burst_starts = [o["burst_first_sent"] for o in outcomes if o["burst_first_sent"]]
    burst_from = min(burst_starts) if burst_starts else 0.0
    in_burst = [a for a in accepted if a["sent_s"] >= burst_from]
    span = max((a["answered_s"] for a in in_burst), default=burst_from) - burst_from
    # Baseline: pins. Every process's latest sight of each pin.
    pins = []
    pins_missed = 0
    for number, sent in pin_sent.items():
        sights = [o["pins_latest"].get(number) for o in outcomes]
        misses_here = sum(o["pins_missed"].get(number, o["sockets"]) for o in outcomes)
        if misses_here or any(s is None for s in sights):
            pins_missed += 1
            continue
        pins.append(max(s for s in sights if s is not None) - sent)
    pins.sort()
    frames = outcomes[0]["auction_frames"]
    burst_frames = [t for t in frames if t >= burst_from]
    sockets = sum(o["sockets"] for o in outcomes)
    servers = {k: v for k, v in cpu_bidding.items() if k not in ("clients", "idle", "steal")}
    return {
        "mode": arguments.mode,
        "bidders": sockets,
        "sent": len(answers) + unanswered,
        "accepted": len(accepted),
        "accepted_in_burst": len(in_burst),
        "burst_span_s": span,
        "accepted_per_s": len(in_burst) / span if span > 0 else float("nan"),
        "refused": reasons,
        "unanswered": unanswered,
        "answer_p50_ms": 1000 * percentile(answer_latency, 0.50),
        "answer_p99_ms": 1000 * percentile(answer_latency, 0.99),
        "everyone_p50_ms": 1000 * percentile(to_everyone, 0.50),
        "everyone_p99_ms": 1000 * percentile(to_everyone, 0.99),
        "everyone_max_ms": 1000 * to_everyone[-1] if to_everyone else float("nan"),
        "everyone_misses": misses,
        "send_lag_p99_ms": 1000 * percentile(sorted(a["lag_s"] for a in answers), 0.99),
        "auction_messages_in_burst": len(burst_frames),
        "auction_frame_bytes": outcomes[0]["auction_frame_bytes"],
        "extensions": replayed.get("extensions"),
        "winner": replayed.get("winner", "")[:16],
        "price_cents": replayed.get("price_cents"),
        "overtime_s": (replayed.get("end_ms", 0) - entries[0]["ends_at_ms"]) / 1000
        if entries else 0.0,
        "pins_sent": len(pin_sent),
        "pin_p50_ms": 1000 * percentile(pins, 0.50),
        "pin_p99_ms": 1000 * percentile(pins, 0.99),
        "pins_missed": pins_missed,
        "cpu_bidding": cpu_bidding,
        "server_cpu_s": sum(servers.values()),
        "cpu_pins": cpu_pins,
        "audit": audit["verdict"],
        "problems": problems,
    }  # fmt: skip


MEDIAN_FIGURES = (
    "accepted_per_s", "answer_p50_ms", "answer_p99_ms", "everyone_p50_ms", "everyone_p99_ms",
    "pin_p50_ms", "pin_p99_ms", "server_cpu_s", "extensions",
)  # fmt: skip


def show(result: dict[str, Any]) -> None:
    r = result
    print(
        f"{r['mode']:<8} bidders {r['bidders']}  sent {r['sent']}  accepted {r['accepted']}"
        f" ({r['accepted_in_burst']} in the burst: {r['accepted_per_s']:,.0f}/s over"
        f" {r['burst_span_s']:.1f} s)  refused {r['refused']}  unanswered {r['unanswered']}",
        flush=True,
    )
    ratio = r["everyone_p99_ms"] / r["pin_p99_ms"] if r["pin_p99_ms"] == r["pin_p99_ms"] else 0
    print(
        f"{'':<8} answer p50 {r['answer_p50_ms']:.1f} ms p99 {r['answer_p99_ms']:.1f} ms;"
        f" bid-to-everyone p50 {r['everyone_p50_ms']:.1f} ms p99 {r['everyone_p99_ms']:.1f}"
        f" ms max {r['everyone_max_ms']:.0f} ms (misses {r['everyone_misses']});"
        f" clients' send lag p99 {r['send_lag_p99_ms']:.1f} ms",
        flush=True,
    )
    print(
        f"{'':<8} baseline: {r['pins_sent']} pins at the burst's {r['auction_messages_in_burst']}"
        f" auction/v1 messages' rate ({r['auction_frame_bytes']} B each): pin-to-everyone"
        f" p50 {r['pin_p50_ms']:.1f} ms p99 {r['pin_p99_ms']:.1f} ms (missed {r['pins_missed']});"
        f" bid/pin p99 {ratio:.2f}x",
        flush=True,
    )
    cpu = r["cpu_bidding"]
    if cpu:
        servers = {k: v for k, v in cpu.items() if k not in ("clients", "idle", "steal")}
        print(
            f"{'':<8} CPU-s start to close: "
            + " ".join(f"{name} {value:.1f}" for name, value in servers.items())
            + f"  clients {cpu['clients']:.1f}  idle {cpu['idle']:.1f}"
            f" steal {cpu.get('steal', 0.0):.1f}",
            flush=True,
        )
    print(
        f"{'':<8} {r['extensions']} extensions ({r['overtime_s']:.1f} s past the first end);"
        f" winner {r['winner']}… at {r['price_cents']} cents; audit: {r['audit']};"
        f" replay check: {'OK' if not r['problems'] else 'FAIL'}",
        flush=True,
    )
    for problem in r["problems"][:20]:
        print(f"FAIL: {problem}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["embedded", "redis"], default="embedded")
    parser.add_argument("--bidders", type=int, default=2000)
    parser.add_argument("--bids", type=int, default=4000, help="bids in all")
    parser.add_argument("--client-processes", type=int, default=4)
    parser.add_argument("--duration-s", type=float, default=25.0, help="the auction's duration")
    parser.add_argument("--burst-s", type=float, default=5.0, help="the last seconds bid in")
    parser.add_argument("--early-fraction", type=float, default=0.1)
    parser.add_argument("--proxy-fraction", type=float, default=0.2)
    parser.add_argument(
        "--pin-rate", type=float, default=0.0, help="baseline pins/s (0: the burst's rate)"
    )
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--client-nice", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    arguments = parser.parse_args()
    if arguments.burst_s >= arguments.duration_s - 1:
        parser.error("--burst-s must leave at least a second of the auction before it")
    print(
        f"{arguments.bidders} bidders in {arguments.client_processes} client processes,"
        f" {arguments.bids} bids, a {arguments.duration_s:.0f} s extend auction, most bids in"
        f" its last {arguments.burst_s:.0f} s; load average before:"
        f" {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    results = []
    for run in range(arguments.runs):
        result = run_once(arguments, arguments.seed + run)
        result["load_average"] = os.getloadavg()[0]
        results.append(result)
        show(result)
    if arguments.runs > 1:
        medians = {name: statistics.median(r[name] for r in results) for name in MEDIAN_FIGURES}
        print(
            f"medians of {arguments.runs} runs: "
            + "  ".join(f"{name} {value:.1f}" for name, value in medians.items())
            + f"  bid/pin p99 {medians['everyone_p99_ms'] / medians['pin_p99_ms']:.2f}x",
            flush=True,
        )
    if arguments.json:
        arguments.json.write_text(json.dumps(results, indent=1))
    if any(r["problems"] for r in results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
