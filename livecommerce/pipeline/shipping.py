"""Sealed shipping details, kept off the ledger (the ledger holds only the commitment).

An append-only file of JSON lines `{"buyer_id","order_id","sealed"}` (sealed bytes in
base64url), written and fsync'd before the payment that commits to it is recorded, so a
commitment on the ledger always has its sealed box on disk. Only the merchant's key opens
a box; the server never sees the details again after sealing them.

A write that fails (a full or failing disk) is cut off again before the error is raised:
half a line left behind would run into the next record and take it along on reading.
Writes go through the ledger's `FileLayer`, so tests can fail them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import orjson

from ledger.storage import FileLayer
from livecommerce.commerce.identity import b64url_decode, b64url_encode

SHIPPING_FILE = "shipping.jsonl"


class ShippingFull(RuntimeError):
    """`records_max` sealed boxes are stored; refuse more (push back, never grow)."""


class ShippingStore:
    def __init__(
        self, path: Path, records_max: int = 2_000_000, file_layer: FileLayer | None = None
    ) -> None:
        assert records_max > 0
        self.path = path
        self.records_max = records_max
        self._layer = file_layer or FileLayer()
        self._sealed: dict[tuple[str, str], bytes] = {}
        self._lock = asyncio.Lock()

    @classmethod
    async def open(
        cls, data_dir: Path, records_max: int = 2_000_000, file_layer: FileLayer | None = None
    ) -> ShippingStore:
        store = cls(data_dir / SHIPPING_FILE, records_max, file_layer)
        await asyncio.to_thread(store._load)
        return store

    def _load(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as file:
            for line in file:
                try:
                    record = orjson.loads(line)
                    sealed = b64url_decode(record["sealed"])
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    continue  # a torn last line after a crash: its payment was never recorded
                if sealed is not None:
                    self._sealed[(record["buyer_id"], record["order_id"])] = sealed

    def get(self, buyer_id: str, order_id: str) -> bytes | None:
        return self._sealed.get((buyer_id, order_id))

    async def put(self, buyer_id: str, order_id: str, sealed: bytes) -> None:
        """Durably store a sealed box (the newest box for an order wins)."""
        if len(self._sealed) >= self.records_max and (buyer_id, order_id) not in self._sealed:
            raise ShippingFull("the shipping store is full")
        line = orjson.dumps(
            {"buyer_id": buyer_id, "order_id": order_id, "sealed": b64url_encode(sealed)}
        )
        async with self._lock:
            await asyncio.to_thread(self._append, line + b"\n")
        self._sealed[(buyer_id, order_id)] = sealed

    def _append(self, line: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            size_bytes = os.fstat(descriptor).st_size
            try:
                written = 0
                while written < len(line):  # a filling disk takes part of a write
                    written += self._layer.write(descriptor, line[written:])
                self._layer.fsync(descriptor)
            except OSError:
                # Cut what got written, so the next record starts on a line of its own.
                with contextlib.suppress(OSError):
                    self._layer.truncate(descriptor, size_bytes)
                raise
        finally:
            os.close(descriptor)
