"""The young-generation threshold: set while inside, the original back after the last exit,
however blocks interleave."""

from __future__ import annotations

import contextlib
import gc

from livecommerce.gc_pauses import young_generation_threshold


def test_interleaved_blocks_restore_the_thresholds_found_first() -> None:
    original = gc.get_threshold()
    first = young_generation_threshold(40_000)
    second = young_generation_threshold(30_000)
    with contextlib.ExitStack() as outer:
        outer.enter_context(first)
        assert gc.get_threshold() == (40_000, *original[1:])
        second.__enter__()
        assert gc.get_threshold() == (30_000, *original[1:])
    # The first block closed before the second: still raised.
    assert gc.get_threshold()[0] == 30_000
    second.__exit__(None, None, None)
    assert gc.get_threshold() == original
