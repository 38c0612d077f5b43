"""What every disk fault test checks: the ledger on disk and every answer held to it, the
read paths, and the process's CPU."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]
import websockets

from ledger import Ledger, LedgerSettings, decode_entry
from ledger.checkpoint import Checkpoint
from ledger.note import Signer, Verifier, open_note
from ledger.storage import KEY_FILE
from ledger.verify import Report, verify_directory
from tests.faults.paced_buyers import Answer


@dataclass
class LedgerOnDisk:
    report: Report
    entries: list[tuple[str, dict[str, Any]]]

    def accepted(self, sale_id: str) -> dict[str, tuple[int, dict[str, Any]]]:
        """order id -> (ledger index, fields) of every accepted order of the sale."""
        return {
            fields["order_id"]: (index, fields)
            for index, (entry_type, fields) in enumerate(self.entries)
            if entry_type == "order/v1"
            and fields.get("action") == "accepted"
            and fields["sale_id"] == sale_id
        }


async def ledger_on_disk(ledger_dir: Path) -> LedgerOnDisk:
    """A stopped server's ledger: checked whole (`python -m ledger verify`), then read."""
    verifier = Signer.parse((ledger_dir / KEY_FILE).read_text()).verifier
    report = await asyncio.to_thread(verify_directory, ledger_dir, verifier, True)
    ledger = await Ledger.open(ledger_dir, LedgerSettings())
    try:
        entries = [decode_entry(ledger.entry(index)) for index in range(ledger.size)]
    finally:
        await ledger.close()
    return LedgerOnDisk(report, entries)


async def until(condition: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        await asyncio.sleep(0.05)


async def comment_reaches_viewer(poster_ws: str, viewer_ws: str, room_id: str, text: str) -> None:
    """A comment posted on one room socket reaches a viewer on another."""
    async with (
        websockets.connect(f"{poster_ws}/ws/rooms/{room_id}") as poster,
        websockets.connect(f"{viewer_ws}/ws/rooms/{room_id}") as viewer,
    ):
        await poster.send(json.dumps({"type": "comment/v1", "text": text, "name": "Ann"}))
        async with asyncio.timeout(5):
            while True:
                message = json.loads(await viewer.recv())
                if message.get("type") == "comment/v1" and message.get("text") == text:
                    return


async def checkpoint(client: httpx.AsyncClient, ledger_url: str) -> Checkpoint:
    """The log's latest checkpoint, its signature checked against the log's key."""
    vkey = (await client.get(f"{ledger_url}/vkey")).text.strip()
    response = await client.get(f"{ledger_url}/checkpoint")
    assert response.status_code == 200, response.text
    return Checkpoint.parse(open_note(response.content, (Verifier.parse(vkey),)).text)


def check_accepted_are_recorded(
    answers: list[Answer], on_disk: LedgerOnDisk, sale_id: str
) -> dict[str, int]:
    """Every "accepted" any buyer heard is in the ledger, at the index it was told, for
    that buyer and quantity. Returns order id -> index of what was told accepted."""
    recorded = on_disk.accepted(sale_id)
    told: dict[str, int] = {}
    for answer in answers:
        if answer.status != "accepted":
            continue
        assert answer.order_id in recorded, f"told accepted, not in the ledger: {answer}"
        index, fields = recorded[answer.order_id]
        assert answer.ledger_index == index, (answer, index)
        assert fields["buyer_id"] == answer.buyer_id
        assert fields["quantity"] == answer.quantity
        assert told.setdefault(answer.order_id, index) == index
    return told


def reasons(answers: list[Answer]) -> Counter[str]:
    return Counter(f"{answer.status}:{answer.reason}" for answer in answers)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU of a process and its children (the signature verifier)."""
    process = psutil.Process(pid)
    total = 0.0
    for each in [process, *process.children(recursive=True)]:
        times = each.cpu_times()
        total += times.user + times.system
    return total
