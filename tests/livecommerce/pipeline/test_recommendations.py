"""Recommendations over HTTP, embedded and scaled out: what buyers paid for together comes
first for a buyer who bought one of them; a viewer without a session gets popularity;
never a sold-out product or one the buyer bought; bad requests change nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from livecommerce.clients.signing import KeyPair
from tests.conftest import RedisServer
from tests.livecommerce.pipeline.cluster import scaled
from tests.livecommerce.pipeline.flows import (
    SaleSetup,
    now_ms,
    register,
    room_with_sale,
    session,
)
from tests.livecommerce.server import running_server

Json = dict[str, Any]


async def shop_with_history(client: httpx.AsyncClient, base: str) -> tuple[SaleSetup, KeyPair, str]:
    """A room selling mug and tea (both on sale), tote (inventory only) and cap (none
    left); three buyers paid for mug and tea together, five for the tote alone; Ann paid
    for a mug. (the room's setup, Ann, Ann's session token)."""
    setup = await room_with_sale(client, base, units_offered=20, per_buyer_limit=3, inventory=40)
    merchant, host = setup.merchant, {"Authorization": f"Bearer {setup.host_token}"}
    for product_id, units in (("tea", 30), ("tote", 30), ("cap", 0)):
        listed = await client.post(
            f"{base}/api/products", json=merchant.listing(product_id, product_id, 900, now_ms())
        )
        assert listed.status_code == 201, listed.text
        if units:
            stocked = await client.post(
                f"{base}/api/products/{product_id}/stock",
                json=merchant.stock(f"restock-{product_id}", product_id, units, now_ms()),
            )
            assert stocked.status_code == 201, stocked.text
    for product_id in ("tea", "tote"):
        scheduled = await client.post(
            f"{base}/api/rooms/{setup.room_id}/sales",
            headers=host,
            json={"sale_id": f"sale-{product_id}", "product_id": product_id, "units_offered": 10,
                  "per_buyer_limit": 3, "starts_in_ms": 0, "duration_ms": 120_000,
                  "payment_hold_ms": 60_000},
        )  # fmt: skip
        assert scheduled.status_code == 201, scheduled.text
    async with asyncio.timeout(10):  # scaled out: until the web process's replica has them
        for sale_id in (setup.sale_id, "sale-tea", "sale-tote"):
            while (await client.get(f"{base}/api/sales/{sale_id}")).status_code != 200:
                await asyncio.sleep(0.05)

    async def buys(name: str, *sales: tuple[str, int]) -> tuple[KeyPair, str]:
        buyer = KeyPair()
        await register(client, base, buyer, name)
        token = await session(client, base, buyer)
        for number, (sale_id, price) in enumerate(sales):
            order_id = f"{name}-{number}"
            placed = await client.post(
                f"{base}/api/orders", json=buyer.order(order_id, sale_id, 1, price, now_ms())
            )
            assert placed.status_code == 201, placed.text
            paid = await client.post(
                f"{base}/api/orders/{order_id}/pay",
                json={},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert paid.status_code == 200, paid.text
        return buyer, token

    mug, tea, tote = (setup.sale_id, setup.price_cents), ("sale-tea", 900), ("sale-tote", 900)
    for name in ("b1", "b2", "b3"):
        await buys(name, mug, tea)
    for name in ("c1", "c2", "c3", "c4", "c5"):
        await buys(name, tote)
    ann, token = await buys("ann", mug)
    return setup, ann, token


async def check_recommendations(client: httpx.AsyncClient, base: str) -> None:
    setup, _, token = await shop_with_history(client, base)
    room_id = setup.room_id
    url = f"{base}/api/rooms/{room_id}/recommendations"
    mine = await client.get(url, headers={"Authorization": f"Bearer {token}"})
    assert mine.status_code == 200, mine.text
    liked = [(item["product_id"], item["why"]) for item in mine.json()["you_may_also_like"]]
    assert liked == [("tea", "co_purchase"), ("tote", "popular")]  # no mug: bought; no cap
    stream = [item["product_id"] for item in mine.json()["more_from_stream"]]
    assert stream == ["tote", "tea"]  # five orders of the tote, three of the tea
    anonymous = await client.get(url, params={"count": "3"})
    popular = anonymous.json()["you_may_also_like"]
    assert [i["product_id"] for i in popular] == ["tote", "mug", "tea"]  # 5, 4, 3 orders
    assert popular[1]["title"] == "Stoneware mug"
    beside = await client.get(url, params={"beside": "mug"})
    assert "mug" not in [i["product_id"] for i in beside.json()["more_from_stream"]]
    # A view counts toward a new viewer's list: the tea's partner, the mug, comes first.
    eve = KeyPair()
    await register(client, base, eve, "Eve")
    eve_token = {"Authorization": f"Bearer {await session(client, base, eve)}"}
    seen = await client.post(
        f"{base}/api/rooms/{room_id}/seen",
        json={"product_id": "tea", "signal": "view"},
        headers=eve_token,
    )
    assert seen.status_code == 200, seen.text
    eves = (await client.get(url, headers=eve_token)).json()["you_may_also_like"]
    assert (eves[0]["product_id"], eves[0]["why"]) == ("mug", "co_purchase")
    # Refusals, and none of them changes a list.
    before = (await client.get(url, headers=eve_token)).json()
    for method, target, kwargs, status in [
        ("GET", url, {"params": {"count": "0"}}, 400),
        ("GET", url, {"params": {"count": "x"}}, 400),
        ("GET", url, {"headers": {"Authorization": "Bearer nope"}}, 401),
        ("GET", f"{base}/api/rooms/nowhere/recommendations", {}, 404),
        ("POST", f"{base}/api/rooms/{room_id}/seen", {"json": {"product_id": "nope",
                                                              "signal": "view"}}, 404),
        ("POST", f"{base}/api/rooms/{room_id}/seen", {"json": {"product_id": "tea",
                                                              "signal": "order"}}, 400),
        ("POST", f"{base}/api/rooms/{room_id}/seen", {"content": b"{"}, 400),
    ]:  # fmt: skip
        response = await client.request(method, target, **kwargs)
        assert response.status_code == status, (target, kwargs, response.text)
    assert (await client.get(url, headers=eve_token)).json() == before


async def test_recommendations_embedded(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server, httpx.AsyncClient(timeout=30) as client:
        await check_recommendations(client, server.http)


@pytest.mark.redis
async def test_recommendations_scaled_come_from_the_writer(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with (
        scaled(tmp_path, redis_server.url, 1) as (_, webs),
        httpx.AsyncClient(timeout=30) as client,
    ):
        await check_recommendations(client, webs[0].http)
