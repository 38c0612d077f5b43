"""Crashes and damage: torn tails are cut, damage is named, acknowledged entries survive.

Two kinds of crash: a file layer that fails on purpose at every write and fsync (after
writing nothing, or half of what it was given), and a real process killed with SIGKILL
while appending.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from ledger import Ledger, LedgerClosed, LedgerCorruption, LedgerSettings, encode_entry
from ledger.note import Verifier
from ledger.storage import FileLayer
from ledger.verify import verify_directory
from ledger.wal import HEADER_BYTES, ITEM_HEADER_BYTES, encode_frame
from tests.ledger.conftest import FAST
from tests.support import ROOT


def _entry(i: int) -> bytes:
    return encode_entry("stock/v1", {"product": f"p-{i}", "delta": -1})


async def _log(path: Path, batches: int, per_batch: int) -> str:
    ledger = await Ledger.open(path, FAST)
    for b in range(batches):
        await ledger.append_many([_entry(b * per_batch + i) for i in range(per_batch)])
    key = ledger.verifier_key
    await ledger.close()
    return key


async def test_torn_tail_is_cut(tmp_path: Path) -> None:
    await _log(tmp_path, 3, 4)
    wal = tmp_path / "entries.wal"
    size = wal.stat().st_size
    with wal.open("ab") as handle:  # half a frame, as a crash mid-write leaves
        handle.write(b"LGF1\x00\x00\x01\x00" + b"\x00" * 11)
    ledger = await Ledger.open(tmp_path, FAST)
    try:
        assert ledger.size == 12
        assert wal.stat().st_size == size
        assert await ledger.append(_entry(99)) == 12
    finally:
        await ledger.close()


async def test_damage_in_the_middle_stops_the_start_and_names_the_place(tmp_path: Path) -> None:
    await _log(tmp_path, 3, 4)
    wal = tmp_path / "entries.wal"
    data = bytearray(wal.read_bytes())
    frame = HEADER_BYTES + 4 * ITEM_HEADER_BYTES + sum(len(_entry(i)) for i in range(4))
    position = frame + HEADER_BYTES + ITEM_HEADER_BYTES + 3  # inside entry 4
    data[position] ^= 0x20
    wal.write_bytes(bytes(data))
    with pytest.raises(
        LedgerCorruption,
        match=r"entries.wal: entry 4: checksum mismatch \(item at byte \d+, frame at byte \d+\)",
    ):
        await Ledger.open(tmp_path, FAST)


async def test_lost_entries_refuse_to_start(tmp_path: Path) -> None:
    await _log(tmp_path, 3, 4)
    wal = tmp_path / "entries.wal"
    frame = HEADER_BYTES + 4 * ITEM_HEADER_BYTES + sum(len(_entry(i)) for i in range(4))
    os.truncate(wal, 2 * frame)
    with pytest.raises(LedgerCorruption, match=r"holds 8 entries but block .* covers 12"):
        await Ledger.open(tmp_path, FAST)


async def test_rewritten_entry_with_fixed_checksum_refuses_to_start(tmp_path: Path) -> None:
    await _log(tmp_path, 2, 4)
    wal = tmp_path / "entries.wal"
    data = bytearray(wal.read_bytes())
    start = HEADER_BYTES + ITEM_HEADER_BYTES
    original = _entry(0)
    forged = original.replace(b"p-0", b"p-9")
    data[start : start + len(forged)] = forged
    struct.pack_into(">I", data, HEADER_BYTES + 2, zlib.crc32(forged))
    wal.write_bytes(bytes(data))
    with pytest.raises(LedgerCorruption, match="do not match the root signed in block"):
        await Ledger.open(tmp_path, FAST)


class FailingEntriesFsync(FileLayer):
    """Every fsync of entries.wal fails; every other call works."""

    def fsync(self, fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("entries.wal"):
            raise OSError(errno.EIO, "injected fsync failure")
        super().fsync(fd)


async def test_a_start_makes_the_entries_it_found_durable_before_vouching_for_them(
    tmp_path: Path,
) -> None:
    # A frame written but never fsync'd: its process died between the write and the
    # fsync, or its fsync failed. The next start reads it back from the page cache, but
    # it may not be on the disk: before a checkpoint covers it (or a repeated order is
    # answered "accepted" from it), the start must make it durable, or refuse to start.
    await _log(tmp_path, 2, 3)
    wal = tmp_path / "entries.wal"
    with wal.open("ab") as handle:
        handle.write(encode_frame(6, [_entry(6), _entry(7)]))  # no fsync
    blocks_before = (tmp_path / "blocks.wal").read_bytes()
    with pytest.raises(OSError, match="injected fsync failure"):
        await Ledger.open(tmp_path, FAST, file_layer=FailingEntriesFsync())
    assert (tmp_path / "blocks.wal").read_bytes() == blocks_before, "signed over unsynced"
    ledger = await Ledger.open(tmp_path, FAST)
    try:
        assert ledger.size == 8
        assert ledger.checkpoint.size == 8
    finally:
        await ledger.close()


class CrashingLayer(FileLayer):
    """Fails the n-th write or fsync; a failing write first writes half its bytes."""

    def __init__(self, fail_at: int) -> None:
        self.calls = 0
        self.fail_at = fail_at

    def _tick(self) -> bool:
        self.calls += 1
        return self.calls == self.fail_at

    def write(self, fd: int, data: bytes) -> int:
        if self._tick():
            os.write(fd, data[: len(data) // 2])
            raise OSError("injected crash during write")
        return super().write(fd, data)

    def fsync(self, fd: int) -> None:
        if self._tick():
            raise OSError("injected crash during fsync")
        super().fsync(fd)


async def _run_until_crash(path: Path, layer: CrashingLayer) -> dict[int, bytes]:
    acknowledged: dict[int, bytes] = {}
    ledger = await Ledger.open(path, FAST, file_layer=layer)
    try:
        for b in range(8):
            entries = [_entry(b * 3 + i) for i in range(3)]
            indexes = await ledger.append_many(entries)
            acknowledged.update(zip(indexes, entries, strict=True))
            if b % 3 == 0:
                await ledger.wait_covered(indexes[-1])
    except LedgerClosed:
        pass
    # The process "dies": no close, no final checkpoint; only the files remain.
    if ledger._committer is not None:
        ledger._committer.stop()
        await asyncio.to_thread(ledger._committer.join)
    if ledger._sequencer is not None:
        ledger._sequencer.cancel()
    await asyncio.sleep(0.01)
    ledger._entries.close()
    ledger._blocks.close()
    return acknowledged


async def test_crash_at_every_write_and_fsync_keeps_acknowledged_entries(tmp_path: Path) -> None:
    # Count the writes and fsyncs of a run that does not crash, then crash at each one.
    counting = CrashingLayer(fail_at=-1)
    await _run_until_crash(tmp_path / "count", counting)
    assert counting.calls > 10
    for fail_at in range(1, counting.calls + 1):
        directory = tmp_path / f"crash-{fail_at}"
        try:
            acknowledged = await _run_until_crash(directory, CrashingLayer(fail_at))
        except OSError:
            acknowledged = {}  # the crash hit the very first seal, inside open()
        ledger = await Ledger.open(directory, FAST)
        try:
            assert ledger.size >= len(acknowledged), fail_at
            for index, entry in acknowledged.items():
                assert ledger.entry(index) == entry, (fail_at, index)
            verifier = Verifier.parse(ledger.verifier_key)
        finally:
            await ledger.close()
        verify_directory(directory, verifier)


CHILD = """
import asyncio, sys
from pathlib import Path
from ledger import Ledger, LedgerSettings, encode_entry

