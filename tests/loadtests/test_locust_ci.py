"""The Locust flash sale's `ci` profile, for real: a server, about 30 s of Locust in a
subprocess (gevent's monkey-patching must never reach the pytest process), the invariant
check; then the check must fail on a fabricated order and on bad input.

`.ci/run` runs `make test`, so CI runs the ci profile through this file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.livecommerce.processes import ServerProcess
from tests.support import ROOT, free_port

RUN_TIMEOUT_S = 150


def loadtests(*arguments: str, timeout: float = RUN_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "loadtests", *arguments],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.timeout(RUN_TIMEOUT_S + 30)
def test_ci_profile_holds_every_invariant_and_the_check_can_fail(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server")
    run_dir = tmp_path / "run"
    try:
        done = loadtests("run", "--profile", "ci", "--host", server.http, "--out", str(run_dir))
        output = done.stdout + done.stderr
        assert done.returncode == 0, output
        assert "OK: every invariant holds" in output
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["viewers_connected_at_open"] == 50, summary
        assert summary["buyers_ordering"] == 30, summary
        assert summary["units_in_ledger"] == summary["units_told_accepted"] == 20
        assert summary["units_oversold"] == 0
        assert summary["orders_by_answer"]["accepted"] >= 10  # 20 units, at most 2 an order
        assert summary["orders_by_answer"]["sold_out"] >= 1
        assert summary["receipts_verified"] == summary["orders_by_answer"]["accepted"]
        assert summary["client_errors"] == 0
        assert summary["pushes"] > 0
        assert "push state/v1" in summary["push_p99_ms"]
        stats = (run_dir / "locust_stats.csv").read_text()
        for row in ("order accepted", "order sold_out", "push comment/v1", "receipt/v1"):
            assert f",{row}," in stats, stats

        # A client "told accepted" for an order the ledger does not hold: the check fails.
        records = sorted(run_dir.glob("records-*.jsonl"))[0]
        told = [json.loads(line) for line in records.read_text().splitlines()]
        real = next(r for r in told if r["kind"] == "order" and r["status"] == "accepted")
        fake = {**real, "order_id": "fabricated-order", "quantity": 1}
        with records.open("a") as file:
            file.write(json.dumps(fake) + "\n")
        failed = loadtests("check", str(run_dir), timeout=60)
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert "FAIL: 1 order(s) told accepted are not in the ledger as told" in failed.stdout
        assert "fabricated-order" in failed.stdout
        assert "FAIL: oversold: clients were told 21 units, 20 offered" in failed.stdout
    finally:
        server.stop()


def test_bad_input_gets_a_clear_error(tmp_path: Path) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    done = loadtests("run", "--host", nobody, "--out", str(tmp_path / "run"), timeout=60)
    assert done.returncode == 2
    assert f"set-up failed: cannot reach {nobody}/healthz" in done.stderr

    done = loadtests("run", "--host", "127.0.0.1:8000", timeout=60)
    assert done.returncode == 2
    assert "--host must be an http:// or https:// URL" in done.stderr

    done = loadtests("check", str(tmp_path / "nothing-here"), timeout=60)
    assert done.returncode == 2
    assert "cannot read the run file" in done.stderr
