"""Order signatures checked in a child process, pipelined, off the event loop.

Checking an order's Ed25519 signature (libsodium through PyNaCl) is about half of the
order path's CPU in the server (bench/order_path.py), all of it on the event loop, which
also reads and writes every socket. A thread does not take it off: PyNaCl releases the
GIL inside libsodium, but each check needs the GIL back before and after the C call, and
while the event loop is busy a thread waits for the interpreter's switch interval (5 ms)
each time. Measured with a busy loop: 15 to 29 ms per 48 us check, and the loop itself
slowed down (docs/benchmarks.md). A child process has an interpreter of its own.

The order service `submit`s each turn's new orders as one request; requests go down the
child's stdin as soon as they are made, without waiting for earlier answers, so the
child always has the next request when it finishes one (one request in flight at a
time left the child idle while the answer travelled back and the next batch formed, and
orders waited for two batches: docs/benchmarks.md). Answers come back on its stdout in
request order and go to each request's callback in that order. At most
`orders_in_flight_max` orders are with the child; `room()` says how many more it takes,
and the caller keeps the rest queued (its own queue is bounded) until answers free room.

A request of fewer than `child_batch_min` orders, when nothing is in flight, is checked
here at once: with few orders coming the loop has time for them, and the trip to the
child and back would only add latency. If the child dies, or its oldest answer is more
than `answer_timeout_s` late, every request still in flight is checked here, in order,
so an order is never refused for the child's trouble; a new child is started at a later
request, at most once per `restart_interval_s`.

The order service sends at most `request_orders_max` orders in one request: after a burst,
the first answers come back while the child still checks the rest, and the loop takes
those orders on meanwhile (one request of 256 kept all of them waiting for the last).

Wire, both ways: frames of a 4-byte big-endian length and a msgpack body (msgspec). A
request is a list of [buyer_id, order_id, price_cents, quantity, sale_id, time_ms,
signature]; the answer is a list of [reason, detail, digest], reason "" for a valid one.
The child is `python -m livecommerce.pipeline.verifying`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Final, cast

import msgspec

from livecommerce.commerce.orders import PlaceOrder, SignatureCheck, check_order_signature
from livecommerce.commerce.results import Reason, Rejected

log = logging.getLogger("livecommerce.orders")

FRAME_BYTES_MAX: Final = 8 * 1024 * 1024
_LENGTH = struct.Struct(">I")

Wire = list[list[Any]]
Checked = Callable[[list[SignatureCheck]], None]


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


class _Request:
    __slots__ = ("commands", "deadline_s", "on_checked")

    def __init__(self, commands: Sequence[PlaceOrder], on_checked: Checked, deadline_s: float):
        self.commands = commands
        self.on_checked = on_checked
        self.deadline_s = deadline_s


class _ChildProtocol(asyncio.SubprocessProtocol):
    """The child's stdout, cut into answer frames; its exit."""

    def __init__(self, verifier: SignatureVerifier) -> None:
        self.verifier = verifier
        self.buffer = bytearray()
        self.transport: asyncio.SubprocessTransport | None = None
        self.gone = False
        self.exited: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's process transport has the methods but not the base class.
        self.transport = cast(asyncio.SubprocessTransport, transport)

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd != 1:
            return
        buffer = self.buffer
        buffer += data
        start = 0
        while len(buffer) - start >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(buffer, start)
            if length > FRAME_BYTES_MAX:
                self.verifier._child_failed(self, "answer frame too large")
                return
            end = start + _LENGTH.size + length
            if len(buffer) < end:
                break
            body = bytes(buffer[start + _LENGTH.size : end])
            start = end
            if not self.verifier._answered(self, body):
                return
        del buffer[:start]

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:
            self.gone = True
            self.verifier._child_failed(self, f"its stdout closed ({exc!r})")

    def process_exited(self) -> None:
        self.gone = True
        if not self.exited.done():
            self.exited.set_result(None)
        self.verifier._child_failed(self, "it exited")


