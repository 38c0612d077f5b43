"""The trace page in a real browser (Debian's Chromium through Playwright), reached from a
scanned code: the QR code the server draws is rendered by the browser, read back with a
barcode reader (zxing-cpp), and its GS1 Digital Link opened. Every step is verified in
the page against the ledger; a genuine unit, a code sold twice, an unknown code, and a
history altered on the way to the page each get their verdict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, Route

from livecommerce.clients.signing import KeyPair
from livecommerce.payments import sandbox
from tests.livecommerce.pipeline.flows import register, room_with_sale
from tests.livecommerce.pipeline.test_after_sale import Shop
from tests.livecommerce.pipeline.test_trace_http import FACTORY, GTIN, SHOP, Tracer, unit
from tests.livecommerce.server import running_server
from tests.livecommerce.test_pages import (
    PageErrors,
    chromium,
    join_as,
    new_page,
    pay_with_card,
    screenshots_dir,
)

pytestmark = pytest.mark.browser
WAIT_MS = 20_000

# The QR code as the browser draws it, as grayscale pixels.
PIXELS_JS = """async (url) => {
  const image = new Image();
  image.src = url;
  await image.decode();
  const scale = 2;
  const width = image.naturalWidth * scale + 40;
  const canvas = new OffscreenCanvas(width, image.naturalHeight * scale + 40);
  const context = canvas.getContext("2d");
  context.fillStyle = "#fff";
  context.fillRect(0, 0, canvas.width, canvas.height);
  context.drawImage(image, 20, 20, image.naturalWidth * scale, image.naturalHeight * scale);
  const rgba = context.getImageData(0, 0, canvas.width, canvas.height).data;
  const gray = [];
  for (let i = 0; i < rgba.length; i += 4) {
    gray.push(Math.round((rgba[i] + rgba[i + 1] + rgba[i + 2]) / 3));
  }
  return { width: canvas.width, height: canvas.height, gray };
}"""


async def scan(page: Page, qr_url: str) -> str:
    """What a phone's camera would read from the printed code."""
    import zxingcpp

    await page.goto(qr_url)
    drawn: dict[str, Any] = await page.evaluate(PIXELS_JS, qr_url)
    pixels = memoryview(bytes(drawn["gray"])).cast("B", (drawn["height"], drawn["width"]))
    found = zxingcpp.read_barcodes(pixels)
    assert len(found) == 1, found
    text: str = found[0].text
    return text


async def verdict_of(page: Page) -> str:
    await page.wait_for_function(
        "document.getElementById('verdict').dataset.verdict !== undefined", timeout=WAIT_MS
    )
    verdict: str = await page.eval_on_selector("#verdict", "node => node.dataset.verdict")
    return verdict


