"""The order path end to end, embedded: a real server, real sockets, the real ledger."""

from __future__ import annotations

import asyncio
import gc
import json
from pathlib import Path
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

from ledger import decode_entry
from ledger.note import Verifier
from ledger.receipt import verify_receipt
from livecommerce.clients.signing import KeyPair
from livecommerce.commerce.identity import b64url_decode
from livecommerce.commerce.privacy import open_shipping, verify_commitment
from livecommerce.commerce.results import Rejected
from tests.livecommerce.hub.test_hub_embedded import recv, recv_type
from tests.livecommerce.pipeline.flows import now_ms, register, room_with_sale, session
from tests.livecommerce.server import RunningServer, running_server

Json = dict[str, Any]


async def order_over(
    ws: ClientConnection, buyer: KeyPair, order_id: str, sale_id: str, quantity: int, price: int
) -> Json:
    order = buyer.order(order_id, sale_id, quantity, price, now_ms())
    await ws.send(json.dumps({"type": "order/v1", **order}))
    return await recv_type(ws, "order.result/v1")


async def stock_seen(
    ws: ClientConnection, product_id: str, wanted: int, timeout_s: float = 5
) -> None:
    """Read state pushes until the product's stock reads `wanted`."""
    async with asyncio.timeout(timeout_s):
        while True:
            message = await recv(ws)
            if (
                message["type"] == "state/v1"
                and (message.get("stock") or {}).get(product_id) == wanted
            ):
                return


def verifier(server: RunningServer) -> Verifier:
    return Verifier.parse(server.app.state.ledger.verifier_key)


async def test_accepted_only_once_in_the_ledger_then_a_receipt_and_stock_on_screens(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path) as server, httpx.AsyncClient() as client:
        setup = await room_with_sale(client, server.http, units_offered=5)
        watcher = await websockets.connect(f"{server.ws}/ws/rooms/{setup.room_id}")
        snapshot = await recv_type(watcher, "snapshot/v1")
        assert snapshot["sale"]["sale_id"] == setup.sale_id
        assert snapshot["pinned"]["product_id"] == "mug"
        buyer = KeyPair()
        await register(client, server.http, buyer, "Ann")
        ws = await websockets.connect(f"{server.ws}/ws/rooms/{setup.room_id}")
        result = await order_over(ws, buyer, "o1", setup.sale_id, 2, setup.price_cents)
        assert result["status"] == "accepted", result
        assert result["quantity"] == 2
        ledger = server.app.state.ledger
        # "accepted" came after the append: the entry is there, with the buyer's signature.
        entry = ledger.entry(result["ledger_index"])
        entry_type, fields = decode_entry(entry)
        assert (entry_type, fields["action"], fields["order_id"]) == ("order/v1", "accepted", "o1")
        assert fields["buyer_id"] == buyer.identity_id
        receipt = await recv_type(ws, "receipt/v1", timeout_s=10)
        assert receipt["ledger_index"] == result["ledger_index"]
        proven = verify_receipt(receipt["proof"].encode(), verifier(server), entry)
        assert proven.index == result["ledger_index"]
        over_http = await client.get(
            f"{server.http}/api/orders/o1/receipt", params={"buyer_id": buyer.identity_id}
        )
        assert over_http.status_code == 200
        verify_receipt(over_http.content, verifier(server), entry)
        await stock_seen(watcher, "mug", 3)
        await ws.close()
        await watcher.close()


