"""The hub: rooms, their connections in this process, and the ticker that flushes state.

Adapters call in (`join`, `receive`, `leave`, `host_command`, `set_stock`, `publish_sale`);
the broker calls back with sequenced events and coalesced totals. Everything that changes
a room goes through the broker, so embedded and scaled-out runs take one code path.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from livecommerce import protocol as m
from livecommerce.hub.broker import Broker, BrokerUnavailable, LoadedRoom, Totals
from livecommerce.hub.fanout import Member, Outgoing, RoomGroup, Sink
from livecommerce.hub.ratelimit import TokenBucket
from livecommerce.hub.room import Rejection, Room, RoomInfo, RoomLimits

log = logging.getLogger("livecommerce.hub")

CLOSE_FLOOD = 1008
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_SERVER_FULL = 1013
CLOSE_BANNED = 4003
CLOSE_ROOM_NOT_FOUND = 4004
CLOSE_ROOM_ENDED = 4010
CLOSE_TOO_MANY_CONNECTIONS = 4029


@dataclass(frozen=True)
class HubLimits:
    room: RoomLimits
    buffer_bytes_max: int
    buffer_bytes_soft: int
    comments_per_10s_max: int
    frames_per_s_max: int
    frames_burst_max: int
    shares_per_min_max: int
    host_auth_failures_max: int
    connections_per_address_max: int
    connections_max: int
    rooms_max: int
    state_flush_interval_ms: int
    viewer_heartbeat_ms: int
    # Coalesced state frames this process writes a second, all rooms together: a room's
    # state goes out every `state_flush_interval_ms` while the process has few viewers,
    # less often when it has many (`state_interval_ms`).
    state_deliveries_per_s_max: int = 10_000
    # A room's state goes to `state_writes_per_slice` sockets at a time, with a pause of
    # `state_slice_pause_ms` after each slice. Written back to back, 2,000 sockets held the
    # event loop for about 30 ms (a socket write is 10 us or more), five times a second,
    # and every order waiting behind them (p99 28 ms at 1,000 orders a second against
    # 7-10 ms paced: docs/benchmarks.md). Paced, a socket costs 44 us of wall time or less,
    # under half the 100 us a viewer adds to the state interval at the default budget, so
    # a fan-out ends before the next one is due.
    state_writes_per_slice: int = 64
    state_slice_pause_ms: int = 2
    # Client messages that wait for the broker (comments, host commands): at most this many
    # queued in the process (beyond it: `busy`, retry) and this many publishing at once.
    # A connection reads nothing more until its own has been published, so it never has
    # more than one queued.
    publish_queue_max: int = 10_000
    publishes_in_flight_max: int = 16


class Activity(Protocol):
    """Told of what viewers do (livecommerce/commerce/operating.py counts it); must not
    block."""

    def joined(self, room_id: str, viewer_id: str, now_ms: int) -> None: ...

    def left(self, room_id: str, watched_ms: int, now_ms: int) -> None: ...

    def commented(self, room_id: str, now_ms: int) -> None: ...

    def liked(self, room_id: str, count: int, now_ms: int) -> None: ...


class Connection(Member):
    """One client socket in one room."""

    __slots__ = (
        "address",
        "admitted",
        "admitted_at_ms",
        "comment_bucket",
        "frame_bucket",
        "host_auth_failures",
        "is_host",
        "replica",
        "share_bucket",
        "viewer_id",
    )

    def __init__(
        self,
        sink: Sink,
        replica: Replica,
        viewer_id: str,
        address: str,
        limits: HubLimits,
        now_ms: int,
    ) -> None:
        super().__init__(sink)
        self.replica = replica
        self.viewer_id = viewer_id
        self.address = address
        self.is_host = False
        self.admitted = False
        self.admitted_at_ms = now_ms
        self.host_auth_failures = 0
        self.frame_bucket = TokenBucket(
            limits.frames_burst_max, max(1, 1000 // limits.frames_per_s_max), now_ms
        )
        self.comment_bucket = TokenBucket(
            limits.comments_per_10s_max, 10_000 // limits.comments_per_10s_max, now_ms
        )
        self.share_bucket = TokenBucket(
            limits.shares_per_min_max, 60_000 // limits.shares_per_min_max, now_ms
        )

    def send(self, message: Any) -> None:
        self.write(Outgoing(m.encode(message)))

    def send_soon(self, message: Any) -> None:
        """Send `message` with the next frame this connection is written (its next state,
        most often), at most two state intervals from now: for what can wait (receipts)."""
        self.replica.group.hold(self, Outgoing(m.encode(message)))

    def error(self, code: str, text: str) -> None:
        self.send(m.Error(code=code, message=text))


class Replica:
    """This process's copy of one room, its connections here and its unflushed counters."""

    def __init__(self, room: Room, group: RoomGroup) -> None:
        self.room = room
        self.group = group
        self.likes_delta = 0
        self.shares_delta = 0
        self.stock_changes: dict[str, int] = {}
        self.viewers_flushed = -1
        self.flushed_at_ms = 0
        self.changed: set[str] = set()  # totals changed since the last state broadcast
        self.state_sent_at_ms: int | None = None
        self.state_writer: asyncio.TimerHandle | None = None  # writes the next slice of state
        self.syncing = False