async def test_the_trace_page_from_a_scanned_code(tmp_path: Path) -> None:
    errors = PageErrors()
    shots = screenshots_dir()
    async with (
        running_server(tmp_path) as server,
        httpx.AsyncClient() as client,
        chromium() as browser,
    ):
        setup = await room_with_sale(client, server.http, units_offered=10)
        shop = Shop(server.http, client, setup)
        tracer = Tracer(server.http, client, setup)
        factory, carrier = KeyPair(), KeyPair()
        await register(client, server.http, factory, "Factory")
        await register(client, server.http, carrier, "Carrier")
        await tracer.grant(factory, "manufacturer", FACTORY)
        await tracer.grant(carrier, "carrier")
        merchant_id = tracer.merchant.identity_id
        await tracer.ok("lots", tracer.merchant, {
            "kind": "lot", "merchant_id": merchant_id, "product_id": "mug", "gtin": GTIN,
            "company_prefix_digits": 7, "lot": "L1",
        })  # fmt: skip
        await tracer.ok("units", tracer.merchant, {
            "kind": "units", "merchant_id": merchant_id, "gtin": GTIN, "lot": "L1",
            "serials": ["1", "2", "3"],
        })  # fmt: skip
        both = [unit("1"), unit("2"), unit("3")]
        await tracer.step(factory, "commission", both, FACTORY)
        await tracer.step(factory, "ship", both, FACTORY)
        await tracer.step(tracer.merchant, "receive", both, SHOP)
        sales = (("Ann", "o1", "1"), ("Bob", "o2", "2"), ("Cy", "o3", "2"))
        for buyer_name, order_id, serial in sales:
            buyer, token = await shop.buyer(buyer_name)
            await shop.order(buyer, order_id)
            assert (await shop.pay(token, order_id)).status_code == 200
            await tracer.step(
                tracer.merchant, "sell", [unit(serial)], SHOP,
                buyer_id=buyer.identity_id, order_id=order_id,
            )  # fmt: skip
        await tracer.step(carrier, "ship", [unit("1")], SHOP)
        phone = await new_page(
            browser, errors, "trace", viewport={"width": 390, "height": 844}, is_mobile=True
        )
        # A genuine unit, from its printed code.
        link = await scan(phone, f"{server.http}/api/trace/units/{unit('1')}/qr.svg")
        assert link == f"{server.http}/01/{GTIN}/21/1"
        await phone.goto(link)
        assert await verdict_of(phone) == "genuine", await phone.inner_text("#verdict")
        steps = await phone.locator("#events li.ok").count()
        assert steps == 5
        assert await phone.locator("#events li.bad").count() == 0
        assert "Stoneware mug" in await phone.inner_text("#product")
        assert "verified" in await phone.inner_text("#checked")
        await phone.screenshot(path=str(shots / "trace-genuine-phone.png"), full_page=True)
        # The unit sold to two orders.
        await phone.goto(f"{server.http}/t/{unit('2')}")
        assert await verdict_of(phone) == "counterfeit"
        assert "second order" in await phone.inner_text("#flags")
        # A code nobody registered.
        await phone.goto(f"{server.http}/01/{GTIN}/21/12345")
        assert await verdict_of(phone) == "counterfeit"
        assert "no merchant registered" in await phone.inner_text("#verdict")
        await phone.screenshot(path=str(shots / "trace-unknown-phone.png"), full_page=True)

        # A history changed between the server and the page does not verify.
        async def altered(route: Route) -> None:
            response = await route.fetch()
            view = json.loads(await response.text())
            view["events"][1]["read_point"] = "urn:epc:id:sgln:0614141.00009.0"
            await route.fulfill(response=response, body=json.dumps(view))

        await phone.route(f"**/api/trace/units/*{GTIN[1:8]}*", altered)
        await phone.goto(link)
        assert await verdict_of(phone) == "broken"
        assert await phone.locator("#events li.bad").count() == 1
        await phone.unroute(f"**/api/trace/units/*{GTIN[1:8]}*")
        # The viewer page's product card links to a sample unit's page.
        pinned = await client.post(
            f"{server.http}/api/rooms/{setup.room_id}/host",
            headers={"Authorization": f"Bearer {setup.host_token}"},
            json={"type": "host.pin/v1", "product": {
                "product_id": "mug", "title": "Stoneware mug", "price_cents": setup.price_cents,
                "currency": "EUR",
            }},
        )  # fmt: skip
        assert pinned.status_code < 300, pinned.text
        viewer = await new_page(browser, errors, "viewer", viewport={"width": 390, "height": 844})
        await viewer.goto(f"{server.http}/?room={setup.room_id}")
        await viewer.wait_for_selector("#product-trace:not([hidden]) a", timeout=WAIT_MS)
        href = await viewer.get_attribute("#product-trace a", "href")
        assert href == f"/01/{GTIN}/21/1"
        # Dee buys in the page and pays; once the merchant sells her a unit, My orders
        # links it to its trace page.
        await join_as(viewer, f"{server.http}/?room={setup.room_id}", "Dee")
        await viewer.wait_for_selector("#product[data-state=open]", timeout=WAIT_MS)
        await viewer.click("#buy")
        await viewer.click("#orders-open")
        await viewer.click(".order .pay", timeout=WAIT_MS)
        await pay_with_card(viewer, sandbox.SUCCEEDS)
        await viewer.wait_for_selector(".order[data-stage=paid]", timeout=WAIT_MS)
        mine = await viewer.evaluate(
            "({ buyer: window.livecommerce.identity.id,"
            " order: window.livecommerce.orders.list[0].order_id })"
        )
        await tracer.step(
            tracer.merchant, "sell", [unit("3")], SHOP,
            buyer_id=mine["buyer"], order_id=mine["order"],
        )  # fmt: skip
        await viewer.wait_for_selector(".order .trace-units a", timeout=WAIT_MS)
        assert await viewer.get_attribute(".order .trace-units a", "href") == f"/01/{GTIN}/21/3"
        # The host panel lists the merchant's flagged units.
        host = await new_page(browser, errors, "host", viewport={"width": 1440, "height": 1000})
        await host.goto(
            f"{server.http}/host.html?room={setup.room_id}#host_token={setup.host_token}"
        )
        await host.wait_for_selector("#trace-flags:not([hidden])", timeout=WAIT_MS)
        flagged = await host.inner_text("#trace-flags")
        assert unit("2") in flagged
        assert "sold to a second order" in flagged
        assert unit("12345") in flagged  # the unknown code scanned above
        # Each opening of the page at unit 1's code counted a scan.
        view = (await client.get(f"{server.http}/api/trace/units/{unit('1')}")).json()
        assert view["scans"] == 2
    assert errors.errors == []
