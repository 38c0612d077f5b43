"""A verifiable, append-only log: RFC 6962 Merkle tree, C2SP checkpoints, tiles and proofs.

Stands on its own: nothing here imports the server (`livecommerce`).
"""

from ledger.entry import decode_entry, encode_entry
from ledger.log import Ledger, LedgerBusy, LedgerClosed, wall_clock_ms
from ledger.settings import LedgerSettings
from ledger.storage import LedgerCorruption

__all__ = [
    "Ledger",
    "LedgerBusy",
    "LedgerClosed",
    "LedgerCorruption",
    "LedgerSettings",
    "decode_entry",
    "encode_entry",
    "wall_clock_ms",
]
