"""The verifier: check a whole log (a data directory or a URL) without trusting its server.

It checks every block and checkpoint signature, every block link, recomputes the Merkle
tree from every entry, holds each signed root to it, proves consecutive checkpoints
consistent, optionally checks every entry is canonical JSON (`--canonical`; it costs
about four times the rest), and (for a URL) that the served hash tiles
equal the recomputed hashes. The first problem ends the run with a message naming the
entry, block or tile.
"""

from __future__ import annotations

import mmap
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ledger.block import GENESIS_PREVIOUS, Block, BlockError, note_hash
from ledger.checkpoint import Checkpoint, CheckpointError
from ledger.entry import decode_entry
from ledger.merkle import MerkleTree, ProofError, leaf_hash, verify_consistency
from ledger.note import NoteError, Verifier, open_note
from ledger.storage import BLOCKS_FILE, ENTRIES_FILE
from ledger.tiles import TILE_HEIGHT, TILE_WIDTH, Tile, decode_bundle
from ledger.wal import Scanner

OnEntry = Callable[[int, bytes], None]
HTTP_TIMEOUT_S = 30.0
HTTP_RESPONSE_BYTES_MAX = 64 * 1024 * 1024


class VerifyError(Exception):
    """The log failed a check; the message names the first bad entry, block or tile."""


@dataclass
class Report:
    entries: int = 0
    blocks: int = 0
    checkpoint_size: int = 0
    tiles_checked: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SignedBlock:
    height: int
    block: Block
    checkpoint: Checkpoint


def check_blocks(records: list[tuple[bytes, bytes]], verifier: Verifier) -> list[SignedBlock]:
    """Signatures, links, heights, times and sizes of the block chain, in order."""
    checked: list[SignedBlock] = []
    previous_hash = GENESIS_PREVIOUS
    previous: SignedBlock | None = None
    for height, (block_note, checkpoint_note) in enumerate(records):
        where = f"block {height}"
        try:
            block = Block.parse(open_note(block_note, (verifier,)).text)
            checkpoint = Checkpoint.parse(open_note(checkpoint_note, (verifier,)).text)
        except (NoteError, BlockError, CheckpointError) as error:
            raise VerifyError(f"{where}: {error}") from None
        if block.height != height:
            raise VerifyError(f"{where}: says it is block {block.height}")
        if block.previous != previous_hash:
            raise VerifyError(f"{where}: does not link to the hash of block {height - 1}")
        if block.checkpoint_hash != note_hash(checkpoint_note):
            raise VerifyError(f"{where}: its checkpoint is not the one it names")
        if checkpoint.origin != verifier.name:
            raise VerifyError(f"{where}: checkpoint origin {checkpoint.origin!r} is not the log")
        if previous is not None:
            if block.time_ms < previous.block.time_ms:
                raise VerifyError(f"{where}: time goes backwards")
            if checkpoint.size < previous.checkpoint.size:
                raise VerifyError(f"{where}: tree shrinks to {checkpoint.size}")
        signed = SignedBlock(height, block, checkpoint)
        checked.append(signed)
        previous, previous_hash = signed, note_hash(block_note)
    if not checked:
        raise VerifyError("the log has no blocks")
    return checked


def check_entries(
    entries: Iterator[bytes],
    blocks: list[SignedBlock],
    check_canonical: bool = False,
    on_entry: OnEntry | None = None,
) -> tuple[MerkleTree, Report]:
    """Rebuild the tree, holding each block's signed root to it as its size is reached.
    `on_entry(index, entry)` sees every entry in order (an application's own checks, e.g.
    `python -m livecommerce audit` replaying the money)."""
    tree = MerkleTree()
    report = Report(blocks=len(blocks))
    targets = [b for b in blocks]
    target = 0
    while target < len(targets) and targets[target].checkpoint.size == 0:
        target += 1
    append_leaf = tree.append_leaf_hash
    previous_good: SignedBlock | None = None
    index = -1

    def check_target(signed: SignedBlock) -> None:
        nonlocal previous_good
        checkpoint = signed.checkpoint
        if tree.root(checkpoint.size) != checkpoint.root:
            low = 0 if previous_good is None else previous_good.checkpoint.size
            raise VerifyError(
                f"block {signed.height}: signed root for size {checkpoint.size} does not match "
                f"the entries; a changed entry lies in {low}..{checkpoint.size - 1}"
            )
        if previous_good is not None and previous_good.checkpoint.size > 0:
            old = previous_good.checkpoint
            try:
                verify_consistency(
                    old.size,
                    checkpoint.size,
                    tree.consistency_proof(old.size, checkpoint.size),
                    old.root,
                    checkpoint.root,
                )
            except ProofError as error:
                raise VerifyError(
                    f"block {signed.height}: not consistent with block {previous_good.height}:"
                    f" {error}"
                ) from None
        previous_good = signed

    for index, data in enumerate(entries):
        if check_canonical:
            try:
                decode_entry(data)
            except ValueError as error:
                raise VerifyError(f"entry {index}: {error}") from None
        append_leaf(leaf_hash(data))
        if on_entry is not None:
            on_entry(index, data)
        while target < len(targets) and targets[target].checkpoint.size == index + 1:
            check_target(targets[target])
            target += 1
    if target < len(targets):
        signed = targets[target]
        raise VerifyError(
            f"entry {index + 1}: missing; block {signed.height}'s checkpoint covers "
            f"{signed.checkpoint.size} entries but the log holds {index + 1}"
        )
    report.entries = tree.size
    report.checkpoint_size = blocks[-1].checkpoint.size
    return tree, report


