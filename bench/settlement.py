"""After the sale: N orders through pay, ship, capture, confirm (settle) and a payout batch.

    python bench/settlement.py [--orders 100000] [--buyers 10000] [--merchants 10]
        [--batch 256] [--in-flight 8] [--rounds 3] [--json FILE] [--dir DIR]

Every order goes the way docs/commerce.md ("After the sale") describes, through the
server's own `CommerceCore.handle(command, now_ms)`: accepted (a signed `PlaceOrder`),
paid (`PayOrder`: `payment:<ref>` pending buyer -> escrow), shipped (the merchant's signed
`ship` step), the provider's capture result (the payment posted), confirmed (the buyer's
signed `confirm`: settled at once, escrow -> merchant and escrow -> fees), then one payout
batch (`RunPayouts`: each merchant's balance pending merchant -> clearing) and the
provider's payout results (posted). Four transfers per order, two per merchant. Orders
go phase by phase (all accepted, all paid, all shipped, ...), as after a flash sale, on a
clock that moves 1 ms a command. Everything is signed beforehand (Ed25519, PyNaCl), so
the figures are the server's work alone. Figures only: nothing about speed is asserted;
the run fails (exit 1) if any command is refused, an order does not end settled, or the
audit finds a problem.

What is timed, each a median over `--rounds`, each with its floor in the same run:

1. The core, on a fresh core each round, twice: "signatures checked" (the order's, the
   ship's and the confirm's, 3 Ed25519 checks an order, all in the core: the whole cost
   in one process) and "signatures given" (orders come as `CheckedOrder`, steps are not
   checked again, as the server's replay of its own ledger does: the money and the
   order's state machine alone). Transfers/s and orders/s. Floor: a bare Python loop
   over the same transfers, each a debit and a credit in a dict of balances keyed by
   (currency, account): the least any Python bookkeeping of these balances does.
2. The ledger: the entries of `--batch` commands at a time (each sale's last `stock/v1`
   of a batch standing for the others, as the server writes them), encoded
   (`to_entry`, `ledger.encode_entry`), then appended durably to a real `ledger.Ledger`
   on disk with `append_many_then`, at most `--in-flight` batches with the ledger (the
   server's `ledger_batches_in_flight_max`), timed until the last is durable. Floor: the
   same bytes written to a plain file with `os.write` and `os.fsync`, grouped as the
   ledger's committer can at best group them (up to `--in-flight` batches and 8,192
   entries per write and fsync): durability at that grain with no frame checksums, no
   Merkle hashing and no event loop.
3. The audit: `python -m livecommerce audit DIR --vkey KEY` over that ledger (verifies
   the log, replays every entry with every signature checked again, checks the
   balances), in a child process; its own time (it prints it; interpreter start is
   not in it) and entries/s. Floor: `python -m ledger verify DIR --vkey KEY`, the log's
   own checks alone, which the audit also does: the difference is the replay.

`--json FILE` also writes every figure, and the audit's totals by kind of account.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ledger import Ledger, LedgerSettings, encode_entry  # noqa: E402
from livecommerce.clients.signing import KeyPair  # noqa: E402
from livecommerce.commerce.catalog import AddStock, ListProduct  # noqa: E402
from livecommerce.commerce.core import Command, CommandRejected, CommerceCore  # noqa: E402
from livecommerce.commerce.escrow import (  # noqa: E402
    OrderStep,
    ProviderResult,
    RunPayouts,
    Stage,
    StepRefused,
    StepRepeated,
)
from livecommerce.commerce.events import Event  # noqa: E402
from livecommerce.commerce.funds import TransferRecorded  # noqa: E402
from livecommerce.commerce.identity import Register  # noqa: E402
from livecommerce.commerce.orders import (  # noqa: E402
    CheckedOrder,
    OrderRejected,
    OrderRepeated,
    PaymentRefused,
    PayOrder,
    PlaceOrder,
    SignatureCheck,
)
from livecommerce.commerce.sales import ScheduleSale, superseded_stock_changes  # noqa: E402

ORIGIN = "bench.example/settlement"
PRICE_CENTS = 1800
CURRENCY = "EUR"
PAYOUT_BATCH = "bench-payout-1"
FRAME_ENTRIES_MAX = LedgerSettings().batch_entries_max
# Answers that mean a command was not taken as the bench meant it.
NOT_TAKEN = (CommandRejected, OrderRejected, OrderRepeated, PaymentRefused, StepRefused,
             StepRepeated)  # fmt: skip


@dataclass
class Plan:
    """Every command of a run, signed, with the time it is handled at (1 ms apart)."""

    setup: list[tuple[int, Command]] = field(default_factory=list)
    # The timed part: (now_ms, command checked in the core, command with its check given).
    orders: list[tuple[int, Command, Command]] = field(default_factory=list)
    order_count: int = 0
    merchant_count: int = 0


def make_plan(orders: int, buyers: int, merchants: int) -> Plan:
    started_ms = time.time_ns() // 1_000_000
    clock = iter(range(started_ms, started_ms + 10**12))
    plan = Plan(order_count=orders, merchant_count=merchants)
    merchant_keys = [KeyPair() for _ in range(merchants)]
    buyer_keys = [KeyPair() for _ in range(buyers)]
    for key in [*merchant_keys, *buyer_keys]:
        now = next(clock)
        plan.setup.append((now, Register(**key.registration("someone", now))))
    per_merchant = [len(range(m, orders, merchants)) for m in range(merchants)]
    for m, key in enumerate(merchant_keys):
        now = next(clock)
        listing = key.listing(f"p{m}", "Stoneware mug", PRICE_CENTS, now, currency=CURRENCY)
        plan.setup.append((now, ListProduct(**listing)))
        now = next(clock)
        stock = key.stock(f"c{m}", f"p{m}", max(1, per_merchant[m]), now)
        plan.setup.append((now, AddStock(product_id=f"p{m}", **stock)))
        now = next(clock)
        plan.setup.append(
            (now, ScheduleSale(f"s{m}", f"r{m}", f"p{m}", key.identity_id, max(1, per_merchant[m]),
                               PRICE_CENTS, 100, now, 24 * 3600 * 1000, 3600 * 1000))
        )  # fmt: skip

    def both(command: Command) -> None:
        plan.orders.append((next(clock), command, command))

    def who(n: int) -> tuple[KeyPair, KeyPair, str]:
        return buyer_keys[n % buyers], merchant_keys[n % merchants], f"o{n}"

    for n in range(orders):
        buyer, _, order_id = who(n)
        now = next(clock)
        fields = buyer.order(order_id, f"s{n % merchants}", 1, PRICE_CENTS, now)
        command = PlaceOrder(fields["order_id"], fields["sale_id"], fields["buyer_id"],
                             fields["quantity"], fields["price_cents"], fields["time_ms"],
                             fields["signature"])  # fmt: skip
        digest = hashlib.sha256(command.signing_bytes()).digest()
        plan.orders.append((now, command, CheckedOrder(command, SignatureCheck(None, digest))))
    for n in range(orders):
        buyer, _, order_id = who(n)
        both(PayOrder(buyer.identity_id, order_id, "", "test", f"auth_{n}"))
    for n in range(orders):
        buyer, merchant, order_id = who(n)
        now = next(clock)
        body = merchant.step("ship", f"ship{n}", buyer.identity_id, order_id, now,
                             carrier="DHL", tracking=f"JJD{n:010d}")  # fmt: skip
        step = _step(body, order_id)
        plan.orders.append((now, step, step))
    for n in range(orders):
        buyer, _, order_id = who(n)
        both(ProviderResult("capture", f"{buyer.identity_id}/{order_id}", True, "test", f"cap_{n}"))
    for n in range(orders):
        buyer, _, order_id = who(n)
        now = next(clock)
        body = buyer.step("confirm", f"confirm{n}", buyer.identity_id, order_id, now)
        step = _step(body, order_id)
        plan.orders.append((now, step, step))
    both(RunPayouts(PAYOUT_BATCH))
    for m, key in enumerate(merchant_keys):
        if per_merchant[m]:
            payout_id = f"payout:{PAYOUT_BATCH}:{key.identity_id}:{CURRENCY}"
            both(ProviderResult("payout", payout_id, True, "test", f"po_{m}"))
    return plan


def _step(body: dict[str, Any], order_id: str) -> OrderStep:
    return OrderStep(
        body["step"], body["step_id"], body["buyer_id"], order_id, body["signer_id"],
        body["time_ms"], body["carrier"], body["tracking"], body["amount_cents"],
        body["decision"], body["reason"], body["signature"],
    )  # fmt: skip


@dataclass
class CoreRun:
    seconds: float
    cpu_seconds: float
    batches: list[list[Event]]  # the events of each batch of `--batch` commands
    setup_batches: list[list[Event]]
    transfers: int


def run_core(plan: Plan, checked: bool, batch: int) -> CoreRun:
    """A fresh core: the setup (not timed), then every order's commands, timed."""
    core = CommerceCore()
    setup_batches = [
        [event for now, command in plan.setup[start : start + batch]
         for event in core.handle(command, now)]
        for start in range(0, len(plan.setup), batch)
    ]  # fmt: skip
    core.verify_signatures = checked
    handle = core.handle
    commands = [(now, signed if checked else given) for now, signed, given in plan.orders]
    batches: list[list[Event]] = []
    gc.collect()
    cpu_started, started = time.process_time(), time.perf_counter()
    for start in range(0, len(commands), batch):
        events: list[Event] = []
        for now, command in commands[start : start + batch]:
            events.extend(handle(command, now))
        batches.append(events)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    check_outcome(core, plan, batches)
    transfers = sum(isinstance(event, TransferRecorded) for events in batches for event in events)
    return CoreRun(seconds, cpu_seconds, batches, setup_batches, transfers)


