"""The host panel's operating metrics in Chromium: after two orders, one paid, the
panel's card shows the room's rates and the hour's bar, as the API counts them."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.livecommerce.pipeline.flows import room_with_sale
from tests.livecommerce.pipeline.test_after_sale import Shop
from tests.livecommerce.server import running_server
from tests.livecommerce.test_pages import DESKTOP, PageErrors, chromium, new_page

pytestmark = pytest.mark.browser
WAIT_MS = 20_000


async def test_the_host_panel_shows_the_rooms_operating_rates(tmp_path: Path) -> None:
    async with (
        running_server(tmp_path) as server,
        httpx.AsyncClient(timeout=30) as client,
        chromium() as browser,
    ):
        setup = await room_with_sale(client, server.http, units_offered=10)
        shop = Shop(server.http, client, setup)
        ann, token = await shop.buyer("Ann")
        await shop.order(ann, "a1")
        assert (await shop.pay(token, "a1")).status_code == 200
        bob, _ = await shop.buyer("Bob")
        await shop.order(bob, "b1")  # accepted, not paid
        errors = PageErrors()
        host = await new_page(browser, errors, "host", **DESKTOP)
        await host.goto(
            f"{server.http}/host.html?room={setup.room_id}#host_token={setup.host_token}"
        )
        await host.wait_for_selector("#operating[data-loaded=true]", timeout=WAIT_MS)
        paid = host.locator("#op-rates [data-rate=paid_of_accepted] b")
        assert await paid.inner_text() == "50.0%"
        assert "1 paid" in await host.inner_text("#op-totals")
        # The hour's bar is drawn: some pixel of the paid chart is not transparent.
        drawn = await host.evaluate(
            """() => { const c = document.getElementById('op-paid');
                 const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                 return d.some((v, i) => i % 4 === 3 && v > 0); }"""
        )
        assert drawn
        assert errors.errors == []
