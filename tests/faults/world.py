"""A server with something to lose, and a record of everything bad input could change.

`populated` sets up two rooms on a real server: the first with a linked merchant, a product
in stock, an open flash sale, a buyer holding units, a comment, a pinned product, a banned
and a muted viewer, blocked words and slow mode; the second a plain room with its own host
credential (for "another room's credential"). `observe` reads, in the server's process,
what a request or frame could change: the ledger's size, stock, sales, orders, identities,
both rooms' state and moderation lists. Tests compare it before and after.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import httpx
import websockets

from livecommerce.clients.signing import KeyPair
from livecommerce.pipeline.answers import sale_view
from tests.livecommerce.hub.test_hub_embedded import recv, recv_type
from tests.livecommerce.pipeline.flows import SaleSetup, now_ms, register, room_with_sale, session
from tests.livecommerce.server import RunningServer

Json = dict[str, Any]

# Long enough that nothing in the world changes by itself while a test runs.
SALE_DURATION_MS = 3_600_000
PAYMENT_HOLD_MS = 3_600_000
UNITS_OFFERED = 20
HELD_UNITS = 2


@dataclass
class World:
    server: RunningServer
    sale: SaleSetup
    buyer: KeyPair
    buyer_token: str
    order_id: str
    other_room_id: str
    other_host_token: str
    comment_id: str
    muted_viewer: str
    banned_viewer: str

    @property
    def room_id(self) -> str:
        return self.sale.room_id

    @property
    def host_token(self) -> str:
        return self.sale.host_token


async def _host_command(client: httpx.AsyncClient, world_base: str, room: str, token: str,
                        command: Json) -> None:  # fmt: skip
    response = await client.post(
        f"{world_base}/api/rooms/{room}/host",
        json=command,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text


async def populated(server: RunningServer) -> World:
    base = server.http
    async with httpx.AsyncClient(timeout=10) as client:
        sale = await room_with_sale(
            client,
            base,
            units_offered=UNITS_OFFERED,
            per_buyer_limit=5,
            duration_ms=SALE_DURATION_MS,
            payment_hold_ms=PAYMENT_HOLD_MS,
            inventory=50,
        )
        buyer = KeyPair()
        await register(client, base, buyer, "Buyer")
        buyer_token = await session(client, base, buyer)
        order_id = "held-1"
        placed = await client.post(
            f"{base}/api/orders",
            json=buyer.order(order_id, sale.sale_id, HELD_UNITS, sale.price_cents, now_ms()),
        )
        assert placed.status_code == 201, placed.text
        created = await client.post(f"{base}/api/rooms", json={"title": "Other", "host_name": "Bo"})
        assert created.status_code == 201, created.text
        other_room_id, other_host_token = created.json()["room_id"], created.json()["host_token"]
        assert await server.hub.replica(other_room_id) is not None  # loaded, so observed
        # Two viewers to moderate and one comment to keep.
        viewers = []
        for _ in range(2):
            ws = await websockets.connect(f"{server.ws}/ws/rooms/{sale.room_id}")
            viewers.append((ws, (await recv(ws))["viewer_id"]))
        first, muted_viewer = viewers[0]
        await first.send(json.dumps({"type": "comment/v1", "text": "hello", "name": "Ann"}))
        comment_id = (await recv_type(first, "comment/v1"))["id"]
        banned_viewer = viewers[1][1]
        for ws, _ in viewers:
            await ws.close()
        room, token = sale.room_id, sale.host_token
        await _host_command(client, base, room, token, {"type": "host.live/v1", "live": True})
        await _host_command(
            client, base, room, token, {"type": "host.keywords/v1", "words": ["spam", "scam"]}
        )
        await _host_command(
            client, base, room, token, {"type": "host.slow_mode/v1", "interval_ms": 2000}
        )
        await _host_command(
            client,
            base,
            room,
            token,
            {"type": "host.mute/v1", "viewer_id": muted_viewer, "duration_ms": PAYMENT_HOLD_MS},
        )
        await _host_command(
            client, base, room, token, {"type": "host.ban/v1", "viewer_id": banned_viewer}
        )
    # The room's live stock reaches it with the next state flush: wait for it, so that
    # a later observation does not see it arrive.
    replica = server.hub.replicas[sale.room_id]
    async with asyncio.timeout(5):
        while replica.room.stock.get(sale.product_id) != UNITS_OFFERED - HELD_UNITS:
            await asyncio.sleep(0.01)
    return World(
        server,
        sale,
        buyer,
        buyer_token,
        order_id,
        other_room_id,
        other_host_token,
        comment_id,
        muted_viewer,
        banned_viewer,
    )


def _room_state(server: RunningServer, room_id: str) -> Json:
    room = server.hub.replicas[room_id].room
    snapshot = room.snapshot(0)
    return {
        "sequence": room.sequence,
        "live": room.live,
        "ended": room.ended,
        "pinned": snapshot.pinned,
        "slow_mode_ms": room.slow_mode_ms,
        "keywords": room.keywords,
        "banned": sorted(room.banned),
        "muted_until_ms": dict(room.muted_until_ms),
        "comments": [(c.seq, c.id, c.text) for c in room.comments],
        "likes": room.likes,
        "shares": room.shares,
        "stock": dict(room.stock),
        "sale": room.sale,
    }


def observe(world: World) -> Json:
    """Everything bad input must leave alone, read in the server's process."""
    server = world.server
    service = server.app.state.orders
    core = service.core
    sale = core.sales.get(world.sale.sale_id)
    assert sale is not None
    sale.check()
    return {
        "ledger_size": server.app.state.ledger.size,
        "inventory_units": core.catalog.inventory_units(world.sale.product_id),
        "sale": sale_view(sale, core.catalog),
        "sales": len(core.sales.all()),
        "orders_remembered": core.orders.orders_remembered(),
        "held_order": str(core.orders.status(world.buyer.identity_id, world.order_id)),
        "identities": len(core.identities),
        "merchant_of_room": core.rooms.merchant_of(world.room_id),
        "merchant_of_other_room": core.rooms.merchant_of(world.other_room_id),
        "room": _room_state(server, world.room_id),
        "other_room": _room_state(server, world.other_room_id),
    }


def differences(before: Any, after: Any, path: str = "") -> list[str]:
    """Where two observations differ, as readable paths (the assertion message)."""
    if isinstance(before, dict) and isinstance(after, dict):
        found = []
        for key in sorted(set(before) | set(after), key=str):
            found += differences(before.get(key), after.get(key), f"{path}.{key}")
        return found
    return [] if before == after else [f"{path}: {before!r} -> {after!r}"]
