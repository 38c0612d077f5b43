"""Smoke test of bench/auction.py: 50 bidders in a 10 s extend auction through the whole
bench; every bid gets an answer, the replay of the ledger names the server's winner and
price (the bench's own check, which fails the run), and the audit says OK. Speed is not
checked here (the bench prints figures; docs/benchmarks.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

BIDDERS = 50
BIDS = 100


@pytest.mark.timeout(240)
def test_fifty_bidders_every_bid_answered_and_the_replay_names_the_winner(
    tmp_path: Path,
) -> None:
    figures = tmp_path / "auction.json"
    done = subprocess.run(
        [sys.executable, "bench/auction.py", "--bidders", str(BIDDERS), "--bids", str(BIDS),
         "--client-processes", "2", "--duration-s", "10", "--burst-s", "4",
         "--json", str(figures)],
        cwd=ROOT, capture_output=True, text=True, timeout=200, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    (result,) = json.loads(figures.read_text())
    assert result["problems"] == []
    assert (result["sent"], result["unanswered"]) == (BIDS, 0)
    assert result["accepted"] + sum(result["refused"].values()) == BIDS
    assert set(result["refused"]) <= {"bid_too_low"}
    assert result["accepted"] >= 1
    assert result["price_cents"] >= 1_000
    assert result["extensions"] >= 1  # bids in the last 10 s of an extend auction
    assert result["everyone_misses"] == 0
    assert result["pins_missed"] == 0
    assert result["audit"].startswith("OK")
