"""The viewer page, the host panel and the ledger page in a real browser (Debian's
Chromium through Playwright, fake camera): the whole show, from a new room to a verified
receipt. Screenshots of each page at a phone and a desktop size go to
`artifacts/screenshots/` (or `$LIVECOMMERCE_TEST_ARTIFACTS/screenshots/`)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from tests.browser import CHROMIUM_ARGS, require_chromium
from tests.livecommerce.server import running_server
from tests.support import require

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
DESKTOP = {"viewport": {"width": 1440, "height": 900}}
HOST_DESKTOP = {"viewport": {"width": 1440, "height": 1000}}
WAIT_MS = 20_000

FRAMES_DECODED_JS = """async () => {
  const peer = window.livecommerce.peer;
  if (!peer) return -1;
  let decoded = 0;
  (await peer.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") decoded = s.framesDecoded ?? 0;
  });
  return decoded;
}"""


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    executable = require_chromium()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


def screenshots_dir() -> Path:
    base = Path(os.environ.get("LIVECOMMERCE_TEST_ARTIFACTS", REPO / "artifacts"))
    directory = base / "screenshots"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


class PageErrors:
    """Uncaught exceptions and console errors of the pages: a test fails on any."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def watch(self, page: Page, name: str) -> Page:
        page.on("pageerror", lambda error: self.errors.append(f"{name}: {error}"))

        def console(message: Any) -> None:
            # The browser logs failed fetches it was asked to make (a 409 for sold out is
            # an answer, not a fault), so only script errors count.
            if message.type == "error" and "Failed to load resource" not in message.text:
                self.errors.append(f"{name}: {message.text}")

        page.on("console", console)
        return page


async def new_page(browser: Browser, errors: PageErrors, name: str, **options: Any) -> Page:
    context: BrowserContext = await browser.new_context(**options)
    await context.grant_permissions(["clipboard-read", "clipboard-write"])
    return errors.watch(await context.new_page(), name)


async def join_as(page: Page, url: str, name: str) -> None:
    await page.goto(url)
    await page.wait_for_selector("#name-dialog[open]")
    await page.fill("#name-input", name)
    await page.click("#name-join")
    await page.wait_for_function("window.livecommerce.identity !== null")


async def pay_with_card(page: Page, number: str) -> None:
    """In the open pay form of My orders: an address, then a test card from the
    provider's list (which fills the card fields), then Pay."""
    await page.wait_for_selector("#pay-form #ship-name")
    await page.fill("#ship-name", "Ann Example")
    await page.fill("#ship-street", "1 Quay Street")
    await page.fill("#ship-postcode", "T12 X7")
    await page.fill("#ship-city", "Cork")
    await page.fill("#ship-country", "Ireland")
    await page.click(f"#test-card-list button[data-number='{number}']")
    await page.click("#pay-submit")


async def frames_decoded(page: Page) -> int:
    decoded: int = await page.evaluate(FRAMES_DECODED_JS)
    return decoded


async def text_of(page: Page, selector: str) -> str:
    return (await page.inner_text(selector)).strip()


async def stock_shows(pages: tuple[Page, ...], units: str) -> None:
    """Wait until every page's stock counter reads `units`."""
    for page in pages:
        await page.wait_for_function(
            f"document.getElementById('stock').textContent === '{units}'", timeout=WAIT_MS
        )


