"""C2SP tlog-checkpoint bodies: origin, tree size, base64 root hash (sans-I/O)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from ledger.merkle import HASH_BYTES


class CheckpointError(ValueError):
    """A checkpoint body that does not follow c2sp.org/tlog-checkpoint."""


def parse_decimal(text: str, what: str) -> int:
    """An ASCII decimal with no leading zeroes (tlog-checkpoint, tlog-proof)."""
    if not text.isascii() or not text.isdigit() or (len(text) > 1 and text[0] == "0"):
        raise CheckpointError(f"{what} {text!r} is not a canonical decimal")
    if len(text) > 19:
        raise CheckpointError(f"{what} is too large")
    return int(text)


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def __post_init__(self) -> None:
        assert self.origin
        assert "\n" not in self.origin
        assert self.size >= 0
        assert len(self.root) == HASH_BYTES

    def body(self) -> bytes:
        """The note text. We write no extension lines (tlog-checkpoint: NOT RECOMMENDED)."""
        root = base64.b64encode(self.root).decode()
        return f"{self.origin}\n{self.size}\n{root}\n".encode()

    @classmethod
    def parse(cls, text: bytes) -> Checkpoint:
        try:
            decoded = text.decode()
        except UnicodeDecodeError:
            raise CheckpointError("checkpoint is not UTF-8") from None
        if not decoded.endswith("\n"):
            raise CheckpointError("checkpoint must end in a newline")
        lines = decoded[:-1].split("\n")
        if len(lines) < 3 or any(not line for line in lines):
            raise CheckpointError("checkpoint needs origin, size and root, none empty")
        size = parse_decimal(lines[1], "tree size")
        try:
            root = base64.b64decode(lines[2], validate=True)
        except (binascii.Error, ValueError):
            raise CheckpointError("root hash is not base64") from None
        if len(root) != HASH_BYTES:
            raise CheckpointError("root hash is not 32 bytes")
        return cls(lines[0], size, root)
