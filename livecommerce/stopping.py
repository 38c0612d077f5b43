"""Stopping background tasks when a cancel can be lost.

On Python 3.11, `asyncio.wait_for` returns its future's result, and swallows the
cancellation of the task awaiting it, when that future finishes in the turn the cancel
arrives (CPython gh-86296; 3.12 rebuilt `wait_for` on `asyncio.timeout`). redis-py wraps
a command's send and read in `wait_for` when a socket timeout is set, so a task looping
over Redis calls can live through one cancel and run on. A close that cancelled it once
and awaited it waited forever: the disk fault suite saw a web process's shutdown hang
until it was killed. `cancel_and_wait` cancels again until each task has ended.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("livecommerce")

RECANCEL_INTERVAL_S = 0.1


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[Any]], timeout_s: float = 10.0
) -> set[asyncio.Task[Any]]:
    """Cancel the tasks, again every `RECANCEL_INTERVAL_S` while any runs, for at most
    `timeout_s`; log how those that failed ended. Returns those still running (logged)."""
    tasks = list(tasks)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    running = {task for task in tasks if not task.done()}
    while running:
        for task in running:
            task.cancel()
        left_s = deadline - loop.time()
        if left_s <= 0:
            break
        _, running = await asyncio.wait(running, timeout=min(RECANCEL_INTERVAL_S, left_s))
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.error("task %s had failed: %r", task.get_name(), task.exception())
    for task in running:
        log.warning("task %s did not end within %.1f s of being cancelled", task, timeout_s)
    return running