async def test_host_goes_live_viewers_watch_chat_buy_and_verify(tmp_path: Path) -> None:
    shots = screenshots_dir()
    errors = PageErrors()
    async with running_server(tmp_path) as server, chromium() as browser:
        # The host starts a room from the panel: the merchant key is made in the page.
        host = await new_page(browser, errors, "host", **HOST_DESKTOP)
        host.on("dialog", lambda dialog: dialog.accept(dialog.default_value))
        await host.goto(f"{server.http}/host.html")
        await host.fill("#create-title", "Friday flash sale")
        await host.fill("#create-host", "Mia")
        await host.click("#create-form button")
        await host.wait_for_selector("#app:not([hidden])")
        await host.wait_for_selector("#room-title:has-text('Friday flash sale')")
        room_id = await host.evaluate("window.livecommerce.state.roomId")

        await host.click("#go-live")
        await host.wait_for_selector("#broadcast-state:has-text('on air')", timeout=WAIT_MS)
        await host.wait_for_selector("#live-badge:has-text('LIVE')")

        # A product signed by the browser's merchant key, with 3 units in stock.
        await host.click("#new-product summary")
        await host.fill("#p-title", "Linen tote bag")
        await host.fill("#p-price", "24.50")
        await host.fill("#p-stock", "3")
        await host.select_option("#p-image", "/img/tote.svg")
        await host.click("#product-form button")
        await host.wait_for_selector("#products li:has-text('3 in stock')")
        await host.click("#products li:has-text('Linen tote bag') >> text=Pin")
        await host.wait_for_selector("#products button.pinned")

        viewer_url = f"{server.http}/?room={room_id}"
        ann = await new_page(browser, errors, "ann", **PHONE)
        bob = await new_page(browser, errors, "bob", **DESKTOP)
        await join_as(ann, viewer_url, "Ann")
        await join_as(bob, viewer_url, "Bob")
        for viewer in (ann, bob):
            await viewer.wait_for_selector("#product-title:has-text('Linen tote bag')")
            await viewer.wait_for_selector("#live:not([hidden])")

        # Both decode the host's video.
        for viewer in (ann, bob):
            await viewer.wait_for_selector("#video-wait", state="hidden", timeout=WAIT_MS)
            first = await frames_decoded(viewer)
            await viewer.wait_for_timeout(1000)
            assert await frames_decoded(viewer) > first > 0

        # Comments (HTML stays text) and likes reach the other viewer and the host.
        await ann.fill("#comment-text", "<img src=x onerror=alert(1)> is it linen?")
        await ann.click(".send")
        await bob.fill("#comment-text", "want one!")
        await bob.click(".send")
        for page in (ann, bob):
            await page.wait_for_selector("#comments li:has-text('is it linen?')")
            await page.wait_for_selector("#comments li:has-text('want one!')")
            assert await page.locator("#comments img").count() == 0
        comment = bob.locator("#comments li", has_text="is it linen?").locator("span")
        assert await comment.inner_text() == "<img src=x onerror=alert(1)> is it linen?"
        await host.wait_for_selector("#host-comments li:has-text('want one!')")
        for _ in range(3):
            await bob.click("#like")
        await ann.wait_for_function("document.getElementById('likes').dataset.value === '3'")
        await bob.click("#share")
        await ann.wait_for_function("document.getElementById('shares').dataset.value === '1'")
        assert await bob.evaluate("navigator.clipboard.readText()") == viewer_url

        # The host starts a sale: 3 units, 2 per buyer, after a 3 s countdown.
        await host.fill("#sale-units", "3")
        await host.fill("#sale-limit", "2")
        await host.fill("#sale-starts", "3")
        await host.click("#sale-form button")
        for viewer in (ann, bob):
            await viewer.wait_for_selector("#product[data-state=countdown]")
            assert "starts in" in await text_of(viewer, "#sale-status")
        await ann.screenshot(path=str(shots / "viewer-phone-countdown.png"))
        for viewer in (ann, bob):
            await viewer.wait_for_selector("#product[data-state=open]", timeout=WAIT_MS)
            assert await text_of(viewer, "#stock") == "3"

        # Ann buys 2: the counter drops on both screens, and her receipt verifies.
        await ann.click("#qty-plus")
        assert await text_of(ann, "#qty") == "2"
        await ann.click("#buy")
        await stock_shows((ann, bob), "1")
        await ann.wait_for_selector("#product[data-state=limit]")
        await ann.click("#orders-open")
        verified = ann.locator(".order .verified")
        await verified.wait_for(timeout=WAIT_MS)
        assert "Verified in the ledger at checkpoint" in await verified.inner_text()
        await ann.screenshot(path=str(shots / "viewer-phone-receipt.png"))
        await ann.click(".order .pay")  # a session from a signed challenge, then pay
        await pay_with_card(ann, "4242424242424242")
        await ann.wait_for_selector(".order .order-status:has-text('paid')")
        await ann.click("#orders-close")

        # Bob asks for 2 of the 1 left: sold out (all or nothing); then takes the last.
        assert await text_of(bob, "#qty") == "1"
        assert await bob.locator("#qty-plus").is_disabled(), "the stepper stops at 1 left"
        ordered = await bob.evaluate(
            """async () => {
              const lc = window.livecommerce;
              const sale = lc.view.sale;
              const { DOMAIN_ORDER } = await import('/js/canonical.js');
              const fields = { buyer_id: lc.identity.id, order_id: 'bob-two', price_cents:
                sale.price_cents, quantity: 2, sale_id: sale.sale_id, time_ms: Date.now() };
              const signature = await lc.identity.sign(DOMAIN_ORDER, fields);
              const response = await fetch('/api/orders', { method: 'POST',
                body: JSON.stringify({ ...fields, signature }) });
              return [response.status, (await response.json()).reason];
            }"""
        )
        assert ordered == [409, "sold_out"]
        await bob.click("#buy")
        await stock_shows((ann, bob), "0")
        await ann.wait_for_selector("#product[data-state=limit]")
        await bob.wait_for_selector("#product[data-state=sold_out]")
        # A third viewer arrives after the last unit went: sold out, the button is off.
        cat = await new_page(browser, errors, "cat", **PHONE)
        await join_as(cat, viewer_url, "Cat")
        await cat.wait_for_selector("#product[data-state=sold_out]")
        assert await cat.locator("#buy").is_disabled()
        assert await text_of(cat, "#buy") == "Sold out"
        await bob.click("#orders-open")
        await bob.locator(".order .verified").wait_for(timeout=WAIT_MS)
        await bob.screenshot(path=str(shots / "viewer-desktop-receipt.png"))
        await bob.click("#orders-close")

        # The host's dashboard counts what happened.
        await host.wait_for_function(
            "document.getElementById('m-sold').textContent === '3'", timeout=WAIT_MS
        )
        assert await text_of(host, "#m-left") == "0"
        assert await text_of(host, "#m-gmv") == "€73.50"
        await host.wait_for_selector("#m-rejects:has-text('1 sold out')")
        await host.screenshot(path=str(shots / "host-desktop.png"))

        # Moderation: the host deletes Ann's comment; it goes from every screen.
        await host.locator("#host-comments li", has_text="is it linen?").hover()
        await (
            host.locator("#host-comments li", has_text="is it linen?")
            .locator("text=Delete")
            .click()
        )
        for viewer in (ann, bob):
            await viewer.wait_for_selector(
                "#comments li:has-text('is it linen?')", state="detached"
            )

        # Reconnect and resume: Ann's socket drops; comments sent meanwhile arrive once.
        await ann.evaluate("window.livecommerce.room.drop()")
        for text in ("while you were away 1", "while you were away 2"):
            await bob.fill("#comment-text", text)
            await bob.click(".send")
        await ann.wait_for_selector(
            "#comments li:has-text('while you were away 2')", timeout=WAIT_MS
        )
        await ann.wait_for_timeout(500)
        for text in ("want one!", "while you were away 1", "while you were away 2"):
            assert await ann.locator("#comments li", has_text=text).count() == 1

        # A ban closes the viewer's socket for good; a restock and stopping the sale show.
        await cat.fill("#comment-text", "buy followers at spam.example")
        await cat.click(".send")
        spam = host.locator("#host-comments li", has_text="spam.example")
        await spam.hover()
        await spam.locator("text=Ban").click()
        await cat.wait_for_selector("#conn:has-text('Disconnected')")
        await host.wait_for_selector("#moderated:has-text('Cat (banned)')")
        await host.click("#products li:has-text('Linen tote bag') >> text=+ Stock")
        await host.wait_for_selector("#products li:has-text('50 in stock')")
        await host.click("#sale-stop")
        await host.wait_for_selector("#sale-state:has-text('closed: stopped')")
        for viewer in (ann, bob):
            await viewer.wait_for_selector("#product[data-state=over]")
            assert await text_of(viewer, "#buy") == "Sale over"

        # Phone-sized host panel and desktop viewer with the video playing.
        await host.set_viewport_size({"width": 390, "height": 844})
        await host.screenshot(path=str(shots / "host-phone.png"))
        await bob.screenshot(path=str(shots / "viewer-desktop.png"))
        await ann.screenshot(path=str(shots / "viewer-phone.png"))
    assert errors.errors == []


