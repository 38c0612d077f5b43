"""Order signatures checked in a child process, a batch at a time, off the event loop.

Checking an order's Ed25519 signature (libsodium through PyNaCl) is about half of the
order path's CPU in the server (bench/order_path.py), all of it on the event loop, which
also reads and writes every socket. A thread does not take it off: PyNaCl releases the
GIL inside libsodium, but each check needs the GIL back before and after the C call, and
while the event loop is busy a thread waits for the interpreter's switch interval (5 ms)
each time. Measured with a busy loop: 15 to 29 ms per 48 us check, and the loop itself
slowed down (docs/benchmarks.md). A child process has an interpreter of its own.

The worker hands a batch of orders to `check`. A batch of fewer than `child_batch_min`
orders is checked here at once: with few orders waiting the loop has time for them, and
the trip to the child and back (two pipe writes, two wake-ups of another process) would
only add latency; under load the batches grow and go to the child.
For a batch that does go, the child runs the core's own
`check_order_signature` on each and answers with one `SignatureCheck` per order; the
core then takes them as `CheckedOrder`s. If the child fails, is slow to answer
(`answer_timeout_s`) or is not running, `check` does the work inline, so an order is
never refused for the child's trouble; a new child is started at the next batch, at most
once per `restart_interval_s`.

Wire, both ways: frames of a 4-byte big-endian length and a msgpack body (msgspec). A
request is a list of [buyer_id, order_id, price_cents, quantity, sale_id, time_ms,
signature]; the answer is a list of [reason, detail, digest], reason "" for a valid one.
The child is `python -m livecommerce.orders.verifying`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import sys
import time
from collections.abc import Sequence
from typing import Any, Final

import msgspec

from livecommerce.commerce.orders import PlaceOrder, SignatureCheck, check_order_signature
from livecommerce.commerce.results import Reason, Rejected

log = logging.getLogger("livecommerce.orders")

FRAME_BYTES_MAX: Final = 8 * 1024 * 1024
_LENGTH = struct.Struct(">I")

Wire = list[list[Any]]


def _check_all(orders: Wire) -> Wire:
    """The child's work: one [reason, detail, digest] per [fields...] order."""
    answers: Wire = []
    for buyer_id, order_id, price_cents, quantity, sale_id, time_ms, signature in orders:
        command = PlaceOrder(order_id, sale_id, buyer_id, quantity, price_cents, time_ms, signature)
        check = check_order_signature(command)
        if check.refused is None:
            answers.append(["", "", check.digest])
        else:
            answers.append([str(check.refused.reason), check.refused.detail, b""])
    return answers


def _fields(command: PlaceOrder) -> list[Any]:
    return [
        command.buyer_id,
        command.order_id,
        command.price_cents,
        command.quantity,
        command.sale_id,
        command.time_ms,
        command.signature,
    ]


def _check_of(answer: list[Any]) -> SignatureCheck:
    reason, detail, digest = answer
    if reason:
        return SignatureCheck(Rejected(Reason(reason), detail), b"")
    return SignatureCheck(None, digest)


class SignatureVerifier:
    def __init__(
        self,
        answer_timeout_s: float = 5.0,
        restart_interval_s: float = 10.0,
        child_batch_min: int = 1,
    ) -> None:
        assert answer_timeout_s > 0
        assert restart_interval_s > 0
        assert child_batch_min >= 1
        self.answer_timeout_s = answer_timeout_s
        self.restart_interval_s = restart_interval_s
        self.child_batch_min = child_batch_min
        self._child: asyncio.subprocess.Process | None = None
        self._started_at = -restart_interval_s
        self._lock = asyncio.Lock()
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(list[list[Any]])
        self.checked_in_child = 0
        self.checked_inline = 0

    async def start(self) -> None:
        """Start the child (if that fails, orders are checked inline until a restart)."""
        await self._start_child()

    async def _start_child(self) -> None:
        self._started_at = time.monotonic()
        try:
            self._child = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "livecommerce.orders.verifying",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
        except OSError as error:
            log.warning("signature checks stay in this process: %r", error)
            self._child = None

    async def check(self, commands: Sequence[PlaceOrder]) -> list[SignatureCheck]:
        """One `SignatureCheck` per command, in order."""
        if not commands:
            return []
        if len(commands) < self.child_batch_min:
            self.checked_inline += len(commands)
            return [check_order_signature(command) for command in commands]
        async with self._lock:  # one batch at a time: answers come back in order
            child = self._child
            gone = child is None or child.returncode is not None
            if gone and time.monotonic() - self._started_at >= self.restart_interval_s:
                await self._start_child()
                child = self._child
            if child is not None and child.returncode is None:
                try:
                    checks = await asyncio.wait_for(
                        self._ask(child, commands), self.answer_timeout_s
                    )
                    self.checked_in_child += len(checks)
                    return checks
                except (OSError, EOFError, ValueError, TimeoutError, msgspec.DecodeError) as error:
                    log.warning("signature checker failed (%r); checking here", error)
                    await self._stop_child()
        self.checked_inline += len(commands)
        return [check_order_signature(command) for command in commands]

    async def _ask(
        self, child: asyncio.subprocess.Process, commands: Sequence[PlaceOrder]
    ) -> list[SignatureCheck]:
        assert child.stdin is not None
        assert child.stdout is not None
        body = self._encoder.encode([_fields(command) for command in commands])
        if len(body) > FRAME_BYTES_MAX:
            raise ValueError("batch too large for one frame")
        child.stdin.write(_LENGTH.pack(len(body)) + body)
        await child.stdin.drain()
        (length,) = _LENGTH.unpack(await child.stdout.readexactly(_LENGTH.size))
        if length > FRAME_BYTES_MAX:
            raise ValueError("answer frame too large")
        answers = self._decoder.decode(await child.stdout.readexactly(length))
        if len(answers) != len(commands):
            raise ValueError(f"{len(answers)} answers to {len(commands)} orders")
        return [_check_of(answer) for answer in answers]

    async def _stop_child(self) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        if child.stdin is not None:
            child.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(child.wait(), 5)

    async def close(self) -> None:
        async with self._lock:
            await self._stop_child()


def main() -> None:
    """The child: answer frames on stdin with frames on stdout until stdin closes."""
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    decoder = msgspec.msgpack.Decoder(list[list[Any]])
    encoder = msgspec.msgpack.Encoder()
    while True:
        head = source.read(_LENGTH.size)
        if len(head) < _LENGTH.size:
            return
        (length,) = _LENGTH.unpack(head)
        if length > FRAME_BYTES_MAX:
            raise SystemExit("request frame too large")
        body = source.read(length)
        if len(body) < length:
            return
        answer = encoder.encode(_check_all(decoder.decode(body)))
        sink.write(_LENGTH.pack(len(answer)) + answer)
        sink.flush()


if __name__ == "__main__":
    main()
