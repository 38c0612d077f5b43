"""A token bucket on an injected clock: `capacity` tokens, refilled at `per_ms` per token."""

from __future__ import annotations


class TokenBucket:
    __slots__ = ("_capacity", "_refill_ms_per_token", "_tokens", "_updated_ms")

    def __init__(self, capacity: int, refill_ms_per_token: int, now_ms: int) -> None:
        assert capacity > 0
        assert refill_ms_per_token > 0
        self._capacity = capacity
        self._refill_ms_per_token = refill_ms_per_token
        self._tokens = float(capacity)
        self._updated_ms = now_ms

    def take(self, now_ms: int, tokens: int = 1) -> bool:
        """Take `tokens` if there are enough; False (and nothing taken) otherwise."""
        elapsed_ms = max(0, now_ms - self._updated_ms)
        self._updated_ms = max(self._updated_ms, now_ms)
        self._tokens = min(self._capacity, self._tokens + elapsed_ms / self._refill_ms_per_token)
        if self._tokens < tokens:
            return False
        self._tokens -= tokens
        return True
