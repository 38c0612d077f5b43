"""One auction in a real browser: the host starts it from the host panel; two viewers bid
from the auction card (one with the lowest next bid, the other with a maximum); each
screen shows the high bid, the bidder's name, the timer and "You're winning" / "Outbid";
the timer closes it; the winner's order shows up in My orders and is paid with a test
card; the host panel says who won."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from livecommerce.commerce.identity import b64url_encode
from livecommerce.payments import sandbox
from tests.livecommerce.pipeline.flows import room_with_sale
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
)

pytestmark = pytest.mark.browser


async def test_two_viewers_bid_the_timer_closes_and_the_winner_pays(tmp_path: Path) -> None:
    errors = PageErrors()
    async with (
        running_server(tmp_path) as server,
        httpx.AsyncClient() as client,
        chromium() as browser,
    ):
        setup = await room_with_sale(client, server.http, units_offered=2, inventory=5)
        seed = b64url_encode(bytes(setup.merchant.signing_key))
        host = await new_page(browser, errors, "host", **DESKTOP)
        await host.goto(
            f"{server.http}/host.html?room={setup.room_id}"
            f"#host_token={setup.host_token}&merchant_key={seed}"
        )
        await host.wait_for_selector("#auction-product option", state="attached", timeout=WAIT_MS)
        ann = await new_page(browser, errors, "ann", **PHONE)
        await join_as(ann, f"{server.http}/?room={setup.room_id}", "Ann")
        bob = await new_page(browser, errors, "bob", **PHONE)
        await join_as(bob, f"{server.http}/?room={setup.room_id}", "Bob")

        await host.fill("#auction-start", "10.00")
        await host.fill("#auction-duration", "12")
        await host.select_option("#auction-mode", "sudden_death")
        await host.click("#auction-form button")
        await host.wait_for_selector("#host-auction[data-state=open]", timeout=WAIT_MS)

        # Ann bids the lowest next bid; both screens show it, with her name.
        await ann.wait_for_selector("#auction[data-state=open] #bid-next", timeout=WAIT_MS)
        assert "€10.00" in await ann.inner_text("#bid-next")
        await ann.click("#bid-next")
        await ann.wait_for_selector("#auction-standing[data-standing=winning]", timeout=WAIT_MS)
        await bob.wait_for_function(
            "document.querySelector('#auction-status')?.textContent.includes('by Ann')",
            timeout=WAIT_MS,
        )
        # Bob bids with a maximum: he leads at the next increment, Ann is outbid.
        await bob.click("#auction details summary")
        await bob.fill("#bid-amount", "11.00")
        await bob.fill("#bid-max", "30.00")
        await bob.click("#bid-form button[type=submit]")
        await bob.wait_for_selector("#auction-standing[data-standing=winning]", timeout=WAIT_MS)
        await ann.wait_for_selector("#auction-standing[data-standing=outbid]", timeout=WAIT_MS)
        assert "€11.00 by Bob" in await ann.inner_text("#auction-status")
        # Ann bids again: Bob's maximum answers for him.
        await ann.click("#bid-next")
        await ann.wait_for_function(
            "document.querySelector('#bid-note')?.textContent.includes('maximum set earlier')",
            timeout=WAIT_MS,
        )
        assert "€13.00 by Bob" in await ann.inner_text("#auction-status")
        timer = await ann.inner_text("#auction-timer")
        await ann.wait_for_function(
            f"document.querySelector('#auction-timer')?.textContent !== {timer!r}",
            timeout=WAIT_MS,
        )
        await ann.screenshot(path=str(screenshots_dir() / "auction-phone.png"))

        # The timer ends it: sold to Bob, whose order waits in My orders to be paid.
        await bob.wait_for_selector("#auction[data-state=sold] #auction-won", timeout=WAIT_MS * 2)
        await bob.wait_for_selector("#orders-dialog[open] #pay-form #ship-name", timeout=WAIT_MS)
        await pay_with_card(bob, sandbox.SUCCEEDS)
        await bob.wait_for_selector(".order[data-stage=paid]", timeout=WAIT_MS)
        assert "Sold to Bob for €13.00" in await ann.inner_text("#auction-status")
        await host.wait_for_selector("#host-auction[data-state=sold]", timeout=WAIT_MS)
        assert "sold to Bob" in await host.inner_text("#host-auction-line")
        auctions = (await client.get(f"{server.http}/api/rooms/{setup.room_id}/auctions")).json()
        (sold,) = auctions["auctions"]
        assert (sold["state"], sold["price_cents"], sold["bids"]) == ("sold", 1_300, 3)
        life = (
            await client.get(
                f"{server.http}/api/orders/{sold['order_id']}",
                params={"buyer_id": sold["winner_id"]},
            )
        ).json()
        assert (life["stage"], life["amount_cents"]) == ("paid", 1_300)
    assert errors.errors == []