async def test_ledger_page_finds_and_verifies_and_refuses_a_forgery(tmp_path: Path) -> None:
    shots = screenshots_dir()
    errors = PageErrors()
    async with running_server(tmp_path) as server, chromium() as browser:
        # A viewer registering is an identity/v1 entry: something to find.
        viewer = await new_page(browser, errors, "viewer", **PHONE)
        room_id, _ = await server.hub.create_room("Ledger room", "Mia")
        await join_as(viewer, f"{server.http}/?room={room_id}", "Ann")
        identity_id = await viewer.evaluate("window.livecommerce.identity.id")
        ledger = server.app.state.ledger
        await ledger.wait_covered(ledger.size - 1)

        page = await new_page(browser, errors, "ledger", **DESKTOP)
        await page.goto(f"{server.http}/ledger.html")
        await page.wait_for_selector("#cp-status.ok")
        await page.wait_for_selector("#entries tr")
        await page.fill("#find-index", "0")
        await page.click("#find-form button")
        await page.wait_for_selector("#found-status.ok")
        assert "Verified in the ledger at checkpoint" in await text_of(page, "#found-status")
        assert identity_id in await text_of(page, "#found-entry")
        await page.screenshot(path=str(shots / "ledger-desktop.png"), full_page=True)

        # The same check refuses a receipt whose entry was changed, or whose
        # checkpoint signature was, and accepts the genuine one.
        outcome = await page.evaluate(
            """async () => {
              const v = await import('/js/ledger-verify.js');
              const key = await v.logVerifier();
              const text = await (await fetch('/ledger/proof/0')).text();
              const lines = text.split('\\n');
              const entry = JSON.parse(atob(lines[1].slice(6)));
              entry.action = 'forged';
              const forgedLine = 'extra ' + btoa(JSON.stringify(entry));
              const forged = [lines[0], forgedLine, ...lines.slice(2)].join('\\n');
              const sig = text.lastIndexOf('— ');
              const at = text.indexOf(' ', sig + 2) + 20;
              const flip = text[at] === 'A' ? 'B' : 'A';
              const badSig = text.slice(0, at) + flip + text.slice(at + 1);
              const result = async (t) => {
                try { await v.verifyReceipt(t, key); return 'ok'; }
                catch (e) { return String(e.message); }
              };
              return [await result(text), await result(forged), await result(badSig)];
            }"""
        )
        genuine, forged, bad_signature = outcome
        assert genuine == "ok"
        assert "inclusion proof" in forged
        assert bad_signature != "ok"
    assert errors.errors == []


