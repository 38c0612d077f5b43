"""Write-ahead file framing: length- and checksum-framed batches (sans-I/O).

One group commit writes one frame, so a crash can only tear the last frame:

    magic      4 bytes  b"LGF1"
    length     u32      payload bytes
    first      u64      index of the frame's first item
    count      u32      items in the frame
    header_crc u32      CRC-32 of the 20 bytes above
    payload    count x (u16 length, u32 CRC-32 of the item, item bytes)

All integers are big-endian. Reading classifies the file's end:

- clean: every frame checks out;
- torn: the last frame is incomplete or fails its checksums and no valid frame follows,
  as a crash during the write of an unacknowledged batch leaves it; recovery cuts it off;
- corrupt: a damaged frame or item with valid data after it, or a frame whose first
  index breaks the sequence; recovery refuses to start and names the byte and item.
"""

from __future__ import annotations

import mmap
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

MAGIC = b"LGF1"
_HEADER = struct.Struct(">4sIQII")
HEADER_BYTES = _HEADER.size
_ITEM = struct.Struct(">HI")
ITEM_HEADER_BYTES = _ITEM.size
ITEM_BYTES_MAX = 0xFFFF
FRAME_PAYLOAD_BYTES_MAX = 0xFFFF_FFFF
_crc32 = zlib.crc32
# What the scanner reads: bytes in tests, an mmap of the file in the adapters.
Buffer = bytes | mmap.mmap


def encode_frame(first_index: int, items: Sequence[bytes]) -> bytes:
    assert first_index >= 0
    assert len(items) > 0
    parts: list[bytes] = []
    for item in items:
        assert len(item) <= ITEM_BYTES_MAX
        parts.append(_ITEM.pack(len(item), _crc32(item)))
        parts.append(item)
    payload = b"".join(parts)
    assert len(payload) <= FRAME_PAYLOAD_BYTES_MAX
    head = struct.pack(">4sIQI", MAGIC, len(payload), first_index, len(items))
    return head + struct.pack(">I", _crc32(head)) + payload


@dataclass(frozen=True)
class ScanEnd:
    """How a scan ended. `offset` is where valid data stops (the cut point when torn)."""

    status: Literal["clean", "torn", "corrupt"]
    offset: int
    next_index: int
    reason: str = ""


def _header_at(buffer: Buffer, offset: int) -> tuple[int, int, int] | None:
    if len(buffer) - offset < HEADER_BYTES:
        return None
    magic, length, first, count, header_crc = _HEADER.unpack_from(buffer, offset)
    if magic != MAGIC or _crc32(buffer[offset : offset + HEADER_BYTES - 4]) != header_crc:
        return None
    return length, first, count


def _valid_header_after(buffer: Buffer, offset: int) -> int | None:
    """The offset of the next well-formed frame header after `offset`, if any."""
    position = offset
    while True:
        position = buffer.find(MAGIC, position + 1)
        if position < 0:
            return None
        if _header_at(buffer, position) is not None:
            return position


class Scanner:
    """Walks the frames of a buffer (bytes or an mmap), yielding (index, start, end) per item.

    After the iteration, `end` says how it stopped. Items are yielded only from frames
    whose every checksum holds, so a torn frame contributes nothing.
    """

    def __init__(self, buffer: Buffer, first_index: int = 0) -> None:
        self._buffer = buffer
        self._first_index = first_index
        self.end: ScanEnd | None = None

    def items(self) -> Iterator[tuple[int, int, int]]:
        buffer = self._buffer
        size = len(buffer)
        offset = 0
        expected = self._first_index
        item_header = _ITEM.unpack_from
        while True:
            if offset == size:
                self.end = ScanEnd("clean", offset, expected)
                return
            header = _header_at(buffer, offset)
            if header is None:
                later = _valid_header_after(buffer, offset)
                if later is None:
                    self.end = ScanEnd("torn", offset, expected, "incomplete frame header")
                else:
                    self.end = ScanEnd(
                        "corrupt",
                        offset,
                        expected,
                        f"damaged frame header at byte {offset} (entry {expected}); "
                        f"a valid frame follows at byte {later}",
                    )
                return
            length, first, count = header
            if first != expected:
                self.end = ScanEnd(
                    "corrupt",
                    offset,
                    expected,
                    f"frame at byte {offset} starts at entry {first}, expected entry {expected}",
                )
                return
            payload_start = offset + HEADER_BYTES
            payload_end = payload_start + length
            if payload_end > size:
                self.end = ScanEnd("torn", offset, expected, "frame extends past end of file")
                return
            found: list[tuple[int, int, int]] = []
            position = payload_start
            problem = ""
            for number in range(count):
                if position + ITEM_HEADER_BYTES > payload_end:
                    problem = "frame payload ends inside an item header"
                    break
                item_length, item_crc = item_header(buffer, position)
                start = position + ITEM_HEADER_BYTES
                end = start + item_length
                if end > payload_end:
                    problem = "item runs past its frame"
                    break
                if _crc32(buffer[start:end]) != item_crc:
                    problem = "checksum mismatch"
                    break
                found.append((expected + number, start, end))
                position = end
            if not problem and position != payload_end:
                problem = "frame payload has bytes after its last item"
            if problem:
                bad_index = expected + len(found)
                if _valid_header_after(buffer, payload_end - 1) is None:
                    self.end = ScanEnd(
                        "torn",
                        offset,
                        expected,
                        f"entry {bad_index}: {problem} (item at byte {position}, last frame)",
                    )
                else:
                    self.end = ScanEnd(
                        "corrupt",
                        offset,
                        expected,
                        f"entry {bad_index}: {problem} "
                        f"(item at byte {position}, frame at byte {offset})",
                    )
                return
            yield from found
            expected += count
            offset = payload_end