def check_outcome(core: CommerceCore, plan: Plan, batches: list[list[Event]]) -> None:
    refused = [event for events in batches for event in events if isinstance(event, NOT_TAKEN)]
    if refused:
        sys.exit(f"FAIL: {len(refused)} commands not taken, the first: {refused[0]}")
    lives = core.escrow.lives()
    stages = {life.stage for life in lives}
    if len(lives) != plan.order_count or stages - {Stage.SETTLED}:
        sys.exit(f"FAIL: {len(lives)} orders paid of {plan.order_count}, stages {stages}")
    problems = core.funds.problems()
    if problems:
        sys.exit(f"FAIL: the core's funds: {problems[:3]}")


def transfer_moves(
    batches: list[list[Event]],
) -> list[tuple[tuple[str, str], tuple[str, str], int]]:
    return [
        ((event.currency, event.debit), (event.currency, event.credit), event.amount)
        for events in batches
        for event in events
        if isinstance(event, TransferRecorded)
    ]


def dict_floor(moves: list[tuple[tuple[str, str], tuple[str, str], int]]) -> float:
    """Seconds for a bare loop: each transfer a debit and a credit in a dict of balances."""
    balances: dict[tuple[str, str], int] = {}
    get = balances.get
    gc.collect()
    started = time.perf_counter()
    for debit, credit, amount in moves:
        balances[debit] = get(debit, 0) - amount
        balances[credit] = get(credit, 0) + amount
    seconds = time.perf_counter() - started
    assert sum(balances.values()) == 0
    return seconds


