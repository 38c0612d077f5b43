"""The verifier CLI over a data directory and over HTTP: a changed byte anywhere is caught."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from ledger import Ledger, LedgerSettings, encode_entry
from ledger.__main__ import main
from ledger.http import create_app as create_ledger_app
from ledger.note import Verifier
from ledger.verify import VerifyError, verify_directory, verify_url
from tests.support import free_port, wait_for_port

SETTINGS = LedgerSettings(origin="verify.example/log", checkpoint_interval_ms=20)


async def _build(path: Path, batches: int = 5, per_batch: int = 7) -> str:
    ledger = await Ledger.open(path, SETTINGS)
    for b in range(batches):
        await ledger.append_many(
            [encode_entry("order/v1", {"order": f"o-{b}-{i}"}) for i in range(per_batch)]
        )
        await ledger.wait_covered(ledger.size - 1)
    key = ledger.verifier_key
    await ledger.close()
    return key


async def test_cli_verify_and_verify_proof(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = await _build(tmp_path / "data")
    assert main(["verify", str(tmp_path / "data"), "--vkey", key]) == 0
    assert "OK: 35 entries" in capsys.readouterr().out
    ledger = await Ledger.open(tmp_path / "data", SETTINGS)
    receipt = ledger.proof(17)
    entry = ledger.entry(17)
    await ledger.close()
    (tmp_path / "r.tlog-proof").write_bytes(receipt)
    (tmp_path / "vkey").write_text(key + "\n")
    (tmp_path / "entry").write_bytes(entry)
    arguments = ["verify-proof", str(tmp_path / "r.tlog-proof"), "--vkey", str(tmp_path / "vkey")]
    assert main(arguments) == 0
    assert main([*arguments, "--entry", str(tmp_path / "entry")]) == 0
    (tmp_path / "entry").write_bytes(entry.replace(b"o-", b"x-"))
    assert main([*arguments, "--entry", str(tmp_path / "entry")]) == 1
    for position in range(len(receipt)):
        damaged = bytearray(receipt)
        damaged[position] ^= 0x01
        (tmp_path / "r.tlog-proof").write_bytes(bytes(damaged))
        assert main(arguments) == 1, position
    capsys.readouterr()


@pytest.mark.parametrize("name", ["entries.wal", "blocks.wal"])
async def test_every_changed_byte_is_caught(tmp_path: Path, name: str) -> None:
    verifier = Verifier.parse(await _build(tmp_path, batches=3, per_batch=3))
    verify_directory(tmp_path, verifier)
    path = tmp_path / name
    original = path.read_bytes()
    messages: set[str] = set()
    try:
        for position in range(len(original)):
            damaged = bytearray(original)
            damaged[position] ^= 0x04
            path.write_bytes(bytes(damaged))
            with pytest.raises(VerifyError) as caught:
                verify_directory(tmp_path, verifier)
            messages.add(str(caught.value).split(":")[0])
    finally:
        path.write_bytes(original)
    # The messages name the file, entry or block at fault.
    assert all(m.startswith((name, "block ", "entry ")) for m in messages), messages


async def test_forged_entry_is_named_by_its_block(tmp_path: Path) -> None:
    from ledger.storage import AppendFile, FileLayer

    verifier = Verifier.parse(await _build(tmp_path, batches=3, per_batch=3))
    # Rewrite the whole entries file with one entry changed and every checksum valid.
    source = AppendFile(tmp_path / "entries.wal", FileLayer())
    source.recover()
    entries = [source.read(i) for i in range(source.count)]
    source.close()
    entries[4] = encode_entry("order/v1", {"order": "forged"})
    (tmp_path / "entries.wal").unlink()
    rewritten = AppendFile(tmp_path / "entries.wal", FileLayer())
    rewritten.append(0, entries)
    rewritten.close()
    with pytest.raises(VerifyError, match=r"block \d+: signed root for size 6 .* lies in 3..5"):
        verify_directory(tmp_path, verifier)


def _serve(app: object, port: int) -> tuple[uvicorn.Server, threading.Thread]:
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for_port("127.0.0.1", port, timeout_s=10)
    return server, thread


async def test_verify_url_of_a_running_log_and_of_static_tiles(tmp_path: Path) -> None:
    key = await _build(tmp_path / "data", batches=4, per_batch=200)
    verifier = Verifier.parse(key)
    ledger = await Ledger.open(tmp_path / "data", SETTINGS)
    port = free_port()
    # The ledger lives on this loop; uvicorn runs its own loop in a thread and only reads.
    server, thread = _serve(Starlette(routes=[Mount("/ledger", create_ledger_app(ledger))]), port)
    try:
        report = await asyncio.to_thread(verify_url, f"http://127.0.0.1:{port}/ledger", verifier)
        assert report.entries == 800
        assert report.tiles_checked >= 5
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 10)
        await ledger.close()

    assert main(["tiles", str(tmp_path / "data"), str(tmp_path / "static")]) == 0
    port = free_port()
    static = Starlette(routes=[Mount("/log", StaticFiles(directory=tmp_path / "static"))])
    server, thread = _serve(static, port)
    try:
        url = f"http://127.0.0.1:{port}/log"
        assert (await asyncio.to_thread(verify_url, url, verifier)).entries == 800
        tile = tmp_path / "static" / "tile" / "0" / "001"
        data = bytearray(tile.read_bytes())
        data[100] ^= 0x01
        tile.write_bytes(bytes(data))
        with pytest.raises(VerifyError, match="tile/0/001: differs"):
            await asyncio.to_thread(verify_url, url, verifier)
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 10)
