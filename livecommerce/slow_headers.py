"""A deadline for a request's head: uvicorn's h11 protocol has none.

uvicorn times out an idle keep-alive connection after a response (`timeout_keep_alive`),
but a connection that has sent no complete request head yet has no timer at all: one that
sends nothing, or a header a byte a second (slowloris), is held for as long as the client
likes, a socket and a file descriptor each, and a few thousand of them exhaust the process.

`HeaderDeadlineProtocol` arms a timer whenever the connection waits for a request head (on
connect, and when the first bytes of the next request arrive after a response) and cancels
it once h11 has the whole head. When it fires the client gets `408 Request Timeout` and the
connection is closed. A WebSocket upgrade cancels it too: from then on the socket's own
keepalive (room sockets) or uvicorn's pings watch it.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

_TIMEOUT_BODY = b"the request head took too long; closed\n"
TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: %d\r\n"
    b"connection: close\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY)
)


class HeaderDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request head; `configured` sets it."""

    header_timeout_s: ClassVar[float] = 10.0

    @classmethod
    def configured(cls, header_timeout_ms: int) -> type[HeaderDeadlineProtocol]:
        return type(
            "ConfiguredHeaderDeadlineProtocol",
            (cls,),
            {"header_timeout_s": header_timeout_ms / 1000},
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            self._disarm()  # closed, or handed over to a WebSocket protocol
        elif self.conn.their_state is h11.IDLE:
            # No whole head yet: this request's first bytes, or more of them.
            if self._head_deadline is None and self.conn.our_state is h11.IDLE:
                self._arm()
        else:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        self._disarm()
        super().handle_websocket_upgrade(event)

    def _arm(self) -> None:
        self._disarm()
        self._head_deadline = self.loop.call_later(self.header_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _too_slow(self) -> None:
        self._head_deadline = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        self.transport.write(TIMEOUT_RESPONSE)
        self.transport.close()
