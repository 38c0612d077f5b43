"""The asyncio ledger: group commit, checkpoints, receipts, push-back and reopening."""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
import stat
import time
from pathlib import Path

import pytest

from ledger import (
    Ledger,
    LedgerBusy,
    LedgerClosed,
    LedgerCorruption,
    LedgerSettings,
    encode_entry,
)
from ledger.checkpoint import Checkpoint
from ledger.merkle import leaf_hash, verify_consistency, verify_inclusion
from ledger.note import Verifier, open_note
from ledger.receipt import Receipt, verify_receipt
from ledger.storage import FileLayer
from ledger.verify import verify_directory
from tests.ledger.conftest import FAST


def _entry(i: int) -> bytes:
    return encode_entry("order/v1", {"order": f"o-{i}", "quantity": i % 5 + 1})


async def test_append_resolves_indexes_in_order_and_reads_back(tmp_path: Path) -> None:
    ledger = await Ledger.open(tmp_path, FAST)
    try:
        indexes = await asyncio.gather(*(ledger.append(_entry(i)) for i in range(500)))
        assert sorted(indexes) == list(range(500))
        assert ledger.size == 500
        many = await ledger.append_many([_entry(i) for i in range(500, 510)])
        assert many == list(range(500, 510))
        for index, i in zip(indexes, range(500), strict=True):
            assert ledger.entry(index) == _entry(i)
        note = await ledger.wait_covered(509)
        verifier = Verifier.parse(ledger.verifier_key)
        checkpoint = Checkpoint.parse(open_note(note, (verifier,)).text)
        assert checkpoint.size >= 510
        assert checkpoint.origin == "test.example/log"
        receipt = ledger.proof(many[3])
        assert verify_receipt(receipt, verifier, ledger.entry(many[3])).index == many[3]
        with pytest.raises(IndexError):
            ledger.proof(10_000)
        parsed = Receipt.parse(receipt)
        changed = Receipt(parsed.index, parsed.path, parsed.checkpoint_note, b"{}").format()
        with pytest.raises(ValueError, match="inclusion proof"):
            verify_receipt(changed, verifier)
    finally:
        await ledger.close()


async def test_receipts_for_a_checkpoint_at_once_equal_one_by_one(tmp_path: Path) -> None:
    ledger = await Ledger.open(tmp_path, FAST)
    try:
        await ledger.append_many([_entry(i) for i in range(300)])
        await ledger.wait_covered(299)
        verifier = Verifier.parse(ledger.verifier_key)
        # In order with gaps (a checkpoint's orders among other entries), then any order.
        for indexes in ([*range(0, 150, 3), *range(200, 300)], [299, 5, 5, 170, 0, 64]):
            receipts = ledger.proofs(indexes)
            assert receipts == [ledger.proof(index) for index in indexes]
            for index, receipt in zip(indexes, receipts, strict=True):
                assert verify_receipt(receipt, verifier, ledger.entry(index)).index == index
        assert ledger.proofs([]) == []
        with pytest.raises(IndexError):
            ledger.proofs([1, 300])
    finally:
        await ledger.close()


async def test_checkpoints_chain_into_blocks_and_stay_consistent(tmp_path: Path) -> None:
    ledger = await Ledger.open(tmp_path, FAST)
    try:
        sizes: list[tuple[int, bytes]] = []
        for round_number in range(4):
            await ledger.append_many([_entry(round_number * 10 + i) for i in range(10)])
            await ledger.wait_covered(ledger.size - 1)
            sizes.append((ledger.checkpoint.size, ledger.checkpoint.root))
        assert ledger.block_height >= 4
        for (old_size, old_root), (new_size, new_root) in itertools.pairwise(sizes):
            proof = ledger.consistency_proof(old_size, new_size)
            verify_consistency(old_size, new_size, proof, old_root, new_root)
        block_note, checkpoint_note = ledger.block_record(ledger.block_height)
        assert checkpoint_note == ledger.latest_checkpoint
        assert block_note.startswith(b"ledger-block/v1\n")
    finally:
        await ledger.close()
    report = verify_directory(tmp_path, Verifier.parse(ledger.verifier_key))
    assert report.entries == 40


