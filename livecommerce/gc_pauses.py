"""Keep garbage-collection pauses short on a server with many long-lived objects.

CPython's full (oldest generation) collection walks every tracked object. A server holds
many: each WebSocket connection is about 130 of them (uvicorn's protocol and transport,
the ASGI tasks and coroutines, Starlette's and the hub's objects), so 2,000 buyers are
about 260,000, and a full collection took 130 to 230 ms on the flash-sale benchmark
(docs/benchmarks.md). The order tables add nothing since their records are untracked
(`livecommerce/commerce/orders.py`).

A full collection runs once the objects promoted into the oldest generation since the
last one reach a quarter of it. With CPython's default young threshold (a collection of
the youngest generation every 700 net new container objects), an order's short-lived
objects (its job, command, answer callbacks, the receipt waiting up to a second for
its checkpoint) outlive two young collections and get promoted: at 2,000 orders a
second that was a 130-230 ms full collection every 2.5 to 5 seconds, which made the
p99. `young_generation_threshold` raises the young threshold (50,000 by default,
`gc_young_threshold_objects`): those objects are freed by reference counting long
before a young collection looks at them, almost nothing is promoted, and in the same
benchmark no full collection ran at all while orders came in; each young collection
walks at most about that many objects (10 to 30 ms measured on 2 busy cores). Cyclic
garbage waits a little longer for its collection, which is the cost.

`freeze_survivors_forever` is older and opt-in (`gc_freeze_interval_ms`, 0 = off):
every `interval_ms` it moves every surviving object to the permanent generation
(`gc.freeze`), so full collections walk only what arrived since. It is not needed with
the threshold above, and it has a real cost: a reference cycle that became garbage
after it was frozen is never collected (600 of 600 WebSocket connections held across a
freeze and then closed stayed alive, 0 of 600 without it), so it suits only short,
bounded runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Iterator


class _Holders:
    """How many `young_generation_threshold` blocks are open, and the thresholds found
    when the first of them opened."""

    count = 0
    found: tuple[int, int, int] = gc.get_threshold()


@contextlib.contextmanager
def young_generation_threshold(objects: int) -> Iterator[None]:
    """Collect the youngest generation every `objects` net new container objects while
    inside. The thresholds found when the first block opened come back when the last one
    closes, however blocks interleave (several servers in one process, as in the tests)."""
    assert objects > 0
    if _Holders.count == 0:
        _Holders.found = gc.get_threshold()
    _Holders.count += 1
    gc.set_threshold(objects, *_Holders.found[1:])
    try:
        yield
    finally:
        _Holders.count -= 1
        if _Holders.count == 0:
            gc.set_threshold(*_Holders.found)


async def freeze_survivors_forever(interval_ms: int) -> None:
    assert interval_ms > 0
    gc.collect(1)
    gc.freeze()
    while True:
        await asyncio.sleep(interval_ms / 1000)
        gc.collect(1)
        gc.freeze()