def encode_batches(batches: list[list[Event]]) -> list[list[bytes]]:
    """Each batch's ledger entries, as the server's `LocalLedger.record` makes them."""
    encoded: list[list[bytes]] = []
    for events in batches:
        superseded = superseded_stock_changes(events)
        entries = []
        for position, event in enumerate(events):
            if position in superseded:
                continue
            entry = event.to_entry()
            if entry is not None:
                entries.append(encode_entry(*entry))
        if entries:
            encoded.append(entries)
    return encoded


async def write_ledger(
    directory: Path, batches: list[list[bytes]], in_flight: int
) -> tuple[float, str]:
    """Seconds until every batch is durable (at most `in_flight` with the ledger at once),
    and the ledger's verifier key. The ledger is closed after (a last checkpoint)."""
    ledger = await Ledger.open(directory, LedgerSettings(origin=ORIGIN))
    room = asyncio.Event()
    state = {"in_flight": 0, "left": len(batches)}
    done = asyncio.Event()

    def durable(result: list[int] | BaseException) -> None:
        if isinstance(result, BaseException):
            raise SystemExit(f"FAIL: the ledger: {result!r}")
        state["in_flight"] -= 1
        state["left"] -= 1
        room.set()
        if not state["left"]:
            done.set()

    started = time.perf_counter()
    for entries in batches:
        while state["in_flight"] >= in_flight:
            room.clear()
            await room.wait()
        state["in_flight"] += 1
        ledger.append_many_then(entries, durable)
    await done.wait()
    seconds = time.perf_counter() - started
    key = ledger.verifier_key
    await ledger.close()
    return seconds, key


