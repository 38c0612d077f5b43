"""Go's golang.org/x/mod/sumdb/{note,tlog} accept our notes, checkpoints, tiles and proofs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ledger import Ledger, LedgerSettings, encode_entry
from ledger.__main__ import main
from ledger.note import Signer, sign
from tests.support import require, require_binary

GOCODE = Path("/usr/share/gocode")
SOURCE = Path(__file__).parent / "gocheck"

pytestmark = pytest.mark.golang


@pytest.fixture(scope="module")
def gocheck(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = require_binary("go")
    require((GOCODE / "src/golang.org/x/mod").is_dir(), "golang.org/x/mod is not installed")
    build = tmp_path_factory.mktemp("gobuild")
    binary = build / "gocheck"
    environment = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": f"{build}:{GOCODE}",
        "GOCACHE": str(build / "cache"),
        "GOFLAGS": "",
    }
    subprocess.run(
        [go, "build", "-o", str(binary), "."], cwd=SOURCE, env=environment, check=True, timeout=300
    )
    return binary


def _run(binary: Path, *arguments: str | Path) -> str:
    result = subprocess.run(
        [str(binary), *map(str, arguments)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_go_opens_our_signed_note(gocheck: Path, tmp_path: Path) -> None:
    signer = Signer.parse(
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
    )
    (tmp_path / "vkey").write_text(signer.verifier.format())
    (tmp_path / "note").write_bytes(sign(b"hello, Go\n", signer))
    assert "ok note verified by PeterNeumann" in _run(
        gocheck, "note", tmp_path / "vkey", tmp_path / "note"
    )


async def test_go_checks_tiles_records_and_tree_proofs(gocheck: Path, tmp_path: Path) -> None:
    settings = LedgerSettings(origin="go.example/log", checkpoint_interval_ms=20)
    ledger = await Ledger.open(tmp_path / "data", settings)
    await ledger.append_many([encode_entry("order/v1", {"n": i}) for i in range(1000)])
    await ledger.wait_covered(999)
    old_checkpoint = ledger.latest_checkpoint
    for start in range(1000, 70_001, 5000):
        end = min(start + 5000, 70_001)
        await ledger.append_many([encode_entry("stock/v1", {"n": i}) for i in range(start, end)])
    await ledger.wait_covered(70_000)
    receipts: list[Path] = []
    for index in (0, 1, 255, 256, 999, 65_535, 65_536, 70_000):
        path = tmp_path / f"{index}.tlog-proof"
        path.write_bytes(ledger.proof(index))
        receipts.append(path)
    await ledger.close()
    (tmp_path / "old").write_bytes(old_checkpoint)
    assert main(["tiles", str(tmp_path / "data"), str(tmp_path / "static")]) == 0
    (tmp_path / "vkey").write_text(ledger.verifier_key)
    _run(gocheck, "note", tmp_path / "vkey", tmp_path / "static" / "checkpoint")
    output = _run(gocheck, "log", tmp_path / "static", tmp_path / "old", *receipts)
    assert "ok checkpoint go.example/log size 70001" in output
    assert "ok CheckTree 1000 -> 70001" in output
    assert output.count("ok CheckRecord") == len(receipts)
