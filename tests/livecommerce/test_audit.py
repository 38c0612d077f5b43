"""`python -m livecommerce audit`: a real signed ledger on disk, audited by the real CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ledger import Ledger, LedgerSettings, encode_entry
from livecommerce.commerce.escrow import RunPayouts
from livecommerce.commerce.events import Entry
from tests.livecommerce.commerce.test_escrow import World, calls
from tests.support import ROOT

FAST = LedgerSettings(origin="audit.test/log", checkpoint_interval_ms=50)


def a_history() -> list[Entry]:
    """Orders settled, refunded, cancelled, and one still in escrow; a payout."""
    world = World()
    ann, bob, cat = world.buyers
    for buyer, order_id in ((ann, "a1"), (bob, "b1"), (cat, "c1")):
        world.paid(buyer, order_id, quantity=2)
    for buyer, order_id in ((ann, "a1"), (bob, "b1")):
        world.ship(buyer, order_id)
        world.capture(buyer, order_id)
    world.step(ann, "confirm", ann, "a1")
    world.step(bob, "refund_request", bob, "b1", amount_cents=500, reason="damaged")
    (refund,) = calls(world.step(world.merchant, "refund_answer", bob, "b1", decision="accept",
                                 amount_cents=500))  # fmt: skip
    world.result("refund", refund.reference)
    world.step(cat, "cancel", cat, "c1")
    world.paid(ann, "a2")
    for call in calls(world.run(RunPayouts("p1"))):
        world.result("payout", call.reference)
    return world.entries()


async def write_ledger(path: Path, entries: list[Entry]) -> str:
    ledger = await Ledger.open(path, FAST)
    try:
        indexes = await ledger.append_many([encode_entry(kind, fields) for kind, fields in entries])
        await ledger.wait_covered(indexes[-1])
        return ledger.verifier_key
    finally:
        await ledger.close()


def audit(path: Path, vkey: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "livecommerce", "audit", str(path), "--vkey", vkey, *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


async def test_an_honest_ledger_audits_clean_with_its_balances(tmp_path: Path) -> None:
    entries = a_history()
    vkey = await write_ledger(tmp_path / "ledger", entries)
    done = audit(tmp_path / "ledger", vkey, "--accounts")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"OK: audited {len(entries)} entries" in done.stdout
    assert "FAIL" not in done.stdout
    lines = {line.split()[1]: line.split() for line in done.stdout.splitlines()
             if line.startswith("EUR ")}  # fmt: skip
    # The escrow holds b1's rest (posted) and the unshipped a2 (pending); the fees are
    # 5 % of a1, the one order settled.
    assert (lines["escrow"][3], lines["escrow"][4]) == (str(2 * 999 - 500), "999")
    assert lines["fees"][3] == str(2 * 999 * 500 // 10_000)
    assert "orders paid: 4" in done.stdout


async def test_a_ledger_whose_money_breaks_a_rule_is_named_by_entry(tmp_path: Path) -> None:
    entries = a_history()
    settle = next(
        index for index, (kind, fields) in enumerate(entries)
        if kind == "transfer/v1" and fields["code"] == "settlement"
    )  # fmt: skip
    # A server that paid its merchant one cent more than the rules give, and signed it.
    entries[settle] = (entries[settle][0], {**entries[settle][1], "amount": 1898})
    vkey = await write_ledger(tmp_path / "ledger", entries)
    done = audit(tmp_path / "ledger", vkey)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"FAIL: entry {settle}: the rules made transfer/v1" in done.stdout
    assert "BROKEN" in done.stdout


async def test_the_audit_says_when_it_cannot_run(tmp_path: Path) -> None:
    vkey = await write_ledger(tmp_path / "ledger", a_history()[:3])
    assert audit(tmp_path / "nothing", vkey).returncode == 2
    assert audit(tmp_path / "ledger", "not a key").returncode == 2
