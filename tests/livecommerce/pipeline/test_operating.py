"""Operating metrics over HTTP and in /metrics: one room's orders through settlement, a
refund, a review, an order refused over the limit, a viewer who comments and likes and
leaves; then the counts for the room (its host), the merchant and the platform (an
arbiter), who may read which, and what a restart keeps (the ledger's counts) and loses
(the process's traffic).
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import httpx
import websockets

from livecommerce.clients.signing import KeyPair
from tests.livecommerce.pipeline.flows import now_ms, register, room_with_sale, session
from tests.livecommerce.pipeline.test_after_sale import PRICE, Shop
from tests.livecommerce.server import running_server

Json = dict[str, Any]
ROOT = Path(__file__).resolve().parents[3]


def total(answer: Json, name: str) -> int:
    return sum(point["counts"].get(name, 0) for point in answer["series"])


async def test_the_counts_of_one_room_for_its_host_merchant_and_platform(tmp_path: Path) -> None:
    arbiter = KeyPair()
    settings = {"arbiter_ids": arbiter.identity_id}
    async with running_server(tmp_path, **settings) as server, httpx.AsyncClient() as client:
        base = server.http
        setup = await room_with_sale(client, base, units_offered=20, per_buyer_limit=2)
        await register(client, base, arbiter, "Platform")
        shop = Shop(base, client, setup)
        merchant = setup.merchant
        # A viewer: joins, comments, likes, leaves.
        async with websockets.connect(f"{server.ws}/ws/rooms/{setup.room_id}") as ws:
            await ws.send(json.dumps({"type": "comment/v1", "text": "hi", "name": "Zed"}))
            await ws.send(json.dumps({"type": "like/v1", "count": 3}))
            async with asyncio.timeout(5):
                while json.loads(await ws.recv())["type"] != "comment/v1":
                    pass
            await asyncio.sleep(0.3)  # watching a while: a few ms of watching read as 0 in CI
        # Ann: settled and reviewed, then refused over her limit; Bob: refunded in full.
        ann, ann_token = await shop.buyer("Ann")
        await shop.order(ann, "a1", quantity=2)
        assert (await shop.pay(ann_token, "a1")).status_code == 200
        await shop.step(merchant, "ship", ann, "a1", carrier="DHL", tracking="T1")
        await shop.wait_action(ann, "a1", "capture_succeeded")
        await shop.step(ann, "confirm", ann, "a1")
        assert (await shop.life(ann, "a1"))["stage"] == "settled"
        reviewed = await client.post(
            f"{base}/api/orders/a1/reviews",
            json=ann.review("review", ann.identity_id, "a1", now_ms(), stars=4, text="good"),
        )
        assert reviewed.status_code == 201, reviewed.text
        over = ann.order("a2", setup.sale_id, 1, PRICE, now_ms())  # over her limit of 2
        refused = await client.post(f"{base}/api/orders", json=over)
        assert refused.status_code == 409, refused.text
        bob, bob_token = await shop.buyer("Bob")
        await shop.order(bob, "b1")
        assert (await shop.pay(bob_token, "b1")).status_code == 200
        await shop.step(merchant, "ship", bob, "b1", carrier="DHL", tracking="T2")
        await shop.wait_action(bob, "b1", "capture_succeeded")
        await shop.step(merchant, "deliver", bob, "b1")
        await shop.step(bob, "refund_request", bob, "b1", amount_cents=PRICE, reason="damaged")
        await shop.step(merchant, "refund_answer", bob, "b1", decision="accept",
                        amount_cents=PRICE)  # fmt: skip
        await shop.wait_stage(bob, "b1", "refunded")

        url = f"{base}/api/metrics/operating"
        host = {"Authorization": f"Bearer {setup.host_token}"}
        expected = {
            "orders_attempted": 3, "orders_accepted": 2, "units_accepted": 3, "orders_paid": 2,
            "orders_settled": 1, "orders_refunded": 1, "refund_requests": 1, "disputes": 0,
            "reviews": 1, "review_stars": 4, "joins": 1, "active_viewers": 1, "comments": 1,
            "likes": 3,
        }  # fmt: skip
        # Counted once durable (an order's life reads ahead of its entries) and, for the
        # viewer's watch time, once the server has seen the socket close: until then.
        counted: dict[str, int] = {}
        async with asyncio.timeout(10):
            while True:
                room = (await client.get(url, params={"id": setup.room_id}, headers=host)).json()
                counted = {name: total(room, name) for name in expected}
                if counted == expected and total(room, "watch_ms") > 0:
                    break
                await asyncio.sleep(0.05)
        (point,) = room["series"]
        assert point["rates"]["paid_of_accepted"] == 1.0
        assert point["rates"]["refund_rate"] == 0.5
        assert point["rates"]["average_rating"] == 4.0
        assert abs(point["rates"]["accepted_of_attempted"] - 2 / 3) < 1e-3
        merchant_token = {"Authorization": f"Bearer {setup.merchant_token}"}
        for_merchant = await client.get(
            url, params={"scope": "merchant", "id": merchant.identity_id, "period": "day"},
            headers=merchant_token,
        )  # fmt: skip
        assert total(for_merchant.json(), "orders_settled") == 1
        arbiter_token = {"Authorization": f"Bearer {await session(client, base, arbiter)}"}
        platform = await client.get(url, params={"scope": "platform"}, headers=arbiter_token)
        assert total(platform.json(), "new_identities") == 4  # merchant, arbiter, Ann, Bob
        # Who may read what; bad requests.
        for params, headers, status in [
            ({"scope": "platform"}, merchant_token, 403),
            ({"scope": "merchant", "id": ann.identity_id}, merchant_token, 403),
            ({"id": setup.room_id}, merchant_token, 403),
            ({"id": setup.room_id}, {}, 401),
            ({"id": setup.room_id, "period": "week"}, host, 400),
            ({"id": setup.room_id, "from_ms": "x"}, host, 400),
            ({"id": "nowhere"}, host, 404),
        ]:
            answer = await client.get(url, params=params, headers=headers)
            assert answer.status_code == status, (params, answer.text)
        scraped = (await client.get(f"{base}/metrics")).text
        assert 'livecommerce_operating_total{feed="ledger",name="orders_paid"} 2.0' in scraped
        assert 'livecommerce_operating_total{feed="traffic",name="comments"} 1.0' in scraped
        # Every metric the Grafana dashboard of docs/ asks for is one the server serves.
        dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
        asked = {
            name
            for panel in dashboard["panels"]
            for target in panel["targets"]
            for name in re.findall(r"livecommerce_[a-z_]+", target["expr"])
        }
        assert len(asked) >= 4
        served = set(re.findall(r"^(livecommerce_[a-z_]+)", scraped, re.MULTILINE))
        assert asked <= served, asked - served
    # A restart: the ledger's counts come back from the ledger; the traffic starts again.
    async with running_server(tmp_path, **settings) as server, httpx.AsyncClient() as client:
        again = await client.get(
            f"{server.http}/api/metrics/operating",
            params={"scope": "merchant", "id": merchant.identity_id},
            headers=merchant_token,
        )  # the room is gone (embedded rooms live in memory); the merchant is not
        assert again.status_code == 200, again.text
        assert total(again.json(), "orders_paid") == 2
        assert total(again.json(), "reviews") == 1
        assert total(again.json(), "orders_refunded") == 1
        assert total(again.json(), "comments") == 0
