"""The host dashboard's reads: order counts per sale and the merchant's products."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import websockets

from livecommerce.clients.signing import KeyPair
from tests.livecommerce.hub.test_hub_embedded import recv_type
from tests.livecommerce.pipeline.flows import now_ms, register, room_with_sale
from tests.livecommerce.server import running_server


async def test_room_stats_count_answers_per_sale_for_the_host_only(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server, httpx.AsyncClient() as client:
        setup = await room_with_sale(client, server.http, units_offered=3, per_buyer_limit=2)
        url = f"{server.http}/api/rooms/{setup.room_id}/stats"
        host = {"Authorization": f"Bearer {setup.host_token}"}
        ann, bob = KeyPair(), KeyPair()
        await register(client, server.http, ann, "Ann")
        await register(client, server.http, bob, "Bob")
        ws = await websockets.connect(f"{server.ws}/ws/rooms/{setup.room_id}")
        results = []
        first = ann.order("a1", setup.sale_id, 2, setup.price_cents, now_ms())
        for order in [
            first,
            first,  # a repeat: answered again, counted once
            ann.order("a2", setup.sale_id, 1, setup.price_cents, now_ms()),  # limit reached
            bob.order("b1", setup.sale_id, 2, setup.price_cents, now_ms()),  # sold out: 1 left
            bob.order("b2", setup.sale_id, 1, setup.price_cents, now_ms()),
        ]:
            await ws.send(json.dumps({"type": "order/v1", **order}))
            results.append(await recv_type(ws, "order.result/v1"))
        assert [r["status"] for r in results] == [
            "accepted",
            "accepted",
            "rejected",
            "rejected",
            "accepted",
        ]
        # One more over HTTP, refused (no units left): counted too.
        extra = bob.order("b3", setup.sale_id, 1, setup.price_cents, now_ms())
        over_http = await client.post(f"{server.http}/api/orders", json=extra)
        assert over_http.status_code == 409
        await ws.close()

        stats = await client.get(url, headers=host)
        assert stats.status_code == 200, stats.text
        body = stats.json()
        assert body["merchant_id"] == setup.merchant.identity_id
        [sale] = body["sales"]
        assert sale["sale_id"] == setup.sale_id
        assert sale["units_offered"] == 3
        assert sale["units_remaining"] == 0
        assert sale["orders_accepted"] == 2
        assert sale["units_accepted"] == 3
        assert sale["buyers"] == 2
        assert sale["orders_rejected"] == {"limit_reached": 1, "sold_out": 2}
        assert sale["orders_answered"] == 5

        assert (await client.get(url)).status_code == 401
        wrong = {"Authorization": "Bearer not-the-token"}
        assert (await client.get(url, headers=wrong)).status_code == 403
        missing = f"{server.http}/api/rooms/nope/stats"
        assert (await client.get(missing, headers=host)).status_code == 404


async def test_merchant_products_lists_only_that_merchants_listings(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server, httpx.AsyncClient() as client:
        setup = await room_with_sale(client, server.http, units_offered=2, inventory=10)
        other = KeyPair()
        await register(client, server.http, other, "Teas Ltd")
        listed = await client.post(
            f"{server.http}/api/products",
            json=other.listing("tea", "Green tea", 900, now_ms(), image_url="/img/tea.svg"),
        )
        assert listed.status_code == 201, listed.text
        base = f"{server.http}/api/merchants"
        mine = (await client.get(f"{base}/{setup.merchant.identity_id}/products")).json()
        assert [(p["product_id"], p["inventory_units"]) for p in mine["products"]] == [("mug", 8)]
        theirs = (await client.get(f"{base}/{other.identity_id}/products")).json()
        assert [(p["product_id"], p["image_url"]) for p in theirs["products"]] == [
            ("tea", "/img/tea.svg")
        ]
        assert (await client.get(f"{base}/nobody/products")).json() == {"products": []}
