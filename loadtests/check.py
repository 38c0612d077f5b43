"""After a run: prove that nothing went wrong, or exit non-zero saying what did.

    python -m loadtests.check RUN_DIR [--vkey KEY] [--ledger URL]

Reads `run.json` and the records every Locust process wrote, asks the server for the
sale's state, runs `python -m ledger verify` on the server's log, then fetches the log's
entries (tiles) itself, checks them against the signed checkpoint, and checks:

1. units accepted (in the ledger, less expired holds) are no more than the units offered,
   and equal to them when demand exceeded stock (the buyers that ordered wanted more
   units, up to their limit, than were offered);
2. every order a client was told was accepted is in the ledger, at the index it was told,
   with the quantity it ordered; and clients were told no more units than were offered;
3. no client saw an error other than sold out and limit reached (failed connections,
   other rejections, unanswered orders, missing or bad receipts, closed sockets).

Exit 0: all hold. 1: a violation (each printed as FAIL). 2: the check could not run
(no run file, server unreachable). The figures go to stdout and to RUN_DIR/summary.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger.checkpoint import Checkpoint, CheckpointError
from ledger.entry import decode_entry
from ledger.merkle import leaf_hash, root_of
from ledger.note import NoteError, Verifier, open_note
from ledger.tiles import TILE_WIDTH, Tile, decode_bundle
from loadtests.api import ApiError, call, get_bytes
from loadtests.runfile import RUN_FILE_NAME, RunFileError, RunInfo, read_records

CHECKPOINT_WAIT_S = 15.0
STATS_CSV = "locust_stats.csv"
SUMMARY_FILE = "summary.json"
ALLOWED_REJECTIONS = frozenset({"sold_out", "limit_reached"})


class CheckError(Exception):
    """The check could not be carried out (as opposed to a violation it found)."""


@dataclass
class LedgerOrders:
    size: int = 0
    accepted: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    expired_units: int = 0
    paid_units: int = 0

    @property
    def accepted_units(self) -> int:
        return sum(quantity for _index, quantity in self.accepted.values())


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


def run_verify(ledger_url: str, vkey: str) -> tuple[bool, str]:
    """`python -m ledger verify`, as a third party would run it."""
    command = [sys.executable, "-m", "ledger", "verify", ledger_url, "--vkey", vkey]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return False, "python -m ledger verify took more than 10 minutes"
    output = (done.stdout + done.stderr).strip()
    return done.returncode == 0, output


def read_ledger(ledger_url: str, verifier: Verifier, sale_id: str, index_min: int) -> LedgerOrders:
    """The sale's order entries from the served tiles, up to a signed checkpoint that
    covers `index_min`; the entries must hash to that checkpoint's root."""
    deadline = time.monotonic() + CHECKPOINT_WAIT_S
    while True:
        note = get_bytes(f"{ledger_url}/checkpoint")
        try:
            checkpoint = Checkpoint.parse(open_note(note, (verifier,)).text)
        except (NoteError, CheckpointError) as error:
            raise CheckError(f"{ledger_url}/checkpoint does not verify: {error}") from None
        if checkpoint.size > index_min or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    entries: list[bytes] = []
    for start in range(0, checkpoint.size, TILE_WIDTH):
        width = min(TILE_WIDTH, checkpoint.size - start)
        path = Tile(-1, start // TILE_WIDTH, width).path()
        try:
            bundle = decode_bundle(get_bytes(f"{ledger_url}/{path}"))
        except ValueError as error:
            raise CheckError(f"{ledger_url}/{path}: {error}") from None
        if len(bundle) != width:
            raise CheckError(f"{ledger_url}/{path}: {len(bundle)} entries, want {width}")
        entries.extend(bundle)
    if root_of([leaf_hash(entry) for entry in entries]) != checkpoint.root:
        raise CheckError(f"the entries served at {ledger_url} do not hash to its checkpoint")
    orders = LedgerOrders(size=checkpoint.size)
    for index, data in enumerate(entries):
        if b'"order/v1"' not in data:
            continue
        entry_type, fields = decode_entry(data)
        if entry_type != "order/v1" or fields.get("sale_id") != sale_id:
            continue
        key = (fields["buyer_id"], fields["order_id"])
        if fields["action"] == "accepted":
            orders.accepted[key] = (index, fields["quantity"])
        elif fields["action"] == "expired":
            orders.expired_units += fields["quantity"]
        elif fields["action"] == "paid":
            orders.paid_units += fields["quantity"]
    return orders


def locust_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as rows:
        return [row for row in csv.DictReader(rows) if row.get("Name") != "Aggregated"]


def check(run_dir: Path, vkey: str = "", ledger_url: str = "") -> tuple[list[str], dict[str, Any]]:
    """(violations, summary)."""
    run = RunInfo.read(run_dir / RUN_FILE_NAME)
    vkey = vkey or run.vkey
    ledger_url = (ledger_url or f"{run.base_url}/ledger").rstrip("/")
    try:
        verifier = Verifier.parse(vkey)
    except NoteError as error:
        raise CheckError(f"bad verifier key {vkey!r}: {error}") from None
    violations: list[str] = []

    told: dict[tuple[str, str], dict[str, Any]] = {}  # (buyer, order) -> the last answer
    errors: Counter[str] = Counter()
    viewers_at_open = viewers_max = server_viewers = receipts_ok = 0
    processes: list[tuple[float, int]] = []  # (CPU seconds, frames) per Locust process
    for entry in read_records(run_dir):
        kind = entry.get("kind")
        if kind == "order":
            told[(entry["buyer_id"], entry["order_id"])] = entry
        elif kind == "error":
            errors[f"{entry['request']}: {entry['error']}"] += 1
        elif kind == "receipt" and entry.get("ok"):
            receipts_ok += 1
        elif kind == "viewers":
            viewers_at_open += entry.get("connected_at_open") or 0
            viewers_max += entry.get("connected_max") or 0
            server_viewers = max(server_viewers, entry.get("server_viewers_max") or 0)
            processes.append((entry.get("cpu_s") or 0.0, entry.get("frames") or 0))
    answered = [entry for entry in told.values() if entry["status"] != "unanswered"]
    accepted = {key: entry for key, entry in told.items() if entry["status"] == "accepted"}
    told_units = sum(entry["quantity"] for entry in accepted.values())
    reasons = Counter(entry["reason"] or entry["status"] for entry in answered)
    buyers_ordering = {buyer for buyer, _order in told}

    sale = call("GET", f"{run.base_url}/api/sales/{run.sale_id}")
    verified, verify_output = run_verify(ledger_url, vkey)
    if not verified:
        violations.append(f"python -m ledger verify {ledger_url} failed:\n{verify_output}")
    index_min = max((entry["ledger_index"] for entry in accepted.values()), default=-1)
    ledger = read_ledger(ledger_url, verifier, run.sale_id, index_min)

    # 1. Units: no more than offered; all of them when demand exceeded stock.
    offered = run.units_offered
    ledger_units = ledger.accepted_units - ledger.expired_units
    demand = len(buyers_ordering) * run.per_buyer_limit
    if ledger_units > offered:
        violations.append(f"oversold: the ledger holds {ledger_units} units, {offered} offered")
    if told_units > offered + ledger.expired_units:
        violations.append(f"oversold: clients were told {told_units} units, {offered} offered")
    if demand > offered and ledger.expired_units == 0:
        if ledger_units != offered:
            violations.append(
                f"demand ({demand} units) exceeded stock ({offered}) but the ledger holds "
                f"{ledger_units} accepted units"
            )
        if told_units != offered:
            violations.append(
                f"demand ({demand} units) exceeded stock ({offered}) but clients were told "
                f"{told_units} accepted units"
            )
    # The server's own count (embedded: the one core; scaled out: what the answering web
    # process has seen, so it is reported but not compared).
    server_taken = offered - sale["units_remaining"]
    if sale.get("units_offered") != offered or not 0 <= sale["units_remaining"] <= offered:
        violations.append(f"the server's sale state is inconsistent: {sale}")

    # 2. Every order a client was told was accepted is in the ledger, as it was told.
    missing = []
    for key, entry in accepted.items():
        found = ledger.accepted.get(key)
        if found is None or found != (entry["ledger_index"], entry["quantity"]):
            missing.append(
                f"{entry['order_id']} (told index {entry['ledger_index']}, ledger {found})"
            )
    if missing:
        violations.append(
            f"{len(missing)} order(s) told accepted are not in the ledger as told: "
            + ", ".join(missing[:10])
        )

    # 3. No errors but sold out and limit reached.
    if errors:
        lines = "\n".join(f"  {count} x {what}" for what, count in errors.most_common(10))
        violations.append(f"{sum(errors.values())} client error(s):\n{lines}")
    if not answered:
        violations.append("no order was answered: did the buyers run?")
    unanswered = len(told) - len(answered)
    if unanswered:
        violations.append(f"{unanswered} order(s) got no answer")
    other = {reason: n for reason, n in reasons.items() if reason not in ALLOWED_REJECTIONS}
    other.pop("accepted", None)
    if other:
        violations.append(f"rejections other than sold_out and limit_reached: {other}")

    rtts = [entry["rtt_ms"] for entry in answered]
    span_s = 0.0
    if answered:
        first = min(entry["sent_ms"] for entry in answered)
        last = max(entry["sent_ms"] + entry["rtt_ms"] for entry in answered)
        span_s = max(0.001, (last - first) / 1000)
    frames = sum(n for _cpu, n in processes)
    client_cpu_s = sum(cpu for cpu, _n in processes)
    rows = locust_rows(run_dir / STATS_CSV)
    pushes = [row for row in rows if row["Name"].startswith("push ")]
    summary: dict[str, Any] = {
        "profile": run.profile,
        "viewers_planned": run.viewers,
        "buyers_planned": run.buyers,
        "viewers_connected_at_open": viewers_at_open,
        "viewers_connected_max": viewers_max,
        "server_viewers_max": server_viewers,
        "buyers_ordering": len(buyers_ordering),
        "orders_answered": len(answered),
        "orders_by_answer": dict(reasons),
        "orders_answered_span_s": round(span_s, 3),
        "orders_per_s": round(len(answered) / span_s, 1) if span_s else 0.0,
        "order_rtt_p50_ms": percentile(rtts, 0.50),
        "order_rtt_p99_ms": percentile(rtts, 0.99),
        "order_rtt_max_ms": max(rtts, default=None),
        "push_p99_ms": {row["Name"]: row["99%"] for row in pushes},
        "pushes": sum(int(row["Request Count"]) for row in pushes),
        "receipts_verified": receipts_ok,
        "locust_processes": len(processes),
        "frames_received": frames,
        "client_cpu_s": round(client_cpu_s, 1),
        "client_cpu_us_per_frame": round(1e6 * client_cpu_s / frames, 1) if frames else None,
        "units_offered": offered,
        "units_told_accepted": told_units,
        "units_in_ledger": ledger_units,
        "units_expired": ledger.expired_units,
        "units_server_taken": server_taken,
        "units_oversold": max(0, ledger_units - offered, told_units - offered),
        "ledger_size": ledger.size,
        "ledger_verify": verify_output,
        "client_errors": sum(errors.values()),
        "violations": violations,
    }
    return violations, summary


def report(summary: dict[str, Any]) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:,.1f} ms"

    pushes = ", ".join(f"{name} {value} ms" for name, value in summary["push_p99_ms"].items())
    return "\n".join(
        [
            f"viewers held: {summary['viewers_connected_at_open']:,} connected when the sale "
            f"opened (max {summary['viewers_connected_max']:,}; the server counted up to "
            f"{summary['server_viewers_max']:,} sockets in the room, buyers included)",
            f"orders: {summary['orders_answered']:,} answered from "
            f"{summary['buyers_ordering']:,} buyers in {summary['orders_answered_span_s']} s "
            f"= {summary['orders_per_s']:,} orders/s; {summary['orders_by_answer']}",
            f"order round trip: p50 {ms(summary['order_rtt_p50_ms'])}, "
            f"p99 {ms(summary['order_rtt_p99_ms'])}, max {ms(summary['order_rtt_max_ms'])}",
            f"push latency p99: {pushes or 'no Locust CSV in the run directory'} "
            f"({summary['pushes']:,} pushes)",
            f"receipts verified: {summary['receipts_verified']:,}",
            f"Locust: {summary['locust_processes']} process(es) received "
            f"{summary['frames_received']:,} frames, {summary['client_cpu_us_per_frame']} us "
            "of client CPU per frame (all Locust work included)",
            f"units: {summary['units_offered']} offered, {summary['units_told_accepted']} told "
            f"accepted, {summary['units_in_ledger']} in the ledger, "
            f"{summary['units_expired']} expired, server: {summary['units_server_taken']} taken",
            f"units oversold: {summary['units_oversold']}",
            f"ledger: {summary['ledger_verify']}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.check", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("run_dir", type=Path, help="the directory holding run.json and records")
    parser.add_argument("--vkey", default="", help="the ledger's verifier key (default: run.json)")
    parser.add_argument(
        "--ledger", default="", help="URL of the log (default: the server's /ledger)"
    )
    arguments = parser.parse_args(argv)
    try:
        violations, summary = check(arguments.run_dir, arguments.vkey, arguments.ledger)
    except (RunFileError, ApiError, CheckError) as error:
        print(f"check: cannot run: {error}", file=sys.stderr)
        return 2
    print(report(summary))
    (arguments.run_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    if violations:
        for violation in violations:
            print(f"FAIL: {violation}")
        return 1
    print("OK: every invariant holds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