def disk_floor(path: Path, batches: list[list[bytes]], in_flight: int) -> float:
    """Seconds to write the same bytes with one write and one fsync per group of up to
    `in_flight` batches and `FRAME_ENTRIES_MAX` entries."""
    groups: list[bytes] = []
    group: list[bytes] = []
    grouped = 0
    for entries in batches:
        if group and (grouped == in_flight or len(group) + len(entries) > FRAME_ENTRIES_MAX):
            groups.append(b"".join(group))
            group, grouped = [], 0
        group.extend(entries)
        grouped += 1
    if group:
        groups.append(b"".join(group))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        started = time.perf_counter()
        for data in groups:
            os.write(fd, data)
            os.fsync(fd)
        seconds = time.perf_counter() - started
    finally:
        os.close(fd)
    path.unlink()
    return seconds


AUDIT_DONE = re.compile(r"^(OK|BROKEN): audited (\d+) entries in ([0-9.]+) s$")
VERIFY_DONE = re.compile(r"^OK: (\d+) entries, .* in ([0-9.]+) s$")
TOTALS_ROW = re.compile(r"^([A-Z]{3})\s+(\w+)\s+(\d+)\s+(-?\d+)\s+(-?\d+)\s+(-?\d+)$")


def run_tool(arguments: Sequence[str]) -> tuple[int, str, float]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", *arguments], cwd=ROOT, capture_output=True, text=True, check=False
    )
    return done.returncode, done.stdout + done.stderr, time.perf_counter() - started


def audit(directory: Path, key: str) -> dict[str, Any]:
    code, output, wall_s = run_tool(["livecommerce", "audit", str(directory), "--vkey", key])
    found: dict[str, Any] = {"exit": code, "wall_s": wall_s, "totals": {}, "fail": []}
    for line in output.splitlines():
        if line.startswith("FAIL:"):
            found["fail"].append(line)
        elif match := AUDIT_DONE.match(line):
            found["verdict"], found["entries"] = match[1], int(match[2])
            found["seconds"] = float(match[3])
        elif match := TOTALS_ROW.match(line):
            found["totals"][f"{match[1]} {match[2]}"] = {
                "accounts": int(match[3]), "posted": int(match[4]),
                "pending_in": int(match[5]), "pending_out": int(match[6]),
            }  # fmt: skip
    if "seconds" not in found:
        found["fail"].append(f"no verdict from the audit: {output[-2000:]}")
    sums: dict[str, list[int]] = {}
    for name, row in found["totals"].items():
        total = sums.setdefault(name.split()[0], [0, 0])
        total[0] += row["posted"]
        total[1] += row["pending_in"] - row["pending_out"]
    found["sums"] = {currency: {"posted": s[0], "pending": s[1]} for currency, s in sums.items()}
    return found


def verify_floor(directory: Path, key: str) -> float:
    code, output, _ = run_tool(["ledger", "verify", str(directory), "--vkey", key])
    match = next((m for line in output.splitlines() if (m := VERIFY_DONE.match(line))), None)
    if code != 0 or match is None:
        sys.exit(f"FAIL: python -m ledger verify: {output[-2000:]}")
    return float(match[2])


def median(values: list[float]) -> float:
    return statistics.median(values)


