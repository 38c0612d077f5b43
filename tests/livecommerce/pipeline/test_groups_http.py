"""Group buying end to end on a real embedded server: the host's offer with a tier, a group
that fills and succeeds at the tier's price (captured at it), a group that ends short and
is voided, every refusal over HTTP; then the same views after a restart, and an audit."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from livecommerce.clients.signing import KeyPair
from tests.conftest import RedisServer
from tests.livecommerce.pipeline.cluster import ledger_verifier, sale_known_everywhere, scaled
from tests.livecommerce.pipeline.flows import now_ms, room_with_sale
from tests.livecommerce.pipeline.test_after_sale import PRICE, Shop, audit
from tests.livecommerce.server import running_server

Json = dict[str, Any]
TIER_PRICE = PRICE - 300
WINDOW_MS = 5_000


async def group_step(
    shop: Shop, buyer: KeyPair, action: str, group_id: str, order_id: str
) -> httpx.Response:
    body = buyer.group(action, group_id, order_id, now_ms())
    return await shop.client.post(f"{shop.base}/api/groups", json=body)


async def offer(shop: Shop, body: Json) -> httpx.Response:
    setup = shop.setup
    return await shop.client.post(
        f"{shop.base}/api/rooms/{setup.room_id}/sales/{setup.sale_id}/group-offer",
        json=body,
        headers={"Authorization": f"Bearer {setup.host_token}"},
    )


async def member(
    shop: Shop, name: str, action: str, group_id: str, order_id: str, quantity: int = 1
) -> tuple[KeyPair, str]:
    buyer, token = await shop.buyer(name)
    await shop.order(buyer, order_id, quantity)
    taken = await group_step(shop, buyer, action, group_id, order_id)
    assert taken.status_code == 201, taken.text
    paid = await shop.pay(token, order_id)
    assert paid.status_code == 200, paid.text
    return buyer, token


async def groups_of(shop: Shop) -> Json:
    answer = await shop.client.get(f"{shop.base}/api/sales/{shop.setup.sale_id}/groups")
    assert answer.status_code == 200, answer.text
    view: Json = answer.json()
    return view


async def test_a_group_fills_at_the_tier_price_another_ends_short_then_replayed(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path) as server, httpx.AsyncClient() as client:
        base = server.http
        setup = await room_with_sale(client, base, units_offered=10, inventory=20)
        shop = Shop(base, client, setup)
        assert (await client.get(f"{base}/api/sales/{setup.sale_id}/groups")).status_code == 404
        # Bad offers change nothing; no credential, no offer.
        for body in (
            {"size": 1, "window_ms": WINDOW_MS},
            {"size": 2, "window_ms": WINDOW_MS, "tiers": [[3, PRICE]]},
            {"size": 2, "window_ms": "soon"},
        ):
            bad = await offer(shop, body)
            assert bad.status_code == 400, (body, bad.text)
        sneaky = await client.post(
            f"{base}/api/rooms/{setup.room_id}/sales/{setup.sale_id}/group-offer",
            json={"size": 2, "window_ms": WINDOW_MS},
        )
        assert sneaky.status_code == 401
        made = await offer(shop, {"size": 2, "window_ms": WINDOW_MS, "tiers": [[3, TIER_PRICE]]})
        assert made.status_code == 201, made.text
        assert made.json()["offer"]["tiers"] == [
            {"members": 2, "price_cents": PRICE}, {"members": 3, "price_cents": TIER_PRICE},
        ]  # fmt: skip
        # Without a group, an order of this sale cannot be paid.
        solo, solo_token = await shop.buyer("Solo")
        await shop.order(solo, "solo-1")
        unpaid = await shop.pay(solo_token, "solo-1")
        assert (unpaid.status_code, unpaid.json()["reason"]) == (409, "group_needed")
        # Group g1: three places, all paid: it succeeds at once at the tier's price.
        ann, _ = await member(shop, "Ann", "open", "g1", "a1", quantity=2)
        repeat = await group_step(shop, ann, "open", "g1", "a1")
        assert (repeat.status_code, repeat.json()["status"]) == (200, "repeated")
        listed = await groups_of(shop)
        (open_group,) = listed["open"]
        assert (open_group["group_id"], open_group["places_left"], open_group["needed"]) == (
            "g1", 2, 1,
        )  # fmt: skip
        assert 0 < open_group["left_ms"] <= WINDOW_MS
        await member(shop, "Bob", "join", "g1", "b1")
        cat, _ = await member(shop, "Cat", "join", "g1", "c1")
        group = (await client.get(f"{base}/api/groups/g1")).json()
        assert (group["outcome"], group["price_cents"], group["paid"]) == (
            "succeeded", TIER_PRICE, 3,
        )  # fmt: skip
        # Full and closed: a fourth buyer is refused.
        dan, _ = await shop.buyer("Dan")
        await shop.order(dan, "d1")
        late = await group_step(shop, dan, "join", "g1", "d1")
        assert (late.status_code, late.json()["error"]) == (409, "group_closed")
        life = await shop.life(ann, "a1")
        assert (life["amount_cents"], life["group"]["outcome"]) == (2 * TIER_PRICE, "succeeded")
        # Shipping captures the group price only; the rest of the authorization goes back.
        merchant = setup.merchant
        shipped = await shop.step(merchant, "ship", ann, "a1", carrier="DHL", tracking="G1")
        assert shipped.status_code == 200, shipped.text
        await shop.wait_action(ann, "a1", "capture_succeeded")
        assert (await shop.life(ann, "a1"))["escrow_cents"] == 2 * TIER_PRICE
        # Group g2 ends short: the payment is voided and the units go back.
        eve, _ = await member(shop, "Eve", "open", "g2", "e1")
        not_yet = await shop.step(merchant, "ship", eve, "e1", carrier="DHL", tracking="G2")
        assert (not_yet.status_code, not_yet.json()["reason"]) == (409, "group_open")
        dan_joined = await group_step(shop, dan, "join", "g2", "d1")
        assert dan_joined.status_code == 201, dan_joined.text
        product_before = (await client.get(f"{base}/api/products/mug")).json()
        async with asyncio.timeout(WINDOW_MS / 1000 + 10):
            while (await shop.life(eve, "e1"))["stage"] != "cancelled":
                await asyncio.sleep(0.1)
        failed = (await client.get(f"{base}/api/groups/g2")).json()
        assert (failed["outcome"], failed["places_left"]) == ("failed", 0)
        assert (await shop.life(dan, "d1"))["order_status"] == "cancelled"
        product_after = (await client.get(f"{base}/api/products/mug")).json()
        assert product_after["inventory_units"] == product_before["inventory_units"] + 1
        closed = (await groups_of(shop))["closed"]
        assert [g["group_id"] for g in closed] == ["g2", "g1"]
        before = {g: (await client.get(f"{base}/api/groups/{g}")).json() for g in ("g1", "g2")}
        vkey = server.app.state.ledger.verifier_key
        kept = (await shop.life(cat, "c1"))["amount_cents"]
    async with running_server(tmp_path) as server, httpx.AsyncClient() as client:
        for group_id, view in before.items():
            again = (await client.get(f"{server.http}/api/groups/{group_id}")).json()
            assert {k: v for k, v in again.items() if k != "left_ms"} == {
                k: v for k, v in view.items() if k != "left_ms"
            }
        shop = Shop(server.http, client, setup)
        assert (await shop.life(cat, "c1"))["amount_cents"] == kept == TIER_PRICE
    done = audit(tmp_path, vkey)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.redis
async def test_scaled_out_the_writer_runs_the_groups_and_either_process_serves_them(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with scaled(tmp_path, redis_server.url, 2) as (writer, webs):
        async with httpx.AsyncClient(timeout=30) as client:
            setup = await room_with_sale(client, webs[0].http, units_offered=10)
            await sale_known_everywhere(client, webs, setup.sale_id)
            here, there = Shop(webs[0].http, client, setup), Shop(webs[1].http, client, setup)
            made = await offer(here, {"size": 2, "window_ms": WINDOW_MS})
            assert made.status_code == 201, made.text
            await member(here, "Ann", "open", "g1", "a1")
            bob, _ = await member(there, "Bob", "join", "g1", "b1")
            for shop in (here, there):
                group = (await client.get(f"{shop.base}/api/groups/g1")).json()
                assert (group["outcome"], group["paid"]) == ("succeeded", 2), group
                assert (await shop.life(bob, "b1"))["group"]["outcome"] == "succeeded"
            # A group opened with an order left unpaid: at its end the hold is released
            # and Redis, where every process takes stock, has the units back.
            cat, _ = await there.buyer("Cat")
            await there.order(cat, "c1", quantity=2)
            assert (await group_step(there, cat, "open", "g2", "c1")).status_code == 201
            sale = (await client.get(f"{webs[0].http}/api/sales/{setup.sale_id}")).json()
            assert sale["units_remaining"] == 10 - 2 - 2
            async with asyncio.timeout(WINDOW_MS / 1000 + 10):
                while (await there.life(cat, "c1"))["order_status"] != "cancelled":
                    await asyncio.sleep(0.1)
                while True:
                    sale = (await client.get(f"{webs[1].http}/api/sales/{setup.sale_id}")).json()
                    if sale["units_remaining"] == 10 - 2:
                        break
                    await asyncio.sleep(0.1)
            closed = (await groups_of(here))["closed"]
            assert [(g["group_id"], g["outcome"]) for g in closed] == [
                ("g2", "failed"), ("g1", "succeeded"),
            ]  # fmt: skip
        await asyncio.to_thread(writer.stop)
    done = audit(writer.data_dir, ledger_verifier(writer.data_dir).format())
    assert done.returncode == 0, done.stdout + done.stderr
