"""The asyncio adapter: group commit, the checkpoint sequencer, and reads.

Parts, as in Tessera and Sunlight: appenders put entries on a bounded queue; one
committer thread (`ledger/committer.py`) writes what is queued as one frame with one
fsync and only then posts it back to the event loop, which adds the entries to the tree
and resolves their indexes; a sequencer task on a ticker signs a checkpoint and seals a
block each interval while the tree has grown. Crash ordering: entry frame fsync'd ->
index acknowledged -> (later) block frame fsync'd -> checkpoint published. A published
checkpoint therefore never covers an entry that is not on disk, and recovery can hold the
entries to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ledger.block import GENESIS_PREVIOUS, Block, BlockError, note_hash
from ledger.checkpoint import Checkpoint, CheckpointError
from ledger.committer import Append, Committer, LedgerBusy, LedgerClosed, Waiter
from ledger.entry import ENTRY_BYTES_MAX
from ledger.merkle import MerkleTree, leaf_hash
from ledger.note import NoteError, Signer, open_note, sign
from ledger.receipt import Receipt, format_receipts
from ledger.settings import LedgerSettings
from ledger.storage import (
    BLOCKS_FILE,
    ENTRIES_FILE,
    AppendFile,
    FileLayer,
    LedgerCorruption,
    load_or_create_key,
)
from ledger.tiles import TILE_WIDTH, Tile, encode_bundle

__all__ = ["Ledger", "LedgerBusy", "LedgerClosed", "wall_clock_ms"]

log = logging.getLogger("ledger")


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def describe_failure(error: BaseException) -> str:
    """A failed write's reason as the system gives it ("No space left on device"),
    without the file's path."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return type(error).__name__


class Then:
    """A `Waiter` that calls a function with the result (or the failure) at once, inside
    the ledger's own callback; what the function raises is logged, so that the appenders
    after it in the frame still hear."""

    __slots__ = ("_function",)

    def __init__(self, function: Callable[[Any], None]) -> None:
        self._function: Callable[[Any], None] | None = function

    def done(self) -> bool:
        return self._function is None

    def set_result(self, result: Any, /) -> None:
        self._call(result)

    def set_exception(self, exception: BaseException, /) -> None:
        self._call(exception)

    def _call(self, outcome: Any) -> None:
        # Let go of the function (and what it holds: a caller's whole batch) at once: the
        # committer thread keeps its last frame until it takes the next.
        function, self._function = self._function, None
        if function is None:
            return
        try:
            function(outcome)
        except Exception:
            log.exception("an append's callback failed")


