"""The one clock: wall time in integer milliseconds. The ledger's own, so the times of
orders, steps and sales are on the scale of the checkpoints that cover them."""

from __future__ import annotations

from ledger import wall_clock_ms

__all__ = ["wall_clock_ms"]
