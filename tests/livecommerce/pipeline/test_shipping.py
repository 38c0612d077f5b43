"""The shipping store on a disk that fills up: a failed write leaves no torn line."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from ledger.storage import FileLayer
from livecommerce.pipeline.shipping import SHIPPING_FILE, ShippingStore


class FillingDisk(FileLayer):
    """Once `full`, a write takes what fits (half) and the next one fails with ENOSPC, as
    a filesystem that fills up mid-line does."""

    def __init__(self) -> None:
        self.full = False
        self._short_done = False

    def write(self, fd: int, data: bytes) -> int:
        if not self.full:
            return super().write(fd, data)
        if not self._short_done and len(data) > 1:
            self._short_done = True
            return super().write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


async def test_a_write_that_fails_midway_is_refused_and_leaves_nothing_behind(
    tmp_path: Path,
) -> None:
    disk = FillingDisk()
    store = await ShippingStore.open(tmp_path, file_layer=disk)
    await store.put("ann", "order-1", b"box-1")
    disk.full = True
    with pytest.raises(OSError, match="No space left on device"):
        await store.put("bob", "order-2", b"box-2")
    assert store.get("bob", "order-2") is None
    disk.full = False
    await store.put("cat", "order-3", b"box-3")
    # A half line left behind would have run into the next record and taken it along.
    reopened = await ShippingStore.open(tmp_path)
    assert reopened.get("ann", "order-1") == b"box-1"
    assert reopened.get("cat", "order-3") == b"box-3"
    assert reopened.get("bob", "order-2") is None
    assert (tmp_path / SHIPPING_FILE).read_bytes().count(b"\n") == 2
