"""Cheap WebSocket viewers for the fan-out benchmark; one process holds thousands of sockets.

Each socket is a `raw_websocket.RawClientSocket` (the upgrade by hand, minimal frame parsing,
pings answered). It counts text frames and, on every `sample_every`-th socket, reads the
publisher's `time.time_ns()` from the pinned product's title (`"title":"bench <ns>"`) to
measure publish-to-receive latency.

The parent drives a worker over a multiprocessing pipe with small tuples, see `_command`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from multiprocessing.connection import Connection
from typing import Any

from raw_websocket import RawClientSocket, upgrade_request

MARK = b'"title":"bench '
CONNECT_CONCURRENCY = 200
CONNECT_TIMEOUT_S = 60.0


class Counters:
    __slots__ = ("bytes", "close_codes", "closed", "frames", "latencies_us", "pins")

    def __init__(self) -> None:
        self.frames = 0
        self.pins = 0
        self.bytes = 0
        self.closed = 0
        self.close_codes: dict[int, int] = {}
        self.latencies_us: list[int] = []


class Viewer(RawClientSocket):
    """Counts text frames; a sampling viewer also reads the publish time of every pin."""

    def __init__(
        self, request: bytes, counters: Counters, sampling: bool, ready: asyncio.Future[bool]
    ):
        super().__init__(request, ready)
        self.counters = counters
        self.sampling = sampling

    def connection_lost(self, exc: Exception | None) -> None:
        self.counters.closed += 1
        if self.close_code is not None:
            codes = self.counters.close_codes
            codes[self.close_code] = codes.get(self.close_code, 0) + 1
        super().connection_lost(exc)

    def text(self, buffer: bytes, start: int, end: int, frame_bytes: int) -> None:
        counters = self.counters
        counters.frames += 1
        counters.bytes += frame_bytes
        if self.sampling:
            mark = buffer.find(MARK, start, end)
            if mark >= 0:
                digits = mark + len(MARK)
                quote = buffer.find(b'"', digits, end)
                counters.pins += 1
                counters.latencies_us.append((time.time_ns() - int(buffer[digits:quote])) // 1000)


class Worker:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.counters = Counters()
        self.viewers: list[Viewer] = []
        self.stalled: list[Viewer] = []
        self.failed = 0

    async def connect(
        self, path: str, count: int, sample_every: int, first_index: int
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        request = upgrade_request(self.host, self.port, path)
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one(index: int) -> None:
            async with gate:
                ready: asyncio.Future[bool] = loop.create_future()
                viewer = Viewer(request, self.counters, index % sample_every == 0, ready)
                try:
                    await loop.create_connection(lambda: viewer, self.host, self.port)
                    ok = await asyncio.wait_for(ready, CONNECT_TIMEOUT_S)
                except (OSError, TimeoutError):
                    ok = False
                if ok:
                    self.viewers.append(viewer)
                else:
                    self.failed += 1
                    if viewer.transport is not None:
                        viewer.transport.abort()

        await asyncio.gather(*(one(first_index + i) for i in range(count)))
        return {"open": len(self.viewers), "failed": self.failed}

    def stall(self, fraction_every: int, receive_buffer: int) -> int:
        """Stop reading on every `fraction_every`-th socket (not sampled ones): a slow consumer."""
        for index, viewer in enumerate(self.viewers):
            if index % fraction_every == fraction_every // 2 and viewer.transport is not None:
                viewer.sampling = False
                if receive_buffer:
                    sock = viewer.transport.get_extra_info("socket")
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
                viewer.transport.pause_reading()
                self.stalled.append(viewer)
        return len(self.stalled)

    def unstall(self) -> None:
        for viewer in self.stalled:
            if viewer.transport is not None and not viewer.transport.is_closing():
                viewer.transport.resume_reading()
        self.stalled = []

    def take(self) -> dict[str, Any]:
        counters = self.counters
        self.counters = Counters()
        for viewer in self.viewers:
            viewer.counters = self.counters
        return {
            "frames": counters.frames,
            "pins": counters.pins,
            "bytes": counters.bytes,
            "closed": counters.closed,
            "close_codes": counters.close_codes,
            "latencies_us": counters.latencies_us,
            "open": sum(
                1 for v in self.viewers if v.transport is not None and not v.transport.is_closing()
            ),
        }

    def close_all(self) -> None:
        for viewer in self.viewers:
            if viewer.transport is not None:
                viewer.transport.abort()
        self.viewers = []


def _command(worker: Worker, message: tuple[Any, ...]) -> Any:
    kind = message[0]
    if kind == "take":
        return worker.take()
    if kind == "stall":
        return worker.stall(message[1], message[2])
    if kind == "unstall":
        worker.unstall()
        return True
    if kind == "close":
        worker.close_all()
        return True
    raise ValueError(kind)


async def _serve(pipe: Connection, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    worker = Worker(host, port)
    done: asyncio.Future[None] = loop.create_future()
    busy: set[asyncio.Task[None]] = set()

    async def run_connect(message: tuple[Any, ...]) -> None:
        pipe.send(await worker.connect(*message[1:]))

    def on_readable() -> None:
        try:
            message = pipe.recv()
        except (EOFError, OSError):
            message = ("exit",)
        if message[0] == "exit":
            if not done.done():
                done.set_result(None)
            return
        if message[0] == "connect":
            task = loop.create_task(run_connect(message))
            busy.add(task)
            task.add_done_callback(busy.discard)
            return
        pipe.send(_command(worker, message))

    loop.add_reader(pipe.fileno(), on_readable)
    try:
        await done
    finally:
        loop.remove_reader(pipe.fileno())
        worker.close_all()


def worker_main(pipe: Connection, host: str, port: int) -> None:
    """Entry point of a client process; exits when the parent says so or goes away."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(pipe, host, port))
    else:
        uvloop.run(_serve(pipe, host, port))
