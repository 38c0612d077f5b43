from __future__ import annotations

from ledger import LedgerSettings

FAST = LedgerSettings(origin="test.example/log", checkpoint_interval_ms=50)
