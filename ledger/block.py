"""Blocks: the signed checkpoints chained by hash, one per checkpoint interval (sans-I/O).

A block is a signed note (same key as the checkpoints) whose text is

    ledger-block/v1
    height <n>               0 for the first block, then +1
    time_ms <unix ms>        when the block was sealed; never decreases
    previous <base64>        SHA-256 of the previous block note (32 zero bytes for block 0)
    checkpoint <base64>      SHA-256 of this block's checkpoint note

and is stored with the checkpoint note it names. The first line keeps a block from ever
parsing as a checkpoint of this log (its origin is the log's name, never this string).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from ledger.checkpoint import CheckpointError, parse_decimal
from ledger.merkle import HASH_BYTES

BLOCK_HEADER = "ledger-block/v1"
GENESIS_PREVIOUS = bytes(HASH_BYTES)


class BlockError(ValueError):
    pass


def note_hash(note: bytes) -> bytes:
    return hashlib.sha256(note).digest()


@dataclass(frozen=True)
class Block:
    height: int
    time_ms: int
    previous: bytes
    checkpoint_hash: bytes

    def __post_init__(self) -> None:
        assert self.height >= 0
        assert self.time_ms >= 0
        assert len(self.previous) == HASH_BYTES
        assert len(self.checkpoint_hash) == HASH_BYTES

    def body(self) -> bytes:
        previous = base64.b64encode(self.previous).decode()
        checkpoint = base64.b64encode(self.checkpoint_hash).decode()
        return (
            f"{BLOCK_HEADER}\nheight {self.height}\ntime_ms {self.time_ms}\n"
            f"previous {previous}\ncheckpoint {checkpoint}\n"
        ).encode()

    @classmethod
    def parse(cls, text: bytes) -> Block:
        try:
            lines = text.decode().split("\n")
        except UnicodeDecodeError:
            raise BlockError("block is not UTF-8") from None
        if len(lines) != 6 or lines[0] != BLOCK_HEADER or lines[5] != "":
            raise BlockError("block does not have the ledger-block/v1 layout")
        fields: dict[str, str] = {}
        for line, name in zip(
            lines[1:5], ("height", "time_ms", "previous", "checkpoint"), strict=True
        ):
            key, _, value = line.partition(" ")
            if key != name:
                raise BlockError(f"block line {name!r} missing")
            fields[name] = value
        try:
            height = parse_decimal(fields["height"], "height")
            time_ms = parse_decimal(fields["time_ms"], "time_ms")
            previous = base64.b64decode(fields["previous"], validate=True)
            checkpoint_hash = base64.b64decode(fields["checkpoint"], validate=True)
        except (CheckpointError, binascii.Error, ValueError) as error:
            raise BlockError(f"block field malformed: {error}") from None
        if len(previous) != HASH_BYTES or len(checkpoint_hash) != HASH_BYTES:
            raise BlockError("block hashes must be 32 bytes")
        return cls(height, time_ms, previous, checkpoint_hash)
