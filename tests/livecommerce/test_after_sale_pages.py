"""After the sale in a real browser (Debian's Chromium through Playwright): one order from
the buy to the payout on the viewer page and the host panel. The viewer pays with the
test provider's cards (one declined, one that succeeds, one whose bank answers later);
the host panel opens the buyer's address with the merchant key, prints it on the packing
list and ships; the viewer sees the tracking number and confirms; both see it settle, the
balance become available and then paid out. Every entry of the order's life is checked
in the page against the signed checkpoint, and a tampered proof, or another order's
entry, is refused."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Page, Route

from livecommerce.clients.signing import KeyPair
from livecommerce.commerce.identity import b64url_encode
from livecommerce.payments import sandbox
from tests.livecommerce.pipeline.flows import now_ms, register, room_with_sale
from tests.livecommerce.pipeline.test_after_sale import Shop
from tests.livecommerce.server import running_server
from tests.livecommerce.test_pages import (
    DESKTOP,
    PHONE,
    WAIT_MS,
    PageErrors,
    chromium,
    join_as,
    new_page,
    pay_with_card,
    screenshots_dir,
    text_of,
)

pytestmark = pytest.mark.browser

PRICE = 1800
FEE_BPS = 500
SETTLED = 2 * PRICE - 2 * PRICE * FEE_BPS // 10_000  # two mugs, less the platform's fee

CHECK_ENTRY_JS = """async ({ item, buyerId, orderId }) => {
  const life = await import('/js/order-life.js');
  const ledger = await import('/js/ledger-verify.js');
  const check = await life.checkEntry(item, buyerId, orderId, await ledger.logVerifier());
  return [check.state, check.detail || ''];
}"""


async def tamper_with_the_capture(route: Route) -> None:
    """Serve the capture's ledger entry with one field changed (its proof no longer
    reaches the signed root); every other proof as the server sent it."""
    response = await route.fetch()
    text = await response.text()
    lines = text.split("\n")
    if response.ok and lines[1].startswith("extra "):
        entry = base64.b64decode(lines[1][len("extra ") :])
        if b'"action":"capture_succeeded"' in entry:
            forged = entry.replace(b'"provider":"test"', b'"provider":"fake"')
            lines[1] = "extra " + base64.b64encode(forged).decode()
            text = "\n".join(lines)
    await route.fulfill(response=response, body=text)


async def order_ids(page: Page) -> list[str]:
    ids: list[str] = await page.evaluate(
        "window.livecommerce.orders.list.filter((o) => o.status === 'accepted')"
        ".map((o) => o.order_id)"
    )
    return ids


async def buy(page: Page, quantity: int) -> str:
    """Buy `quantity` on the viewer page; the new order's id once it is accepted."""
    before = await order_ids(page)
    if await page.locator("#orders-dialog[open]").count():
        await page.click("#orders-close")
    await page.wait_for_selector("#product[data-state=open]", timeout=WAIT_MS)
    for _ in range(quantity - 1):
        await page.click("#qty-plus")
    await page.click("#buy")
    await page.wait_for_function(
        f"window.livecommerce.orders.list.filter((o) => o.status === 'accepted').length"
        f" === {len(before) + 1}",
        timeout=WAIT_MS,
    )
    (new,) = set(await order_ids(page)) - set(before)
    return new


