"""Write a data directory's log as static files that any file server can serve.

The layout is the HTTP one (checkpoint, vkey, tile/..., blocks/...). Order matters to a
client reading while we write: tiles and blocks first, the checkpoint last, each file
written to a temporary name and renamed, so no checkpoint points at a missing tile.
"""

from __future__ import annotations

import os
from pathlib import Path

from ledger.note import Signer
from ledger.storage import BLOCKS_FILE, ENTRIES_FILE, KEY_FILE
from ledger.tiles import TILE_HEIGHT, TILE_WIDTH, Tile, encode_bundle
from ledger.verify import check_blocks, check_entries, scan_file


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def write_static(data_dir: Path, out_dir: Path) -> int:
    """Verify the directory's log (with its own key) and write it out; the file count."""
    verifier = Signer.parse((data_dir / KEY_FILE).read_text()).verifier
    items = list(scan_file(data_dir / BLOCKS_FILE, "block item"))
    records = [(items[i], items[i + 1]) for i in range(0, len(items) - 1, 2)]
    blocks = check_blocks(records, verifier)
    size = blocks[-1].checkpoint.size
    entries = list(scan_file(data_dir / ENTRIES_FILE, "at"))[:size]
    tree, _report = check_entries(iter(entries), blocks, check_canonical=False)
    written = 0
    for start in range(0, size, TILE_WIDTH):
        width = min(TILE_WIDTH, size - start)
        bundle = encode_bundle(entries[start : start + width])
        _write(out_dir / Tile(-1, start // TILE_WIDTH, width).path(), bundle)
        written += 1
    level = 0
    while (size >> (TILE_HEIGHT * level)) > 0:
        count = size >> (TILE_HEIGHT * level)
        for start in range(0, count, TILE_WIDTH):
            width = min(TILE_WIDTH, count - start)
            data = tree.level_bytes(TILE_HEIGHT * level, start, width)
            _write(out_dir / Tile(level, start // TILE_WIDTH, width).path(), data)
            written += 1
        level += 1
    for group in range(0, len(records), TILE_WIDTH):
        flat = [note for record in records[group : group + TILE_WIDTH] for note in record]
        _write(out_dir / "blocks" / str(group // TILE_WIDTH), encode_bundle(flat))
        written += 1
    _write(out_dir / "blocks" / "latest", f"{len(records) - 1}\n".encode())
    _write(out_dir / "vkey", (verifier.format() + "\n").encode())
    _write(out_dir / "checkpoint", records[-1][1])
    return written + 3
