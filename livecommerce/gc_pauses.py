"""Keep garbage-collection pauses short on a server whose live objects keep growing.

The order path keeps every answered order (for repeats and payment) and the hub keeps
rooms and sockets: hundreds of thousands of long-lived objects. CPython's full (oldest
generation) collection walks all of them, and it runs more often the faster objects
survive: measured on the flash-sale benchmark, 100 to 235 ms pauses every one to three
seconds at 2,000 orders a second, which is the whole of the p99 latency.

So: after startup, and then every `interval_ms`, collect the young generations and
move every surviving object to the permanent generation (`gc.freeze`, O(1)); full
collections then only walk what arrived since. The cost: a reference cycle that became
garbage after it was frozen is never collected (plain reference counting still frees
everything else). That cost is real: with a freeze every 200 ms, 600 of 600 WebSocket
connections held across a freeze and then closed kept their protocol objects alive after
`gc.collect()` (0 of 600 without it), because the asyncio and uvicorn objects of a
connection form cycles. So this is off by default (`gc_freeze_interval_ms` = 0) and meant
for short, bounded runs such as a single flash-sale burst, not for a server that stays up.
"""

from __future__ import annotations

import asyncio
import gc


async def freeze_survivors_forever(interval_ms: int) -> None:
    assert interval_ms > 0
    gc.collect(1)
    gc.freeze()
    while True:
        await asyncio.sleep(interval_ms / 1000)
        gc.collect(1)
        gc.freeze()
