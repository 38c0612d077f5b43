"""static/js/room-socket.js in a real browser across a kill -9 of the embedded server:
the demo room is made again at restart, and the page must resume from the new run's
numbers, not the old run's."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import websockets
from playwright.async_api import async_playwright

from tests.browser import CHROMIUM_ARGS, require_chromium
from tests.livecommerce.processes import ServerProcess

pytestmark = pytest.mark.browser

CONNECT_JS = """async () => {
  const { connectRoom } = await import("/js/room-socket.js");
  window.seen = [];
  window.room = connectRoom("demo", {
    onMessage: (message) => window.seen.push(message),
    onStatus: () => {},
  });
}"""


async def test_after_a_restart_the_page_resumes_from_the_new_runs_snapshot(
    tmp_path: Path,
) -> None:
    executable = require_chromium()
    server = await asyncio.to_thread(ServerProcess, tmp_path, demo=True)
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=executable, args=CHROMIUM_ARGS
            )
            try:
                page = await browser.new_page()
                await page.goto(f"{server.http}/")
                await page.evaluate(CONNECT_JS)
                # Joined first: comments posted before the page joins come in its snapshot,
                # not as comment/v1 events.
                await page.wait_for_function("window.seen.some((m) => m.type === 'snapshot/v1')")
                async with websockets.connect(f"{server.ws}/ws/rooms/demo") as ws:
                    for number in range(4):
                        text = f"comment {number}"
                        await ws.send(json.dumps({"type": "comment/v1", "text": text, "name": "A"}))
                await page.wait_for_function(
                    "window.seen.filter((m) => m.type === 'comment/v1').length === 4"
                )
                before: int = await page.evaluate("window.room.lastSeq")
                await asyncio.to_thread(server.kill)
                server = await asyncio.to_thread(
                    ServerProcess, tmp_path, demo=True, port=server.port
                )
                # The new run's room has fewer events than the old one had.
                await page.wait_for_function(
                    "window.seen.filter((m) => m.type === 'snapshot/v1').length === 2",
                    timeout=20_000,
                )
                snapshot_seq: int = await page.evaluate(
                    "window.seen.filter((m) => m.type === 'snapshot/v1')[1].seq"
                )
                assert snapshot_seq < before
                assert await page.evaluate("window.room.lastSeq") == snapshot_seq
            finally:
                await browser.close()
    finally:
        await asyncio.to_thread(server.stop)
