"""Reviews end to end on a real embedded server: a received order reviewed once, the
merchant's reply, an arbiter hiding the text, the product's reviews with the ledger
indexes that prove them; all of it again after a restart, and audited."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from livecommerce.clients.signing import KeyPair
from tests.livecommerce.pipeline.flows import now_ms, register, room_with_sale
from tests.livecommerce.pipeline.test_after_sale import Shop, audit
from tests.livecommerce.server import running_server

Json = dict[str, Any]


async def received_order(shop: Shop, buyer: KeyPair, token: str, order_id: str) -> None:
    await shop.order(buyer, order_id)
    assert (await shop.pay(token, order_id)).status_code == 200
    merchant = shop.setup.merchant
    shipped = await shop.step(merchant, "ship", buyer, order_id, carrier="DHL", tracking="J1")
    assert shipped.status_code == 200, shipped.text
    await shop.wait_action(buyer, order_id, "capture_succeeded")
    delivered = await shop.step(merchant, "deliver", buyer, order_id)
    assert delivered.status_code == 200, delivered.text


async def test_a_review_its_reply_and_moderation_over_http_then_replayed(tmp_path: Path) -> None:
    arbiter = KeyPair()
    settings = {"arbiter_ids": arbiter.identity_id}
    async with running_server(tmp_path, **settings) as server, httpx.AsyncClient() as client:
        base = server.http
        setup = await room_with_sale(client, base, units_offered=10)
        await register(client, base, arbiter, "Platform")
        shop = Shop(base, client, setup)
        ann, ann_token = await shop.buyer("Ann")
        bob, _bob_token = await shop.buyer("Bob")
        await received_order(shop, ann, ann_token, "o1")
        await shop.order(bob, "o2")  # held, never received

        async def act(signer: KeyPair, action: str, buyer: KeyPair, order_id: str, **fields: Any):
            body = signer.review(action, buyer.identity_id, order_id, now_ms(), **fields)
            return await client.post(f"{base}/api/orders/{order_id}/reviews", json=body)

        early = await act(bob, "review", bob, "o2", stars=5, text="can't wait")
        assert (early.status_code, early.json()["error"]) == (404, "unknown_order")
        stranger = await act(bob, "review", ann, "o1", stars=1, text="fake")
        assert (stranger.status_code, stranger.json()["error"]) == (403, "not_your_order")
        body = ann.review("review", ann.identity_id, "o1", now_ms(), stars=4, text="Solid mug")
        taken = await client.post(f"{base}/api/orders/o1/reviews", json=body)
        assert taken.status_code == 201, taken.text
        review_index = taken.json()["ledger_index"]
        again = await client.post(f"{base}/api/orders/o1/reviews", json=body)
        assert (again.status_code, again.json()["status"]) == (200, "repeated")
        twice = await act(ann, "review", ann, "o1", stars=1, text="changed")
        assert (twice.status_code, twice.json()["error"]) == (409, "already_reviewed")
        bad = await client.post(f"{base}/api/orders/o1/reviews", json={**body, "stars": "5"})
        assert bad.status_code == 400
        replied = await act(setup.merchant, "reply", ann, "o1", text="Thanks, Ann!")
        assert replied.status_code == 201, replied.text
        not_arbiter = await act(setup.merchant, "hide", ann, "o1", target="review", text="no")
        assert not_arbiter.status_code == 403
        rating = (await client.get(f"{base}/api/products/mug/rating")).json()
        assert (rating["count"], rating["average_hundredths"]) == (1, 400)
        listed = (await client.get(f"{base}/api/products/mug/reviews")).json()
        (review,) = listed["reviews"]
        assert (review["stars"], review["text"], review["ledger_index"]) == (
            4,
            "Solid mug",
            review_index,
        )
        assert review["reply"]["text"] == "Thanks, Ann!"
        assert review["paid_index"] is not None
        assert review["received_index"] is not None
        # Every index names the entry it says: fetched with its proof, as the page does.
        for index, kind, action in (
            (review_index, "review/v1", "reviewed"),
            (review["paid_index"], "order/v1", "paid"),
            (review["received_index"], "order/v1", "delivered"),
        ):
            async with asyncio.timeout(5):  # until a checkpoint covers it (about 1 s)
                while (
                    proof := await client.get(f"{base}/ledger/proof/{index}")
                ).status_code == 404:
                    await asyncio.sleep(0.1)
            assert proof.status_code == 200
            assert f'"type":"{kind}"'.encode() in _entry_of(proof.text), proof.text
            assert f'"action":"{action}"'.encode() in _entry_of(proof.text)
        hidden = await act(arbiter, "hide", ann, "o1", target="review", text="off-topic")
        assert hidden.status_code == 201, hidden.text
        listed = (await client.get(f"{base}/api/products/mug/reviews")).json()
        assert (listed["reviews"][0]["text"], listed["reviews"][0]["hidden"]) == ("", True)
        assert listed["count"] == 1
        assert listed["reviews"][0]["stars"] == 4
        before = listed
        vkey = server.app.state.ledger.verifier_key
    async with running_server(tmp_path, **settings) as server, httpx.AsyncClient() as client:
        after = (await client.get(f"{server.http}/api/products/mug/reviews")).json()
        assert after == before
    done = audit(tmp_path, vkey)
    assert done.returncode == 0, done.stdout + done.stderr


def _entry_of(receipt: str) -> bytes:
    import base64

    for line in receipt.split("\n"):
        if line.startswith("extra "):
            return base64.b64decode(line[6:])
    raise AssertionError("no entry in the receipt")