async def test_every_refusal_has_a_clear_reason_and_a_repeat_gets_the_first_answer(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path) as server, httpx.AsyncClient() as client:
        setup = await room_with_sale(client, server.http, units_offered=4, per_buyer_limit=3)
        price, sale = setup.price_cents, setup.sale_id
        ann, bob, stranger = KeyPair(), KeyPair(), KeyPair()
        await register(client, server.http, ann, "Ann")
        await register(client, server.http, bob, "Bob")
        ws = await websockets.connect(f"{server.ws}/ws/rooms/{setup.room_id}")

        async def send(fields: Json) -> Json:
            await ws.send(json.dumps({"type": "order/v1", **fields}))
            return await recv_type(ws, "order.result/v1")

        def reason(result: Json) -> str:
            assert result["status"] == "rejected", result
            assert result["detail"], result
            return str(result["reason"])

        first = await send(ann.order("a1", sale, 2, price, a1_time := now_ms()))
        assert first["status"] == "accepted"
        # Other bytes (a later time) under the same id. (A fresh now_ms() may still be the
        # same millisecond: the answer can come back in under one.)
        again = await send(ann.order("a1", sale, 2, price, first_time := a1_time + 1))
        assert reason(again) == "duplicate_conflict"
        replay = ann.order("a2", sale, 1, price, first_time)
        assert (await send(replay))["status"] == "accepted"
        repeated = await send(replay)
        assert repeated["status"] == "accepted"
        assert repeated["repeated"] is True
        # Altered after signing: the signature no longer verifies.
        altered = {**ann.order("a3", sale, 1, price, now_ms()), "quantity": 3}
        assert reason(await send(altered)) == "bad_signature"
        forged = {**ann.order("a4", sale, 1, price, now_ms()), "buyer_id": bob.identity_id}
        assert reason(await send(forged)) == "bad_signature"
        assert reason(await send(stranger.order("s1", sale, 1, price, now_ms()))) == (
            "unknown_identity"
        )
        assert reason(await send(ann.order("a5", "no-such-sale", 1, price, now_ms()))) == (
            "unknown_sale"
        )
        assert reason(await send(ann.order("a6", sale, 1, price - 1, now_ms()))) == (
            "price_changed"
        )
        assert reason(await send(bob.order("b0", sale, 4, price, now_ms()))) == "bad_quantity"
        assert reason(await send(bob.order("b00", sale, -1, price, now_ms()))) == "bad_quantity"
        assert reason(await send(ann.order("a7", sale, 1, price, now_ms() - 120_000))) == "stale"
        assert reason(await send(ann.order("bad id!", sale, 1, price, now_ms()))) == (
            "bad_order_id"
        )
        # Ann holds 3 of 3 allowed: the limit is cumulative.
        assert reason(await send(ann.order("a8", sale, 1, price, now_ms()))) == "limit_reached"
        # One unit left: Bob's two are all or nothing.
        assert reason(await send(bob.order("b1", sale, 2, price, now_ms()))) == "sold_out"
        assert (await send(bob.order("b2", sale, 1, price, now_ms())))["status"] == "accepted"
        sold_out = await send(bob.order("b3", sale, 1, price, now_ms()))
        assert reason(sold_out) == "sold_out"
        # Malformed frames never reach the core: a protocol error, nothing changes.
        await ws.send(json.dumps({"type": "order/v1", "order_id": "x", "quantity": "1"}))
        assert (await recv_type(ws, "error/v1"))["code"] == "invalid_message"
        sale_now = (await client.get(f"{server.http}/api/sales/{sale}")).json()
        assert sale_now["units_remaining"] == 0
        await ws.close()


