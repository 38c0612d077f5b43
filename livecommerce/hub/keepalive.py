"""Keepalive for every socket of a process on one ticker: each tick visits one slice.

A WebSocket whose peer vanished (a phone that lost its network, a laptop closed) sends
nothing, not even a TCP reset, so a server learns of it only by asking: a ping (RFC 6455
§5.5.2), to which a live peer answers with a pong. Giving each socket its own ping timer
and pong deadline costs two timers per socket per interval; here one ticker visits a
`1 / slots` share of the sockets per tick, so each is visited once per `interval_ms`.

At a visit, a peer from which nothing arrived since the ping of its previous visit is gone
(`expire`); any other peer is pinged again. A peer is therefore pinged once per interval
and expired between one and two intervals after the last byte it sent. Any frame counts
as an answer, not only a pong: it proves the peer is there just as well.

Sans-I/O: the adapter arms the timer, calls `tick`, and does the writes in the peer's
`send_ping` and `expire`.
"""

from __future__ import annotations

from typing import Protocol


class KeepalivePeer(Protocol):
    # Set by the sweep: which slot holds the peer (-1: none), and whether a ping is out.
    keepalive_slot: int
    ping_sent: bool
    # Set by the adapter whenever anything arrives from the peer; cleared at each ping.
    heard: bool

    def send_ping(self) -> None: ...
    def expire(self) -> None: ...


class KeepaliveSweep:
    def __init__(self, interval_ms: int, tick_ms: int) -> None:
        assert interval_ms > 0
        assert 0 < tick_ms <= interval_ms
        self.interval_ms = interval_ms
        self.tick_ms = interval_ms // (interval_ms // tick_ms)
        self._slots: list[set[KeepalivePeer]] = [set() for _ in range(interval_ms // tick_ms)]
        self._visit_next = 0
        self._join_next = 0
        self.peers = 0
        self.expired = 0

    def add(self, peer: KeepalivePeer) -> None:
        """Watch a peer. Slots are dealt in turn so that a burst of sockets opened together
        is spread over the interval and not pinged in one tick."""
        assert peer.keepalive_slot < 0, "added twice"
        slot = self._join_next
        self._join_next = (slot + 1) % len(self._slots)
        peer.keepalive_slot = slot
        peer.ping_sent = False
        self._slots[slot].add(peer)
        self.peers += 1

    def remove(self, peer: KeepalivePeer) -> None:
        """Stop watching a peer; safe to call more than once."""
        if peer.keepalive_slot >= 0:
            self._slots[peer.keepalive_slot].discard(peer)
            peer.keepalive_slot = -1
            self.peers -= 1

    def tick(self) -> int:
        """Visit the next slot: expire the silent, ping the rest. Returns peers visited."""
        slot = self._slots[self._visit_next]
        self._visit_next = (self._visit_next + 1) % len(self._slots)
        visited = tuple(slot)
        for peer in visited:
            if peer.ping_sent and not peer.heard:
                self.remove(peer)
                self.expired += 1
                peer.expire()
            else:
                peer.heard = False
                peer.ping_sent = True
                peer.send_ping()
        return len(visited)
