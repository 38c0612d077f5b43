"""The viewer page's recommendations in Chromium: a new viewer sees the room's products
by popularity (never the sold-out one); when the host pins a product, the page counts a
view of it with the viewer's session and the viewer's list turns to what others bought
with it (beside the pinned one, which the lists leave out); a tap on a card counts a
click."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.livecommerce.pipeline.test_recommendations import shop_with_history
from tests.livecommerce.server import running_server
from tests.livecommerce.test_pages import PHONE, PageErrors, chromium, join_as, new_page

pytestmark = pytest.mark.browser
WAIT_MS = 20_000

LIST_JS = """(id) => [...document.querySelectorAll(`#${id} .rec`)].map(
  (a) => `${a.dataset.productId}:${a.dataset.why}`)"""


async def test_the_viewer_page_shows_and_feeds_recommendations(tmp_path: Path) -> None:
    async with (
        running_server(tmp_path) as server,
        httpx.AsyncClient(timeout=30) as client,
        chromium() as browser,
    ):
        setup, _, _ = await shop_with_history(client, server.http)
        errors = PageErrors()
        page = await new_page(browser, errors, "viewer", **PHONE)
        await join_as(page, f"{server.http}/?room={setup.room_id}", "Zoe")
        # The tote's sale was scheduled last, so the tote is pinned: the lists leave it out.
        await page.wait_for_function(
            f"({LIST_JS})('recs-like').join() === 'mug:popular,tea:popular'", timeout=WAIT_MS
        )
        assert await page.evaluate(LIST_JS, "recs-stream") == ["mug:popular", "tea:popular"]
        product = (await client.get(f"{server.http}/api/products/tea")).json()
        pinned = await client.post(
            f"{server.http}/api/rooms/{setup.room_id}/host",
            headers={"Authorization": f"Bearer {setup.host_token}"},
            json={"type": "host.pin/v1", "product": {
                "product_id": "tea", "title": product["title"], "price_cents": 900,
                "currency": "EUR", "image": ""}},
        )  # fmt: skip
        assert pinned.status_code == 200, pinned.text
        # Beside the tea: its partner first, for this viewer (the view went with the session).
        await page.wait_for_function(
            f"({LIST_JS})('recs-like')[0] === 'mug:co_purchase'", timeout=WAIT_MS
        )
        assert await page.evaluate(LIST_JS, "recs-stream") == ["tote:popular", "mug:popular"]
        # A tap on a card counts a click (and opens the product's page).
        async with page.expect_response(lambda answer: answer.url.endswith("/seen")) as sent:
            await page.evaluate("document.querySelector('#recs-stream .rec').click()")
        answer = await sent.value
        assert answer.status == 200
        assert '"product_id":"tote","signal":"click"' in (answer.request.post_data or "")
        assert errors.errors == []
