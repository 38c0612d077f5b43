"""C2SP tlog-tiles paths and entry bundles (sans-I/O).

Tiles have height 8: a full tile holds 256 hashes (or entries). A hash tile at level L,
index N holds the complete subtree hashes at tree height 8*L from 256*N onwards; a
partial tile of width W is written `.p/W`. N is written in groups of three digits, all
but the last prefixed with "x" (tlog-tiles §Merkle Tree). An entry bundle is each
entry as a big-endian uint16 length followed by its bytes.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
_SEGMENT = re.compile(r"x[0-9]{3}")


class TilePathError(ValueError):
    pass


@dataclass(frozen=True)
class Tile:
    level: int  # -1 for entry bundles ("entries")
    index: int
    width: int  # 1..256; 256 is a full tile

    def __post_init__(self) -> None:
        assert self.level >= -1
        assert self.index >= 0
        assert 1 <= self.width <= TILE_WIDTH

    @property
    def is_entries(self) -> bool:
        return self.level == -1

    @property
    def is_full(self) -> bool:
        return self.width == TILE_WIDTH

    def path(self) -> str:
        level = "entries" if self.is_entries else str(self.level)
        text = f"{self.index:d}"
        groups: list[str] = []
        while len(text) > 3:
            groups.insert(0, text[-3:])
            text = text[:-3]
        groups.insert(0, text.rjust(3, "0"))
        encoded = "/".join(["x" + g for g in groups[:-1]] + [groups[-1]])
        suffix = "" if self.is_full else f".p/{self.width}"
        return f"tile/{level}/{encoded}{suffix}"


def parse_tile_path(path: str) -> Tile:
    """Parse "tile/<L>/<N>[.p/<W>]" or "tile/entries/<N>[.p/<W>]"."""
    parts = path.split("/")
    if len(parts) < 3 or parts[0] != "tile":
        raise TilePathError("not a tile path")
    width = TILE_WIDTH
    if len(parts) >= 4 and parts[-2].endswith(".p"):
        w = parts[-1]
        if not w.isdigit() or w[0] == "0" or not 1 <= int(w) < TILE_WIDTH:
            raise TilePathError("bad partial width")
        width = int(w)
        parts = [*parts[:-2], parts[-2][:-2]]
    level_text, segments = parts[1], parts[2:]
    if level_text == "entries":
        level = -1
    elif level_text.isdigit() and (level_text == "0" or level_text[0] != "0"):
        level = int(level_text)
        if level > 63:
            raise TilePathError("level too large")
    else:
        raise TilePathError("bad level")
    if not segments or len(segments) > 7:
        raise TilePathError("bad index")
    *prefixes, last = segments
    if not all(_SEGMENT.fullmatch(p) for p in prefixes):
        raise TilePathError("bad index")
    if len(last) != 3 or not last.isdigit():
        raise TilePathError("bad index")
    digits = "".join(p[1:] for p in prefixes) + last
    if prefixes and digits.startswith("000"):
        raise TilePathError("index is not in canonical form")
    return Tile(level, int(digits), width)


def encode_bundle(entries: list[bytes]) -> bytes:
    out = bytearray()
    for data in entries:
        assert len(data) <= 0xFFFF
        out += struct.pack(">H", len(data))
        out += data
    return bytes(out)


def decode_bundle(data: bytes) -> list[bytes]:
    entries: list[bytes] = []
    offset = 0
    while offset < len(data):
        if offset + 2 > len(data):
            raise ValueError("entry bundle ends inside a length")
        (length,) = struct.unpack_from(">H", data, offset)
        offset += 2
        if offset + length > len(data):
            raise ValueError("entry bundle ends inside an entry")
        entries.append(bytes(data[offset : offset + length]))
        offset += length
    return entries