class JoinRefused(Exception):
    def __init__(self, close_code: int, code: str, message: str) -> None:
        super().__init__(message)
        self.close_code = close_code
        self.code = code
        self.message = message


class Hub:
    def __init__(
        self, broker: Broker, limits: HubLimits, secret: bytes, clock_ms: Callable[[], int]
    ) -> None:
        self.broker = broker
        self.limits = limits
        self._secret = secret
        self.clock_ms = clock_ms
        self.replicas: dict[str, Replica] = {}
        self._loading: dict[str, asyncio.Future[Replica | None]] = {}
        self.connections = 0
        self._per_address: dict[str, int] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._publish_queue: deque[
            tuple[Connection, Replica, m.RoomEvent, bool, asyncio.Future[None]]
        ] = deque()
        self._publishers: set[asyncio.Task[None]] = set()
        self.deliveries = 0
        # Called with the room id when a room ends (video teardown, sales); must not block.
        self.room_ended_listeners: list[Callable[[str], None]] = []
        # Told of each room this process creates (the order path tells it of its sales).
        self.room_created_listeners: list[Callable[[str], None]] = []
        # Takes `order/v1` and `pay/v1` from a connection (the app sets it to the order
        # service); answers go back on the connection later. Must not block.
        self.order_handler: Callable[[Connection, m.OrderMessage], None] | None = None
        self.activity: Activity | None = None
        # Called with (room_id, the closed poll) by the process that closed it, once (the
        # app records the tally on the ledger); must not block.
        self.poll_closed_listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self._poll_timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._polls_closing: set[tuple[str, str]] = set()
        self._answers_in_flight = 0

    async def start(self) -> None:
        await self.broker.start(self._on_event, self._on_state, self._resync)
        self._ticker = asyncio.create_task(self._tick_forever(), name="hub-ticker")

    async def close(self) -> None:
        for replica in self.replicas.values():
            if replica.state_writer is not None:
                replica.state_writer.cancel()
                replica.state_writer = None
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        for timer in self._poll_timers.values():
            timer.cancel()
        self._poll_timers.clear()
        for publisher in list(self._publishers):
            publisher.cancel()
        while self._publish_queue:
            done = self._publish_queue.popleft()[4]
            if not done.done():
                done.set_result(None)
        for replica in self.replicas.values():
            for member in list(replica.group.members):
                member.release()
                member.sink.close(1001, "server shutting down")
        await self.broker.close()

    # Rooms

    async def create_room(self, title: str, host_name: str, room_id: str = "") -> tuple[str, str]:
        """A new room and its host credential; the credential is returned once, never stored."""
        if len(self.replicas) >= self.limits.rooms_max:
            raise ValueError(f"this server holds at most {self.limits.rooms_max} rooms")
        host_token = secrets.token_urlsafe(24)
        info = RoomInfo(
            room_id=room_id or secrets.token_urlsafe(8),
            title=title,
            host_name=host_name,
            host_token_sha256=hashlib.sha256(host_token.encode()).hexdigest(),
        )
        if not await self.broker.create_room(info):
            raise ValueError(f"room {info.room_id!r} exists already")
        for listener in self.room_created_listeners:
            listener(info.room_id)
        return info.room_id, host_token

    async def host_token_matches(self, room_id: str, token: str) -> bool:
        replica = await self.replica(room_id)
        return replica is not None and replica.room.info.host_token_matches(token)

    async def room_open(self, room_id: str) -> bool:
        """The room exists and has not ended."""
        replica = await self.replica(room_id)
        return replica is not None and not replica.room.ended

    async def replica(self, room_id: str) -> Replica | None:
        """This process's replica of the room, loading it (once) on first use."""
        replica = self.replicas.get(room_id)
        if replica is not None:
            return replica
        loading = self._loading.get(room_id)
        if loading is not None:
            return await loading
        future: asyncio.Future[Replica | None] = asyncio.get_running_loop().create_future()
        self._loading[room_id] = future
        try:
            # Subscribe first, so no event falls between the load and the subscription;
            # events up to the loaded sequence are dropped as duplicates in `_on_event`.
            replica = await self._load(room_id)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as error:
            future.set_exception(error)
            future.exception()  # retrieved here; concurrent joiners re-raise it themselves
            raise
        else:
            future.set_result(replica)
            return replica
        finally:
            del self._loading[room_id]

    async def _load(self, room_id: str) -> Replica | None:
        if len(self.replicas) >= self.limits.rooms_max:
            raise BrokerUnavailable("this process holds as many rooms as it may")
        await self.broker.subscribe(room_id)
        loaded = await self.broker.load_room(room_id)
        if loaded is None:
            return None
        replica = Replica(
            self._room_from(loaded),
            RoomGroup(self.limits.buffer_bytes_max, self.limits.buffer_bytes_soft),
        )
        self.replicas[room_id] = replica
        return replica

    def _room_from(self, loaded: LoadedRoom) -> Room:
        first = loaded.history[0][0] - 1 if loaded.history else loaded.sequence
        room = Room(loaded.info, self.limits.room, sequence=first)
        for sequence, body in loaded.history:
            room.apply(sequence, m.decode_event(body), m.with_sequence(sequence, body))
        room.sequence = loaded.sequence
        # The broker's state fields are as of `loaded.sequence`, newer than any history.
        room.pinned = loaded.pinned
        room.live = loaded.live
        room.ended = loaded.ended
        room.slow_mode_ms = loaded.slow_mode_ms
        room.sale = loaded.sale
        room.keywords = loaded.keywords
        room.banned = set(loaded.banned)
        room.muted_until_ms = dict(loaded.muted_until_ms)
        room.poll = dict(loaded.poll) if loaded.poll is not None else room.poll
        self._apply_totals(room, loaded.totals)
        return room

    # Connections

    def viewer_token(self, viewer_id: str) -> str:
        mac = hmac.new(self._secret, viewer_id.encode(), hashlib.sha256).digest()[:16]
        return f"{viewer_id}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"

    def viewer_from_token(self, token: str) -> str | None:
        viewer_id, _, _ = token.partition(".")
        if viewer_id and hmac.compare_digest(self.viewer_token(viewer_id), token):
            return viewer_id
        return None

    async def join(
        self, room_id: str, sink: Sink, address: str, viewer_token: str, since: int | None
    ) -> Connection:
        """Admit a socket to a room, loading the room first if this process has not yet."""
        self._check_capacity(address)
        replica = await self.replica(room_id)
        return self.admit(room_id, replica, sink, address, viewer_token, since)

    def admit(
        self,
        room_id: str,
        replica: Replica | None,
        sink: Sink,
        address: str,
        viewer_token: str,
        since: int | None,
    ) -> Connection:
        """Admit a socket to a loaded room (None: no such room): welcome, then a snapshot or
        the missed events. Raises JoinRefused, having changed nothing."""
        self._check_capacity(address)
        if replica is None:
            raise JoinRefused(CLOSE_ROOM_NOT_FOUND, "room_not_found", f"no room {room_id!r}")
        viewer_id = self.viewer_from_token(viewer_token) or secrets.token_urlsafe(12)
        room = replica.room
        if viewer_id in room.banned:
            raise JoinRefused(CLOSE_BANNED, "banned", "you are banned from this room")
        now_ms = self.clock_ms()
        connection = Connection(sink, replica, viewer_id, address, self.limits, now_ms)
        missed = None if since is None or since < 0 else room.history_since(since)
        connection.send(
            m.Welcome(
                protocol=m.PROTOCOL_VERSION,
                room_id=room_id,
                viewer_id=viewer_id,
                viewer_token=self.viewer_token(viewer_id),
                mode="snapshot" if missed is None else "resume",
                limits={
                    "comment_chars_max": room.limits.comment_chars_max,
                    "name_chars_max": room.limits.name_chars_max,
                    "comments_per_10s_max": self.limits.comments_per_10s_max,
                },
            )
        )
        if missed is None:
            connection.send(room.snapshot(now_ms))
        else:
            for wire in missed:
                sink.write(Outgoing(wire))
            connection.send(room.full_state(now_ms))
        if room.ended:
            sink.close(CLOSE_ROOM_ENDED, "the room has ended")
            return connection
        replica.group.add(connection)
        connection.admitted = True
        if self.activity is not None:
            self.activity.joined(room_id, viewer_id, now_ms)
        self.connections += 1
        self._per_address[address] = self._per_address.get(address, 0) + 1
        return connection

    def _check_capacity(self, address: str) -> None:
        if self.connections >= self.limits.connections_max:
            raise JoinRefused(CLOSE_SERVER_FULL, "server_full", "this server is full; try again")
        if self._per_address.get(address, 0) >= self.limits.connections_per_address_max:
            raise JoinRefused(
                CLOSE_TOO_MANY_CONNECTIONS,
                "too_many_connections",
                "too many connections from your address",
            )

    def leave(self, connection: Connection) -> None:
        """The socket is gone; forget it. Safe to call more than once."""
        connection.replica.group.discard(connection)
        if not connection.admitted:
            return
        connection.admitted = False
        if self.activity is not None:
            now_ms = self.clock_ms()
            watched_ms = now_ms - connection.admitted_at_ms
            self.activity.left(connection.replica.room.info.room_id, watched_ms, now_ms)
        self.connections -= 1
        remaining = self._per_address[connection.address] - 1
        if remaining:
            self._per_address[connection.address] = remaining
        else:
            del self._per_address[connection.address]

    # What clients send

    def receive(self, connection: Connection, frame: str) -> asyncio.Future[None] | None:
        """Handle one text frame from a client, now.

        Returns None when it is done. A comment or host command waits for the broker: it is
        queued and a future is returned, done once it has been published (or refused). The
        caller reads nothing more from this client until then, so one client's messages
        keep their order and a client never has more than one message queued.
        """
        now_ms = self.clock_ms()
        if not connection.frame_bucket.take(now_ms):
            connection.replica.group.discard(connection)
            connection.sink.close(CLOSE_FLOOD, "too many messages; slow down and reconnect")
            return None
        try:
            message = m.decode_client(frame)
        except m.ProtocolError as error:
            connection.error(error.code, error.message)
            return None
        replica = connection.replica
        match message:
            case m.PostComment():
                if not connection.comment_bucket.take(now_ms):
                    connection.error("rate_limited", "too many comments; wait a few seconds")
                    return None
                comment = replica.room.check_comment(
                    connection.viewer_id, message, secrets.token_urlsafe(9), now_ms
                )
                if self.activity is not None and not isinstance(comment, Rejection):
                    self.activity.commented(replica.room.info.room_id, now_ms)
                return self._publish_soon(connection, replica, comment, ack=False)
            case m.Like():
                replica.likes_delta += message.count
                if self.activity is not None:
                    self.activity.liked(replica.room.info.room_id, message.count, now_ms)
            case m.Share():
                if connection.share_bucket.take(now_ms):
                    replica.shares_delta += 1
            case m.Ping():
                connection.send(m.Pong(id=message.id, ts_ms=now_ms))
            case m.PlaceOrder() | m.Pay() | m.Bid():
                if self.order_handler is None:
                    connection.error("unavailable", "this server takes no orders")
                else:
                    self.order_handler(connection, message)
            case m.PollAnswer():
                poll = replica.room.check_answer(connection.viewer_id, message, now_ms)
                if isinstance(poll, Rejection):
                    connection.error(poll.code, poll.message)
                    return None
                return self._answer_soon(connection, replica, message, len(poll["options"]))
            case m.HostAuth():
                if connection.host_auth_failures >= self.limits.host_auth_failures_max:
                    connection.error("too_many_failures", "too many wrong host credentials")
                elif replica.room.info.host_token_matches(message.token):
                    connection.is_host = True
                    connection.send(m.Ack(ref="host.auth/v1"))
                else:
                    connection.host_auth_failures += 1
                    connection.error("bad_credential", "that is not this room's host credential")
            case _:
                if not connection.is_host:
                    connection.error("not_host", "host commands need host.auth/v1 first")
                    return None
                decision = replica.room.check_host(message, now_ms)
                return self._publish_soon(connection, replica, decision, ack=True)
        return None

    def _publish_soon(
        self,
        connection: Connection,
        replica: Replica,
        decision: m.RoomEvent | Rejection,
        ack: bool,
    ) -> asyncio.Future[None] | None:
        """Queue an event for the broker; refusals and a full queue are answered now."""
        if isinstance(decision, Rejection):
            connection.error(decision.code, decision.message)
            return None
        if len(self._publish_queue) >= self.limits.publish_queue_max:
            connection.error("busy", "too many messages are waiting for the broker; retry")
            return None
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._publish_queue.append((connection, replica, decision, ack, done))
        if len(self._publishers) < self.limits.publishes_in_flight_max:
            task = asyncio.get_running_loop().create_task(self._publish_queued())
            self._publishers.add(task)
            task.add_done_callback(self._publishers.discard)
        return done

    async def _publish_queued(self) -> None:
        """One of at most `publishes_in_flight_max` workers; it stops when the queue is empty."""
        queue = self._publish_queue
        while queue:
            connection, replica, event, ack, done = queue.popleft()
            try:
                room_id = replica.room.info.room_id
                if ack:  # a host command
                    await self.publish_host(room_id, event)
                else:
                    await self.publish(room_id, event)
            except BrokerUnavailable as error:
                connection.error("unavailable", f"not done, retry: {error}")
            except Exception:
                log.exception("publishing a client's event failed")
                connection.error("unavailable", "not done, retry")
            else:
                if ack:
                    connection.send(m.Ack(ref=_tag(event)))
            finally:
                if not done.done():
                    done.set_result(None)

    async def host_command(
        self, room_id: str, token: str, command: m.HostCommand
    ) -> Rejection | None:
        """A host command from the HTTP API: None when done, else why not."""
        replica = await self.replica(room_id)
        if replica is None:
            return Rejection("room_not_found", f"no room {room_id!r}")
        if not replica.room.info.host_token_matches(token):
            return Rejection("bad_credential", "that is not this room's host credential")
        decision = replica.room.check_host(command, self.clock_ms())
        if isinstance(decision, Rejection):
            return decision
        await self.publish_host(room_id, decision)
        return None

    # Polls: opened and closed by host commands (or the clock), answered once per viewer

    async def publish_host(self, room_id: str, event: m.RoomEvent) -> int:
        """A host command's event. A poll opened here closes here when its time is up; a
        poll closed here gets the broker's exact counts, and its tally goes to the
        listeners (the ledger) from this process only."""
        if isinstance(event, m.PollChanged) and event.poll["closed"]:
            return await self._close_poll(room_id, event)
        sequence = await self.publish(room_id, event)
        if isinstance(event, m.PollChanged):
            poll_id = str(event.poll["poll_id"])
            delay_s = max(0.0, (int(event.poll["closes_at_ms"]) - self.clock_ms()) / 1000)
            loop = asyncio.get_running_loop()
            self._poll_timers[(room_id, poll_id)] = loop.call_later(
                delay_s, self._poll_due, room_id, poll_id
            )
        return sequence

    def _poll_due(self, room_id: str, poll_id: str) -> None:
        self._poll_timers.pop((room_id, poll_id), None)
        replica = self.replicas.get(room_id)
        poll = replica.room.poll if replica is not None else None
        if replica is None or poll is None or poll["poll_id"] != poll_id or poll["closed"]:
            return
        closing = replica.room.closing(self.clock_ms())

        async def close() -> None:
            try:
                await self._close_poll(room_id, closing)
            except Exception:
                # The poll stays closed for answers (its time is up); its close event and
                # tally wait for the host to close it again.
                log.exception("closing poll %s of room %s failed", poll_id, room_id)

        task = asyncio.get_running_loop().create_task(close())
        self._publishers.add(task)
        task.add_done_callback(self._publishers.discard)

    async def _close_poll(self, room_id: str, closing: m.PollChanged) -> int:
        poll = closing.poll
        key = (room_id, str(poll["poll_id"]))
        if key in self._polls_closing:
            return 0  # closing already (the clock and the host at once)
        self._polls_closing.add(key)
        try:
            timer = self._poll_timers.pop(key, None)
            if timer is not None:
                timer.cancel()
            counts = await self.broker.poll_counts(room_id, key[1], len(poll["options"]))
            final = m.PollChanged(poll={**poll, "counts": counts}, ts_ms=closing.ts_ms)
            sequence = await self.publish(room_id, final)
        finally:
            self._polls_closing.discard(key)
        for listener in self.poll_closed_listeners:
            try:
                listener(room_id, final.poll)
            except Exception:
                log.exception("a poll listener failed")
        return sequence

    def _answer_soon(
        self, connection: Connection, replica: Replica, answer: m.PollAnswer, options: int
    ) -> asyncio.Future[None] | None:
        """Count the answer in the broker (once per viewer id); the counts come back to
        every process as state, coalesced into the next state/v1."""
        if self._answers_in_flight >= self.limits.publish_queue_max:
            connection.error("busy", "too many answers are waiting for the broker; retry")
            return None
        self._answers_in_flight += 1
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def count() -> None:
            try:
                counted = await self.broker.answer_poll(
                    replica.room.info.room_id, answer.poll_id, connection.viewer_id,
                    answer.option, options,
                )  # fmt: skip
                if counted:
                    connection.send(m.Ack(ref="poll.answer/v1"))
                else:
                    connection.error("already_answered", "you answered this poll already")
            except BrokerUnavailable as error:
                connection.error("unavailable", f"not done, retry: {error}")
            finally:
                self._answers_in_flight -= 1
                done.set_result(None)

        task = asyncio.get_running_loop().create_task(count())
        self._publishers.add(task)
        task.add_done_callback(self._publishers.discard)
        return done

    # What the commerce side pushes

    async def publish(self, room_id: str, event: m.RoomEvent) -> int:
        return await self.broker.publish(room_id, event, m.encode_event(event))

    async def publish_sale(self, room_id: str, sale: dict[str, Any]) -> int:
        return await self.publish(room_id, m.SaleChanged(sale=sale, ts_ms=self.clock_ms()))

    async def publish_auction(self, room_id: str, auction: dict[str, Any]) -> int:
        return await self.publish(room_id, m.AuctionChanged(auction=auction, ts_ms=self.clock_ms()))

    async def set_stock(self, room_id: str, product_id: str, remaining: int) -> None:
        """Record a product's units left; viewers get it with the next state flush."""
        replica = await self.replica(room_id)
        if replica is None:
            raise KeyError(room_id)
        refusal = replica.room.check_stock(product_id)
        if refusal is not None:
            raise ValueError(refusal.message)
        replica.stock_changes[product_id] = remaining

    # What the broker delivers

    def _on_event(self, room_id: str, sequence: int, body: bytes) -> None:
        replica = self.replicas.get(room_id)
        if replica is None or sequence <= replica.room.sequence:
            return  # not ours, or already in the loaded state
        room = replica.room
        if sequence != room.sequence + 1:
            # Events were missed (the broker's connection dropped): reload the room.
            self._resync(room_id)
            return
        event = m.decode_event(body)
        wire = m.with_sequence(sequence, body)
        room.apply(sequence, event, wire)
        if not isinstance(event, m.PRIVATE_EVENTS):
            self.deliveries += replica.group.broadcast(
                Outgoing(wire), f"resume with since={sequence - 1}"
            )
        if isinstance(event, m.ViewerBanned):
            for member in list(replica.group.members):
                if isinstance(member, Connection) and member.viewer_id == event.viewer_id:
                    replica.group.discard(member)
                    member.sink.close(CLOSE_BANNED, "you are banned from this room")
        elif isinstance(event, m.RoomEnded):
            for member in list(replica.group.members):
                replica.group.discard(member)
                member.sink.close(CLOSE_ROOM_ENDED, "the room has ended")
            for listener in self.room_ended_listeners:
                listener(room_id)

    def _on_state(self, room_id: str, totals: Totals) -> None:
        replica = self.replicas.get(room_id)
        if replica is not None:
            replica.changed |= self._apply_totals(replica.room, totals)

    @staticmethod
    def _apply_totals(room: Room, totals: Totals) -> set[str]:
        changed = set()
        if totals.likes is not None and totals.likes != room.likes:
            room.likes = totals.likes
            changed.add("likes")
        if totals.shares is not None and totals.shares != room.shares:
            room.shares = totals.shares
            changed.add("shares")
        if totals.viewers is not None and totals.viewers != room.viewers:
            room.viewers = totals.viewers
            changed.add("viewers")
        if totals.poll is not None and totals.poll != room.poll_counts:
            room.poll_counts = (totals.poll[0], list(totals.poll[1]))
            changed.add("poll")
        if totals.stock:
            for product_id, remaining in totals.stock.items():
                if room.stock.get(product_id) != remaining:
                    room.stock[product_id] = remaining
                    changed.add("stock")
        return changed

    def _resync(self, room_id: str) -> None:
        replica = self.replicas.get(room_id)
        if replica is not None and not replica.syncing:
            replica.syncing = True
            task = asyncio.get_running_loop().create_task(self._reload(room_id))
            task.add_done_callback(_log_failure)

    async def _reload(self, room_id: str) -> None:
        """Catch a replica up after missed events: replay them, or send everyone a snapshot."""
        replica = self.replicas[room_id]
        try:
            loaded = await self.broker.load_room(room_id)
            if loaded is None:
                return
            old = replica.room
            fresh = self._room_from(loaded)
            missed = [
                (sequence, body) for sequence, body in loaded.history if sequence > old.sequence
            ]
            # The broker's history holds every event, private ones too, so a gap is a real loss.
            contiguous = not missed or missed[0][0] == old.sequence + 1
            # Counters published while this process was not subscribed were missed too: the
            # loaded ones go out with the next state (the viewer count comes by itself).
            fresh.viewers = old.viewers
            replica.changed |= {
                name for name in ("likes", "shares") if getattr(fresh, name) != getattr(old, name)
            }
            if fresh.stock != old.stock:
                replica.changed.add("stock")
            replica.room = fresh
            now_ms = self.clock_ms()
            if contiguous:
                for sequence, body in missed:
                    if not isinstance(m.decode_event(body), m.PRIVATE_EVENTS):
                        replica.group.broadcast(
                            Outgoing(m.with_sequence(sequence, body)),
                            f"resume with since={sequence - 1}",
                        )
            else:
                snapshot = Outgoing(m.encode(fresh.snapshot(now_ms)))
                for member in list(replica.group.members):
                    member.write(snapshot)
        finally:
            replica.syncing = False

    # The ticker: counters out to the broker, coalesced state out to viewers.

    async def _tick_forever(self) -> None:
        interval_s = self.limits.state_flush_interval_ms / 1000
        # Said once when flushes start failing and once when they work again: a line per
        # tick would be ten a second for as long as the broker is away.
        failing = False
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.tick()
            except BrokerUnavailable as error:
                if not failing:
                    log.warning("state flushes skipped until the broker is back: %s", error)
                failing = True
                continue
            except Exception:
                log.exception("state flush failed")
                continue
            if failing:
                log.warning("state flushes resumed")
                failing = False

    def state_interval_ms(self) -> int:
        """How often a room's coalesced state goes out: every `state_flush_interval_ms`,
        or less often when writing it to every viewer of the process that often would
        exceed `state_deliveries_per_s_max` frames a second (at 10,000 a second: every
        100 ms up to 1,000 viewers, 200 ms at 2,000, a second at 10,000)."""
        floor_ms = self.limits.state_flush_interval_ms
        budget = self.limits.state_deliveries_per_s_max
        return max(floor_ms, -(-self.connections * 1000 // budget))

    async def tick(self) -> None:
        now_ms = self.clock_ms()
        # Ticks come every `state_flush_interval_ms`, give or take the loop's delays: a room
        # is due when most of its interval has passed, so 200 ms means every other tick.
        due_after_ms = self.state_interval_ms() - self.limits.state_flush_interval_ms // 2
        for room_id, replica in list(self.replicas.items()):
            viewers_here = len(replica.group)
            # A process with no viewers of a room stops refreshing its count; its stale entry
            # then drops out of the total, which is what zero means.
            heartbeat_due = (
                viewers_here > 0
                and now_ms - replica.flushed_at_ms >= self.limits.viewer_heartbeat_ms
            )
            if (
                replica.likes_delta
                or replica.shares_delta
                or replica.stock_changes
                or viewers_here != replica.viewers_flushed
                or heartbeat_due
            ):
                likes, shares, stock = (
                    replica.likes_delta,
                    replica.shares_delta,
                    replica.stock_changes,
                )
                replica.likes_delta, replica.shares_delta, replica.stock_changes = 0, 0, {}
                try:
                    await self.broker.flush_counters(room_id, likes, shares, viewers_here, stock)
                except BrokerUnavailable:
                    # Nothing was counted: keep the deltas for the next flush.
                    replica.likes_delta += likes
                    replica.shares_delta += shares
                    replica.stock_changes = {**stock, **replica.stock_changes}
                    raise
                replica.viewers_flushed = viewers_here
                replica.flushed_at_ms = now_ms
            sent_at_ms = replica.state_sent_at_ms
            due = sent_at_ms is None or now_ms - sent_at_ms >= due_after_ms
            self._flush_state(replica, now_ms, due)

    def _write_state(self, replica: Replica) -> None:
        """One slice of the room's owed state, the next after a pause: writing to thousands
        of sockets at once would hold up every order and message that came in meanwhile
        (`HubLimits.state_writes_per_slice`)."""
        replica.state_writer = None
        self.deliveries += replica.group.write_state(self.limits.state_writes_per_slice)
        if replica.group.state_waiting:
            loop = asyncio.get_running_loop()
            replica.state_writer = loop.call_later(
                self.limits.state_slice_pause_ms / 1000, self._write_state, replica
            )

    def _flush_state(self, replica: Replica, now_ms: int, due: bool) -> None:
        """When `due`: held frames still waiting from before the previous due tick, then the
        room's changed totals to every viewer; the newest whole state to viewers that were
        skipped while backed up and have drained, at every tick."""
        room = replica.room
        if due:
            replica.group.release_held()
        if replica.changed and due:
            replica.state_sent_at_ms = now_ms
            changed, replica.changed = replica.changed, set()
            state = m.State(
                seq=room.sequence,
                ts_ms=now_ms,
                likes=room.likes if "likes" in changed else None,
                shares=room.shares if "shares" in changed else None,
                viewers=room.viewers if "viewers" in changed else None,
                stock=dict(room.stock) if "stock" in changed else None,
                poll=room.live_counts() if "poll" in changed else None,
            )
            replica.group.start_state(Outgoing(m.encode(state)))
            if replica.state_writer is None:
                self._write_state(replica)
        if replica.group.stale:
            replica.group.catch_up_stale(Outgoing(m.encode(room.full_state(now_ms))))


def _tag(event: m.RoomEvent) -> str:
    return str(type(event).__struct_config__.tag)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("room reload failed", exc_info=task.exception())