async def main():
    ledger = await Ledger.open(Path(sys.argv[1]), LedgerSettings(origin="kill.example/log",
                               checkpoint_interval_ms=20))
    async def writer(w):
        i = 0
        while True:
            entry = encode_entry("order/v1", {"writer": w, "i": i})
            index = await ledger.append(entry)
            sys.stdout.write(f"{index} {w} {i}\\n")
            sys.stdout.flush()
            i += 1
    await asyncio.gather(*(writer(w) for w in range(8)))

asyncio.run(main())
"""


@pytest.mark.parametrize("acknowledged_before_kill", [1, 150, 1500])
def test_sigkill_keeps_every_acknowledged_entry(
    tmp_path: Path, acknowledged_before_kill: int
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert process.stdout is not None
    acknowledged: dict[int, bytes] = {}
    for _ in range(acknowledged_before_kill):
        line = process.stdout.readline()
        assert line, "child exited early"
        index, writer, i = (int(x) for x in line.split())
        acknowledged[index] = encode_entry("order/v1", {"writer": writer, "i": i})
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    process.stdout.close()

    async def check() -> str:
        ledger = await Ledger.open(tmp_path, LedgerSettings(origin="kill.example/log"))
        try:
            for index, entry in acknowledged.items():
                assert ledger.entry(index) == entry
            return ledger.verifier_key
        finally:
            await ledger.close()

    key = asyncio.run(check())
    report = verify_directory(tmp_path, Verifier.parse(key))
    assert report.entries >= len(acknowledged)
