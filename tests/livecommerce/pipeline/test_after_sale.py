"""After the sale, end to end on a real embedded server: pay with a test card, ship,
capture, confirm, settle, pay out; cancel, refunds, disputes, late answers and webhooks;
then the ledger audited by the real CLI."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from livecommerce.clients.signing import KeyPair
from livecommerce.keyfiles import load_or_create_secret
from livecommerce.payments import sandbox
from livecommerce.payments.webhooks import WebhookEvent, encode_event, signature_header
from livecommerce.pipeline.payments import payment_reference
from tests.livecommerce.pipeline.flows import SaleSetup, now_ms, register, room_with_sale, session
from tests.livecommerce.server import running_server
from tests.support import ROOT

Json = dict[str, Any]
FEE_BPS = 500
PRICE = 1800


def card(number: str) -> Json:
    return {"number": number, "exp_month": 12, "exp_year": 2099, "cvc": "123"}


class Shop:
    """A server (or a web process) with a sale, its merchant, an arbiter and buyers."""

    def __init__(self, base: str, client: httpx.AsyncClient, setup: SaleSetup):
        self.base = base
        self.client = client
        self.setup = setup
        self.steps = 0

    async def buyer(self, name: str) -> tuple[KeyPair, str]:
        buyer = KeyPair()
        await register(self.client, self.base, buyer, name)
        return buyer, await session(self.client, self.base, buyer)

    async def order(self, buyer: KeyPair, order_id: str, quantity: int = 1) -> None:
        body = buyer.order(order_id, self.setup.sale_id, quantity, PRICE, now_ms())
        accepted = await self.client.post(f"{self.base}/api/orders", json=body)
        assert accepted.status_code == 201, accepted.text

    async def pay(self, token: str, order_id: str, number: str | None = None) -> httpx.Response:
        body: Json = {"shipping": {"name": "Ann", "city": "Cork"}}
        if number is not None:
            body["card"] = card(number)
        return await self.client.post(
            f"{self.base}/api/orders/{order_id}/pay",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        )

    async def step(
        self, signer: KeyPair, kind: str, buyer: KeyPair, order_id: str, **fields: Any
    ) -> httpx.Response:
        self.steps += 1
        body = signer.step(kind, f"s{self.steps}", buyer.identity_id, order_id, now_ms(), **fields)
        return await self.client.post(f"{self.base}/api/orders/{order_id}/steps", json=body)

    async def life(self, buyer: KeyPair, order_id: str) -> Json:
        response = await self.client.get(
            f"{self.base}/api/orders/{order_id}", params={"buyer_id": buyer.identity_id}
        )
        assert response.status_code == 200, response.text
        life: Json = response.json()
        return life

    async def wait_stage(self, buyer: KeyPair, order_id: str, stage: str) -> Json:
        async with asyncio.timeout(10):
            while True:
                life = await self.life(buyer, order_id)
                if life["stage"] == stage:
                    return life
                await asyncio.sleep(0.05)

    async def wait_action(self, buyer: KeyPair, order_id: str, action: str) -> Json:
        """Until the order's timeline (its durable entries) holds `action`."""
        async with asyncio.timeout(10):
            while True:
                life = await self.life(buyer, order_id)
                if action in [item["action"] for item in life["timeline"]]:
                    return life
                await asyncio.sleep(0.05)

    async def money(self) -> Json:
        answer = await self.client.get(
            f"{self.base}/api/merchant/money",
            headers={"Authorization": f"Bearer {self.setup.merchant_token}"},
        )
        assert answer.status_code == 200, answer.text
        money: Json = answer.json()
        return money


def audit(data_dir: Path, vkey: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "livecommerce", "audit", str(data_dir / "ledger"), "--vkey", vkey],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


