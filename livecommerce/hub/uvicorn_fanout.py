"""Room sockets served by the uvicorn WebSocket protocol itself: no ASGI task per viewer.

Under uvicorn and Starlette an idle viewer socket held about 25 KB of Python heap, nearly
all of it the running ASGI call: uvicorn's scope and headers, Starlette's middleware
frames, an asyncio task, queue and events, anyio's task group (docs/benchmarks.md). None
of it does anything while the viewer only listens. So for `/ws/rooms/{room_id}` this
protocol does the handshake itself (with the websockets sans-I/O `ServerProtocol` uvicorn
already uses), drops the request, and from then on is the connection:

- it is the hub's `Sink`: a broadcast's frame, encoded once, is written straight to the
  transport;
- frames from the client are parsed by the same `ServerProtocol` and handed to the hub
  synchronously (`Hub.receive`); a message that waits for the broker pauses reading until
  it is published, as the ASGI receive loop did;
- keepalive pings come from one ticker for the whole process (keepalive.py), not two
  timers per socket.

Every other WebSocket path is handed, untouched, to uvicorn's own protocol and so to the
Starlette app; so is everything under another ASGI server or Starlette's TestClient, where
`endpoints.room_socket` serves rooms through the portable queue. This module is the only
place that knows uvicorn's protocol internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from asyncio import BaseTransport, Transport
from typing import Any, ClassVar, cast
from urllib.parse import parse_qsl, unquote

from uvicorn.config import Config
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import Protocol, Side, State
from websockets.server import ServerProtocol

from livecommerce import protocol as m
from livecommerce.hub.broker import BrokerUnavailable
from livecommerce.hub.endpoints import parse_since
from livecommerce.hub.fanout import Outgoing
from livecommerce.hub.hub import CLOSE_UNSUPPORTED_DATA, Connection, Hub, JoinRefused
from livecommerce.hub.keepalive import KeepaliveSweep

log = logging.getLogger("livecommerce.hub.socket")

ROOM_PATH = re.compile(r"/ws/rooms/([^/]+)")
# After a close frame the peer has this long to answer before the socket is cut.
CLOSE_TIMEOUT_S = 2.0
# RFC 6455 §5.5.2: a ping with no payload, unmasked (servers never mask). Any frame back
# counts as the answer, so the payload need not tell pings apart.
PING_FRAME = b"\x89\x00"
# RFC 6455 §5.5: a control frame's payload is at most 125 bytes, 2 of them the close code.
CLOSE_REASON_BYTES_MAX = 123
CLOSE_INVALID_DATA = 1007
CLOSE_INTERNAL_ERROR = 1011
CLOSE_GOING_AWAY = 1001


class KeepaliveTicker:
    """Arms one loop timer for a `KeepaliveSweep` while it watches any socket.

    Ticks are due at fixed times (call_at), so a loop busy with fan-outs delays a tick but
    does not stretch the interval: re-arming from the late tick would add every delay up.
    """

    def __init__(self, sweep: KeepaliveSweep, loop: asyncio.AbstractEventLoop) -> None:
        self.sweep = sweep
        self._loop = loop
        self._tick_s = sweep.tick_ms / 1000
        self._due_s = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def add(self, peer: RoomSocketProtocol) -> None:
        self.sweep.add(peer)
        if self._timer is None:
            self._due_s = self._loop.time() + self._tick_s
            self._timer = self._loop.call_at(self._due_s, self._tick)

    def _tick(self) -> None:
        self._timer = None
        try:
            self.sweep.tick()
        finally:
            if self.sweep.peers:
                # More than a tick behind (a stall): start again from now, do not race.
                self._due_s = max(self._due_s + self._tick_s, self._loop.time())
                self._timer = self._loop.call_at(self._due_s, self._tick)


class RoomSocketProtocol(asyncio.Protocol):
    """One WebSocket: the handshake, then either a room connection or a hand-over to
    uvicorn's ASGI protocol. `configured` makes the class uvicorn is given."""

    # Set on the configured subclass.
    hub_holder: ClassVar[Any] = None  # an object whose `.state.hub` is the Hub (the app)
    socket_send_buffer_bytes: ClassVar[int | None] = None
    ping_interval_ms: ClassVar[int] = 20_000
    ping_tick_ms: ClassVar[int] = 250
    keepalive: ClassVar[KeepaliveTicker | None] = None
    trusted_proxies: ClassVar[Any] = None  # uvicorn's trusted hosts, when proxy headers are on

    __slots__ = (
        "__weakref__",  # tests check that nothing keeps a closed socket alive
        "_app_state",
        "_config",
        "_fragments",
        "_held",
        "_server_state",
        "close_timer",
        "conn",
        "connection",
        "delegate",
        "handshake_bytes",
        "heard",
        "hub",
        "keepalive_slot",
        "open",
        "ping_sent",
        "reading_paused",
        "transport",
        "waiting",
    )

    @classmethod
    def configured(
        cls,
        app: Any,
        socket_send_buffer_bytes: int | None,
        ping_interval_ms: int,
    ) -> type[RoomSocketProtocol]:
        return type(
            "ConfiguredRoomSocketProtocol",
            (cls,),
            {
                "__slots__": (),
                "hub_holder": app,
                "socket_send_buffer_bytes": socket_send_buffer_bytes,
                "ping_interval_ms": ping_interval_ms,
                "ping_tick_ms": min(cls.ping_tick_ms, ping_interval_ms),
            },
        )

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._config = config
        self._server_state = server_state
        self._app_state = app_state
        self.transport: Transport | None = None
        self.conn: Protocol = ServerProtocol(max_size=config.ws_max_size, logger=log)
        # Bytes of the handshake request, kept until it is parsed, to replay them to
        # uvicorn's protocol if the path is not a room's.
        self.handshake_bytes: bytearray | None = bytearray()
        self.hub: Hub | None = None
        self.connection: Connection | None = None
        # uvicorn's protocol, for a socket that is not a room's (see _hand_over).
        self.delegate: WebSocketsSansIOProtocol | None = None
        self.open = False  # the handshake is done and no close frame was sent
        self.waiting = False  # on the hub (a join, a publish): reading is paused
        self.reading_paused = False
        self._held: list[Any] | None = None  # events parsed while waiting, in order
        self._fragments: list[bytes] | None = None
        self.close_timer: asyncio.TimerHandle | None = None
        self.keepalive_slot = -1
        self.ping_sent = False
        self.heard = False

    # asyncio.Protocol

    def connection_made(self, transport: BaseTransport) -> None:
        self.transport = cast(Transport, transport)
        sock = transport.get_extra_info("socket")
        if self.socket_send_buffer_bytes is not None and sock is not None:
            # Fixed, not autotuned: left alone Linux grows it to net.ipv4.tcp_wmem's
            # maximum (4 MiB here) for a client that stopped reading, and the hub's byte
            # limit, which counts what waits in the process, would never trip. Linux
            # doubles the value for its own bookkeeping.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.socket_send_buffer_bytes)
        self._server_state.connections.add(cast(Any, self))

    def data_received(self, data: bytes) -> None:
        if self.delegate is not None:
            self.delegate.data_received(data)
            return
        if self.handshake_bytes is not None:
            self.handshake_bytes += data
        self.heard = True
        self.conn.receive_data(data)
        self._handle(self.conn.events_received())

    def eof_received(self) -> bool | None:
        if self.delegate is not None:
            self.delegate.eof_received()
        return None  # the transport closes; connection_lost follows

    def pause_writing(self) -> None:
        if self.delegate is not None:
            self.delegate.pause_writing()
        # The hub reads the buffer's size itself; its writes never wait.

    def resume_writing(self) -> None:
        if self.delegate is not None:
            self.delegate.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.delegate is not None:
            self.delegate.connection_lost(exc)
            return
        self.open = False
        self._server_state.connections.discard(cast(Any, self))
        if self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = None
        self._leave()

    # uvicorn's shutdown: the documented close for a server going away.

    def shutdown(self) -> None:
        transport = self.transport
        if transport is None:
            return
        if self.open:
            self._send_close(CLOSE_GOING_AWAY, "server shutting down")
        self._close_transport()

    # The hub's Sink

    def buffered_bytes(self) -> int:
        transport = self.transport
        return transport.get_write_buffer_size() if transport is not None else 0

    def write(self, message: Outgoing) -> None:
        """Write one whole frame (RFC 6455 §5.2); frames never interleave on the event loop."""
        if self.open:
            cast(Transport, self.transport).write(message.frame)

    def write_many(self, messages: list[Outgoing]) -> None:
        """Several whole frames in one socket write."""
        if self.open:
            cast(Transport, self.transport).write(b"".join([m.frame for m in messages]))

    def close(self, code: int, reason: str) -> None:
        """Send a close frame now, whatever the buffer holds, and cut the socket soon after.

        Waiting for the buffer to drain first would wait forever on a client that stopped
        reading.
        """
        if not self.open:
            return
        self._send_close(code, reason)
        transport = cast(Transport, self.transport)
        if self.reading_paused:
            # Read on, if only for the client's answering close frame.
            self.reading_paused = False
            transport.resume_reading()
        self.close_timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_S, transport.abort)

    # The keepalive sweep's peer

    def send_ping(self) -> None:
        if self.open:
            cast(Transport, self.transport).write(PING_FRAME)

    def expire(self) -> None:
        """Nothing arrived for a whole interval after a ping: the peer is gone."""
        if self.open:
            self._send_close(CLOSE_INTERNAL_ERROR, "keepalive ping timeout")
            transport = cast(Transport, self.transport)
            if transport.get_write_buffer_size():
                # It has not read either: a close would wait for the buffer forever.
                transport.abort()
            else:
                transport.close()

    # Incoming events

    def _handle(self, events: list[Any]) -> None:
        for index, event in enumerate(events):
            if self.waiting and self.open and type(event) is Frame:
                # Keep the rest, a close frame too, for when the hub is done with this
                # client's last message: its messages are handled in the order sent.
                self._held = (self._held or []) + events[index:]
                break
            if type(event) is Request:
                if not self._handshake(event):
                    return  # handed over to uvicorn's protocol
            else:
                self._frame(event)
        self._flush()

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT:
            data = bytes(frame.data)  # already bytes: the same object, not a copy
            if frame.fin:
                self._text(data)
            else:
                self._fragments = [data]
        elif opcode is Opcode.CONT:
            # The ServerProtocol refuses a continuation with no message open (1002).
            if self._fragments is not None:
                self._fragments.append(bytes(frame.data))
                if frame.fin:
                    payload, self._fragments = b"".join(self._fragments), None
                    self._text(payload)
        elif opcode is Opcode.BINARY:
            self.close(CLOSE_UNSUPPORTED_DATA, "binary frames are not accepted; send JSON text")
        elif opcode is Opcode.CLOSE:
            # The ServerProtocol queued the answering close frame and the end of the stream.
            self.open = False
            self._leave()
        # A ping's pong is queued by the ServerProtocol; a pong needs nothing.

    def _text(self, payload: bytes) -> None:
        connection = self.connection
        if connection is None or not self.open:
            return
        try:
            text = payload.decode()
        except UnicodeDecodeError:
            self.close(CLOSE_INVALID_DATA, "text frames must be UTF-8")
            return
        hub = cast(Hub, self.hub)
        published = hub.receive(connection, text)
        if published is not None:
            self._wait(published)

    def _flush(self) -> None:
        """Write what the ServerProtocol has to send: handshake, pongs, close frames.

        While the hub is busy with this client's last message it waits too: the
        ServerProtocol answers a close frame as soon as it parses it, and the answer (and
        the end of the connection) must not overtake the messages sent before it.
        """
        if self.waiting and self.open:
            return
        writes = self.conn.data_to_send()
        transport = self.transport
        if not writes or transport is None:
            return
        for data in writes:
            if data:
                transport.write(data)
            else:
                # The end of the stream (websockets' SEND_EOF): a server closes the TCP
                # connection once the closing handshake is done, or when it fails it.
                self.open = False
                self._end_stream()
                self._leave()

    # Waiting on the hub without a task: reading pauses, events are held, in order.

    def _wait(self, done: asyncio.Future[Any]) -> None:
        self.waiting = True
        if not self.reading_paused and self.open:
            self.reading_paused = True
            cast(Transport, self.transport).pause_reading()
        done.add_done_callback(self._done_waiting)

    def _done_waiting(self, done: asyncio.Future[Any]) -> None:
        self.waiting = False
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        held, self._held = self._held, None
        if held:
            self._handle(held)
        else:
            self._flush()
        if not self.waiting and self.reading_paused:
            self.reading_paused = False
            transport.resume_reading()

    # The handshake

    def _handshake(self, request: Request) -> bool:
        """Accept a room socket and join it; False when handed over to uvicorn's protocol."""
        raw = bytes(self.handshake_bytes or b"")
        self.handshake_bytes = None
        path, _, query = request.path.partition("?")
        room = ROOM_PATH.fullmatch(unquote(path))
        hub: Hub | None = getattr(getattr(self.hub_holder, "state", None), "hub", None)
        if room is None or hub is None:
            self._hand_over(raw)
            return False
        handshake = cast(ServerProtocol, self.conn)
        response = handshake.accept(request)
        if response.status_code != 101:
            handshake.send_response(response)  # and the end of the stream: _flush closes
            return True
        del response.headers["Date"]
        for name, value in self._server_state.default_headers:
            response.headers[name.decode("latin-1")] = value.decode("latin-1")
        handshake.send_response(response)
        self._flush()
        if raw.endswith(b"\r\n\r\n") and raw.find(b"\r\n\r\n") == len(raw) - 4:
            # Nothing came after the request, so no frame is half parsed: go on with a bare
            # frame parser. The ServerProtocol's parser keeps the request and its headers
            # (about 2 KB) alive for as long as the socket lives.
            self.conn = Protocol(
                Side.SERVER, state=State.OPEN, max_size=self._config.ws_max_size, logger=log
            )
        self.open = True
        self.hub = hub
        self._keepalive().add(self)
        parameters = dict(parse_qsl(query, keep_blank_values=True))
        address = self._client_address(request)
        room_id = room.group(1)
        since = parse_since(parameters.get("since", ""))
        viewer_token = parameters.get("viewer", "")
        replica = hub.replicas.get(room_id)
        if replica is not None:
            try:
                self.connection = hub.admit(room_id, replica, self, address, viewer_token, since)
            except JoinRefused as refused:
                self._refuse(refused.code, refused.message, refused.close_code, refused.message)
            return True
        # The room is not loaded in this process yet (a broker round trip): one short task.
        loop = asyncio.get_running_loop()
        joining = loop.create_task(hub.join(room_id, self, address, viewer_token, since))
        joining.add_done_callback(self._joined)  # before _wait's: held frames need the join
        self._wait(joining)
        return True

    def _joined(self, joining: asyncio.Task[Connection]) -> None:
        if joining.cancelled():
            self._refuse("unavailable", "not joined", 1013, "try again later")
            return
        error = joining.exception()
        if isinstance(error, JoinRefused):
            self._refuse(error.code, error.message, error.close_code, error.message)
        elif isinstance(error, BrokerUnavailable):
            self._refuse("unavailable", str(error), 1013, "try again later")
        elif error is not None:
            log.error("joining a room failed", exc_info=error)
            self._refuse("unavailable", "not joined", CLOSE_INTERNAL_ERROR, "join failed")
        else:
            self.connection = joining.result()
            if not self.open:
                self._leave()  # gone while joining, or closed by the join itself

    def _refuse(self, code: str, message: str, close_code: int, reason: str) -> None:
        self.write(Outgoing(m.encode(m.Error(code=code, message=message))))
        self.close(close_code, reason)

    def _hand_over(self, raw: bytes) -> None:
        """Not a room: uvicorn's own protocol takes the socket and the request's bytes.

        uvicorn's HTTP protocol sets this one on the transport after handing it the
        request, so until the delegate replaces it there (next loop turn) this one
        forwards every call to it.
        """
        transport = cast(Transport, self.transport)
        self._server_state.connections.discard(cast(Any, self))
        delegate = WebSocketsSansIOProtocol(
            config=self._config, server_state=self._server_state, app_state=self._app_state
        )
        self.delegate = delegate
        delegate.connection_made(transport)
        delegate.data_received(raw)
        asyncio.get_running_loop().call_soon(transport.set_protocol, delegate)

    def _client_address(self, request: Request) -> str:
        """The client's host, or the one a trusted proxy names (as uvicorn's middleware)."""
        peer = cast(Transport, self.transport).get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        proxies = self.trusted_proxies
        if proxies is None and self._config.proxy_headers:
            proxies = ProxyHeadersMiddleware(
                cast(Any, None), trusted_hosts=self._config.forwarded_allow_ips
            ).trusted_hosts
            type(self).trusted_proxies = proxies
        if proxies is not None and host in proxies:
            forwarded = request.headers.get_all("X-Forwarded-For")
            if forwarded:
                forwarded_host, _ = proxies.get_trusted_client_address(", ".join(forwarded))
                if forwarded_host:
                    host = str(forwarded_host)
        return host

    # Closing

    def _send_close(self, code: int, reason: str) -> None:
        self.open = False
        self._leave()
        encoded = reason.encode()[:CLOSE_REASON_BYTES_MAX]
        with contextlib.suppress(Exception):
            self.conn.send_close(code, encoded.decode(errors="ignore"))
        writes = self.conn.data_to_send()
        if writes:
            cast(Transport, self.transport).write(b"".join(writes))

    def _end_stream(self) -> None:
        """Half-close: our close frame, then FIN; read on (the ServerProtocol discards what
        comes) until the peer closes too, or cut after CLOSE_TIMEOUT_S.

        A full close with the client's bytes still unread (it was sending a message when
        the server failed the connection, 1009 for one over the limit) makes the kernel
        answer with a reset, and a reset can destroy the close frame before the client
        reads it: the client saw 1006, not the documented code (RFC 6455 §7.1.1: the
        server closes the TCP connection first; it need not close it abruptly).
        """
        transport = cast(Transport, self.transport)
        if not transport.can_write_eof():
            self._close_transport()
            return
        if self.reading_paused:
            self.reading_paused = False
            transport.resume_reading()
        transport.write_eof()
        if self.close_timer is None:
            loop = asyncio.get_running_loop()
            self.close_timer = loop.call_later(CLOSE_TIMEOUT_S, transport.abort)

    def _close_transport(self) -> None:
        """Close once the buffer is written; cut the socket if that takes too long (a
        client that stopped reading would otherwise hold it open for good)."""
        transport = cast(Transport, self.transport)
        transport.close()
        if transport.get_write_buffer_size() and self.close_timer is None:
            loop = asyncio.get_running_loop()
            self.close_timer = loop.call_later(CLOSE_TIMEOUT_S, transport.abort)

    def _leave(self) -> None:
        """The hub forgets this socket, and so does the keepalive; safe more than once."""
        keepalive = self.keepalive
        if keepalive is not None:
            keepalive.sweep.remove(self)
        connection = self.connection
        if connection is not None and self.hub is not None:
            # Dropped here: the connection points back at this protocol (its sink).
            self.connection = None
            self.hub.leave(connection)

    @classmethod
    def _keepalive(cls) -> KeepaliveTicker:
        if cls.keepalive is None:
            sweep = KeepaliveSweep(cls.ping_interval_ms, cls.ping_tick_ms)
            cls.keepalive = KeepaliveTicker(sweep, asyncio.get_running_loop())
        return cls.keepalive
