"""The ledger's settings: every limit named with its unit, validated once."""

from __future__ import annotations

from dataclasses import dataclass

from ledger.entry import ENTRY_BYTES_MAX


@dataclass(frozen=True)
class LedgerSettings:
    # The log's identity: the checkpoint origin line and the signing key's name.
    origin: str = "localhost/livecommerce"
    # Group commit: one frame and one fsync for at most this many entries / bytes.
    batch_entries_max: int = 8_192
    batch_bytes_max: int = 16 * 1024 * 1024
    # How long an open batch may wait for more appends before it is written; 0 writes as
    # soon as the writer is free (appends that arrive during an fsync form the next batch).
    batch_age_ms_max: int = 0
    # Appends waiting for the writer; beyond this, append raises LedgerBusy.
    queue_entries_max: int = 100_000
    # A checkpoint (and block) is signed this often while entries arrive.
    checkpoint_interval_ms: int = 1_000
    # Right-edge subtree hashes remembered for proofs.
    range_cache_entries_max: int = 65_536

    def __post_init__(self) -> None:
        if not self.origin or any(c.isspace() for c in self.origin) or "+" in self.origin:
            raise ValueError("origin must be non-empty, without spaces or '+'")
        if not 1 <= self.batch_entries_max <= 1_000_000:
            raise ValueError("batch_entries_max must be within 1..1,000,000")
        if self.batch_bytes_max < ENTRY_BYTES_MAX + 6:
            raise ValueError("batch_bytes_max must hold at least one largest entry")
        if self.batch_bytes_max > 1 << 30:
            raise ValueError("batch_bytes_max must be at most 1 GiB")
        if not 0 <= self.batch_age_ms_max <= 1_000:
            raise ValueError("batch_age_ms_max must be within 0..1000")
        if self.queue_entries_max < 1:
            raise ValueError("queue_entries_max must be positive")
        if not 10 <= self.checkpoint_interval_ms <= 3_600_000:
            raise ValueError("checkpoint_interval_ms must be within 10..3,600,000")
        if self.range_cache_entries_max < 0:
            raise ValueError("range_cache_entries_max must not be negative")
