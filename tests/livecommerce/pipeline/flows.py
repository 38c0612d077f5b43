"""HTTP steps every order test needs: identities, a merchant with stock, a room, a sale."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from livecommerce.clients.signing import KeyPair
from livecommerce.clock import wall_clock_ms

Json = dict[str, Any]


def now_ms() -> int:
    return wall_clock_ms()


async def register(client: httpx.AsyncClient, base: str, keys: KeyPair, name: str) -> Json:
    response = await client.post(f"{base}/api/identities", json=keys.registration(name, now_ms()))
    assert response.status_code == 201, response.text
    body: Json = response.json()
    return body


async def session(client: httpx.AsyncClient, base: str, keys: KeyPair) -> str:
    challenge = (await client.post(f"{base}/api/sessions/challenge")).json()["challenge"]
    response = await client.post(f"{base}/api/sessions", json=keys.session(challenge))
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


@dataclass
class SaleSetup:
    room_id: str
    host_token: str
    merchant: KeyPair
    merchant_token: str
    product_id: str
    sale_id: str
    price_cents: int
    sale: Json


async def merchant_with_stock(
    client: httpx.AsyncClient,
    base: str,
    units: int,
    product_id: str = "mug",
    price_cents: int = 1800,
    merchant: KeyPair | None = None,
) -> tuple[KeyPair, str]:
    merchant = merchant or KeyPair()
    await register(client, base, merchant, "Mugs & Co")
    listed = await client.post(
        f"{base}/api/products",
        json=merchant.listing(product_id, "Stoneware mug", price_cents, now_ms()),
    )
    assert listed.status_code == 201, listed.text
    stocked = await client.post(
        f"{base}/api/products/{product_id}/stock",
        json=merchant.stock(f"restock-{product_id}", product_id, units, now_ms()),
    )
    assert stocked.status_code == 201, stocked.text
    return merchant, await session(client, base, merchant)


async def room_with_sale(
    client: httpx.AsyncClient,
    base: str,
    units_offered: int,
    per_buyer_limit: int = 3,
    starts_in_ms: int = 0,
    duration_ms: int = 120_000,
    payment_hold_ms: int = 60_000,
    sale_id: str = "flash-1",
    inventory: int | None = None,
) -> SaleSetup:
    merchant, merchant_token = await merchant_with_stock(
        client, base, inventory if inventory is not None else units_offered
    )
    created = await client.post(f"{base}/api/rooms", json={"title": "Live", "host_name": "Mia"})
    assert created.status_code == 201, created.text
    room_id, host_token = created.json()["room_id"], created.json()["host_token"]
    host = {"Authorization": f"Bearer {host_token}"}
    linked = await client.post(
        f"{base}/api/rooms/{room_id}/merchant",
        json={"merchant_token": merchant_token},
        headers=host,
    )
    assert linked.status_code == 201, linked.text
    scheduled = await client.post(
        f"{base}/api/rooms/{room_id}/sales",
        headers=host,
        json={
            "sale_id": sale_id,
            "product_id": "mug",
            "units_offered": units_offered,
            "per_buyer_limit": per_buyer_limit,
            "starts_in_ms": starts_in_ms,
            "duration_ms": duration_ms,
            "payment_hold_ms": payment_hold_ms,
        },
    )
    assert scheduled.status_code == 201, scheduled.text
    sale = scheduled.json()
    return SaleSetup(
        room_id, host_token, merchant, merchant_token, "mug", sale_id, sale["price_cents"], sale
    )
