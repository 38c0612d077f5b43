"""The keepalive sweep on its own: which peers are pinged, which expire, and when."""

from __future__ import annotations

import ast
from pathlib import Path

from livecommerce.hub import keepalive
from livecommerce.hub.keepalive import KeepaliveSweep


class Peer:
    """A socket as the sweep sees it; records what the sweep asked of it."""

    def __init__(self) -> None:
        self.keepalive_slot = -1
        self.ping_sent = False
        self.heard = False
        self.pings = 0
        self.expired = False

    def send_ping(self) -> None:
        self.pings += 1

    def expire(self) -> None:
        self.expired = True


def run_interval(sweep: KeepaliveSweep) -> None:
    for _ in range(sweep.interval_ms // sweep.tick_ms):
        sweep.tick()


def test_every_peer_is_pinged_once_per_interval_and_the_silent_expire() -> None:
    sweep = KeepaliveSweep(interval_ms=20_000, tick_ms=250)
    assert sweep.tick_ms == 250
    talker, silent = Peer(), Peer()
    sweep.add(talker)
    sweep.add(silent)
    run_interval(sweep)
    assert (talker.pings, silent.pings) == (1, 1)
    talker.heard = True  # its pong, or any frame, arrived
    run_interval(sweep)
    assert talker.pings == 2
    assert not talker.expired
    assert silent.expired  # a whole interval after its ping, nothing came back
    assert silent.pings == 1
    assert sweep.peers == 1
    assert sweep.expired == 1
    run_interval(sweep)  # the talker went quiet after its second ping
    assert talker.expired
    assert sweep.peers == 0


def test_a_burst_of_sockets_is_spread_over_the_interval() -> None:
    sweep = KeepaliveSweep(interval_ms=1000, tick_ms=100)
    peers = [Peer() for _ in range(1000)]
    for peer in peers:
        sweep.add(peer)
    visited = [sweep.tick() for _ in range(10)]
    assert visited == [100] * 10
    assert all(peer.pings == 1 for peer in peers)


def test_removed_peers_are_never_visited_again() -> None:
    sweep = KeepaliveSweep(interval_ms=1000, tick_ms=500)
    gone, staying = Peer(), Peer()
    sweep.add(gone)
    sweep.add(staying)
    sweep.remove(gone)
    sweep.remove(gone)  # twice is fine
    assert gone.keepalive_slot == -1
    run_interval(sweep)
    run_interval(sweep)
    assert gone.pings == 0
    assert not gone.expired
    assert staying.expired
    assert sweep.peers == 0


def test_the_sweep_does_no_io() -> None:
    """Sans-I/O: the adapter (uvicorn_fanout) owns the timer and the writes."""
    tree = ast.parse(Path(keepalive.__file__).read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    }
    assert imported == {"__future__", "typing"}