async def test_checkpoint_interval_under_light_load(tmp_path: Path) -> None:
    ledger = await Ledger.open(tmp_path, FAST)
    try:
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            await ledger.append(_entry(1))
            await asyncio.sleep(0.005)
        start = ledger.block_height
        index = await ledger.append(_entry(2))
        await asyncio.wait_for(ledger.wait_covered(index), timeout=2)
        assert ledger.block_height > start
    finally:
        await ledger.close()


class SlowLayer(FileLayer):
    def fsync(self, fd: int) -> None:
        time.sleep(0.2)
        super().fsync(fd)


async def test_full_queue_answers_busy(tmp_path: Path) -> None:
    settings = LedgerSettings(origin="busy", queue_entries_max=3, checkpoint_interval_ms=1000)
    ledger = await Ledger.open(tmp_path, settings, file_layer=SlowLayer())
    try:
        first = asyncio.create_task(ledger.append(_entry(0)))
        await asyncio.sleep(0.05)  # the writer is now inside its slow fsync
        queued = [asyncio.create_task(ledger.append(_entry(i))) for i in range(1, 4)]
        await asyncio.sleep(0)
        with pytest.raises(LedgerBusy):
            await ledger.append(_entry(9))
        with pytest.raises(LedgerBusy):
            await ledger.append_many([_entry(9)])
        assert await first == 0
        assert sorted(await asyncio.gather(*queued)) == [1, 2, 3]
    finally:
        await ledger.close()


async def test_append_many_then_calls_back_in_the_turn_the_batch_is_durable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = await Ledger.open(tmp_path, FAST, file_layer=SlowLayer())
    try:
        first = asyncio.create_task(ledger.append(_entry(0)))
        await asyncio.sleep(0.05)  # the committer is inside its slow fsync: the rest queue
        heard: list[object] = []

        async def awaited() -> None:
            heard.append(("future", await ledger.append_many([_entry(1), _entry(2)])))

        waiting = asyncio.create_task(awaited())
        await asyncio.sleep(0)  # its append is queued first

        def broken(outcome: list[int] | BaseException) -> None:
            raise RuntimeError("a caller's bug")

        ledger.append_many_then([_entry(3)], broken)
        ledger.append_many_then([_entry(4), _entry(5)], lambda outcome: heard.append(outcome))
        ledger.append_many_then([], lambda outcome: heard.append(("empty", outcome)))
        assert heard == [("empty", [])]
        assert await first == 0
        await waiting
        # One frame: the callback ran inside the ledger's own turn, before the task that
        # awaited an earlier append of that frame resumed; the broken one did not stop it.
        assert heard == [("empty", []), [4, 5], ("future", [1, 2])]
        assert "an append's callback failed" in caplog.text
        assert [ledger.entry(i) for i in range(6)] == [_entry(i) for i in range(6)]
    finally:
        await ledger.close()
    with pytest.raises(LedgerClosed):
        ledger.append_many_then([_entry(6)], lambda outcome: heard.append(outcome))
    assert len(heard) == 3


class TimedLayer(FileLayer):
    """Slow fsyncs, each one's start time recorded."""

    def __init__(self) -> None:
        self.fsync_started: list[float] = []

    def fsync(self, fd: int) -> None:
        self.fsync_started.append(time.monotonic())
        time.sleep(0.05)
        super().fsync(fd)


async def test_the_next_frame_is_written_while_the_event_loop_is_busy(tmp_path: Path) -> None:
    layer = TimedLayer()
    settings = LedgerSettings(origin="busy-loop", checkpoint_interval_ms=60_000)
    ledger = await Ledger.open(tmp_path, settings, file_layer=layer)
    try:
        layer.fsync_started.clear()
        first = asyncio.create_task(ledger.append(_entry(0)))
        await asyncio.sleep(0.01)  # the committer is now inside the first frame's fsync
        second = asyncio.create_task(ledger.append(_entry(1)))
        await asyncio.sleep(0)  # queued: it will be the second frame
        blocked_until = time.monotonic() + 0.3
        # The event loop is busy (blocked on purpose) and takes nothing back meanwhile.
        time.sleep(0.3)  # noqa: ASYNC251
        assert await first == 0
        assert await second == 1
        # The second frame's fsync began while the loop was still blocked, right after the
        # first: the disk did not wait for the loop to take the first result back.
        assert len(layer.fsync_started) == 2
        assert layer.fsync_started[1] < blocked_until - 0.1
    finally:
        await ledger.close()


