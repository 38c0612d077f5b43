"""C2SP tlog-proof receipts (c2sp.org/tlog-proof): one entry's inclusion, offline-checkable.

    c2sp.org/tlog-proof@v1
    extra <base64 entry bytes>
    index <n>
    <base64 hash>...        (RFC 6962 inclusion path, leaf side first)
    <blank line>
    <checkpoint note, verbatim>

We put the entry itself in the `extra` line: the spec reserves it for "additional data
necessary to reconstruct the record hash", and it is never trusted on its own, because
the verifier hashes it and checks the path up to the signed root.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ledger.checkpoint import Checkpoint, CheckpointError, parse_decimal
from ledger.merkle import HASH_BYTES, ProofError, leaf_hash, verify_inclusion
from ledger.note import NoteError, Verifier, open_note

HEADER = "c2sp.org/tlog-proof@v1"
PROOF_HASHES_MAX = 63
RECEIPT_BYTES_MAX = 1_100_000


class ReceiptError(ValueError):
    pass


@dataclass(frozen=True)
class Receipt:
    index: int
    path: tuple[bytes, ...]
    checkpoint_note: bytes
    entry: bytes | None = None

    def __post_init__(self) -> None:
        assert self.index >= 0
        assert all(len(h) == HASH_BYTES for h in self.path)
        assert len(self.path) <= PROOF_HASHES_MAX

    def format(self) -> bytes:
        (formatted,) = format_receipts([(self.index, self.path, self.entry)], self.checkpoint_note)
        return formatted

    @classmethod
    def parse(cls, data: bytes) -> Receipt:
        if len(data) > RECEIPT_BYTES_MAX:
            raise ReceiptError("receipt is too large")
        head, separator, note = data.partition(b"\n\n")
        if not separator:
            raise ReceiptError("receipt has no blank line before its checkpoint")
        try:
            lines = head.decode().split("\n")
        except UnicodeDecodeError:
            raise ReceiptError("receipt is not UTF-8") from None
        if lines[0] != HEADER:
            raise ReceiptError(f"receipt does not start with {HEADER}")
        position = 1
        entry: bytes | None = None
        if position < len(lines) and lines[position].startswith("extra "):
            entry = _b64(lines[position][len("extra ") :], "extra data")
            position += 1
        if position >= len(lines) or not lines[position].startswith("index "):
            raise ReceiptError("receipt has no index line")
        try:
            index = parse_decimal(lines[position][len("index ") :], "index")
        except CheckpointError as error:
            raise ReceiptError(str(error)) from None
        path = tuple(_b64(line, "proof hash") for line in lines[position + 1 :])
        if any(len(h) != HASH_BYTES for h in path) or len(path) > PROOF_HASHES_MAX:
            raise ReceiptError("receipt proof hashes are malformed")
        return cls(index, path, note, entry)


def format_receipts(
    receipts: Iterable[tuple[int, Sequence[bytes], bytes | None]], checkpoint_note: bytes
) -> list[bytes]:
    """Receipts (index, inclusion path, entry or None) against one checkpoint, formatted
    as `Receipt.format` does. Paths of neighbouring entries share most hashes: each one is
    base64-encoded once per call."""
    encoded: dict[bytes, str] = {}
    formatted: list[bytes] = []
    for index, path, entry in receipts:
        assert index >= 0
        assert len(path) <= PROOF_HASHES_MAX
        lines = [HEADER]
        if entry is not None:
            lines.append("extra " + base64.b64encode(entry).decode())
        lines.append(f"index {index}")
        for hash_value in path:
            text = encoded.get(hash_value)
            if text is None:
                assert len(hash_value) == HASH_BYTES
                text = encoded[hash_value] = base64.b64encode(hash_value).decode()
            lines.append(text)
        lines.append("\n")
        formatted.append("\n".join(lines).encode() + checkpoint_note)
    return formatted


def _b64(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ReceiptError(f"{what} is not base64") from None
    if base64.b64encode(raw).decode() != text:
        # Spare bits set in the last character: same bytes, different text. Refuse, so
        # that no byte of a receipt can change without the check failing.
        raise ReceiptError(f"{what} is not canonical base64")
    return raw


def verify_receipt(data: bytes, verifier: Verifier, entry: bytes | None = None) -> Receipt:
    """Check a receipt's checkpoint signature and inclusion proof; ReceiptError otherwise.

    `entry` is the entry the holder expects; without it, the receipt's `extra` is used.
    """
    receipt = Receipt.parse(data)
    try:
        opened = open_note(receipt.checkpoint_note, (verifier,))
        checkpoint = Checkpoint.parse(opened.text)
    except (NoteError, CheckpointError) as error:
        raise ReceiptError(f"checkpoint: {error}") from None
    if checkpoint.origin != verifier.name:
        raise ReceiptError(f"checkpoint origin {checkpoint.origin!r} is not the key's log")
    data_entry = entry if entry is not None else receipt.entry
    if data_entry is None:
        raise ReceiptError("no entry to check: the receipt has no extra line")
    if entry is not None and receipt.entry is not None and receipt.entry != entry:
        raise ReceiptError("receipt's entry differs from the expected entry")
    try:
        verify_inclusion(
            receipt.index, checkpoint.size, leaf_hash(data_entry), receipt.path, checkpoint.root
        )
    except ProofError as error:
        raise ReceiptError(f"inclusion proof: {error}") from None
    return receipt