# ---- sources -------------------------------------------------------------------------


def scan_file(path: Path, what: str) -> Iterator[bytes]:
    if not path.exists():
        raise VerifyError(f"{path}: missing")
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            return
        with mmap.mmap(handle.fileno(), size, prot=mmap.PROT_READ) as buffer:
            scanner = Scanner(buffer)
            for _index, start, end in scanner.items():
                yield buffer[start:end]
            end_state = scanner.end
            assert end_state is not None
            if end_state.status == "corrupt":
                raise VerifyError(f"{path.name}: {what} {end_state.reason}")
            if end_state.status == "torn":
                # After a crash the server cuts this on start; until then, or if a byte of
                # the last frame changed, we cannot vouch for the file.
                raise VerifyError(
                    f"{path.name}: damaged or torn last frame (at byte {end_state.offset}): "
                    f"{end_state.reason}"
                )


def verify_directory(
    data_dir: Path,
    verifier: Verifier,
    check_canonical: bool = False,
    on_entry: OnEntry | None = None,
) -> Report:
    items = list(scan_file(data_dir / BLOCKS_FILE, "block item"))
    if len(items) % 2:
        raise VerifyError(f"block {len(items) // 2}: has no checkpoint")
    blocks = check_blocks([(items[i], items[i + 1]) for i in range(0, len(items), 2)], verifier)
    entries = scan_file(data_dir / ENTRIES_FILE, "at")
    _tree, report = check_entries(entries, blocks, check_canonical, on_entry)
    return report


def _get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
            data: bytes = response.read(HTTP_RESPONSE_BYTES_MAX + 1)
    except urllib.error.URLError as error:
        raise VerifyError(f"{url}: {error}") from None
    if len(data) > HTTP_RESPONSE_BYTES_MAX:
        raise VerifyError(f"{url}: response too large")
    return data


def verify_url(
    base_url: str,
    verifier: Verifier,
    check_canonical: bool = False,
    on_entry: OnEntry | None = None,
) -> Report:
    base = base_url.rstrip("/")
    latest = int(_get(f"{base}/blocks/latest").decode().strip())
    items: list[bytes] = []
    for group in range(latest // TILE_WIDTH + 1):
        items.extend(decode_bundle(_get(f"{base}/blocks/{group}")))
    items = items[: 2 * (latest + 1)]
    if len(items) != 2 * (latest + 1):
        raise VerifyError(f"block {len(items) // 2}: missing from the server")
    blocks = check_blocks([(items[i], items[i + 1]) for i in range(0, len(items), 2)], verifier)
    size = blocks[-1].checkpoint.size

    def fetch_entries() -> Iterator[bytes]:
        for start in range(0, size, TILE_WIDTH):
            width = min(TILE_WIDTH, size - start)
            path = Tile(-1, start // TILE_WIDTH, width).path()
            bundle = decode_bundle(_get(f"{base}/{path}"))
            if len(bundle) != width:
                raise VerifyError(f"{path}: holds {len(bundle)} entries, want {width}")
            yield from bundle

    tree, report = check_entries(fetch_entries(), blocks, check_canonical, on_entry)
    # The served hash tiles must be the recomputed hashes: a tile is what clients prove with.
    level = 0
    while (size >> (TILE_HEIGHT * level)) > 0:
        count = size >> (TILE_HEIGHT * level)
        for start in range(0, count, TILE_WIDTH):
            width = min(TILE_WIDTH, count - start)
            tile = Tile(level, start // TILE_WIDTH, width)
            served = _get(f"{base}/{tile.path()}")
            if served != tree.level_bytes(TILE_HEIGHT * level, start, width):
                raise VerifyError(f"{tile.path()}: differs from the recomputed hashes")
            report.tiles_checked += 1
        level += 1
    checkpoint_note = _get(f"{base}/checkpoint")
    try:
        current = Checkpoint.parse(open_note(checkpoint_note, (verifier,)).text)
    except (NoteError, CheckpointError) as error:
        raise VerifyError(f"checkpoint: {error}") from None
    if current.size < size:
        raise VerifyError(f"checkpoint: size {current.size} is older than block {latest}")
    if current.size == size and current.root != blocks[-1].checkpoint.root:
        raise VerifyError("checkpoint: differs from the latest block's checkpoint")
    return report
