"""WAL framing: every truncation is a clean or torn end, every flipped bit is caught."""

from __future__ import annotations

from ledger.wal import HEADER_BYTES, Scanner, encode_frame

FRAMES = [[b"alpha", b"", b"gamma" * 3], [b"delta"], [b"epsilon", b"zeta"]]


def _file() -> tuple[bytes, list[int], list[bytes]]:
    data = b""
    boundaries = [0]
    items: list[bytes] = []
    for frame in FRAMES:
        data += encode_frame(len(items), frame)
        items.extend(frame)
        boundaries.append(len(data))
    return data, boundaries, items


def _scan(buffer: bytes) -> tuple[list[bytes], Scanner]:
    scanner = Scanner(buffer)
    found = [buffer[start:end] for _index, start, end in scanner.items()]
    return found, scanner


def test_clean_scan() -> None:
    data, boundaries, items = _file()
    found, scanner = _scan(data)
    assert found == items
    assert scanner.end is not None
    assert scanner.end.status == "clean"
    assert scanner.end.next_index == len(items)
    assert boundaries[-1] == len(data)


def test_every_truncation_is_a_torn_tail_that_keeps_whole_frames() -> None:
    data, boundaries, items = _file()
    for length in range(len(data)):
        found, scanner = _scan(data[:length])
        whole = max(b for b in boundaries if b <= length)
        kept = sum(
            len(frame) for frame, b in zip(FRAMES, boundaries[1:], strict=True) if b <= length
        )
        assert found == items[:kept], length
        assert scanner.end is not None
        assert scanner.end.status == ("clean" if length == whole else "torn"), length
        assert scanner.end.offset == whole


def test_zero_filled_tail_is_torn() -> None:
    data, _boundaries, items = _file()
    found, scanner = _scan(data + bytes(HEADER_BYTES * 3))
    assert found == items
    assert scanner.end is not None
    assert scanner.end.status == "torn"


def test_every_flipped_bit_is_caught_and_named() -> None:
    data, boundaries, items = _file()
    last_frame_start = boundaries[-2]
    for position in range(len(data)):
        for bit in range(8):
            damaged = bytearray(data)
            damaged[position] ^= 1 << bit
            found, scanner = _scan(bytes(damaged))
            assert scanner.end is not None
            # Whatever is returned is a prefix of the truth: never a changed item.
            assert found == items[: len(found)], (position, bit)
            if position < last_frame_start:
                assert scanner.end.status == "corrupt", (position, bit)
                assert "entry" in scanner.end.reason
                assert "byte" in scanner.end.reason
            else:
                # Damage in the last frame looks like a torn write; recovery then holds
                # the entries to the signed checkpoint (tested in test_recovery).
                assert scanner.end.status in ("torn", "corrupt"), (position, bit)
                assert len(found) < len(items)


def test_frame_out_of_sequence_is_corrupt() -> None:
    data = encode_frame(0, [b"a"]) + encode_frame(5, [b"b"])
    found, scanner = _scan(data)
    assert found == [b"a"]
    assert scanner.end is not None
    assert scanner.end.status == "corrupt"
    assert "expected entry 1" in scanner.end.reason
