"""Smoke test of bench/settlement.py: a few hundred orders through the whole bench, and
the audit of the ledger it wrote finds every order settled and paid out, to the cent.
Speed is not checked here (the bench prints figures; docs/benchmarks.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT

ORDERS = 300
MERCHANTS = 10
PRICE_CENTS = 1800  # bench/settlement.py's price
FEE_CENTS = PRICE_CENTS * 500 // 10_000  # the default fee, 5 %


def test_a_few_hundred_orders_settle_and_the_audit_agrees(tmp_path: Path) -> None:
    figures = tmp_path / "settlement.json"
    done = subprocess.run(
        [sys.executable, "bench/settlement.py", "--orders", str(ORDERS), "--buyers", "40",
         "--merchants", str(MERCHANTS), "--batch", "64", "--rounds", "1", "--json",
         str(figures), "--dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(figures.read_text())
    counts, audit = results["counts"], results["audit"]
    # Four transfers an order (payment held, posted, settlement, fee), two a merchant.
    assert counts["transfers"] == 4 * ORDERS + 2 * MERCHANTS
    assert (audit["exit"], audit["verdict"], audit["fail"]) == (0, "OK", [])
    assert audit["entries"] == counts["entries"] + counts["setup_entries"]
    assert audit["sums"] == {"EUR": {"posted": 0, "pending": 0}}
    posted = {name: row["posted"] for name, row in audit["totals"].items()}
    pending = [row["pending_in"] + row["pending_out"] for row in audit["totals"].values()]
    assert posted == {
        "EUR buyer": -ORDERS * PRICE_CENTS,
        "EUR escrow": 0,
        "EUR merchant": 0,
        "EUR fees": ORDERS * FEE_CENTS,
        "EUR clearing": ORDERS * (PRICE_CENTS - FEE_CENTS),
    }
    assert pending == [0] * len(pending)
    assert audit["totals"]["EUR escrow"]["accounts"] == ORDERS
    assert all(len(values) == 1 and values[0] > 0 for values in results["runs"].values())
