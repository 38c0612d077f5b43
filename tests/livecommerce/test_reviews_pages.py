"""The product page and the product card's rating in a real browser: a review marked
"verified purchase" only after the page checked it against the ledger, and one whose
stars were changed on the way refused."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Route

from tests.livecommerce.pipeline.flows import now_ms, room_with_sale
from tests.livecommerce.pipeline.test_after_sale import Shop
from tests.livecommerce.pipeline.test_reviews_http import received_order
from tests.livecommerce.server import running_server
from tests.livecommerce.test_pages import (
    DESKTOP,
    PHONE,
    WAIT_MS,
    PageErrors,
    chromium,
    join_as,
    new_page,
    screenshots_dir,
)

pytestmark = pytest.mark.browser


async def reviewed_product(client: httpx.AsyncClient, base: str) -> Shop:
    setup = await room_with_sale(client, base, units_offered=10)
    shop = Shop(base, client, setup)
    for name, order_id, stars, text in (("Ann", "o1", 5, "Lovely mug"), ("Bob", "o2", 3, "OK")):
        buyer, token = await shop.buyer(name)
        await received_order(shop, buyer, token, order_id)
        body = buyer.review("review", buyer.identity_id, order_id, now_ms(), stars=stars, text=text)
        taken = await client.post(f"{base}/api/orders/{order_id}/reviews", json=body)
        assert taken.status_code == 201, taken.text
        if order_id == "o1":
            reply = setup.merchant.review(
                "reply", buyer.identity_id, "o1", now_ms(), text="Thanks!"
            )
            assert (
                await client.post(f"{base}/api/orders/o1/reviews", json=reply)
            ).status_code == 201
    return shop


async def test_the_product_page_verifies_each_review_and_refuses_a_changed_one(
    tmp_path: Path,
) -> None:
    errors = PageErrors()
    async with running_server(tmp_path) as server, chromium() as browser:
        async with httpx.AsyncClient() as client:
            shop = await reviewed_product(client, server.http)
            host = {"Authorization": f"Bearer {shop.setup.host_token}"}
            pin = {"type": "host.pin/v1", "product": {"product_id": "mug", "title": "Stoneware mug",
                   "price_cents": 1800, "currency": "EUR"}}  # fmt: skip
            pinned = await client.post(
                f"{server.http}/api/rooms/{shop.setup.room_id}/host", json=pin, headers=host
            )
            assert pinned.status_code == 200, pinned.text
        page = await new_page(browser, errors, "product", **DESKTOP)
        await page.goto(f"{server.http}/product.html?id=mug")
        await page.wait_for_function(
            "document.querySelectorAll('.verified[data-state=verified]').length === 2",
            timeout=WAIT_MS,
        )
        summary = await page.inner_text("#summary")
        assert "4.0 out of 5" in summary, summary
        assert "2 reviews" in summary, summary
        first = page.locator(".review", has_text="Lovely mug")
        assert "Verified purchase" in await first.locator(".verified").inner_text()
        assert "Thanks!" in await first.locator(".reply").inner_text()
        await page.screenshot(path=str(screenshots_dir() / "product-desktop.png"), full_page=True)

        # The same page, with one review's stars raised on the way: not verified.
        tampered = await new_page(browser, errors, "tampered", **PHONE)

        async def raise_stars(route: Route) -> None:
            response = await route.fetch()
            body = await response.json()
            for review in body["reviews"]:
                if review["order_id"] == "o2":
                    review["stars"] = 5
            await route.fulfill(response=response, body=json.dumps(body))

        await tampered.route("**/api/products/mug/reviews*", raise_stars)
        await tampered.goto(f"{server.http}/product.html?id=mug")
        await tampered.wait_for_function(
            "document.querySelectorAll('.verified:not([data-state=checking])').length === 2",
            timeout=WAIT_MS,
        )
        changed = tampered.locator(".review", has_text="OK").locator(".verified")
        assert await changed.get_attribute("data-state") == "unverified"
        assert "stars" in await changed.inner_text()
        kept = tampered.locator(".review", has_text="Lovely mug").locator(".verified")
        assert await kept.get_attribute("data-state") == "verified"

        # The viewer page's product card shows the rating, linked to the product page.
        viewer = await new_page(browser, errors, "viewer", **PHONE)
        await join_as(viewer, f"{server.http}/?room={shop.setup.room_id}", "Cat")
        await viewer.wait_for_selector("#product-rating:not([hidden])", timeout=WAIT_MS)
        rating = viewer.locator("#product-rating")
        assert "4.0 · 2 reviews" in await rating.inner_text()
        assert await rating.get_attribute("href") == "/product.html?id=mug"
    assert errors.errors == []


async def test_a_poll_answered_on_two_screens_shows_the_live_result_on_both(
    tmp_path: Path,
) -> None:
    errors = PageErrors()
    async with running_server(tmp_path) as server, chromium() as browser:
        async with httpx.AsyncClient() as client:
            created = await client.post(
                f"{server.http}/api/rooms", json={"title": "Live", "host_name": "Mia"}
            )
            room_id, host_token = created.json()["room_id"], created.json()["host_token"]
        ann = await new_page(browser, errors, "ann", **PHONE)
        bob = await new_page(browser, errors, "bob", **DESKTOP)
        for page, name in ((ann, "Ann"), (bob, "Bob")):
            await join_as(page, f"{server.http}/?room={room_id}", name)
        host = await new_page(browser, errors, "host", **DESKTOP)
        await host.goto(f"{server.http}/host.html?room={room_id}#host_token={host_token}")
        await host.fill("#poll-form [name=question]", "Which colour next?")
        await host.fill("#poll-form [name=options]", "Red\nBlue")
        await host.click("#poll-form button")
        for page in (ann, bob):
            await page.wait_for_selector("#poll .poll-answer", timeout=WAIT_MS)
        await ann.click("#poll [data-option='0'] .poll-answer")
        await bob.click("#poll [data-option='1'] .poll-answer")
        for page, selector in ((ann, "#poll"), (bob, "#poll"), (host, "#host-poll")):
            await page.wait_for_function(
                f"""[...document.querySelectorAll('{selector} [data-option]')]
                    .map((li) => li.dataset.count).join() === '1,1'""",
                timeout=WAIT_MS,
            )
        assert await ann.locator("#poll .poll-answer").count() == 0  # answered: results only
        assert "null" not in await ann.inner_text("#poll")
        await ann.screenshot(path=str(screenshots_dir() / "poll-phone.png"))
        await host.click("#host-poll .poll-close")
        for page in (ann, bob):
            await page.wait_for_selector("#poll[data-state=closed]", timeout=WAIT_MS)
            assert "closed" in await page.inner_text("#poll .poll-note")
    assert errors.errors == []
