"""Traceability end to end on a real embedded server: roles, a lot and units, signed steps
from the factory to the buyer, refusals, the unit's page data with each event's ledger
entry, EPCIS exports that validate, the QR code, imports of the standard's examples, the
counterfeit flags, and a restart that finds everything where it was."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from ledger.entry import decode_entry
from livecommerce.clients.signing import KeyPair
from tests.livecommerce.pipeline.flows import SaleSetup, now_ms, register, room_with_sale
from tests.livecommerce.pipeline.test_after_sale import Shop, audit
from tests.livecommerce.server import running_server
from tests.support import VECTORS

Json = dict[str, Any]
GTIN = "10614141073464"
FACTORY = "urn:epc:id:sgln:0614141.00001.0"
DEPOT = "urn:epc:id:sgln:0614141.00002.0"
SHOP = "urn:epc:id:sgln:0614141.00003.0"
EPCIS = VECTORS / "epcis"


def unit(serial: str) -> str:
    return f"urn:epc:id:sgtin:0614141.107346.{serial}"


class Tracer:
    def __init__(self, base: str, client: httpx.AsyncClient, setup: SaleSetup) -> None:
        self.base, self.client, self.setup = base, client, setup
        self.merchant = setup.merchant

    async def post(self, path: str, signer: KeyPair, fields: Json, document: str = "") -> Any:
        body = signer.trace(fields, now_ms(), document)
        return await self.client.post(f"{self.base}/api/trace/{path}", json=body)

    async def ok(self, path: str, signer: KeyPair, fields: Json, document: str = "") -> Json:
        response = await self.post(path, signer, fields, document)
        assert response.status_code == 201, response.text
        answer: Json = response.json()
        return answer

    async def grant(self, actor: KeyPair, role: str, location: str = "") -> Json:
        fields = {
            "kind": "actor", "merchant_id": self.merchant.identity_id,
            "actor_id": actor.identity_id, "role": role, "name": f"{role.title()} Ltd",
            "location": location, "active": True,
        }  # fmt: skip
        return await self.ok("actors", self.merchant, fields)

    def event(self, signer: KeyPair, step: str, epcs: list[str], where: str, **more: Any) -> Json:
        return {
            "kind": "event", "signer_id": signer.identity_id, "step": step, "epcs": epcs,
            "parent": "", "read_point": where, "inspection": "", "buyer_id": "",
            "order_id": "", **more,
        }  # fmt: skip

    async def step(
        self, signer: KeyPair, step: str, epcs: list[str], where: str, **more: Any
    ) -> Json:
        return await self.ok("events", signer, self.event(signer, step, epcs, where, **more))

    async def view(self, code: str) -> Json:
        response = await self.client.get(f"{self.base}/api/trace/units/{code}")
        assert response.status_code == 200, response.text
        answer: Json = response.json()
        return answer


async def test_a_unit_from_the_factory_to_the_buyer_over_http(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server, httpx.AsyncClient() as client:
        setup = await room_with_sale(client, server.http, units_offered=10)
        shop = Shop(server.http, client, setup)
        tracer = Tracer(server.http, client, setup)
        factory, carrier = KeyPair(), KeyPair()
        await register(client, server.http, factory, "Factory")
        await register(client, server.http, carrier, "Carrier")
        await tracer.grant(factory, "manufacturer", FACTORY)
        await tracer.grant(carrier, "carrier")
        lot = {
            "kind": "lot", "merchant_id": tracer.merchant.identity_id, "product_id": "mug",
            "gtin": GTIN, "company_prefix_digits": 7, "lot": "L1",
        }  # fmt: skip
        await tracer.ok("lots", tracer.merchant, lot)
        units_fields = {
            "kind": "units", "merchant_id": tracer.merchant.identity_id, "gtin": GTIN,
            "lot": "L1", "serials": ["1", "2"],
        }  # fmt: skip
        registered = await tracer.ok("units", tracer.merchant, units_fields)
        assert [u["unit"] for u in registered["units"]] == [unit("1"), unit("2")]
        assert registered["units"][0]["digital_link"] == f"{server.http}/01/{GTIN}/21/1"
        # Refusals: a carrier may not commission; a route takes its own kind only.
        refused = await tracer.post(
            "events", carrier, tracer.event(carrier, "commission", [unit("1")], FACTORY)
        )
        assert (refused.status_code, refused.json()["error"]) == (403, "role_not_allowed")
        wrong_route = await tracer.post("lots", tracer.merchant, units_fields)
        assert wrong_route.status_code == 400
        # The journey.
        await tracer.step(factory, "commission", [unit("1"), unit("2")], FACTORY)
        await tracer.step(factory, "ship", [unit("1"), unit("2")], FACTORY)
        await tracer.step(tracer.merchant, "receive", [unit("1"), unit("2")], SHOP)
        ann, token = await shop.buyer("Ann")
        await shop.order(ann, "o1")
        assert (await shop.pay(token, "o1")).status_code == 200
        sale = tracer.event(
            tracer.merchant, "sell", [unit("1")], SHOP, buyer_id=ann.identity_id, order_id="o1"
        )
        body = tracer.merchant.trace(sale, now_ms())
        first = await client.post(f"{server.http}/api/trace/events", json=body)
        assert first.status_code == 201, first.text
        sold = first.json()
        repeat = await client.post(f"{server.http}/api/trace/events", json=body)
        assert (repeat.status_code, repeat.json()["repeated"]) == (200, True)
        assert repeat.json()["ledger_index"] == sold["ledger_index"]
        view = await tracer.view(unit("1"))
        assert view["verdict"] == "genuine", view
        assert [e["step"] for e in view["events"]] == ["commission", "ship", "receive", "sell"]
        assert view["events"][-1]["ledger_index"] == sold["ledger_index"]
        assert view["events"][0]["actor"] == "Manufacturer Ltd"
        # Each event's ledger entry holds what was signed, under its digest.
        async with asyncio.timeout(10):  # until a checkpoint covers it
            while (
                proof := await client.get(f"{server.http}/ledger/proof/{sold['ledger_index']}")
            ).status_code != 200:
                await asyncio.sleep(0.1)
        extra = next(line for line in proof.text.splitlines() if line.startswith("extra "))
        entry_type, fields = decode_entry(base64.b64decode(extra.removeprefix("extra ")))
        assert entry_type == "trace/v1"
        assert fields["signed"] == sale | {"time_ms": fields["signed"]["time_ms"]}
        signed_bytes = (
            b"livecommerce/trace/v1\n"
            + json.dumps(fields["signed"], sort_keys=True, separators=(",", ":")).encode()
        )
        assert hashlib.sha256(signed_bytes).hexdigest() == fields["digest"] == sold["digest"]
        # My orders: the order's units.
        linked = await client.get(
            f"{server.http}/api/trace/orders/o1", params={"buyer_id": ann.identity_id}
        )
        assert linked.json()["units"] == [{"unit": unit("1"), "trace_page": f"/01/{GTIN}/21/1"}]
        # The product card: traceable, with a sample unit.
        product = (await client.get(f"{server.http}/api/trace/products/mug")).json()
        assert (product["traceable"], product["sample_unit"]) == (True, unit("1"))
        # EPCIS exports validate against the standard's schema.
        schema = json.loads((EPCIS / "EPCIS-JSON-Schema.json").read_text())
        exported = await client.get(f"{server.http}/api/trace/units/{unit('1')}/epcis")
        assert exported.headers["content-type"].startswith("application/ld+json")
        jsonschema.validate(exported.json(), schema)
        lot_urn = view["lot_urn"]
        lot_export = await client.get(f"{server.http}/api/trace/lots/{lot_urn}/epcis")
        jsonschema.validate(lot_export.json(), schema)
        assert len(lot_export.json()["epcisBody"]["eventList"]) == 4
        # The QR code, and the page at the Digital Link path, which counts the scan.
        qr = await client.get(f"{server.http}/api/trace/units/{unit('1')}/qr.svg")
        assert qr.headers["content-type"].startswith("image/svg+xml")
        assert "<svg" in qr.text
        assert f"/01/{GTIN}/21/1" in qr.text
        page = await client.get(f"{server.http}/01/{GTIN}/21/1")
        assert page.status_code == 200
        assert "trace.js" in page.text
        await client.get(f"{server.http}/t/{unit('1')}")
        assert (await tracer.view(f"01{GTIN}211"))["scans"] == 2
        # The standard's examples import as events.
        for path in sorted((EPCIS / "examples").glob("*.jsonld")):
            text = path.read_text()
            digest = hashlib.sha256(text.encode()).hexdigest()
            fields_of_import = {
                "kind": "import",
                "signer_id": factory.identity_id,
                "digest": digest,
            }
            await tracer.ok("imports", factory, fields_of_import, text)
        imported = await tracer.view("urn:epc:id:sgtin:0614141.107346.2018")
        assert imported["verdict"] == "possibly_counterfeit"
        assert len(imported["events"]) == 3
        # A second sale of the same unit, and a scanned fake, reach the merchant's panel.
        bob, bob_token = await shop.buyer("Bob")
        await shop.order(bob, "o2")
        assert (await shop.pay(bob_token, "o2")).status_code == 200
        await tracer.step(
            tracer.merchant, "sell", [unit("1")], SHOP, buyer_id=bob.identity_id, order_id="o2"
        )
        await client.get(f"{server.http}/01/{GTIN}/21/999")
        merchant_id = tracer.merchant.identity_id
        flags = (await client.get(f"{server.http}/api/trace/merchants/{merchant_id}/flags")).json()
        assert [item["unit"] for item in flags["flagged"]] == [unit("1")]
        assert flags["flagged"][0]["flags"][0]["code"] == "sold_twice"
        assert flags["unknown_scanned"] == [{"code": unit("999"), "scans": 1}]
        before = await tracer.view(unit("1"))
        vkey = server.app.state.ledger.verifier_key
    # A restart rebuilds the book from the ledger, with every event's index.
    async with running_server(tmp_path) as server, httpx.AsyncClient() as client:
        after = (await client.get(f"{server.http}/api/trace/units/{unit('1')}")).json()
        assert after["events"] == before["events"]
        assert after["verdict"] == "possibly_counterfeit"
    # The audit takes every trace command again, signatures checked.
    done = audit(tmp_path, vkey)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: audited" in done.stdout


@pytest.mark.parametrize("path", ["units/urn:epc:id:sgtin:1.2.3/epcis", "lots/nope/epcis"])
async def test_unknown_exports_are_404(tmp_path: Path, path: str) -> None:
    async with running_server(tmp_path) as server, httpx.AsyncClient() as client:
        response = await client.get(f"{server.http}/api/trace/{path}")
        assert response.status_code == 404
