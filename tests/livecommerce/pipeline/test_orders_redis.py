"""Scaled out on a real redis-server: two web processes and the ledger writer, as separate
OS processes. Never oversold, nothing acknowledged lost across SIGKILLs, stock rebuilt
from the ledger after Redis loses its data."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as redis
import websockets

from ledger.note import Verifier
from ledger.receipt import verify_receipt
from ledger.verify import verify_url
from livecommerce.clients.signing import KeyPair
from livecommerce.commerce.identity import b64url_decode
from livecommerce.commerce.orders import PayOrder
from livecommerce.commerce.privacy import open_shipping
from livecommerce.commerce.results import Rejected
from livecommerce.pipeline.pipeline import ServiceUnavailable
from livecommerce.pipeline.scaled import WriterLedger, scaled_pipeline
from tests.conftest import RedisServer
from tests.livecommerce.pipeline.cluster import (
    accepted_in,
    ledger_entries,
    order_retrying,
    redis_remaining,
    register_retrying,
    remaining_or_none,
    replay,
    sale_known_everywhere,
    scaled,
)
from tests.livecommerce.pipeline.crowd import (
    Crowd,
    check_answers,
    make_crowd,
    register_crowd,
    send_crowd,
)
from tests.livecommerce.pipeline.flows import now_ms, register, room_with_sale
from tests.livecommerce.processes import ServerProcess, WriterProcess
from tests.support import require_binary

pytestmark = pytest.mark.redis

Json = dict[str, Any]


async def test_two_web_processes_and_the_writer_never_oversell(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    offered, limit, buyers, sockets = 300, 2, 1_000, 100
    async with scaled(tmp_path, redis_server.url) as (writer, webs):
        bases = [web.http for web in webs]
        async with httpx.AsyncClient(timeout=30) as client:
            setup = await room_with_sale(
                client, bases[0], units_offered=offered, per_buyer_limit=limit
            )
            await sale_known_everywhere(client, webs, setup.sale_id)
            crowd = make_crowd(buyers, sockets, setup.sale_id, setup.price_cents, limit)
            await register_crowd(client, bases, crowd, sockets)
            watcher = await websockets.connect(f"{webs[1].ws}/ws/rooms/{setup.room_id}")
            answers = await send_crowd([web.ws for web in webs], setup.room_id, crowd)
            accepted = check_answers(answers, crowd, offered, limit)
            # The writer pushes stock to every process's viewers.
            async with asyncio.timeout(10):
                while True:
                    message = json.loads(await watcher.recv())
                    if message["type"] == "state/v1" and message.get("stock", {}).get("mug") == 0:
                        break
            await watcher.close()
        assert await redis_remaining(redis_server.url, setup.sale_id) == 0
        # Anyone can check the log over HTTP, and a buyer's receipt against it.
        async with httpx.AsyncClient(timeout=30) as client:
            vkey = (await client.get(f"{writer.ledger_url}/vkey")).text.strip()
            receipt = await client.get(
                f"{webs[0].http}/api/orders/o1/receipt",
                params={"buyer_id": crowd.orders["o1"]["buyer_id"]},
            )
        verifier = Verifier.parse(vkey)
        report = await asyncio.to_thread(verify_url, writer.ledger_url, verifier)
        # One order/v1 per accepted order, plus the sale's stock counts (one per sale per
        # batch written at once, not one per order: docs/commerce.md "Wiring it").
        assert report.entries > offered
        if "o1" in accepted:
            assert verify_receipt(receipt.content, verifier).index == accepted["o1"]["ledger_index"]
        await asyncio.to_thread(writer.stop)
        entries = await ledger_entries(writer.data_dir)
    recorded = accepted_in(entries)
    assert {order_id: index for order_id, (index, _) in recorded.items()} == {
        order_id: answer["ledger_index"] for order_id, answer in accepted.items()
    }
    sale = replay(entries).sales.get(setup.sale_id)
    assert sale is not None
    assert sale.units_remaining == 0
    assert sale.units_held == offered


async def tolerant_session(
    ws_url: str, frames: list[Json], pace_s: float, timeout_s: float
) -> list[Json]:
    """Buyers on one socket ordering one after another (`pace_s` apart) while their server
    may die: the answers that arrived before the socket went."""
    answers: list[Json] = []

    async def send_paced(ws: websockets.ClientConnection) -> None:
        for frame in frames:
            await ws.send(json.dumps(frame))
            await asyncio.sleep(pace_s)

    with contextlib.suppress(websockets.ConnectionClosed, OSError, TimeoutError):
        async with websockets.connect(ws_url) as ws:
            sender = asyncio.create_task(send_paced(ws))
            try:
                async with asyncio.timeout(timeout_s):
                    while len(answers) < len(frames):
                        message = json.loads(await ws.recv())
                        if message["type"] == "order.result/v1":
                            answers.append(message)
            finally:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                    await sender
    return answers


async def test_sigkill_of_a_web_process_and_of_the_writer_mid_sale_loses_nothing(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    offered, limit, buyers, sockets = 400, 2, 1_200, 120
    async with scaled(tmp_path, redis_server.url) as (writer, webs):
        doomed, survivor = webs
        async with httpx.AsyncClient(timeout=30) as client:
            setup = await room_with_sale(
                client, survivor.http, units_offered=offered, per_buyer_limit=limit
            )
            await sale_known_everywhere(client, webs, setup.sale_id)
            crowd = make_crowd(buyers, sockets, setup.sale_id, setup.price_cents, limit)
            await register_crowd(client, [doomed.http, survivor.http], crowd, sockets)
            urls = [
                f"{(doomed if i % 2 == 0 else survivor).ws}/ws/rooms/{setup.room_id}"
                for i in range(sockets)
            ]
            sending = asyncio.gather(
                *(
                    tolerant_session(url, frames, pace_s=0.2, timeout_s=40)
                    for url, frames in zip(urls, crowd.frames_by_socket, strict=True)
                )
            )
            # About 12 orders a socket, 0.2 s apart: the sale runs for over 2 s.
            await asyncio.sleep(0.6)
            await asyncio.to_thread(doomed.kill)
            await asyncio.sleep(0.4)
            await asyncio.to_thread(writer.kill)
            await asyncio.sleep(1.0)
            writer = await asyncio.to_thread(WriterProcess, writer.data_dir, redis_server.url)
            answers = [answer for per_socket in await sending for answer in per_socket]
            # Buyers without an answer, or told to retry, send the same order again.
            answered = {
                answer["order_id"]
                for answer in answers
                if answer["status"] == "accepted" or answer["reason"] != "unavailable"
            }
            retries = [
                {"type": "order/v1", **order}
                for order_id, order in crowd.orders.items()
                if order_id not in answered
            ]
            assert retries, "the kills came too late to matter"
            restarted = await asyncio.to_thread(
                ServerProcess, tmp_path / "web0-again", redis_server.url
            )
            webs.append(restarted)
            retried = await send_crowd(
                [survivor.ws, restarted.ws],
                setup.room_id,
                Crowd(
                    crowd.buyers, crowd.wanted, crowd.orders, [retries[i::10] for i in range(10)]
                ),
            )
        final = [a for a in answers if a["status"] == "accepted" or a["reason"] != "unavailable"]
        everyone = final + retried
        accepted = {a["order_id"]: a for a in everyone if a["status"] == "accepted"}
        for answer in everyone:
            if answer["status"] == "accepted":
                assert accepted[answer["order_id"]]["ledger_index"] == answer["ledger_index"]
        await asyncio.to_thread(writer.stop)
        entries = await ledger_entries(writer.data_dir)
        remaining = await redis_remaining(redis_server.url, setup.sale_id)
    recorded = accepted_in(entries)
    # Every order a buyer heard "accepted" for is in the ledger, at the index it was told.
    for order_id, answer in accepted.items():
        assert recorded[order_id][0] == answer["ledger_index"]
    units = sum(quantity for _, quantity in recorded.values())
    assert units <= offered
    assert remaining == offered - units  # Redis and the ledger agree: no unit lost
    sale = replay(entries).sales.get(setup.sale_id)
    assert sale is not None
    assert sale.units_remaining == remaining
    demanded = sum(crowd.wanted.values())
    assert units == min(offered, demanded)


async def test_stock_is_rebuilt_from_the_ledger_after_redis_loses_its_data(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    private = RedisServer(require_binary("redis-server"), tmp_path_factory.mktemp("lossy-redis"))
    private.start()
    try:
        async with scaled(tmp_path, private.url, web_processes=1) as (writer, (web,)):
            async with httpx.AsyncClient(timeout=30) as client:
                setup = await room_with_sale(client, web.http, units_offered=50)
                buyers = [KeyPair() for _ in range(10)]
                for buyer in buyers:
                    await register(client, web.http, buyer, "Ann")
                orders = [
                    buyer.order(f"o{n}", setup.sale_id, 2, setup.price_cents, now_ms())
                    for n, buyer in enumerate(buyers)
                ]
                first = [await client.post(f"{web.http}/api/orders", json=o) for o in orders]
                assert all(r.status_code == 201 for r in first), [r.text for r in first]
                assert await redis_remaining(private.url, setup.sale_id) == 30
                await asyncio.to_thread(private.restart)  # no persistence: everything gone
                async with asyncio.timeout(20):
                    while await remaining_or_none(private.url, setup.sale_id) != 30:
                        await asyncio.sleep(0.1)
                # Old orders are known again (their first answer), new ones take stock.
                again = await order_retrying(client, web.http, orders[0])
                assert again["status"] == "accepted", again
                assert again["ledger_index"] == first[0].json()["ledger_index"]
                late = KeyPair()
                await register_retrying(client, web.http, late)
                fresh = await order_retrying(
                    client,
                    web.http,
                    late.order("late-1", setup.sale_id, 3, setup.price_cents, now_ms()),
                )
                assert fresh["status"] == "accepted", fresh
            assert await redis_remaining(private.url, setup.sale_id) == 27
            await asyncio.to_thread(writer.stop)
            entries = await ledger_entries(writer.data_dir)
        sale = replay(entries).sales.get(setup.sale_id)
        assert sale is not None
        assert sale.units_remaining == 27
    finally:
        private.stop()


async def test_scaled_out_expiry_returns_units_and_payment_seals_shipping(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with scaled(tmp_path, redis_server.url, web_processes=2) as (writer, webs):
        async with httpx.AsyncClient(timeout=30) as client:
            setup = await room_with_sale(
                client, webs[0].http, units_offered=5, payment_hold_ms=1_000
            )
            await sale_known_everywhere(client, webs, setup.sale_id)
            buyer = KeyPair()
            await register(client, webs[1].http, buyer, "Ann")
            # A session challenge from one process is answered on another, once.
            challenge = (await client.post(f"{webs[0].http}/api/sessions/challenge")).json()
            answer = buyer.session(challenge["challenge"])
            opened = await client.post(f"{webs[1].http}/api/sessions", json=answer)
            assert opened.status_code == 200, opened.text
            token = opened.json()["token"]
            replayed = await client.post(f"{webs[0].http}/api/sessions", json=answer)
            assert replayed.status_code == 401
            assert replayed.json()["error"] == "unknown_challenge"
            keep = buyer.order("keep", setup.sale_id, 2, setup.price_cents, now_ms())
            lapse = buyer.order("lapse", setup.sale_id, 1, setup.price_cents, now_ms())
            for order in (keep, lapse):
                answer = await client.post(f"{webs[1].http}/api/orders", json=order)
                assert answer.status_code == 201, answer.text
            address = {"name": "Ann Example", "city": "Cork"}
            paid = await client.post(
                f"{webs[0].http}/api/orders/keep/pay",
                json={"shipping": address},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert paid.status_code == 200, paid.text
            assert paid.json()["status"] == "paid"
            # The unpaid hold runs out in the writer; Redis gets the unit back.
            async with asyncio.timeout(10):
                while await redis_remaining(redis_server.url, setup.sale_id) != 3:
                    await asyncio.sleep(0.1)
            late = await client.post(
                f"{webs[0].http}/api/orders/lapse/pay",
                headers={"Authorization": f"Bearer {token}"},
            )
            assert late.json()["reason"] == "order_expired"
            listed = await client.get(
                f"{webs[1].http}/api/merchant/orders",
                headers={"Authorization": f"Bearer {setup.merchant_token}"},
            )
            orders = {order["order_id"]: order for order in listed.json()["orders"]}
            assert orders["keep"]["status"] == "paid"
            assert orders["lapse"]["status"] == "expired"
            sealed = b64url_decode(orders["keep"]["shipping_sealed"])
            assert sealed is not None
            opened = open_shipping(sealed, setup.merchant.signing_key)
            assert not isinstance(opened, Rejected)
            assert opened.details == address
        await asyncio.to_thread(writer.stop)
        entries = await ledger_entries(writer.data_dir)
    actions = [
        (fields["order_id"], fields["action"])
        for entry_type, fields in entries
        if entry_type == "order/v1"
    ]
    assert actions == [
        ("keep", "accepted"),
        ("lapse", "accepted"),
        ("keep", "paid"),
        ("lapse", "expired"),
    ]
    assert b"Cork" not in b"".join(json.dumps(fields).encode() for _, fields in entries)
    sale = replay(entries).sales.get(setup.sale_id)
    assert sale is not None
    assert (sale.units_sold, sale.units_held, sale.units_remaining) == (2, 0, 3)


async def test_a_command_the_writer_never_answers_says_so(redis_server: RedisServer) -> None:
    # No writer runs: the command waits its timeout, then says who did not answer (the
    # timeout is an OSError too, and was once taken for Redis trouble: "redis: ").
    admin = redis.Redis.from_url(redis_server.url)
    await admin.flushdb()
    await admin.aclose()
    service = scaled_pipeline(redis_server.url, now_ms, command_timeout_s=0.2)
    try:  # not started: it sends commands and hears no reply, as with no writer
        with pytest.raises(ServiceUnavailable) as refused:
            await service.run(PayOrder("buyer", "order-1", ""))
    finally:
        await service.close()
    assert refused.value.reason == "unavailable"
    assert refused.value.detail == "the ledger writer did not answer"


async def test_close_ends_the_background_tasks_even_when_a_cancel_is_lost(
    redis_server: RedisServer,
) -> None:
    # Its feed task loops over Redis calls, which redis-py wraps in asyncio.wait_for: on
    # Python 3.11 a cancel that comes as a call finishes is lost (CPython gh-86296). Here,
    # right after a command's 0.2 s timeout, the feed task is in such a call (its own
    # poll is every 0.2 s too), and a close that cancelled once waited forever.
    service = scaled_pipeline(redis_server.url, now_ms, command_timeout_s=0.2)
    await service.start()
    with pytest.raises(ServiceUnavailable):
        await service.run(PayOrder("buyer", "order-1", ""))
    closing = asyncio.create_task(service.close())
    done, _ = await asyncio.wait({closing}, timeout=3)
    ended = closing in done
    while not closing.done():  # end what a failed close left running
        assert isinstance(service.ledger, WriterLedger)
        for task in service.ledger._tasks:
            task.cancel()
        await asyncio.wait({closing}, timeout=0.1)
    assert ended, "close() waited on a task whose cancel was lost"


async def _receipt_within(
    client: httpx.AsyncClient, base: str, order_id: str, buyer_id: str, timeout_s: float
) -> httpx.Response:
    async with asyncio.timeout(timeout_s):
        while True:
            response = await client.get(
                f"{base}/api/orders/{order_id}/receipt", params={"buyer_id": buyer_id}
            )
            if response.status_code != 409:  # not covered by a checkpoint yet
                return response


async def test_receipts_the_writer_owed_when_it_died_or_redis_lost_them_are_made_again(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    private = RedisServer(require_binary("redis-server"), tmp_path_factory.mktemp("lossy-redis"))
    private.start()
    # No checkpoint for ten minutes: the order is durable, its receipt still owed.
    slow = {"LIVECOMMERCE_LEDGER_CHECKPOINT_INTERVAL_MS": "600000"}
    try:
        async with scaled(tmp_path, private.url, 1, slow) as (writer, (web,)):
            async with httpx.AsyncClient(timeout=30) as client:
                setup = await room_with_sale(client, web.http, units_offered=5)
                buyer = KeyPair()
                await register(client, web.http, buyer, "Ann")
                order = buyer.order("o1", setup.sale_id, 1, setup.price_cents, now_ms())
                accepted = await client.post(f"{web.http}/api/orders", json=order)
                assert accepted.status_code == 201, accepted.text
                index = accepted.json()["ledger_index"]
                await asyncio.to_thread(writer.kill)
                writer = await asyncio.to_thread(
                    WriterProcess, writer.data_dir, private.url, None, True
                )
                verifier = Verifier.parse((await client.get(f"{writer.ledger_url}/vkey")).text)
                receipt = await _receipt_within(client, web.http, "o1", buyer.identity_id, 15)
                assert receipt.status_code == 200, receipt.text
                assert verify_receipt(receipt.content, verifier).index == index
                # Redis loses everything, receipts too: the writer stores them again.
                await asyncio.to_thread(private.restart)
                async with asyncio.timeout(20):
                    while await remaining_or_none(private.url, setup.sale_id) != 4:
                        await asyncio.sleep(0.1)
                again = await _receipt_within(client, web.http, "o1", buyer.identity_id, 15)
                assert again.status_code == 200, again.text
                assert verify_receipt(again.content, verifier).index == index
            await asyncio.to_thread(writer.stop)
    finally:
        private.stop()


async def test_commands_are_answered_again_after_redis_was_away_for_seconds(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Away for 1.5 s, past the first resubscription (0.1 s): the web process's
    subscription to the writer's replies must come back, or every later command (here a
    registration) waits for an answer that never comes."""
    durable = RedisServer(
        require_binary("redis-server"),
        tmp_path_factory.mktemp("durable-redis"),
        ("--appendonly", "yes", "--appendfsync", "always"),
    )
    durable.start()
    try:
        async with (
            scaled(tmp_path, durable.url, web_processes=1) as (_, (web,)),
            httpx.AsyncClient(timeout=30) as client,
        ):
            await register(client, web.http, KeyPair(), "Ann")
            await asyncio.to_thread(durable.stop)
            await asyncio.sleep(1.5)
            await asyncio.to_thread(durable.start)
            await register_retrying(client, web.http, KeyPair())
    finally:
        durable.stop()


