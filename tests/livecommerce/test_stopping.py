"""Background tasks end on close even when a cancel is lost on the way."""

from __future__ import annotations

import asyncio

import pytest

from livecommerce.stopping import cancel_and_wait


async def test_a_task_that_lives_through_a_cancel_is_cancelled_again() -> None:
    # As a task inside Python 3.11's asyncio.wait_for can, when the awaited future
    # finishes in the turn the cancel comes (CPython gh-86296): it goes on looping.
    lost = 0

    async def loop_that_loses_one_cancel() -> None:
        nonlocal lost
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if lost == 0:
                    lost += 1
                    continue
                raise

    async def fails() -> None:
        raise RuntimeError("broken")

    stubborn = asyncio.create_task(loop_that_loses_one_cancel(), name="stubborn")
    failed = asyncio.create_task(fails(), name="failed")
    await asyncio.sleep(0.05)
    async with asyncio.timeout(2):
        left = await cancel_and_wait([stubborn, failed])
    assert left == set()
    assert lost == 1
    assert stubborn.cancelled()
    with pytest.raises(RuntimeError):
        failed.result()


async def test_a_task_that_will_not_end_is_given_up_on_after_the_timeout() -> None:
    release = asyncio.Event()

    async def deaf_until_released() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(deaf_until_released())
    await asyncio.sleep(0.05)
    async with asyncio.timeout(2):
        left = await cancel_and_wait([task], timeout_s=0.3)
    assert left == {task}
    release.set()
    await task