async def test_a_sale_in_its_countdown_takes_no_orders_and_hosts_need_their_credential(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path) as server, httpx.AsyncClient() as client:
        setup = await room_with_sale(client, server.http, units_offered=3, starts_in_ms=60_000)
        assert setup.sale["state"] == "scheduled"
        buyer = KeyPair()
        await register(client, server.http, buyer, "Ann")
        result = await client.post(
            f"{server.http}/api/orders",
            json=buyer.order("o1", setup.sale_id, 1, setup.price_cents, now_ms()),
        )
        assert result.status_code == 409
        assert result.json()["reason"] == "sale_not_open"
        sales = f"{server.http}/api/rooms/{setup.room_id}/sales"
        body = {
            "sale_id": "other",
            "product_id": "mug",
            "units_offered": 1,
            "per_buyer_limit": 1,
            "duration_ms": 10_000,
            "payment_hold_ms": 10_000,
        }
        wrong = await client.post(sales, json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403
        missing = await client.post(sales, json=body)
        assert missing.status_code == 401
        # A room nobody linked to a merchant cannot sell.
        created = (
            await client.post(f"{server.http}/api/rooms", json={"title": "T", "host_name": "H"})
        ).json()
        unlinked = await client.post(
            f"{server.http}/api/rooms/{created['room_id']}/sales",
            json=body,
            headers={"Authorization": f"Bearer {created['host_token']}"},
        )
        assert unlinked.status_code == 409
        assert unlinked.json()["error"] == "room_not_linked"
        # The host stops the sale: viewers see it closed with the reason.
        stopped = await client.post(
            f"{sales}/{setup.sale_id}/stop",
            headers={"Authorization": f"Bearer {setup.host_token}"},
        )
        assert stopped.status_code == 200
        assert stopped.json()["close_reason"] == "stopped"


async def test_an_unpaid_order_expires_and_its_units_come_back_on_every_screen(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path) as server, httpx.AsyncClient() as client:
        setup = await room_with_sale(client, server.http, units_offered=3, payment_hold_ms=1_000)
        watcher = await websockets.connect(f"{server.ws}/ws/rooms/{setup.room_id}")
        buyer = KeyPair()
        await register(client, server.http, buyer, "Ann")
        response = await client.post(
            f"{server.http}/api/orders",
            json=buyer.order("o1", setup.sale_id, 2, setup.price_cents, now_ms()),
        )
        assert response.status_code == 201, response.text
        await stock_seen(watcher, "mug", 1)
        await stock_seen(watcher, "mug", 3, timeout_s=10)
        ledger = server.app.state.ledger
        entries = [decode_entry(ledger.entry(i)) for i in range(ledger.size)]
        expired = [f for t, f in entries if t == "order/v1" and f["action"] == "expired"]
        assert [(f["order_id"], f["quantity"]) for f in expired] == [("o1", 2)]
        token = await session(client, server.http, buyer)
        late = await client.post(
            f"{server.http}/api/orders/o1/pay", headers={"Authorization": f"Bearer {token}"}
        )
        assert late.status_code == 409
        assert late.json()["reason"] == "order_expired"
        await watcher.close()


async def test_paying_seals_shipping_to_the_merchant_and_the_ledger_holds_a_commitment(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path) as server, httpx.AsyncClient() as client:
        setup = await room_with_sale(client, server.http, units_offered=3)
        buyer = KeyPair()
        await register(client, server.http, buyer, "Ann")
        token = await session(client, server.http, buyer)
        ws = await websockets.connect(f"{server.ws}/ws/rooms/{setup.room_id}")
        result = await order_over(ws, buyer, "o1", setup.sale_id, 1, setup.price_cents)
        assert result["status"] == "accepted"
        address = {"name": "Ann Example", "street": "1 Quay Street", "city": "Cork"}
        await ws.send(
            json.dumps({"type": "pay/v1", "order_id": "o1", "token": token, "shipping": address})
        )
        paid = await recv_type(ws, "pay.result/v1")
        assert paid["status"] == "paid", paid
        ledger = server.app.state.ledger
        _, fields = decode_entry(ledger.entry(paid["ledger_index"]))
        assert fields["action"] == "paid"
        log_bytes = b"".join(ledger.entry(i) for i in range(ledger.size))
        assert b"Quay" not in log_bytes
        assert b"Ann Example" not in log_bytes
        # Paying again answers the same; someone else's session cannot pay it.
        await ws.send(json.dumps({"type": "pay/v1", "order_id": "o1", "token": token}))
        again = await recv_type(ws, "pay.result/v1")
        assert again["status"] == "paid", again
        other = KeyPair()
        await register(client, server.http, other, "Eve")
        eve = await session(client, server.http, other)
        stolen = await client.post(
            f"{server.http}/api/orders/o1/pay", headers={"Authorization": f"Bearer {eve}"}
        )
        assert stolen.json()["reason"] == "unknown_order"
        # The merchant lists its orders and opens the sealed details with its own key.
        listed = await client.get(
            f"{server.http}/api/merchant/orders",
            headers={"Authorization": f"Bearer {setup.merchant_token}"},
        )
        assert listed.status_code == 200
        (order,) = listed.json()["orders"]
        assert (order["order_id"], order["status"]) == ("o1", "paid")
        sealed = b64url_decode(order["shipping_sealed"])
        assert sealed is not None
        opened = open_shipping(sealed, setup.merchant.signing_key)
        assert not isinstance(opened, Rejected)
        assert opened.details == address
        assert verify_commitment(opened.details, opened.salt, fields["shipping_commitment"])
        # Nobody else sees the merchant's orders.
        assert (
            await client.get(
                f"{server.http}/api/merchant/orders", headers={"Authorization": f"Bearer {eve}"}
            )
        ).json()["orders"] == []
        await ws.close()


async def test_a_restart_rebuilds_everything_from_the_ledger(tmp_path: Path) -> None:
    buyer = KeyPair()
    async with running_server(tmp_path) as server, httpx.AsyncClient() as client:
        setup = await room_with_sale(client, server.http, units_offered=10)
        await register(client, server.http, buyer, "Ann")
        order = buyer.order("o1", setup.sale_id, 3, setup.price_cents, now_ms())
        first = await client.post(f"{server.http}/api/orders", json=order)
        assert first.status_code == 201
        before = (await client.get(f"{server.http}/api/sales/{setup.sale_id}")).json()
    async with running_server(tmp_path) as server, httpx.AsyncClient() as client:
        after = (await client.get(f"{server.http}/api/sales/{setup.sale_id}")).json()
        assert after == before
        assert after["units_remaining"] == 7
        again = await client.post(f"{server.http}/api/orders", json=order)
        assert again.status_code == 200
        assert again.json()["repeated"] is True
        assert again.json()["ledger_index"] == first.json()["ledger_index"]
        more = buyer.order("o2", setup.sale_id, 1, setup.price_cents, now_ms())
        assert (await client.post(f"{server.http}/api/orders", json=more)).json()[
            "reason"
        ] == "limit_reached"


async def test_a_closed_settled_sale_leaves_memory_and_its_orders_are_never_taken_again(
    tmp_path: Path,
) -> None:
    async with (
        running_server(tmp_path, closed_sale_forget_ms=500) as server,
        httpx.AsyncClient() as client,
    ):
        setup = await room_with_sale(
            client, server.http, units_offered=3, duration_ms=1_500, payment_hold_ms=1_000
        )
        buyer = KeyPair()
        await register(client, server.http, buyer, "Ann")
        order = buyer.order("o1", setup.sale_id, 1, setup.price_cents, now_ms())
        first = await client.post(f"{server.http}/api/orders", json=order)
        assert first.status_code == 201
        core = server.app.state.orders.core
        assert core.orders.orders_remembered() == 1
        async with asyncio.timeout(10):  # hold expires, sale closes, then it is forgotten
            while core.orders.orders_remembered():
                await asyncio.sleep(0.1)
        again = await client.post(f"{server.http}/api/orders", json=order)
        assert again.json()["status"] == "rejected"
        assert again.json()["reason"] in ("sale_not_open", "stale")
        # The ledger still has it: one acceptance, one expiry.
        ledger = server.app.state.ledger
        actions = [
            fields["action"]
            for entry_type, fields in (decode_entry(ledger.entry(i)) for i in range(ledger.size))
            if entry_type == "order/v1"
        ]
        assert actions == ["accepted", "expired"]


def tracked_objects() -> int:
    gc.collect()
    return len(gc.get_objects())


async def test_answered_orders_leave_nothing_for_the_garbage_collector_to_walk(
    tmp_path: Path,
) -> None:
    """Orders over sockets, answered and with their receipts: what the server keeps of
    them (the core's records, the ledger, the indexes) is not tracked by the garbage
    collector, so full collections do not grow with the orders taken (gc_pauses.py).
    The server raises the young threshold while it runs and puts it back after."""
    threshold = gc.get_threshold()
    async with (
        running_server(tmp_path, gc_young_threshold_objects=12_345) as server,
        httpx.AsyncClient() as client,
    ):
        assert gc.get_threshold() == (12_345, *threshold[1:])
        setup = await room_with_sale(client, server.http, units_offered=1000, per_buyer_limit=100)
        buyers = [KeyPair() for _ in range(10)]
        sockets = []
        for number, buyer in enumerate(buyers):
            await register(client, server.http, buyer, f"Buyer {number}")
            sockets.append(await websockets.connect(f"{server.ws}/ws/rooms/{setup.room_id}"))

        async def orders(first: int, count: int) -> None:
            async def one_buyer(buyer: KeyPair, ws: ClientConnection) -> None:
                for n in range(first, first + count):
                    order = buyer.order(f"o{n}", setup.sale_id, 1, setup.price_cents, now_ms())
                    await ws.send(json.dumps({"type": "order/v1", **order}))
                answers = receipts = 0
                while answers < count or receipts < count:
                    message = await recv(ws, timeout_s=10)
                    answers += message["type"] == "order.result/v1"
                    receipts += message["type"] == "receipt/v1"

            await asyncio.gather(*map(one_buyer, buyers, sockets))

        await orders(0, 10)  # tables and buffers have grown to their working size
        before = tracked_objects()
        for first in (10, 40, 70):  # waves within each socket's frame budget
            await orders(first, 30)
        assert server.app.state.orders.core.orders.orders_remembered() == 1000
        # 900 more orders remembered; with tracked records this grew by over 2,700.
        grown = tracked_objects() - before
        assert grown < 300
        for ws in sockets:
            await ws.close()
    assert gc.get_threshold() == threshold


async def test_the_demo_room_made_again_after_a_kill_shows_its_open_sale_and_stock(
    tmp_path: Path,
) -> None:
    """Rooms live in memory; the demo makes its room again at every start. A sale still
    open in the ledger must be in the new room's snapshot with its stock, or viewers see
    no sale (and no count) until the next change, which for a sold-out sale never comes."""
    from tests.faults.scenarios import DEMO_ROOM, EmbeddedServer

    server = EmbeddedServer(tmp_path / "data")
    await server.start()
    try:
        async with httpx.AsyncClient() as client:
            base = server.endpoint.http
            price = await server.shop().sale(client, base, "flash-9", 5, 5)
            buyer = KeyPair()
            await register(client, base, buyer, "Ann")
            order = buyer.order("o1", "flash-9", 5, price, now_ms())
            assert (await client.post(f"{base}/api/orders", json=order)).status_code == 201
            await server.kill()
            await server.start()
            async with asyncio.timeout(5):
                while True:
                    snapshot = (await client.get(f"{base}/api/rooms/{DEMO_ROOM}")).json()
                    if snapshot["sale"] is not None and snapshot["stock"]:
                        break
                    await asyncio.sleep(0.05)
            assert snapshot["sale"]["sale_id"] == "flash-9"
            assert snapshot["sale"]["state"] == "open"
            assert snapshot["stock"] == {"mug-1": 0}
    finally:
        await server.stop()