def runs_text(values: list[float], digits: int = 2) -> str:
    return " / ".join(f"{value:.{digits}f}" for value in values)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--buyers", type=int, default=10_000)
    parser.add_argument("--merchants", type=int, default=10)
    parser.add_argument("--batch", type=int, default=256, help="commands per ledger batch")
    parser.add_argument("--in-flight", type=int, default=8, help="batches with the ledger")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, help="where the ledgers go (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    arguments = parser.parse_args(argv)
    if min(arguments.orders, arguments.buyers, arguments.merchants, arguments.batch,
           arguments.in_flight, arguments.rounds) < 1:  # fmt: skip
        parser.error("every count must be at least 1")
    if arguments.batch > 2_000:
        parser.error("--batch at most 2000 (a batch's entries must fit one ledger frame)")
    per_pair = Counter(
        (n % arguments.buyers, n % arguments.merchants) for n in range(arguments.orders)
    )
    if max(per_pair.values()) > 100:
        parser.error("a buyer would order more than 100 times in one sale: add --buyers")
    orders = arguments.orders
    print(f"settlement benchmark: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"{orders:,} orders, {arguments.buyers:,} buyers, {arguments.merchants} merchants, "
          f"{arguments.rounds} round(s), load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    started = time.perf_counter()
    plan = make_plan(orders, arguments.buyers, arguments.merchants)
    print(f"signed {len(plan.setup) + len(plan.orders):,} commands in "
          f"{time.perf_counter() - started:.1f} s")  # fmt: skip
    root = Path(tempfile.mkdtemp(prefix="settlement-bench-", dir=arguments.dir))
    figures: dict[str, list[float]] = {name: [] for name in (
        "core_checked_s", "core_checked_cpu_s", "core_given_s", "dict_floor_s", "encode_s",
        "ledger_s", "disk_floor_s", "audit_s", "audit_wall_s", "verify_floor_s",
    )}  # fmt: skip
    audits: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    try:
        for round_number in range(arguments.rounds):
            given = run_core(plan, False, arguments.batch)
            figures["core_given_s"].append(given.seconds)
            del given
            checked = run_core(plan, True, arguments.batch)
            figures["core_checked_s"].append(checked.seconds)
            figures["core_checked_cpu_s"].append(checked.cpu_seconds)
            moves = transfer_moves(checked.batches)
            figures["dict_floor_s"].append(dict_floor(moves))
            started = time.perf_counter()
            encoded = encode_batches(checked.batches)
            figures["encode_s"].append(time.perf_counter() - started)
            setup = encode_batches(checked.setup_batches)
            counts = {
                "transfers": checked.transfers,
                "commands": len(plan.orders),
                "entries": sum(map(len, encoded)),
                "setup_entries": sum(map(len, setup)),
                "entry_bytes": sum(len(e) for entries in encoded for e in entries),
                "batches": len(encoded),
            }
            del checked, moves
            directory = root / f"round-{round_number}"
            seconds, key = asyncio.run(
                write_ledger(directory, [*setup, *encoded], arguments.in_flight)
            )
            figures["ledger_s"].append(seconds)
            figures["disk_floor_s"].append(
                disk_floor(root / "floor.bin", [*setup, *encoded], arguments.in_flight)
            )
            del encoded, setup
            gc.collect()
            found = audit(directory, key)
            audits.append(found)
            if found["fail"] or found["exit"] != 0:
                for line in found["fail"]:
                    print(line)
                print(f"FAIL: the audit exited {found['exit']}")
                return 1
            figures["audit_s"].append(found["seconds"])
            figures["audit_wall_s"].append(found["wall_s"])
            figures["verify_floor_s"].append(verify_floor(directory, key))
            shutil.rmtree(directory)
            print(f"  round {round_number + 1}: core {figures['core_checked_s'][-1]:.2f} s "
                  f"(signatures given {figures['core_given_s'][-1]:.2f} s), ledger "
                  f"{figures['ledger_s'][-1]:.2f} s, audit {figures['audit_s'][-1]:.2f} s")  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report(arguments, counts, figures, audits[-1])
    if arguments.json:
        results = {
            "command": " ".join(["bench/settlement.py", *(sys.argv[1:] if argv is None else argv)]),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "loadavg_end": os.getloadavg()},
            "orders": orders, "counts": counts, "runs": figures,
            "medians": {name: median(values) for name, values in figures.items()},
            "audit": audits[-1],
        }  # fmt: skip
        arguments.json.write_text(json.dumps(results, indent=2))
    return 0