async def test_one_order_from_the_buy_to_the_payout_on_both_pages(tmp_path: Path) -> None:
    shots = screenshots_dir()
    errors = PageErrors()
    arbiter = KeyPair()
    settings = {
        "arbiter_ids": arbiter.identity_id,
        "platform_fee_bps": FEE_BPS,
        "payment_late_answer_ms": 1500,
    }
    async with (
        running_server(tmp_path, **settings) as server,
        httpx.AsyncClient() as client,
        chromium() as browser,
    ):
        setup = await room_with_sale(client, server.http, units_offered=10)
        await register(client, server.http, arbiter, "Platform")
        # The host panel holds the merchant's key (the demo's link hands it over).
        seed = b64url_encode(bytes(setup.merchant.signing_key))
        host = await new_page(browser, errors, "host", **DESKTOP)
        await host.goto(
            f"{server.http}/host.html?room={setup.room_id}"
            f"#host_token={setup.host_token}&merchant_key={seed}"
        )
        await host.wait_for_selector("#merchant:not([hidden])")

        ann = await new_page(browser, errors, "ann", **PHONE)
        await ann.route("**/ledger/proof/*", tamper_with_the_capture)
        await join_as(ann, f"{server.http}/?room={setup.room_id}", "Ann")
        order_id = await buy(ann, 2)
        ann_id = await ann.evaluate("window.livecommerce.identity.id")
        mine = f".order[data-order-id='{order_id}']"
        await ann.click("#orders-open")
        await ann.locator(f"{mine} .verified").wait_for(timeout=WAIT_MS)

        # The pay form names the TEST provider and lists its cards; a declined card
        # says why, and the order stays held.
        await ann.click(f"{mine} .pay")
        await ann.wait_for_selector("#pay-provider[data-test='1']")
        assert "TEST" in await text_of(ann, "#pay-provider")
        for number in (sandbox.SUCCEEDS, sandbox.DECLINED, sandbox.LATE_SUCCEEDS):
            assert await ann.locator(f"#test-card-list button[data-number='{number}']").count()
        await pay_with_card(ann, sandbox.DECLINED)
        await ann.wait_for_selector("#pay-error[data-reason=card_declined]:not([hidden])")
        assert "Declined: the card was declined" in await text_of(ann, "#pay-error")
        await ann.screenshot(path=str(shots / "viewer-phone-pay-declined.png"))
        assert await ann.get_attribute(mine, "data-stage") == "held"
        await ann.click(f"#test-card-list button[data-number='{sandbox.SUCCEEDS}']")
        await ann.click("#pay-submit")
        await ann.wait_for_selector(f"{mine}[data-stage=paid]", timeout=WAIT_MS)
        # Each entry of its life shows as verified, linked to the ledger page.
        paid = ann.locator(f"{mine} .timeline li[data-action=paid][data-verified=ok]")
        await paid.wait_for(timeout=WAIT_MS)
        assert "✓ verified" in await paid.inner_text()
        index = await paid.get_attribute("data-index")
        assert await paid.locator("a").get_attribute("href") == f"/ledger.html#{index}"

        # The host panel: the order to ship, the address opened in the browser and held
        # to the ledger's commitment, and the packing list.
        row = host.locator(f".m-order[data-order-id='{order_id}']")
        await row.and_(host.locator("[data-stage=paid]")).wait_for(timeout=WAIT_MS)
        await row.locator(".address[data-state=ok]").wait_for(timeout=WAIT_MS)
        address = await row.locator(".address-lines").inner_text()
        assert address.split("\n") == ["Ann Example", "1 Quay Street", "T12 X7 Cork", "Ireland"]
        await host.click("#packing-open")
        packed = host.locator(f"#packing-rows tr[data-order-id='{order_id}']")
        assert await packed.locator(".product").inner_text() == "Stoneware mug"
        assert await packed.locator(".quantity").inner_text() == "2"
        assert "1 Quay Street" in await packed.locator(".ship-to").inner_text()
        await host.screenshot(path=str(shots / "host-packing-list.png"))
        await host.click("#packing-close")
        await row.locator("input.carrier").fill("DHL")
        await row.locator("input.tracking").fill("JJD0001")
        await row.locator("button.ship").click()
        await row.and_(host.locator("[data-stage=shipped]")).wait_for(timeout=WAIT_MS)

        # The viewer sees the carrier and tracking number, signed by the seller on the
        # ledger; the tampered capture entry is refused, in the page.
        await ann.wait_for_selector(f"{mine}[data-stage=shipped]", timeout=WAIT_MS)
        assert await text_of(ann, f"{mine} .tracking-number") == "JJD0001"
        shipped = ann.locator(f"{mine} .timeline li[data-action=shipped][data-verified=ok]")
        await shipped.wait_for(timeout=WAIT_MS)
        assert "signed by the seller" in await shipped.inner_text()
        forged = ann.locator(f"{mine} .timeline li[data-action=capture_succeeded]")
        await forged.and_(ann.locator("[data-verified=bad]")).wait_for(timeout=WAIT_MS)
        assert "does not verify" in await forged.inner_text()
        await ann.screenshot(path=str(shots / "viewer-phone-order-life.png"))

        # Confirmed: it settles; both pages see it, and the balance becomes available.
        await ann.click(f"{mine} button.confirm")
        await ann.wait_for_selector(f"{mine}[data-stage=settled]", timeout=WAIT_MS)
        await ann.wait_for_selector(
            f"{mine} .timeline li[data-action=settled][data-verified=ok]", timeout=WAIT_MS
        )
        await row.and_(host.locator("[data-stage=settled]")).wait_for(timeout=WAIT_MS)
        euros = host.locator("#balances tr[data-currency=EUR]")
        await euros.locator(f".available[data-cents='{SETTLED}']").wait_for(timeout=WAIT_MS)
        assert await euros.locator(".pending").get_attribute("data-cents") == "0"
        assert await row.locator(".m-timeline[data-verified=ok]").count() == 1

        # A payout batch (the platform's arbiter key): the panel sees it paid out.
        started = await client.post(
            f"{server.http}/api/payouts", json=arbiter.payouts("day-1", now_ms())
        )
        assert started.status_code == 201, started.text
        await euros.locator(f".paid-out[data-cents='{SETTLED}']").wait_for(timeout=WAIT_MS)
        assert await euros.locator(".available").get_attribute("data-cents") == "0"
        await host.wait_for_selector("#payouts li[data-state=paid_out]:has-text('day-1')")
        async with host.expect_download() as downloading:
            await host.click("#statement-download")
        downloaded = Path(await (await downloading.value).path())
        statement = await asyncio.to_thread(downloaded.read_text)
        assert statement.startswith("time_ms,transfer_id,order,code,phase")
        assert f"{ann_id}/{order_id},settlement,single" in statement
        await host.screenshot(path=str(shots / "host-desktop-orders.png"), full_page=True)

        # Received and settled: the buyer reviews it from My orders; the product's page
        # checks the review against the ledger and marks it a verified purchase.
        await ann.click(f"{mine} button.review")
        await ann.select_option("#review-stars", "4")
        await ann.fill("#review-text", "Sturdy mug")
        await ann.click("#review-submit")
        await ann.wait_for_selector(f"{mine} .reviewed:has-text('★★★★☆')", timeout=WAIT_MS)
        product_page = await new_page(browser, errors, "product", **PHONE)
        await product_page.goto(f"{server.http}/product.html?id={setup.product_id}")
        await product_page.wait_for_selector(".verified[data-state=verified]", timeout=WAIT_MS)
        assert "Sturdy mug" in await product_page.inner_text("body")
        await product_page.close()

        # A card whose bank answers later: "waiting for the bank", then paid.
        late_id = await buy(ann, 1)
        late = f".order[data-order-id='{late_id}']"
        await ann.click("#orders-open")
        await ann.click(f"{late} .pay")
        await pay_with_card(ann, sandbox.LATE_SUCCEEDS)
        await ann.wait_for_selector(f"{late} .pay-state[data-state=pending]", timeout=WAIT_MS)
        assert await ann.get_attribute(late, "data-stage") == "held"
        await ann.wait_for_selector(f"{late}[data-stage=paid]", timeout=WAIT_MS)
        assert await ann.locator(f"{late} .pay-state").count() == 0

        # The page's check refuses another order's entry offered as this order's.
        shop = Shop(server.http, client, setup)
        bob, token = await shop.buyer("Bob")
        await shop.order(bob, "bob-1")
        assert (await shop.pay(token, "bob-1")).status_code == 200
        life = await shop.life(bob, "bob-1")
        (bobs,) = [item for item in life["timeline"] if item["action"] == "paid"]
        await server.app.state.ledger.wait_covered(bobs["ledger_index"])
        genuine = {"item": bobs, "buyerId": bob.identity_id, "orderId": "bob-1"}
        assert await ann.evaluate(CHECK_ENTRY_JS, genuine) == ["ok", ""]
        swapped = {"item": bobs, "buyerId": ann_id, "orderId": order_id}
        assert await ann.evaluate(CHECK_ENTRY_JS, swapped) == [
            "bad",
            "the entry is another order's",
        ]
    assert errors.errors == []


