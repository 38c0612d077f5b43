"""After the sale, scaled out on a real redis-server: two web processes and the ledger
writer as separate OS processes. The writer sequences every transfer and makes the
provider's calls; either web process takes steps and reads an order's life."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from livecommerce.clients.signing import KeyPair
from livecommerce.payments import sandbox
from tests.conftest import RedisServer
from tests.livecommerce.pipeline.cluster import ledger_verifier, sale_known_everywhere, scaled
from tests.livecommerce.pipeline.flows import now_ms, register, room_with_sale, session
from tests.livecommerce.pipeline.test_after_sale import FEE_BPS, PRICE, Shop, audit

pytestmark = pytest.mark.redis


async def test_the_writer_sequences_the_money_and_either_process_serves_it(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    arbiter = KeyPair()
    environment = {
        "LIVECOMMERCE_ARBITER_IDS": arbiter.identity_id,
        "LIVECOMMERCE_PAYMENT_LATE_ANSWER_MS": "200",
    }
    async with scaled(tmp_path, redis_server.url, 2, environment) as (writer, webs):
        async with httpx.AsyncClient(timeout=30) as client:
            setup = await room_with_sale(client, webs[0].http, units_offered=10)
            await sale_known_everywhere(client, webs, setup.sale_id)
            await register(client, webs[0].http, arbiter, "Platform")
            here, there = Shop(webs[0].http, client, setup), Shop(webs[1].http, client, setup)
            there.steps = 100  # step ids from both shops never meet
            ann = KeyPair()
            await register(client, webs[0].http, ann, "Ann")
            token = await session(client, webs[0].http, ann)
            await here.order(ann, "o1", quantity=2)
            declined = await here.pay(token, "o1", sandbox.DECLINED)
            assert declined.status_code == 402, declined.text
            paid = await here.pay(token, "o1", sandbox.SUCCEEDS)
            assert paid.status_code == 200, paid.text
            # The other process takes the merchant's step; the writer captures.
            shipped = await there.step(setup.merchant, "ship", ann, "o1", carrier="DHL",
                                       tracking="JJD9")  # fmt: skip
            assert shipped.status_code == 200, shipped.text
            await here.wait_action(ann, "o1", "capture_succeeded")
            confirmed = await here.step(ann, "confirm", ann, "o1")
            assert confirmed.json()["stage"] == "settled", confirmed.text
            fee = 2 * PRICE * FEE_BPS // 10_000
            assert (await there.money())["balances"]["EUR"]["available"] == 2 * PRICE - fee
            started = await client.post(
                f"{webs[1].http}/api/payouts", json=arbiter.payouts("day-1", now_ms())
            )
            assert started.status_code == 201, started.text
            async with asyncio.timeout(10):
                while (await here.money())["balances"]["EUR"]["paid_out"] != 2 * PRICE - fee:
                    await asyncio.sleep(0.05)
            # The writer's operating counts, read through the other process.
            counted = await client.get(
                f"{webs[1].http}/api/metrics/operating",
                params={"scope": "merchant", "id": setup.merchant.identity_id},
                headers={"Authorization": f"Bearer {setup.merchant_token}"},
            )
            assert counted.status_code == 200, counted.text
            totals: dict[str, int] = {}
            for point in counted.json()["series"]:
                for name, count in point["counts"].items():
                    totals[name] = totals.get(name, 0) + count
            assert (totals["orders_accepted"], totals["orders_paid"]) == (1, 1), totals
            assert totals["orders_settled"] == 1, totals
            # A late card: pending on one process, finished by the webhook it gets.
            await here.order(ann, "o2")
            late = await here.pay(token, "o2", sandbox.LATE_SUCCEEDS)
            assert late.status_code == 202, late.text
            await there.wait_stage(ann, "o2", "paid")
        await asyncio.to_thread(writer.stop)
    done = audit(writer.data_dir, ledger_verifier(writer.data_dir).format())
    assert done.returncode == 0, done.stdout + done.stderr


async def test_a_review_through_one_process_is_read_through_the_other(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """The writer takes the review (it has the orders' lives); the feed brings the entry
    to both replicas (the rating), and the list with its indexes comes from the writer."""
    async with (
        scaled(tmp_path, redis_server.url, 2, {}) as (writer, webs),
        httpx.AsyncClient(timeout=30) as client,
    ):
        setup = await room_with_sale(client, webs[0].http, units_offered=10)
        await sale_known_everywhere(client, webs, setup.sale_id)
        here, there = Shop(webs[0].http, client, setup), Shop(webs[1].http, client, setup)
        there.steps = 100
        ann = KeyPair()
        await register(client, webs[0].http, ann, "Ann")
        token = await session(client, webs[0].http, ann)
        await here.order(ann, "o1")
        assert (await here.pay(token, "o1")).status_code == 200
        merchant = setup.merchant
        shipped = await there.step(merchant, "ship", ann, "o1", carrier="DHL", tracking="J1")
        assert shipped.status_code == 200, shipped.text
        await here.wait_action(ann, "o1", "capture_succeeded")
        assert (await here.step(merchant, "deliver", ann, "o1")).status_code == 200
        body = ann.review("review", ann.identity_id, "o1", now_ms(), stars=5, text="Great")
        taken = await client.post(f"{webs[0].http}/api/orders/o1/reviews", json=body)
        assert taken.status_code == 201, taken.text
        again = await client.post(f"{webs[1].http}/api/orders/o1/reviews", json=body)
        assert (again.status_code, again.json()["status"]) == (200, "repeated")
        async with asyncio.timeout(10):  # the feed reaches the other replica
            while (await client.get(f"{webs[1].http}/api/products/mug/rating")).json()[
                "count"
            ] != 1:
                await asyncio.sleep(0.05)
        listed = (await client.get(f"{webs[1].http}/api/products/mug/reviews")).json()
        (review,) = listed["reviews"]
        assert review["ledger_index"] == taken.json()["ledger_index"]
        assert review["paid_index"] is not None
        assert review["received_index"] is not None
    done = audit(writer.data_dir, ledger_verifier(writer.data_dir).format())
    assert done.returncode == 0, done.stdout + done.stderr