VECTORS = REPO.parent / "shared" / "vectors" / "rfc6962-proofs" / "inclusion"

INCLUSION_JS = """async (cases) => {
  const v = await import('/js/ledger-verify.js');
  const b = await import('/js/b64.js');
  const results = [];
  for (const c of cases) {
    try {
      const root = await v.rootFromInclusion(c.leafIdx, c.treeSize,
        b.b64ToBytes(c.leafHash || ''), (c.proof || []).map(b.b64ToBytes));
      results.push(b.equalBytes(root, b.b64ToBytes(c.root || '')));
    } catch (error) {
      results.push(false);
    }
  }
  return results;
}"""


async def test_the_pages_inclusion_check_agrees_with_every_rfc6962_vector(tmp_path: Path) -> None:
    require(VECTORS.is_dir(), f"shared vectors not found at {VECTORS}")
    cases = [json.loads(path.read_text()) for path in sorted(VECTORS.rglob("*.json"))]
    assert len(cases) > 50
    async with running_server(tmp_path) as server, chromium() as browser:
        page = await browser.new_page()
        await page.goto(f"{server.http}/healthz")
        verified: list[bool] = await page.evaluate(INCLUSION_JS, cases)
    wanted = [not case["wantErr"] for case in cases]
    assert verified == wanted
    assert any(wanted)
    assert not all(wanted)
