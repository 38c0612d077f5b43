"""Group buying in a real browser: the host offers the sale to groups of two from the host
panel; one viewer starts a group and pays; the group's places and time left show live on
another screen, which opens the share link, joins and pays; the group succeeds on both
screens and in the host panel."""

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


async def test_two_viewers_fill_a_group_from_the_card_and_the_share_link(tmp_path: Path) -> None:
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
        await host.wait_for_selector("#group-form:not([hidden])", timeout=WAIT_MS)
        await host.fill("#group-size", "2")
        await host.fill("#group-window", "600")
        await host.click("#group-form button")
        await host.wait_for_selector("#group-status:not([hidden])", timeout=WAIT_MS)
        assert "Group buy: 2 for" in await host.inner_text("#group-status")

        ann = await new_page(browser, errors, "ann", **PHONE)
        await join_as(ann, f"{server.http}/?room={setup.room_id}", "Ann")
        await ann.wait_for_selector("#groups:not([hidden])", timeout=WAIT_MS)
        # The sale sells only in groups: the buy button says so.
        await ann.wait_for_function(
            "document.querySelector('#product').dataset.state === 'groups'", timeout=WAIT_MS
        )
        assert await ann.is_disabled("#buy")
        await ann.click(".group-open")
        await ann.wait_for_selector("#orders-dialog[open] #pay-form #ship-name", timeout=WAIT_MS)
        await pay_with_card(ann, sandbox.SUCCEEDS)
        await ann.wait_for_selector(".order[data-stage=paid] .group-note[data-outcome=open]")
        await ann.click("#orders-close")
        group_id = await ann.evaluate(
            "window.livecommerce.orders.list.find((o) => o.group).group.group_id"
        )
        row = f".group[data-group-id='{group_id}']"
        await ann.wait_for_selector(f"{row} .in-group", timeout=WAIT_MS)
        # Read again every 2 s: the payment shows up without a reload.
        await ann.wait_for_function(
            f"document.querySelector(\"{row}\").textContent.includes('1 of 2 paid')",
            timeout=WAIT_MS,
        )
        assert "1 place left" in await ann.inner_text(f"{row} .places-left")
        first_left = await ann.inner_text(f"{row} .time-left")
        await ann.wait_for_function(
            f'document.querySelector("{row} .time-left").textContent !== {first_left!r}',
            timeout=WAIT_MS,
        )
        # Ann shares the link (the clipboard has it); Bob opens it.
        await ann.click(f"{row} .group-share")
        link = await ann.evaluate("navigator.clipboard.readText()")
        assert f"group={group_id}" in link, link
        bob = await new_page(browser, errors, "bob", **PHONE)
        await join_as(bob, link, "Bob")
        shared = f".group.shared[data-group-id='{group_id}']"
        await bob.wait_for_selector(shared, timeout=WAIT_MS)
        await bob.click(f"{shared} .group-join")
        await bob.wait_for_selector("#orders-dialog[open] #pay-form #ship-name", timeout=WAIT_MS)
        await pay_with_card(bob, sandbox.SUCCEEDS)
        # Both orders say the group succeeded; the group leaves the open list.
        for page in (ann, bob):
            if not await page.is_visible("#orders-dialog[open]"):
                await page.click("#orders-open")
            await page.wait_for_selector(
                ".order .group-note[data-outcome=succeeded]", timeout=WAIT_MS
            )
            await page.click("#orders-close")
            await page.wait_for_selector(f"{row}", state="detached", timeout=WAIT_MS)
        await host.wait_for_function(
            "document.querySelector('#group-status').textContent.includes('1 succeeded')",
            timeout=WAIT_MS,
        )
        # Bob's order shows its group steps, each checked in the page against the ledger.
        await bob.click("#orders-open")
        for action in ("joined", "succeeded"):
            step = f".order .step[data-action={action}][data-verified=ok]"
            await bob.wait_for_selector(step, timeout=WAIT_MS)
        joined = await bob.inner_text(".order .step[data-action=joined]")
        assert "signed by you" in joined, joined
        await bob.screenshot(path=str(screenshots_dir() / "group-succeeded-phone.png"))
        group = (await client.get(f"{server.http}/api/groups/{group_id}")).json()
        assert (group["outcome"], group["paid"]) == ("succeeded", 2)
    assert errors.errors == []
