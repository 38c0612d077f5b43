"""The run file (`run.json`: what setup made, read by every Locust process and the check)
and the record files (`records-<host>-<pid>.jsonl`: what each Locust process's clients
were told, read by the check)."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

RUN_FILE_NAME = "run.json"
RECORDS_GLOB = "records-*.jsonl"


class RunFileError(Exception):
    """The run file is missing or not one `python -m loadtests setup` wrote."""


@dataclass(frozen=True)
class RunInfo:
    base_url: str  # http(s)://host[:port], no trailing slash
    room_id: str
    host_token: str
    merchant_id: str
    product_id: str
    sale_id: str
    price_cents: int
    units_offered: int
    per_buyer_limit: int
    # The sale's times on the server's clock, and T0 on this machine's clock (the time the
    # sale was created here plus the countdown), which is what the load shape runs on.
    starts_at_ms: int
    ends_at_ms: int
    t0_local_ms: int
    sale_s: float
    viewers: int
    buyers: int
    viewer_ramp_s: float
    buyer_ramp_s: float
    settle_s: float
    grace_s: float
    like_every_s: float
    comment_every_s: float
    vkey: str  # the ledger's verifier key
    profile: str

    @property
    def ws_url(self) -> str:
        scheme, rest = self.base_url.split("://", 1)
        return ("wss" if scheme == "https" else "ws") + "://" + rest

    @property
    def stop_local_ms(self) -> int:
        """When the load shape stops Locust: the sale's end plus the grace period."""
        return self.t0_local_ms + int((self.sale_s + self.grace_s) * 1000)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> RunInfo:
        try:
            data = json.loads(path.read_text())
        except OSError as error:
            raise RunFileError(f"cannot read the run file {path}: {error.strerror}") from None
        except ValueError as error:
            raise RunFileError(f"{path} is not JSON: {error}") from None
        names = {field.name for field in dataclasses.fields(cls)}
        if not isinstance(data, dict) or set(data) != names:
            raise RunFileError(f"{path} is not a run file written by `python -m loadtests setup`")
        return cls(**data)


class RecordWriter:
    """Appends one JSON line per record to this process's file, flushed at once so that
    a killed process loses nothing it was told. Opened lazily: Locust's `--processes`
    forks after the locustfile is imported, so the file is named by the writing pid."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._pid = 0
        self._file: TextIO | None = None

    def write(self, record: dict[str, Any]) -> None:
        if self._file is None or self._pid != os.getpid():
            self._pid = os.getpid()
            name = f"records-{socket.gethostname()}-{self._pid}.jsonl"
            self._file = (self.directory / name).open("a")
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()


def read_records(directory: Path) -> Iterator[dict[str, Any]]:
    for path in sorted(directory.glob(RECORDS_GLOB)):
        with path.open() as lines:
            for number, line in enumerate(lines, 1):
                if not line.endswith("\n"):
                    break  # a torn last line from a killed process
                try:
                    record = json.loads(line)
                except ValueError:
                    raise RunFileError(f"{path}:{number}: not a JSON record") from None
                if isinstance(record, dict):
                    yield record