async def test_one_order_from_the_card_to_the_payout_and_an_audit_of_it(tmp_path: Path) -> None:
    arbiter = KeyPair()
    settings = {"arbiter_ids": arbiter.identity_id, "platform_fee_bps": FEE_BPS}
    async with running_server(tmp_path, **settings) as server, httpx.AsyncClient() as client:
        setup = await room_with_sale(client, server.http, units_offered=10)
        await register(client, server.http, arbiter, "Platform")
        shop = Shop(server.http, client, setup)
        provider = (await client.get(f"{server.http}/api/payments/provider")).json()
        assert (provider["name"], provider["test"]) == ("test", True)
        assert sandbox.SUCCEEDS in [c["number"] for c in provider["cards"]]
        ann, token = await shop.buyer("Ann")
        await shop.order(ann, "o1", quantity=2)
        declined = await shop.pay(token, "o1", sandbox.DECLINED)
        assert declined.status_code == 402, declined.text
        assert declined.json()["reason"] == "payment_declined"
        assert (await shop.life(ann, "o1"))["stage"] == "held"
        paid = await shop.pay(token, "o1", sandbox.SUCCEEDS)
        assert paid.status_code == 200, paid.text
        life = await shop.life(ann, "o1")
        assert (life["stage"], life["escrow_pending_cents"]) == ("paid", 2 * PRICE)
        assert (await shop.money())["balances"]["EUR"]["pending"] == 2 * PRICE
        # The buyer may not ship; the merchant may not confirm.
        wrong = await shop.step(ann, "ship", ann, "o1", carrier="DHL", tracking="JJD1")
        assert (wrong.status_code, wrong.json()["reason"]) == (403, "not_merchant")
        shipped = await shop.step(
            setup.merchant, "ship", ann, "o1", carrier="DHL", tracking="JJD0001"
        )
        assert shipped.status_code == 200, shipped.text
        assert shipped.json()["status"] == "taken"
        life = await shop.life(ann, "o1")
        assert (life["carrier"], life["tracking"]) == ("DHL", "JJD0001")
        # The capture at shipping goes to the provider once the step is durable.
        await shop.wait_action(ann, "o1", "capture_succeeded")
        assert (await shop.life(ann, "o1"))["escrow_cents"] == 2 * PRICE
        confirmed = await shop.step(ann, "confirm", ann, "o1")
        assert confirmed.json()["stage"] == "settled", confirmed.text
        fee = 2 * PRICE * FEE_BPS // 10_000
        balances = (await shop.money())["balances"]["EUR"]
        assert (balances["available"], balances["pending"]) == (2 * PRICE - fee, 0)
        payout = arbiter.payouts("day-1", now_ms())
        started = await client.post(f"{server.http}/api/payouts", json=payout)
        assert started.status_code == 201, started.text
        async with asyncio.timeout(10):
            while (await shop.money())["balances"]["EUR"]["paid_out"] != 2 * PRICE - fee:
                await asyncio.sleep(0.05)
        intruder = KeyPair()
        await register(client, server.http, intruder, "Eve")
        refused = await client.post(
            f"{server.http}/api/payouts", json=intruder.payouts("day-2", now_ms())
        )
        assert refused.status_code == 403
        statement = await client.get(
            f"{server.http}/api/merchant/statement.csv",
            headers={"Authorization": f"Bearer {setup.merchant_token}"},
        )
        rows = list(csv.DictReader(io.StringIO(statement.text)))
        codes = [(row["code"], row["phase"]) for row in rows]
        assert ("payment", "pending") in codes
        assert ("settlement", "single") in codes
        assert ("payout", "post") in codes
        timeline = [item["action"] for item in (await shop.life(ann, "o1"))["timeline"]]
        for action in ("paid", "shipped", "capture_succeeded", "confirmed", "settled"):
            assert action in timeline, timeline
        vkey = server.app.state.ledger.verifier_key
    done = audit(tmp_path, vkey)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: audited" in done.stdout