async def test_cancel_a_refund_answered_in_part_and_a_dispute(tmp_path: Path) -> None:
    errors = PageErrors()
    async with (
        running_server(tmp_path) as server,
        httpx.AsyncClient() as client,
        chromium() as browser,
    ):
        setup = await room_with_sale(client, server.http, units_offered=10)
        seed = b64url_encode(bytes(setup.merchant.signing_key))
        host = await new_page(browser, errors, "host", **DESKTOP)
        await host.goto(
            f"{server.http}/host.html?room={setup.room_id}"
            f"#host_token={setup.host_token}&merchant_key={seed}"
        )
        await host.wait_for_selector("#merchant:not([hidden])")
        ann = await new_page(browser, errors, "ann", **PHONE)
        ann.on("dialog", lambda dialog: dialog.accept())  # "Cancel this order?"
        await join_as(ann, f"{server.http}/?room={setup.room_id}", "Ann")
        ann_id = await ann.evaluate("window.livecommerce.identity.id")
        kept, cancelled = await buy(ann, 1), await buy(ann, 1)
        await ann.click("#orders-open")
        for order_id in (kept, cancelled):
            await ann.click(f".order[data-order-id='{order_id}'] .pay")
            await pay_with_card(ann, sandbox.SUCCEEDS)
            await ann.wait_for_selector(f".order[data-order-id='{order_id}'][data-stage=paid]")

        # Cancelled before shipping, from the viewer page; the panel shows it so.
        await ann.click(f".order[data-order-id='{cancelled}'] .cancel-order")
        await ann.wait_for_selector(
            f".order[data-order-id='{cancelled}'][data-stage=cancelled]", timeout=WAIT_MS
        )
        await host.wait_for_selector(
            f".m-order[data-order-id='{cancelled}'][data-stage=cancelled]", timeout=WAIT_MS
        )

        # Shipped (signed by the merchant's key, here from Python), then a refund asked
        # on the viewer page for 10.00 and accepted for 5.00 on the host panel.
        mine = f".order[data-order-id='{kept}']"
        body = setup.merchant.step("ship", "ship-1", ann_id, kept, now_ms(), carrier="UPS",
                                   tracking="1Z9")  # fmt: skip
        answer = await client.post(f"{server.http}/api/orders/{kept}/steps", json=body)
        assert answer.status_code == 200, answer.text
        await ann.wait_for_selector(
            f"{mine} .timeline li[data-action=capture_succeeded]", timeout=WAIT_MS
        )
        await ann.click(f"{mine} button.refund")
        await ann.fill("#claim-amount", "10.00")
        await ann.select_option("#claim-reason", "damaged")
        await ann.click("#claim-submit")
        await ann.wait_for_selector(f"{mine}[data-stage=refund_requested]", timeout=WAIT_MS)
        row = host.locator(f".m-order[data-order-id='{kept}']")
        await row.and_(host.locator("[data-stage=refund_requested]")).wait_for(timeout=WAIT_MS)
        assert await row.locator("input.refund-amount").input_value() == "10.00"
        assert "Damaged" in await row.locator(".refund-answer").inner_text()
        await row.locator("input.refund-amount").fill("5.00")
        await row.locator("button.accept").click()
        await ann.wait_for_selector(
            f"{mine} .timeline li[data-action=refund_succeeded][data-verified=ok]",
            timeout=WAIT_MS,
        )
        await ann.wait_for_selector(f"{mine}[data-stage=shipped]", timeout=WAIT_MS)
        life = await client.get(f"{server.http}/api/orders/{kept}", params={"buyer_id": ann_id})
        assert life.json()["refunded_cents"] == 500

        # A dispute from the viewer page: the panel says an arbiter decides.
        await ann.click(f"{mine} button.dispute")
        await ann.select_option("#claim-reason", "not_as_described")
        await ann.click("#claim-submit")
        await ann.wait_for_selector(f"{mine}[data-stage=disputed]", timeout=WAIT_MS)
        await row.and_(host.locator("[data-stage=disputed]")).wait_for(timeout=WAIT_MS)
        assert "an arbiter decides" in await row.inner_text()
    assert errors.errors == []