class SignatureVerifier:
    def __init__(
        self,
        answer_timeout_s: float = 5.0,
        restart_interval_s: float = 10.0,
        child_batch_min: int = 1,
        orders_in_flight_max: int = 4_096,
        request_orders_max: int = 256,
    ) -> None:
        assert answer_timeout_s > 0
        assert restart_interval_s > 0
        assert child_batch_min >= 1
        assert orders_in_flight_max >= 1
        assert request_orders_max >= 1
        self.answer_timeout_s = answer_timeout_s
        self.restart_interval_s = restart_interval_s
        self.child_batch_min = child_batch_min
        self.orders_in_flight_max = orders_in_flight_max
        self.request_orders_max = request_orders_max  # callers split larger batches
        self._child: _ChildProtocol | None = None
        self._starting: asyncio.Task[None] | None = None
        self._started_at = -restart_interval_s
        self._in_flight: deque[_Request] = deque()
        self._orders_in_flight = 0
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._restart_timer: asyncio.TimerHandle | None = None
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(list[list[Any]])
        self.checked_in_child = 0
        self.checked_inline = 0
        self.requests_to_child = 0

    @property
    def child_pid(self) -> int | None:
        child = self._child
        if child is None or child.transport is None:
            return None
        return child.transport.get_pid()

    async def start(self) -> None:
        """Start the child (if that fails, orders are checked inline until a restart)."""
        await self._start_child()

    async def _start_child(self) -> None:
        self._started_at = time.monotonic()
        loop = asyncio.get_running_loop()
        protocol = _ChildProtocol(self)
        try:
            await loop.subprocess_exec(
                lambda: protocol,
                sys.executable,
                "-m",
                "livecommerce.pipeline.verifying",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=None,
            )
        except OSError as error:
            log.warning("signature checks stay in this process: %r", error)
            return
        if protocol.gone or self._closed:
            assert protocol.transport is not None
            protocol.transport.close()
            return
        self._child = protocol

    def room(self) -> int:
        """How many more orders `submit` takes now."""
        return self.orders_in_flight_max - self._orders_in_flight

    def submit(self, commands: Sequence[PlaceOrder], on_checked: Checked) -> None:
        """Check `commands` (at most `room()`); `on_checked` gets one `SignatureCheck` per
        command, in order, and the callbacks run in the order of the `submit`s: now, if the
        batch is checked here, or later from the event loop."""
        if not commands:
            on_checked([])
            return
        assert len(commands) <= self.room(), "submit at most room() orders"
        child = self._child
        if child is None:
            self._restart_later()
        # With nothing in flight (always so without a child), answering now keeps the
        # callbacks in the order of the submits.
        if child is None or (not self._in_flight and len(commands) < self.child_batch_min):
            self._check_here(commands, on_checked)
            return
        body = self._encoder.encode([_fields(command) for command in commands])
        if len(body) > FRAME_BYTES_MAX:
            # Never with the service's batches; the earlier requests are answered first.
            self._fail_over("a batch too large for one frame")
            self._check_here(commands, on_checked)
            return
        assert child.transport is not None
        stdin = cast(asyncio.WriteTransport, child.transport.get_pipe_transport(0))
        stdin.write(_LENGTH.pack(len(body)) + body)
        self.requests_to_child += 1
        loop = asyncio.get_running_loop()
        self._in_flight.append(_Request(commands, on_checked, loop.time() + self.answer_timeout_s))
        self._orders_in_flight += len(commands)
        if self._timer is None:
            self._timer = loop.call_at(self._in_flight[0].deadline_s, self._check_deadline)

    async def check(self, commands: Sequence[PlaceOrder]) -> list[SignatureCheck]:
        """One `SignatureCheck` per command, in order (`submit`, waited for)."""
        future: asyncio.Future[list[SignatureCheck]] = asyncio.get_running_loop().create_future()
        self.submit(commands, future.set_result)
        return await future

    def _check_here(self, commands: Sequence[PlaceOrder], on_checked: Checked) -> None:
        self.checked_inline += len(commands)
        on_checked([check_order_signature(command) for command in commands])

    def _answered(self, child: _ChildProtocol, body: bytes) -> bool:
        """An answer frame from `child`; False if it was refused (the child is then gone)."""
        if child is not self._child:
            return False
        if not self._in_flight:
            self._child_failed(child, "an answer nobody asked for")
            return False
        try:
            answers = self._decoder.decode(body)
        except msgspec.DecodeError as error:
            self._child_failed(child, f"a bad answer ({error})")
            return False
        request = self._in_flight[0]
        if len(answers) != len(request.commands):
            self._child_failed(child, f"{len(answers)} answers to {len(request.commands)}")
            return False
        self._in_flight.popleft()
        self._orders_in_flight -= len(request.commands)
        self.checked_in_child += len(answers)
        try:
            request.on_checked([_check_of(answer) for answer in answers])
        except Exception:
            log.exception("taking checked orders failed")
        return True

    def _check_deadline(self) -> None:
        self._timer = None
        if not self._in_flight:
            return
        loop = asyncio.get_running_loop()
        oldest = self._in_flight[0].deadline_s
        if loop.time() >= oldest:
            self._fail_over(f"no answer within {self.answer_timeout_s} s")
        else:
            self._timer = loop.call_at(oldest, self._check_deadline)

    def _child_failed(self, child: _ChildProtocol, why: str) -> None:
        if child is self._child:
            self._fail_over(why)

    def _fail_over(self, why: str) -> None:
        """Stop the child and check whatever it still had here, in order."""
        child, self._child = self._child, None
        if child is not None:
            if not self._closed:
                log.warning("signature checker failed (%s); checking here", why)
            if child.transport is not None:
                child.transport.close()  # closes the pipes and kills the process
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._in_flight:
            request = self._in_flight.popleft()
            self._orders_in_flight -= len(request.commands)
            try:
                self._check_here(request.commands, request.on_checked)
            except Exception:
                log.exception("taking checked orders failed")
        self._restart_later()

    def _restart_later(self) -> None:
        """Start a new child now, or when `restart_interval_s` has passed since the last."""
        if self._closed or self._child is not None:
            return
        if self._starting is not None and not self._starting.done():
            return
        loop = asyncio.get_running_loop()
        wait_s = self._started_at + self.restart_interval_s - time.monotonic()
        if wait_s > 0:
            if self._restart_timer is None:
                self._restart_timer = loop.call_later(wait_s, self._restart_due)
            return
        self._starting = loop.create_task(self._start_child())

    def _restart_due(self) -> None:
        self._restart_timer = None
        self._restart_later()

    async def close(self) -> None:
        """Stop the child; whatever it still had is checked here first."""
        self._closed = True
        if self._restart_timer is not None:
            self._restart_timer.cancel()
            self._restart_timer = None
        if self._starting is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._starting
        child = self._child
        self._fail_over("closing")
        if child is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(child.exited), self.answer_timeout_s)


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