def report(
    arguments: argparse.Namespace,
    counts: dict[str, int],
    figures: dict[str, list[float]],
    audited: dict[str, Any],
) -> None:
    orders, transfers = arguments.orders, counts["transfers"]
    entries = counts["entries"] + counts["setup_entries"]
    m = {name: median(values) for name, values in figures.items()}
    print()
    print(f"{orders:,} orders, {counts['commands']:,} commands, {transfers:,} transfers, "
          f"{entries:,} ledger entries ({counts['setup_entries']:,} of them the setup; "
          f"{counts['entry_bytes'] / counts['entries']:.0f} bytes an entry on "
          f"average), medians of {arguments.rounds} (each round's in brackets)")  # fmt: skip
    print(f"{'what':58} {'seconds':>8} {'transfers/s':>12} {'orders/s':>10} {'entries/s':>10}")
    rows = [
        ("core, signatures checked (3 Ed25519 an order)", "core_checked_s", True),
        ("core, signatures given (money and state machine)", "core_given_s", True),
        ("  floor: bare loop, a dict debit and credit a transfer", "dict_floor_s", True),
        ("entries encoded (to_entry, encode_entry)", "encode_s", False),
        (
            f"ledger: durable append_many, {arguments.in_flight} batches in flight",
            "ledger_s",
            False,
        ),
        ("  floor: same bytes, os.write + fsync per group", "disk_floor_s", False),
        ("audit: python -m livecommerce audit (its own time)", "audit_s", False),
        ("  floor: python -m ledger verify (the log's checks)", "verify_floor_s", False),
    ]
    for label, name, money in rows:
        seconds = m[name]
        per_transfer = f"{transfers / seconds:12,.0f}" if money else f"{'':12}"
        per_order = f"{orders / seconds:10,.0f}"
        per_entry = f"{'':10}" if money else f"{entries / seconds:10,.0f}"
        print(f"{label:58} {seconds:8.3f} {per_transfer} {per_order} {per_entry}"
              f"  ({runs_text(figures[name], 3)})")  # fmt: skip
    print()
    print(f"ratios: core (signatures checked) / dict floor {m['core_checked_s'] / m['dict_floor_s']:,.0f}x; "
          f"core (signatures given) / dict floor {m['core_given_s'] / m['dict_floor_s']:,.0f}x; "
          f"signatures {100 * (1 - m['core_given_s'] / m['core_checked_s']):.0f}% of the core's time; "
          f"core CPU/wall {m['core_checked_cpu_s'] / m['core_checked_s']:.2f}")  # fmt: skip
    print(f"        ledger / disk floor {m['ledger_s'] / m['disk_floor_s']:.2f}x; "
          f"audit / verify floor {m['audit_s'] / m['verify_floor_s']:.2f}x (the replay: "
          f"{m['audit_s'] - m['verify_floor_s']:.2f} s); audit's wall with interpreter start "
          f"{m['audit_wall_s']:.2f} s")  # fmt: skip
    per_order_us = m["core_checked_s"] * 1e6 / orders
    whole = m["core_checked_s"] + m["encode_s"] + m["ledger_s"]
    print(f"per order: core {per_order_us:.0f} us; core + encode + ledger {whole * 1e6 / orders:.0f} us "
          f"({orders / whole:,.0f} orders/s end to end, one after the other); audit "
          f"{m['audit_s'] * 1e6 / orders:.0f} us")  # fmt: skip
    sums = ", ".join(
        f"{currency} posted {s['posted']}, pending {s['pending']}"
        for currency, s in audited["sums"].items()
    )
    print(f"audit: {audited['verdict']}, {audited['entries']:,} entries, balances sum to: {sums}")


if __name__ == "__main__":
    sys.exit(main())
