"""Auctions end to end on a real server: the host starts one, bids come over HTTP and the
room socket, every viewer's socket gets each change (`auction/v1`), the timer closes it,
the winner pays the order it got; refusals over HTTP; after a restart the same auction,
and an audit. Scaled out: the writer sequences the bids and either process serves them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from livecommerce.clients.signing import KeyPair
from tests.conftest import RedisServer
from tests.livecommerce.pipeline.cluster import ledger_verifier, sale_known_everywhere, scaled
from tests.livecommerce.pipeline.flows import now_ms, room_with_sale, session
from tests.livecommerce.pipeline.test_after_sale import Shop, audit
from tests.livecommerce.server import running_server

Json = dict[str, Any]
DURATION_MS = 10_000


async def start(shop: Shop, **body: Any) -> httpx.Response:
    setup = shop.setup
    return await shop.client.post(
        f"{shop.base}/api/rooms/{setup.room_id}/auctions",
        json={"product_id": "mug", "starting_cents": 1_000, "duration_ms": DURATION_MS, **body},
        headers={"Authorization": f"Bearer {setup.host_token}"},
    )


async def bid_http(shop: Shop, bidder: KeyPair, auction_id: str, amount: int, **more: Any):
    body = bidder.bid(auction_id, amount, now_ms(), **more)
    del body["auction_id"]
    return await shop.client.post(f"{shop.base}/api/auctions/{auction_id}/bids", json=body)


async def next_of(ws: Any, kind: str, where: Any = lambda message: True) -> Json:
    async with asyncio.timeout(15):
        while True:
            message: Json = json.loads(await ws.recv())
            if message.get("type") == kind and where(message):
                return message


async def test_an_auction_over_http_and_sockets_then_paid_replayed_and_audited(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path) as server, httpx.AsyncClient() as client:
        base = server.http
        setup = await room_with_sale(client, base, units_offered=2, inventory=5)
        shop = Shop(base, client, setup)
        ann, _ = await shop.buyer("Ann")
        bob, _ = await shop.buyer("Bob")
        bad = await start(shop, duration_ms=5)
        assert bad.status_code == 400, bad.text
        no_host = await client.post(
            f"{base}/api/rooms/{setup.room_id}/auctions",
            json={"product_id": "mug", "starting_cents": 1_000, "duration_ms": DURATION_MS},
        )
        assert no_host.status_code == 401
        async with (
            websockets.connect(f"{server.ws}/ws/rooms/{setup.room_id}") as watcher,
            websockets.connect(f"{server.ws}/ws/rooms/{setup.room_id}") as bidder_socket,
        ):
            started = await start(shop, auction_id="lot1", mode="extend")
            assert started.status_code == 201, started.text
            assert started.json()["minimum_next_cents"] == 1_000
            seen = await next_of(watcher, "auction/v1")
            assert (seen["auction"]["auction_id"], seen["auction"]["state"]) == ("lot1", "open")
            # Refused bids change nothing.
            low = await bid_http(shop, ann, "lot1", 900)
            assert (low.status_code, low.json()["error"]) == (409, "bid_too_low")
            forged = bob.bid("lot1", 1_000, now_ms())
            forged["signature"] = ann.bid("lot1", 1_000, now_ms())["signature"]
            del forged["auction_id"]
            wrong = await client.post(f"{base}/api/auctions/lot1/bids", json=forged)
            assert wrong.status_code == 401
            first = await bid_http(shop, ann, "lot1", 1_000, max_cents=1_500)
            assert first.status_code == 201, first.text
            assert (first.json()["leader_id"], first.json()["price_cents"]) == (
                ann.identity_id, 1_000,
            )  # fmt: skip
            # Bob bids on the room socket; Ann's maximum answers for her.
            await bidder_socket.send(
                json.dumps({"type": "bid/v1", **bob.bid("lot1", 1_100, now_ms())})
            )
            answer = await next_of(bidder_socket, "bid.result/v1")
            assert answer["status"] == "accepted", answer
            assert (answer["leader_id"], answer["price_cents"]) == (ann.identity_id, 1_200)
            seen = await next_of(watcher, "auction/v1", lambda m: m["auction"]["bids"] == 2)
            assert seen["auction"]["leader_name"] == "Ann"
            assert seen["auction"]["price_cents"] == 1_200
            over = await bid_http(shop, bob, "lot1", 1_600)
            assert over.json()["leader_id"] == bob.identity_id
            lot_order = ann.order("sneak", "auction-lot1", 1, 1_000, now_ms())
            sneaky = await client.post(f"{base}/api/orders", json=lot_order)
            assert sneaky.json()["reason"] == "sale_not_open"
            host = {"Authorization": f"Bearer {setup.host_token}"}
            cancel = await client.post(
                f"{base}/api/rooms/{setup.room_id}/auctions/lot1/cancel", json={}, headers=host
            )
            assert (cancel.status_code, cancel.json()["error"]) == (409, "has_bids")
            closed = await next_of(watcher, "auction/v1", lambda m: m["auction"]["state"] != "open")
            assert (closed["auction"]["state"], closed["auction"]["winner_id"]) == (
                "sold", bob.identity_id,
            )  # fmt: skip
            late = await bid_http(shop, ann, "lot1", 5_000)
            assert late.json()["error"] == "auction_closed"
        bob_token = await shop_session(shop, bob)
        paid = await shop.pay(bob_token, "lot1-1")
        assert paid.status_code == 200, paid.text
        life = await shop.life(bob, "lot1-1")
        assert (life["stage"], life["amount_cents"]) == ("paid", 1_600)
        listed = (await client.get(f"{base}/api/rooms/{setup.room_id}/auctions")).json()
        assert [a["auction_id"] for a in listed["auctions"]] == ["lot1"]
        before = (await client.get(f"{base}/api/auctions/lot1")).json()
        vkey = server.app.state.ledger.verifier_key
    async with running_server(tmp_path) as server, httpx.AsyncClient() as client:
        again = (await client.get(f"{server.http}/api/auctions/lot1")).json()
        names = {"leader_name"}  # display names are not on the ledger
        assert {k: v for k, v in again.items() if k not in names} == {
            k: v for k, v in before.items() if k not in names
        }
    done = audit(tmp_path, vkey)
    assert done.returncode == 0, done.stdout + done.stderr


async def shop_session(shop: Shop, buyer: KeyPair) -> str:
    return await session(shop.client, shop.base, buyer)


@pytest.mark.redis
async def test_scaled_out_the_writer_sequences_bids_from_both_processes(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with scaled(tmp_path, redis_server.url, 2) as (writer, webs):
        async with httpx.AsyncClient(timeout=30) as client:
            setup = await room_with_sale(client, webs[0].http, units_offered=2, inventory=5)
            await sale_known_everywhere(client, webs, setup.sale_id)
            here, there = Shop(webs[0].http, client, setup), Shop(webs[1].http, client, setup)
            ann, _ = await here.buyer("Ann")
            bob, _ = await there.buyer("Bob")
            async with websockets.connect(f"{webs[1].ws}/ws/rooms/{setup.room_id}") as watcher:
                started = await start(here, auction_id="lot2", duration_ms=DURATION_MS)
                assert started.status_code == 201, started.text
                assert (await bid_http(here, ann, "lot2", 1_000)).status_code == 201
                taken = await bid_http(there, bob, "lot2", 1_100)
                assert taken.status_code == 201, taken.text
                assert (taken.json()["leader_id"], taken.json()["price_cents"]) == (
                    bob.identity_id, 1_100,
                )  # fmt: skip
                seen = await next_of(watcher, "auction/v1", lambda m: m["auction"]["bids"] == 2)
                assert seen["auction"]["leader_id"] == bob.identity_id
                closed = await next_of(
                    watcher, "auction/v1", lambda m: m["auction"]["state"] == "sold"
                )
                assert closed["auction"]["winner_id"] == bob.identity_id
            token = await shop_session(there, bob)
            paid = await there.pay(token, "lot2-1")
            assert paid.status_code == 200, paid.text
            assert (await here.life(bob, "lot2-1"))["amount_cents"] == 1_100
        await asyncio.to_thread(writer.stop)
    done = audit(writer.data_dir, ledger_verifier(writer.data_dir).format())
    assert done.returncode == 0, done.stdout + done.stderr