async def test_cancel_refund_dispute_and_late_or_repeated_webhooks(tmp_path: Path) -> None:
    arbiter = KeyPair()
    settings = {"arbiter_ids": arbiter.identity_id, "payment_late_answer_ms": 200}
    async with running_server(tmp_path, **settings) as server, httpx.AsyncClient() as client:
        setup = await room_with_sale(
            client, server.http, units_offered=20, per_buyer_limit=10, inventory=40
        )
        await register(client, server.http, arbiter, "Platform")
        shop = Shop(server.http, client, setup)
        merchant = setup.merchant
        ann, token = await shop.buyer("Ann")
        # Cancelled before shipping: voided, the units back in the product's inventory.
        await shop.order(ann, "c1", quantity=3)
        assert (await shop.pay(token, "c1")).status_code == 200
        product = (await client.get(f"{server.http}/api/products/mug")).json()
        cancelled = await shop.step(ann, "cancel", ann, "c1")
        assert cancelled.json()["stage"] == "cancelled", cancelled.text
        again = (await client.get(f"{server.http}/api/products/mug")).json()
        assert again["inventory_units"] == product["inventory_units"] + 3
        # A card whose bank answers later: pending, then paid by the webhook.
        await shop.order(ann, "l1")
        late = await shop.pay(token, "l1", sandbox.LATE_SUCCEEDS)
        assert (late.status_code, late.json()["status"]) == (202, "pending")
        assert (await shop.life(ann, "l1"))["stage"] == "held"
        await shop.wait_stage(ann, "l1", "paid")
        # Refund asked after delivery, accepted in part; the rest settles on confirm.
        await shop.step(merchant, "ship", ann, "l1", carrier="UPS", tracking="1Z9")
        await shop.wait_action(ann, "l1", "capture_succeeded")
        await shop.step(merchant, "deliver", ann, "l1")
        asked = await shop.step(ann, "refund_request", ann, "l1", amount_cents=PRICE,
                                reason="damaged")  # fmt: skip
        assert asked.json()["stage"] == "refund_requested", asked.text
        answered = await shop.step(merchant, "refund_answer", ann, "l1", decision="accept",
                                   amount_cents=500)  # fmt: skip
        assert answered.status_code == 200, answered.text
        life = await shop.wait_stage(ann, "l1", "delivered")
        assert life["refunded_cents"] == 500
        await shop.step(ann, "confirm", ann, "l1")
        assert (await shop.life(ann, "l1"))["settled_cents"] == (PRICE - 500) - (
            (PRICE - 500) * 500 // 10_000
        )
        # A dispute, resolved by the arbiter; nobody else may.
        await shop.order(ann, "d1")
        await shop.pay(token, "d1")
        await shop.step(merchant, "ship", ann, "d1", carrier="DHL", tracking="X1")
        await shop.wait_action(ann, "d1", "capture_succeeded")
        await shop.step(ann, "dispute", ann, "d1", reason="not_received")
        not_yours = await shop.step(merchant, "resolve", ann, "d1", amount_cents=PRICE)
        assert not_yours.json()["reason"] == "not_arbiter"
        await shop.step(arbiter, "resolve", ann, "d1", amount_cents=PRICE)
        await shop.wait_stage(ann, "d1", "refunded")
        await shop.wait_action(ann, "d1", "refund_succeeded")  # the provider's answer too
        # Webhooks: unsigned or forged ones are refused; one sent twice changes nothing twice.
        life_before = await shop.life(ann, "d1")
        event = WebhookEvent(
            id="evt_1", type="capture.succeeded", reference=f"{ann.identity_id}/d1",
            provider_ref="cap_again", amount_cents=PRICE, currency="EUR", created_ms=now_ms(),
        )  # fmt: skip
        body = encode_event(event)
        secret = (tmp_path / "webhook_secret").read_bytes()
        forged = await client.post(
            f"{server.http}/api/payments/webhook",
            content=body,
            headers={"livecommerce-signature": signature_header(b"x" * 32, body, now_ms())},
        )
        assert forged.status_code == 400
        size = server.app.state.ledger.size
        for _ in range(2):
            sent = await client.post(
                f"{server.http}/api/payments/webhook",
                content=body,
                headers={"livecommerce-signature": signature_header(secret, body, now_ms())},
            )
            assert sent.status_code == 200, sent.text
        assert server.app.state.ledger.size == size
        assert await shop.life(ann, "d1") == life_before
        # A late authorization for an order another payment paid: refused, cancelled.
        await shop.order(ann, "p1")
        await shop.pay(token, "p1")
        paid_life = await shop.life(ann, "p1")
        late_event = WebhookEvent(
            id="evt_2", type="authorization.succeeded",
            reference=payment_reference(ann.identity_id, "p1", "other"),
            provider_ref="auth_s1800EUR_0123456789abcdef", amount_cents=PRICE, currency="EUR",
            created_ms=now_ms(),
        )  # fmt: skip
        late_body = encode_event(late_event)
        await client.post(
            f"{server.http}/api/payments/webhook",
            content=late_body,
            headers={"livecommerce-signature": signature_header(secret, late_body, now_ms())},
        )
        assert (await shop.life(ann, "p1")) == paid_life
        assert json.dumps(paid_life).count("paid") >= 1
        vkey = server.app.state.ledger.verifier_key
    done = audit(tmp_path, vkey)
    assert done.returncode == 0, done.stdout + done.stderr


async def test_a_restart_finds_every_order_where_it_was(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server, httpx.AsyncClient() as client:
        setup = await room_with_sale(client, server.http, units_offered=5)
        shop = Shop(server.http, client, setup)
        ann, token = await shop.buyer("Ann")
        await shop.order(ann, "o1")
        await shop.pay(token, "o1")
        await shop.step(setup.merchant, "ship", ann, "o1", carrier="DHL", tracking="T1")
        await shop.wait_stage(ann, "o1", "shipped")
        await shop.wait_action(ann, "o1", "capture_succeeded")
        before = await shop.life(ann, "o1")
        money = await shop.money()
    async with running_server(tmp_path) as server, httpx.AsyncClient() as client:
        shop = Shop(server.http, client, setup)
        shop.steps = 100  # step ids are the client's: never the same for another step
        assert await shop.life(ann, "o1") == before
        assert await shop.money() == money
        confirmed = await shop.step(ann, "confirm", ann, "o1")
        assert confirmed.json()["stage"] == "settled", confirmed.text


async def test_the_arbiter_cli_registers_its_key_and_starts_payouts(tmp_path: Path) -> None:
    key_file = tmp_path / "arbiter.key"
    arbiter = KeyPair(load_or_create_secret(key_file))
    async with running_server(tmp_path, arbiter_ids=arbiter.identity_id) as server:

        def cli(*arguments: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "livecommerce", "arbiter", *arguments,
                 "--url", server.http, "--key-file", str(key_file)],
                cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip

        registered = await asyncio.to_thread(cli, "key")
        assert registered.returncode == 0, registered.stderr
        assert registered.stdout.strip() == arbiter.identity_id
        started = await asyncio.to_thread(cli, "payouts", "--batch", "by-hand")
        assert started.returncode == 0, started.stdout + started.stderr
        assert json.loads(started.stdout)["batch_id"] == "by-hand"
        unknown = await asyncio.to_thread(
            cli, "resolve", "--buyer", arbiter.identity_id, "--order", "nothing"
        )
        assert unknown.returncode == 1
        assert json.loads(unknown.stdout)["reason"] == "unknown_order"
