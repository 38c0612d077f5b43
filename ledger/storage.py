"""Files on disk: the two write-ahead files and the signing key (blocking I/O).

Durability contract: `AppendFile.append` returns only after the frame is written and
fsync'd; the caller acknowledges nothing before. `AppendFile.recover` fsyncs what it
found before the ledger serves it, since a frame found on start may never have been.
The signing key is written to a temporary file with mode 0600, fsync'd, renamed into
place and the directory fsync'd.
All system calls that change state go through a `FileLayer`, so tests can fail any one.
"""

from __future__ import annotations

import mmap
import os
import stat
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path

from ledger.note import NoteError, Signer
from ledger.wal import HEADER_BYTES, ITEM_HEADER_BYTES, ScanEnd, Scanner, encode_frame

ENTRIES_FILE = "entries.wal"
BLOCKS_FILE = "blocks.wal"
KEY_FILE = "signing.key"


class LedgerCorruption(RuntimeError):
    """The data directory is damaged in a way recovery must not paper over."""


class FileLayer:
    """The write-side system calls; tests subclass this to fail on purpose."""

    def write(self, fd: int, data: bytes) -> int:
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def truncate(self, fd: int, length: int) -> None:
        os.ftruncate(fd, length)


def fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_or_create_key(data_dir: Path, origin: str) -> Signer:
    path = data_dir / KEY_FILE
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise LedgerCorruption(f"{path}: mode {mode:o} lets others read the key; want 600")
        try:
            signer = Signer.parse(path.read_text())
        except NoteError as error:
            raise LedgerCorruption(f"{path}: {error}") from None
        if signer.name != origin:
            raise LedgerCorruption(f"{path}: key is for {signer.name!r}, settings say {origin!r}")
        return signer
    signer = Signer.generate(origin)
    temporary = data_dir / (KEY_FILE + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (signer.format() + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    fsync_directory(data_dir)
    return signer


class AppendFile:
    """One append-only framed file: recovered on open, then appended to frame by frame."""

    def __init__(self, path: Path, layer: FileLayer) -> None:
        self.path = path
        self._layer = layer
        created = not path.exists()
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        if created:
            fsync_directory(path.parent)
        self.size_bytes = os.fstat(self._fd).st_size
        # Start offset of every item's bytes and its length: where entry(index) reads.
        self.starts = array("Q")
        self.lengths = array("I")

    def recover(self, on_item: Callable[[int, bytes], object] | None = None) -> ScanEnd:
        """Scan the file, cut a torn tail, raise LedgerCorruption on damage in the middle."""
        if self.size_bytes == 0:
            return ScanEnd("clean", 0, 0)
        with mmap.mmap(self._fd, self.size_bytes, prot=mmap.PROT_READ) as buffer:
            scanner = Scanner(buffer)
            starts, lengths = self.starts, self.lengths
            for index, start, end in scanner.items():
                starts.append(start)
                lengths.append(end - start)
                if on_item is not None:
                    on_item(index, buffer[start:end])
            end_state = scanner.end
        assert end_state is not None
        if end_state.status == "corrupt":
            raise LedgerCorruption(f"{self.path}: {end_state.reason}")
        if end_state.status == "torn":
            # A crash tore the last, never acknowledged, frame: cut it off.
            self._layer.truncate(self._fd, end_state.offset)
            self.size_bytes = end_state.offset
        # What the scan read may be only in the page cache: the last frame of a process
        # that died between its write and its fsync, or whose fsync failed. Make it (and
        # the cut) durable before anything vouches for it: a checkpoint over it, or the
        # answer "accepted" to a repeated order. If this fsync fails, the start fails.
        self._layer.fsync(self._fd)
        return end_state

    @property
    def count(self) -> int:
        return len(self.starts)

    def append(self, first_index: int, items: Sequence[bytes]) -> None:
        """Write one frame and fsync it. Runs in a worker thread; blocks."""
        assert first_index == self.count, (first_index, self.count)
        frame = encode_frame(first_index, items)
        written = 0
        view = memoryview(frame)
        while written < len(frame):
            written += self._layer.write(self._fd, bytes(view[written:]))
        self._layer.fsync(self._fd)
        position = self.size_bytes + HEADER_BYTES
        starts, lengths = self.starts, self.lengths
        for item in items:
            position += ITEM_HEADER_BYTES
            starts.append(position)
            lengths.append(len(item))
            position += len(item)
        self.size_bytes += len(frame)
        assert position == self.size_bytes

    def read(self, index: int) -> bytes:
        assert 0 <= index < self.count, index
        return os.pread(self._fd, self.lengths[index], self.starts[index])

    def read_range(self, start: int, count: int) -> list[bytes]:
        """Items start..start+count-1 with one read of the bytes that span them."""
        assert count >= 0
        assert start >= 0
        assert start + count <= self.count
        if count == 0:
            return []
        first = self.starts[start]
        last = start + count - 1
        span = os.pread(self._fd, self.starts[last] + self.lengths[last] - first, first)
        return [
            span[self.starts[i] - first : self.starts[i] - first + self.lengths[i]]
            for i in range(start, start + count)
        ]

    def read_many(self, indexes: Sequence[int], gap_max: int = 64) -> list[bytes]:
        """Items at `indexes` (in that order); indexes at most `gap_max` apart, in
        increasing order, are read together with one read of the bytes that span them."""
        items: list[bytes] = []
        position = 0
        while position < len(indexes):
            first = last = indexes[position]
            run_end = position + 1
            while run_end < len(indexes) and 0 <= indexes[run_end] - last <= gap_max:
                last = indexes[run_end]
                run_end += 1
            span = self.read_range(first, last - first + 1)
            items.extend(span[index - first] for index in indexes[position:run_end])
            position = run_end
        return items

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