async def test_every_web_process_reports_the_sales_stock_left_in_redis(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Orders taken by one web process: the other (and the host's dashboard there)
    reports the same units left, not only what its own buyers took."""
    async with scaled(tmp_path, redis_server.url) as (_, webs), httpx.AsyncClient() as client:
        setup = await room_with_sale(client, webs[0].http, units_offered=10)
        await sale_known_everywhere(client, webs, setup.sale_id)
        buyer = KeyPair()
        await register(client, webs[1].http, buyer, "Ann")
        order = buyer.order("o1", setup.sale_id, 3, setup.price_cents, now_ms())
        assert (await client.post(f"{webs[1].http}/api/orders", json=order)).status_code == 201
        for web in webs:
            sale = await client.get(f"{web.http}/api/sales/{setup.sale_id}")
            assert sale.json()["units_remaining"] == 7, (web.http, sale.json())
            stats = await client.get(
                f"{web.http}/api/rooms/{setup.room_id}/stats",
                headers={"Authorization": f"Bearer {setup.host_token}"},
            )
            assert stats.json()["sales"][0]["units_remaining"] == 7, stats.json()


async def test_a_redis_back_from_an_older_snapshot_is_rebuilt_from_the_ledger(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Redis with RDB snapshots only: killed, it comes back as of its last snapshot, with
    lc:alive but without the orders taken since. Its stock would then sell units the
    ledger has sold already; the writer must see that Redis went back and rebuild it."""
    snapshots = RedisServer(require_binary("redis-server"), tmp_path_factory.mktemp("rdb-redis"))
    snapshots.start()
    try:
        async with (
            scaled(tmp_path, snapshots.url, web_processes=1) as (writer, (web,)),
            httpx.AsyncClient(timeout=30) as client,
        ):
            setup = await room_with_sale(client, web.http, units_offered=10, per_buyer_limit=5)
            buyers = [KeyPair() for _ in range(4)]
            for buyer in buyers:
                await register(client, web.http, buyer, "Ann")
            orders = [
                buyer.order(f"o{n}", setup.sale_id, 2, setup.price_cents, now_ms())
                for n, buyer in enumerate(buyers)
            ]
            first = []
            for number, order in enumerate(orders):
                if number == 2:
                    admin = redis.Redis.from_url(snapshots.url)
                    await admin.save()  # the snapshot Redis will come back with: 4 units sold
                    await admin.aclose()
                answer = await client.post(f"{web.http}/api/orders", json=order)
                assert answer.status_code == 201, answer.text
                first.append(answer.json())
            assert await redis_remaining(snapshots.url, setup.sale_id) == 2
            await asyncio.to_thread(snapshots.restart)
            assert await remaining_or_none(snapshots.url, setup.sale_id) == 6  # went back
            async with asyncio.timeout(20):
                while await remaining_or_none(snapshots.url, setup.sale_id) != 2:
                    await asyncio.sleep(0.1)
            # Orders taken after the snapshot keep their first answer; no unit is sold twice.
            for order, answer in zip(orders, first, strict=True):
                again = await order_retrying(client, web.http, order)
                assert again["status"] == "accepted", again
                assert again["ledger_index"] == answer["ledger_index"]
            late = KeyPair()
            await register_retrying(client, web.http, late)
            fresh = late.order("late", setup.sale_id, 3, setup.price_cents, now_ms())
            assert (await order_retrying(client, web.http, fresh))["reason"] == "sold_out"
            await asyncio.to_thread(writer.stop)
            entries = await ledger_entries(writer.data_dir)
        sale = replay(entries).sales.get(setup.sale_id)
        assert sale is not None
        assert sale.units_remaining == 2
    finally:
        snapshots.stop()


async def test_an_order_whose_record_never_reached_redis_gets_it_when_read_again(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Redis (or the writer) killed between the ledger append and the writer's write to
    Redis leaves an order in the ledger without its record and with the stream position
    before it. Made here by removing both by hand: the restarted writer reads the order
    again and must store its record, or its buyer can never fetch a receipt or pay, and
    the merchant never sees it."""
    private = RedisServer(require_binary("redis-server"), tmp_path_factory.mktemp("redis"))
    private.start()
    try:
        async with (
            scaled(tmp_path, private.url, web_processes=1) as (writer, (web,)),
            httpx.AsyncClient(timeout=30) as client,
        ):
            setup = await room_with_sale(client, web.http, units_offered=5)
            buyer = KeyPair()
            await register(client, web.http, buyer, "Ann")
            order = buyer.order("o1", setup.sale_id, 1, setup.price_cents, now_ms())
            accepted = await client.post(f"{web.http}/api/orders", json=order)
            assert accepted.status_code == 201, accepted.text
            await asyncio.to_thread(writer.kill)
            admin = redis.Redis.from_url(private.url)
            field = f"{buyer.identity_id}:o1"
            assert await admin.hdel(f"{{sale:{setup.sale_id}}}:ledger", field) == 1
            await admin.hdel(f"lc:buyer:{{{buyer.identity_id}}}", "o1")
            await admin.hdel("lc:writer:positions", f"{{sale:{setup.sale_id}}}:accepted")
            await admin.aclose()
            writer = await asyncio.to_thread(
                WriterProcess, writer.data_dir, private.url, None, True
            )
            receipt = await _receipt_within(client, web.http, "o1", buyer.identity_id, 15)
            assert receipt.status_code == 200, receipt.text
            listed = await client.get(
                f"{web.http}/api/merchant/orders",
                headers={"Authorization": f"Bearer {setup.merchant_token}"},
            )
            assert [o["order_id"] for o in listed.json()["orders"]] == ["o1"]
            await asyncio.to_thread(writer.stop)
    finally:
        private.stop()
