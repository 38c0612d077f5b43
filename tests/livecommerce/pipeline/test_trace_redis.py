"""Traceability scaled out on a real redis-server: trace commands go to the ledger writer
(lc:commands), which checks them against its core (the sale's order lives there); every
web process follows them on the feed and serves the same history, with ledger indexes
whose proofs the writer's log gives."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import jsonschema
import pytest

from livecommerce.clients.signing import KeyPair
from tests.conftest import RedisServer
from tests.livecommerce.pipeline.cluster import sale_known_everywhere, scaled
from tests.livecommerce.pipeline.flows import register, room_with_sale
from tests.livecommerce.pipeline.test_after_sale import Shop
from tests.livecommerce.pipeline.test_trace_http import EPCIS, FACTORY, GTIN, SHOP, Tracer, unit

pytestmark = pytest.mark.redis


async def test_trace_commands_go_through_the_writer_and_every_process_serves_them(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with (
        scaled(tmp_path, redis_server.url, 2) as (writer, webs),
        httpx.AsyncClient(timeout=30) as client,
    ):
        setup = await room_with_sale(client, webs[0].http, units_offered=10)
        await sale_known_everywhere(client, webs, setup.sale_id)
        here, there = Tracer(webs[0].http, client, setup), Tracer(webs[1].http, client, setup)
        factory = KeyPair()
        await register(client, webs[0].http, factory, "Factory")
        await here.grant(factory, "manufacturer", FACTORY)
        merchant_id = setup.merchant.identity_id
        await here.ok("lots", setup.merchant, {
            "kind": "lot", "merchant_id": merchant_id, "product_id": "mug", "gtin": GTIN,
            "company_prefix_digits": 7, "lot": "L1",
        })  # fmt: skip
        await there.ok("units", setup.merchant, {
            "kind": "units", "merchant_id": merchant_id, "gtin": GTIN, "lot": "L1",
            "serials": ["1"],
        })  # fmt: skip
        await there.step(factory, "commission", [unit("1")], FACTORY)
        await here.step(factory, "ship", [unit("1")], FACTORY)
        await there.step(setup.merchant, "receive", [unit("1")], SHOP)
        refused = await here.post(
            "events",
            factory,
            here.event(factory, "sell", [unit("1")], SHOP, buyer_id="x", order_id="o1"),
        )
        assert (refused.status_code, refused.json()["error"]) == (403, "role_not_allowed")
        shop = Shop(webs[0].http, client, setup)
        ann, token = await shop.buyer("Ann")
        await shop.order(ann, "o1")
        assert (await shop.pay(token, "o1")).status_code == 200
        # The writer's core holds the order: a web process's replica does not need it.
        sold = await there.step(
            setup.merchant, "sell", [unit("1")], SHOP, buyer_id=ann.identity_id, order_id="o1"
        )
        views = [await tracer.view(unit("1")) for tracer in (here, there)]
        assert views[0]["events"] == views[1]["events"]
        assert [e["step"] for e in views[0]["events"]] == ["commission", "ship", "receive", "sell"]
        assert views[0]["events"][-1]["ledger_index"] == sold["ledger_index"]
        assert views[1]["verdict"] == "genuine"
        # The proof of the sale's entry, from the writer's log.
        async with asyncio.timeout(10):
            while True:
                proof = await client.get(f"{writer.ledger_url}/proof/{sold['ledger_index']}")
                if proof.status_code == 200:
                    break
                await asyncio.sleep(0.1)
        assert proof.text.startswith("c2sp.org/tlog-proof@v1")
        schema = json.loads((EPCIS / "EPCIS-JSON-Schema.json").read_text())
        exported = await client.get(f"{webs[1].http}/api/trace/units/{unit('1')}/epcis")
        jsonschema.validate(exported.json(), schema)
        linked = await client.get(
            f"{webs[0].http}/api/trace/orders/o1", params={"buyer_id": ann.identity_id}
        )
        assert [u["unit"] for u in linked.json()["units"]] == [unit("1")]
