"""The group committer: one thread that makes queued appends durable, frame after frame.

Appenders on the event loop `put` entries on a bounded queue, their indexes assigned in
queue order. The committer thread takes everything queued (up to a frame's limits),
writes it as one frame with one fsync (`AppendFile.append`), hashes the leaves, and only
then posts the frame back to the loop (`on_durable`), which adds the leaves to the tree
and resolves the appenders' futures. The thread goes straight on to the next frame: the
disk does not wait for a busy event loop to take the last result back. (A committer task
that awaited each write in a worker thread left the disk idle until the loop resumed it:
at 5,000 orders a second that hand-back was 7.8 ms of an average 9 ms commit;
docs/benchmarks.md, "Flash sales".)

Crash ordering: frame written and fsync'd -> posted to the loop -> leaves in the tree ->
indexes acknowledged. A failed write or fsync ends the thread before it writes anything
more (`on_failed` gets the error and the appends of that frame), so a torn frame can only
be the file's last, as recovery expects.

Limits: at most `queue_entries_max` entries wait in the queue (then `LedgerBusy`); a frame
holds at most `entries_max` entries and `bytes_max` bytes (an `append_many` batch is never
split; the ledger checks each fits a frame by itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from ledger.merkle import leaf_hash
from ledger.storage import AppendFile
from ledger.wal import ITEM_HEADER_BYTES


class LedgerBusy(RuntimeError):
    """The pending queue is full: retry later (the typed push-back of the style guide)."""


class LedgerClosed(RuntimeError):
    """The ledger is closed, or stopped after a write failed (its state on disk is unknown)."""


class Waiter(Protocol):
    """Who waits for an append: an `asyncio.Future`, or anything with its three methods
    (`log.Then` calls a function at once instead of a turn of the loop later)."""

    def done(self) -> bool: ...
    def set_result(self, result: Any, /) -> None: ...
    def set_exception(self, exception: BaseException, /) -> None: ...


class Append:
    """Entries waiting to be durable, with their first index and who waits for them."""

    __slots__ = ("entries", "first", "frame_bytes", "future", "single")

    def __init__(self, first: int, entries: list[bytes], future: Waiter, single: bool) -> None:
        self.first = first
        self.entries = entries
        self.future = future
        self.single = single  # `append` (resolves to an index), not `append_many` (a list)
        self.frame_bytes = sum(len(entry) + ITEM_HEADER_BYTES for entry in entries)

    def result(self) -> int | list[int]:
        if self.single:
            return self.first
        return list(range(self.first, self.first + len(self.entries)))


Durable = Callable[[list[Append], list[bytes]], None]
Failed = Callable[[BaseException, list[Append]], None]


class Committer:
    def __init__(
        self,
        file: AppendFile,
        loop: asyncio.AbstractEventLoop,
        *,
        entries_max: int,
        bytes_max: int,
        age_ms_max: int,
        queue_entries_max: int,
        on_durable: Durable,
        on_failed: Failed,
    ) -> None:
        assert entries_max > 0
        assert bytes_max > 0
        assert age_ms_max >= 0
        assert queue_entries_max > 0
        self._file = file
        self._loop = loop
        self.entries_max = entries_max
        self.bytes_max = bytes_max
        self.age_s = age_ms_max / 1000
        self.queue_entries_max = queue_entries_max
        self._on_durable = on_durable
        self._on_failed = on_failed
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._queue: deque[Append] = deque()
        self.queued_entries = 0
        self._next_index = file.count
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="ledger-committer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # ---- the loop's side ------------------------------------------------------------

    def put(self, entries: list[bytes], future: Waiter, single: bool) -> None:
        """Queue entries (already checked); raises LedgerBusy when the queue is full, and
        LedgerClosed once the committer has stopped (a failed write stops it before the
        loop hears of the failure)."""
        with self._lock:
            if self._stopping:
                raise LedgerClosed("ledger is closed, or stopped after a write failed")
            if self.queued_entries + len(entries) > self.queue_entries_max:
                raise LedgerBusy("ledger append queue is full; retry")
            self._queue.append(Append(self._next_index, entries, future, single))
            self._next_index += len(entries)
            self.queued_entries += len(entries)
            self._ready.notify()

    def stop(self) -> list[Append]:
        """Take nothing more: return what is still queued (never written). A frame being
        written is finished and posted as usual."""
        with self._lock:
            self._stopping = True
            left = list(self._queue)
            self._queue.clear()
            self.queued_entries = 0
            self._ready.notify()
        return left

    def finish(self) -> None:
        """Write what is queued, then end the thread."""
        with self._lock:
            self._stopping = True
            self._ready.notify()

    def join(self) -> None:
        """Wait for the thread to end (blocks: call it in a thread from the loop)."""
        if self._thread.is_alive():
            self._thread.join()

    # ---- the thread -----------------------------------------------------------------

    def _take(self) -> list[Append] | None:
        """The next frame's appends, or None once stopped with nothing queued."""
        with self._lock:
            while not self._queue:
                if self._stopping:
                    return None
                self._ready.wait()
            if self.age_s and not self._stopping:
                # An open frame may wait this long for more appends (batch_age_ms_max).
                self._ready.wait_for(
                    lambda: self._stopping or self.queued_entries >= self.entries_max,
                    timeout=self.age_s,
                )
                if not self._queue:  # `stop` took them meanwhile
                    return None
            taken: list[Append] = []
            entries = frame_bytes = 0
            while self._queue:
                waiting = self._queue[0]
                if taken and (
                    entries + len(waiting.entries) > self.entries_max
                    or frame_bytes + waiting.frame_bytes > self.bytes_max
                ):
                    break
                self._queue.popleft()
                taken.append(waiting)
                entries += len(waiting.entries)
                frame_bytes += waiting.frame_bytes
            self.queued_entries -= entries
            return taken

    def _run(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            items = [entry for waiting in taken for entry in waiting.entries]
            try:
                self._file.append(taken[0].first, items)
                hashes = [leaf_hash(entry) for entry in items]
            except BaseException as error:
                self._post(self._on_failed, error, taken + self.stop())
                return
            self._post(self._on_durable, taken, hashes)

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is left to tell
            self._loop.call_soon_threadsafe(callback, *args)
