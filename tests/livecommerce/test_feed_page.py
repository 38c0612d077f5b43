"""The plain live-feed page (`/feed.html`, a minimal client of the protocol) in a real
browser: two tabs see each other, HTML stays text."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import async_playwright

from tests.browser import CHROMIUM_ARGS, require_chromium
from tests.livecommerce.server import running_server

pytestmark = pytest.mark.browser


async def test_two_tabs_share_comments_and_likes(tmp_path: Path) -> None:
    executable = require_chromium()
    async with running_server(tmp_path) as server, async_playwright() as playwright:
        room_id, _ = await server.hub.create_room("Browser room", "Mia")
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            first = await browser.new_page(viewport={"width": 390, "height": 844})
            second = await browser.new_page()
            for page in (first, second):
                await page.goto(f"{server.http}/feed.html?room={room_id}")
                await page.wait_for_selector("#status:has-text('connected')")
            assert await first.inner_text("#title") == "Browser room"
            await second.fill("#name", "Bob")
            await second.fill("#text", "<img src=x onerror=alert(1)> hi")
            await second.click("text=Send")
            comment = first.locator("#comments li span")
            await comment.wait_for()
            assert await comment.inner_text() == "<img src=x onerror=alert(1)> hi"
            assert await first.locator("#comments img").count() == 0
            await first.click("#like")
            await first.click("#like")
            await second.wait_for_function("document.getElementById('likes').textContent === '2'")
            await second.wait_for_function("document.getElementById('viewers').textContent === '2'")
        finally:
            await browser.close()