async def test_bad_entries_are_refused(tmp_path: Path) -> None:
    ledger = await Ledger.open(tmp_path, FAST)
    try:
        with pytest.raises(ValueError, match="65535"):
            await ledger.append(b"x" * 65_536)
        with pytest.raises(TypeError):
            await ledger.append("text")  # type: ignore[arg-type]
        assert ledger.size == 0
    finally:
        await ledger.close()


async def test_signing_key_is_private_and_kept(tmp_path: Path) -> None:
    ledger = await Ledger.open(tmp_path, FAST)
    key = ledger.verifier_key
    await ledger.close()
    assert stat.S_IMODE((tmp_path / "signing.key").stat().st_mode) == 0o600
    reopened = await Ledger.open(tmp_path, FAST)
    assert reopened.verifier_key == key
    await reopened.close()
    os.chmod(tmp_path / "signing.key", 0o644)
    with pytest.raises(LedgerCorruption, match="mode 644"):
        await Ledger.open(tmp_path, FAST)
    os.chmod(tmp_path / "signing.key", 0o600)
    with pytest.raises(LedgerCorruption, match="key is for"):
        await Ledger.open(tmp_path, LedgerSettings(origin="another.example/log"))


async def test_reopen_keeps_everything(tmp_path: Path) -> None:
    ledger = await Ledger.open(tmp_path, FAST)
    await ledger.append_many([_entry(i) for i in range(300)])
    root = ledger.checkpoint.root
    await ledger.close()
    reopened = await Ledger.open(tmp_path, FAST)
    try:
        assert reopened.size == 300
        assert reopened.checkpoint.root != root or reopened.checkpoint.size == 300
        assert reopened.entry(299) == _entry(299)
        index = await reopened.append(_entry(300))
        assert index == 300
        proof = Receipt.parse(reopened.proof(0)) if reopened.checkpoint.size > 0 else None
        assert proof is not None
        checkpoint = reopened.checkpoint
        verify_inclusion(0, checkpoint.size, leaf_hash(_entry(0)), proof.path, checkpoint.root)
    finally:
        await reopened.close()


async def test_batch_age_groups_appends(tmp_path: Path) -> None:
    settings = LedgerSettings(origin="age.example", batch_age_ms_max=20)
    ledger = await Ledger.open(tmp_path, settings)
    try:
        indexes = await asyncio.gather(*(ledger.append(_entry(i)) for i in range(50)))
        assert sorted(indexes) == list(range(50))
    finally:
        await ledger.close()
    frames = (tmp_path / "entries.wal").read_bytes().count(b"LGF1")
    assert frames <= 2  # the 50 appends waited for each other: one or two frames


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("origin", "has space"),
        ("origin", ""),
        ("origin", "a+b"),
        ("batch_entries_max", 0),
        ("batch_bytes_max", 100),
        ("batch_age_ms_max", -1),
        ("queue_entries_max", 0),
        ("checkpoint_interval_ms", 1),
    ],
)
def test_settings_are_validated(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field.split("_")[0]):
        LedgerSettings(**{field: value})  # type: ignore[arg-type]


class FullDisk(FileLayer):
    """Writes fail with ENOSPC once `full` is set, as a filesystem that filled up."""

    def __init__(self) -> None:
        self.full = False

    def write(self, fd: int, data: bytes) -> int:
        if self.full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(fd, data)


async def test_a_failed_write_says_why_without_a_path_and_the_log_names_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    layer = FullDisk()
    ledger = await Ledger.open(tmp_path, FAST, file_layer=layer)
    try:
        assert await ledger.append(_entry(0)) == 0
        assert ledger.failure is None
        layer.full = True
        with pytest.raises(LedgerClosed) as failed:
            await ledger.append(_entry(1))
        reason = "the ledger cannot write to its disk (No space left on device)"
        assert str(failed.value) == reason
        assert ledger.failure == reason
        with pytest.raises(LedgerClosed, match="No space left on device"):
            await ledger.append(_entry(2))  # stopped for good: never a retry
        assert str(tmp_path) not in reason
        assert f"writing {tmp_path / 'entries.wal'} failed" in caplog.text
        assert caplog.text.count("ledger stopped") == 1
    finally:
        await ledger.close()
    reopened = await Ledger.open(tmp_path, FAST)
    try:
        assert reopened.size == 1
    finally:
        await reopened.close()