class Ledger:
    def __init__(
        self,
        data_dir: Path,
        settings: LedgerSettings,
        signer: Signer,
        entries: AppendFile,
        blocks: AppendFile,
        tree: MerkleTree,
        clock_ms: Callable[[], int],
    ) -> None:
        self.data_dir = data_dir
        self.settings = settings
        self._signer = signer
        self._verifier = signer.verifier
        self._entries = entries
        self._blocks = blocks
        self._tree = tree
        self._clock_ms = clock_ms
        self._covered = asyncio.Event()
        self._failure: BaseException | None = None
        self._closing = False
        self._checkpoint_note = b""
        self._checkpoint = Checkpoint(settings.origin, 0, tree.root(0))
        self._block_note = b""
        self._block: Block | None = None
        self._seal_lock = asyncio.Lock()
        self._committer: Committer | None = None
        self._sequencer: asyncio.Task[None] | None = None

    # ---- opening and recovery -------------------------------------------------------

    @classmethod
    async def open(
        cls,
        data_dir: Path,
        settings: LedgerSettings,
        *,
        clock_ms: Callable[[], int] = wall_clock_ms,
        file_layer: FileLayer | None = None,
    ) -> Ledger:
        """Recover the data directory (or create it) and start committing and sealing."""
        ledger = await asyncio.to_thread(
            cls._recover, Path(data_dir), settings, clock_ms, file_layer or FileLayer()
        )
        if ledger._block is None or ledger._checkpoint.size != ledger._tree.size:
            # First start, or acknowledged entries that no checkpoint covers yet.
            try:
                await ledger._seal()
            except BaseException:
                ledger._entries.close()
                ledger._blocks.close()
                raise
        ledger._committer = Committer(
            ledger._entries,
            asyncio.get_running_loop(),
            entries_max=settings.batch_entries_max,
            bytes_max=settings.batch_bytes_max,
            age_ms_max=settings.batch_age_ms_max,
            queue_entries_max=settings.queue_entries_max,
            on_durable=ledger._durable,
            on_failed=ledger._write_failed,
        )
        ledger._committer.start()
        ledger._sequencer = asyncio.create_task(ledger._sequence_loop(), name="ledger-seal")
        return ledger

    @classmethod
    def _recover(
        cls,
        data_dir: Path,
        settings: LedgerSettings,
        clock_ms: Callable[[], int],
        layer: FileLayer,
    ) -> Ledger:
        data_dir.mkdir(parents=True, exist_ok=True)
        signer = load_or_create_key(data_dir, settings.origin)
        tree = MerkleTree(settings.range_cache_entries_max)
        entries = AppendFile(data_dir / ENTRIES_FILE, layer)
        blocks = AppendFile(data_dir / BLOCKS_FILE, layer)
        try:
            append_leaf = tree.append_leaf_hash
            entries.recover(lambda _index, data: append_leaf(leaf_hash(data)))
            block_notes: list[bytes] = []
            blocks.recover(lambda _index, data: block_notes.append(data))
            ledger = cls(data_dir, settings, signer, entries, blocks, tree, clock_ms)
            ledger._restore_blocks(block_notes)
        except BaseException:
            entries.close()
            blocks.close()
            raise
        return ledger

    def _restore_blocks(self, items: list[bytes]) -> None:
        """Check the block chain's links and hold the entries to the last checkpoint."""
        path = self._blocks.path
        if len(items) % 2:
            raise LedgerCorruption(f"{path}: block {len(items) // 2} has no checkpoint")
        previous = GENESIS_PREVIOUS
        for height in range(len(items) // 2):
            block_note, checkpoint_note = items[2 * height], items[2 * height + 1]
            text = block_note[: block_note.rfind(b"\n\n") + 1]
            try:
                block = Block.parse(text)
            except BlockError as error:
                raise LedgerCorruption(f"{path}: block {height}: {error}") from None
            if block.height != height or block.previous != previous:
                raise LedgerCorruption(f"{path}: block {height} does not link to block before")
            if block.checkpoint_hash != note_hash(checkpoint_note):
                raise LedgerCorruption(f"{path}: block {height} names another checkpoint")
            previous = note_hash(block_note)
        if not items:
            return
        height = len(items) // 2 - 1
        block_note, checkpoint_note = items[-2], items[-1]
        try:
            self._block = Block.parse(open_note(block_note, (self._verifier,)).text)
            checkpoint = Checkpoint.parse(open_note(checkpoint_note, (self._verifier,)).text)
        except (NoteError, BlockError, CheckpointError) as error:
            raise LedgerCorruption(f"{path}: block {height}: {error}") from None
        if checkpoint.origin != self.settings.origin:
            raise LedgerCorruption(f"{path}: checkpoint origin {checkpoint.origin!r}")
        size = self._tree.size
        if checkpoint.size > size:
            raise LedgerCorruption(
                f"{self._entries.path}: holds {size} entries but block {height}'s signed "
                f"checkpoint covers {checkpoint.size}: entries were lost"
            )
        if self._tree.root(checkpoint.size) != checkpoint.root:
            raise LedgerCorruption(
                f"{self._entries.path}: the first {checkpoint.size} entries do not match "
                f"the root signed in block {height}"
            )
        self._block_note = block_note
        self._checkpoint = checkpoint
        self._checkpoint_note = checkpoint_note

    # ---- appending (group commit) ---------------------------------------------------

    def _check_open(self) -> None:
        if self._failure is not None:
            raise LedgerClosed(self.failure or "")
        if self._closing:
            raise LedgerClosed("ledger is closed")

    @property
    def failure(self) -> str | None:
        """Why the ledger stopped taking entries, if a write or fsync failed: the system's
        reason (no path: clients and health checks read it), or None while it works."""
        if self._failure is None:
            return None
        return f"the ledger cannot write to its disk ({describe_failure(self._failure)})"

    @staticmethod
    def _check_entry(entry: bytes) -> None:
        if not isinstance(entry, bytes):
            raise TypeError("an entry is bytes (see encode_entry)")
        if len(entry) > ENTRY_BYTES_MAX:
            raise ValueError(f"entry is {len(entry)} bytes, more than {ENTRY_BYTES_MAX}")

    async def append(self, entry: bytes) -> int:
        """Append one entry; resolves to its index once it is durable on disk."""
        self._check_open()
        self._check_entry(entry)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        assert self._committer is not None
        self._committer.put([entry], future, single=True)
        return await future

    async def append_many(self, entries: Iterable[bytes]) -> list[int]:
        """Append entries as one durable batch (they get consecutive indexes)."""
        batch = self._checked_batch(entries)
        if not batch:
            return []
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        assert self._committer is not None
        self._committer.put(batch, future, single=False)
        return await future

    def append_many_then(
        self, entries: Iterable[bytes], then: Callable[[list[int] | BaseException], None]
    ) -> None:
        """`append_many` without a task: `then` gets the indexes once the batch is durable,
        or the failure (`LedgerClosed`), called in the turn of the event loop that learns
        of it, not a turn later. A bad batch, a full queue or a closed ledger raise here,
        as `append_many` does, and `then` is never called. `then` must not raise."""
        batch = self._checked_batch(entries)
        if not batch:
            then([])
            return
        assert self._committer is not None
        self._committer.put(batch, Then(then), single=False)

    def _checked_batch(self, entries: Iterable[bytes]) -> list[bytes]:
        self._check_open()
        batch = list(entries)
        for entry in batch:
            self._check_entry(entry)
        if len(batch) > self.settings.batch_entries_max:
            raise ValueError(f"append_many takes at most {self.settings.batch_entries_max}")
        if sum(len(e) + 6 for e in batch) > self.settings.batch_bytes_max:
            raise ValueError(f"append_many takes at most {self.settings.batch_bytes_max} bytes")
        return batch

    def _durable(self, frame: list[Append], hashes: list[bytes]) -> None:
        """The committer's frame is on disk: into the tree, then tell the appenders."""
        append_leaf = self._tree.append_leaf_hash
        for leaf in hashes:
            append_leaf(leaf)
        for waiting in frame:
            if not waiting.future.done():
                waiting.future.set_result(waiting.result())  # a `Then` runs its function now

    def _write_failed(self, error: BaseException, never_durable: list[Append]) -> None:
        self._fail(error, [waiting.future for waiting in never_durable], self._entries.path)

    def _fail(self, error: BaseException, waiting: list[Waiter], path: Path) -> None:
        """A failed write or fsync leaves the file's state unknown: stop, fail everyone.
        Never retried: after a failed fsync Linux may have dropped the dirty pages and a
        second fsync would succeed with the bytes lost; a restart recovers from what is
        on disk instead."""
        if self._failure is None:
            log.error("ledger stopped: writing %s failed: %r", path, error)
        self._failure = error
        failure = LedgerClosed(self.failure or "")
        if self._committer is not None:
            waiting = waiting + [queued.future for queued in self._committer.stop()]
        for future in waiting:
            if not future.done():
                future.set_exception(failure)
        self._covered.set()  # wake wait_covered callers so they see the failure

    # ---- checkpoints and blocks ---------------------------------------------------

    async def _sequence_loop(self) -> None:
        interval_s = self.settings.checkpoint_interval_ms / 1000
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + interval_s
        while True:
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
            # Ticks are on a fixed grid, so a slow seal does not push later ones back.
            next_tick += interval_s
            if next_tick < loop.time():
                next_tick = loop.time() + interval_s
            if self._tree.size != self._checkpoint.size and self._failure is None:
                try:
                    await self._seal()
                except Exception as error:
                    self._fail(error, [], self._blocks.path)
                    return

    async def _seal(self) -> None:
        """Sign a checkpoint of the durable tree and append its block, durably."""
        async with self._seal_lock:
            size = self._tree.size
            checkpoint = Checkpoint(self.settings.origin, size, self._tree.root(size))
            checkpoint_note = sign(checkpoint.body(), self._signer)
            previous_block = self._block
            block = Block(
                height=0 if previous_block is None else previous_block.height + 1,
                time_ms=max(
                    self._clock_ms(), 0 if previous_block is None else previous_block.time_ms
                ),
                previous=GENESIS_PREVIOUS
                if previous_block is None
                else note_hash(self._block_note),
                checkpoint_hash=note_hash(checkpoint_note),
            )
            block_note = sign(block.body(), self._signer)
            await asyncio.to_thread(
                self._blocks.append, 2 * block.height, [block_note, checkpoint_note]
            )
            self._block, self._block_note = block, block_note
            self._checkpoint, self._checkpoint_note = checkpoint, checkpoint_note
            covered, self._covered = self._covered, asyncio.Event()
            covered.set()

    # ---- reads ----------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Entries that are durable (acknowledged or about to be)."""
        return self._tree.size

    @property
    def latest_checkpoint(self) -> bytes:
        return self._checkpoint_note

    @property
    def checkpoint(self) -> Checkpoint:
        return self._checkpoint

    @property
    def block_height(self) -> int:
        assert self._block is not None
        return self._block.height

    @property
    def verifier_key(self) -> str:
        return self._verifier.format()

    async def wait_covered(self, index: int) -> bytes:
        """Wait until a signed checkpoint covers `index`; return that checkpoint note."""
        if not 0 <= index < self.size:
            raise ValueError(f"index {index} is not a durable entry (size {self.size})")
        while self._checkpoint.size <= index:
            self._check_open()
            await self._covered.wait()
        return self._checkpoint_note

    def entry(self, index: int) -> bytes:
        if not 0 <= index < self.size:
            raise IndexError(f"no entry {index} (size {self.size})")
        return self._entries.read(index)

    def proof(self, index: int) -> bytes:
        """A c2sp.org/tlog-proof receipt for `index` against the latest checkpoint."""
        checkpoint = self._checkpoint
        if not 0 <= index < checkpoint.size:
            raise IndexError(f"entry {index} is not covered by the latest checkpoint")
        path = self._tree.inclusion_proof(index, checkpoint.size)
        return Receipt(index, tuple(path), self._checkpoint_note, self.entry(index)).format()

    def proofs(self, indexes: Sequence[int]) -> list[bytes]:
        """`proof(index)` for each index, against the same (latest) checkpoint, in one
        pass: the entries of a checkpoint's receipts are read together and their paths,
        which share most hashes, are computed and encoded once (docs/ledger.md)."""
        checkpoint = self._checkpoint
        for index in indexes:
            if not 0 <= index < checkpoint.size:
                raise IndexError(f"entry {index} is not covered by the latest checkpoint")
        paths = self._tree.inclusion_proofs(indexes, checkpoint.size)
        entries = self._entries.read_many(indexes)
        return format_receipts(zip(indexes, paths, entries, strict=True), self._checkpoint_note)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        return self._tree.consistency_proof(old_size, new_size)

    def tile(self, tile: Tile) -> bytes | None:
        """A tlog-tiles tile of the latest checkpoint's tree, or None if it lies beyond."""
        size = self._checkpoint.size
        start = tile.index * TILE_WIDTH
        if tile.is_entries:
            if start + tile.width > size:
                return None
            return encode_bundle(self._entries.read_range(start, tile.width))
        # Level L hashes are the subtrees of height 8L; those complete at `size`.
        available = size >> (8 * tile.level)
        if start + tile.width > available:
            return None
        return self._tree.level_bytes(8 * tile.level, start, tile.width)

    def block_record(self, height: int) -> tuple[bytes, bytes]:
        """(block note, checkpoint note) of block `height`."""
        assert self._block is not None
        if not 0 <= height <= self._block.height:
            raise IndexError(f"no block {height}")
        block_note, checkpoint_note = self._blocks.read_range(2 * height, 2)
        return block_note, checkpoint_note

    async def close(self) -> None:
        """Commit what is queued, sign a last checkpoint, stop, and close the files."""
        if self._closing:
            return
        self._closing = True
        if self._committer is not None:
            # The committer writes what is queued, then ends; its last frames reach the
            # loop (`_durable`) before this task resumes (both come by call_soon_threadsafe).
            self._committer.finish()
            await asyncio.to_thread(self._committer.join)
        async with self._seal_lock:
            # Holding the lock, the sequencer is not mid-write: cancelling it is safe.
            if self._sequencer is not None:
                self._sequencer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._sequencer
        if self._failure is None and self._tree.size != self._checkpoint.size:
            await self._seal()
        self._covered.set()
        self._entries.close()
        self._blocks.close()
