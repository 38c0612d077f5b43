from __future__ import annotations

import itertools
import subprocess
from collections.abc import Generator, Iterator
from pathlib import Path

import aioice.ice
import pytest

from tests.support import (
    STRICT_ENVIRONMENT_VARIABLE,
    free_port,
    require_binary,
    strict,
    wait_for_port,
)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Under strict mode no test may skip: whatever the reason, it becomes a failure."""
    report = yield
    if strict() and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under {STRICT_ENVIRONMENT_VARIABLE}=1: {report.longrepr}"
    return report


class RedisServer:
    """A real redis-server on a free loopback port, private to the test session."""

    def __init__(self, binary: str, directory: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self._extra_args = extra_args
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._binary = binary
        self._directory = directory
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def persistence(self) -> str:
        """What a restart comes back with: "aof" (everything), "rdb" (its last snapshot)
        or "" (nothing)."""
        options = dict(itertools.pairwise(self._extra_args))
        if options.get("--appendonly") == "yes":
            return "aof"
        return "rdb" if options.get("--save") else ""

    def start(self) -> None:
        self._process = subprocess.Popen(
            [
                self._binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self._directory),
                "--logfile", str(self._directory / "redis.log"),
                *self._extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_port("127.0.0.1", self.port, timeout_s=10)

    def stop(self) -> None:
        """SIGKILL: Redis goes away as it would in a crash."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=10)
            self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(require_binary("redis-server"), tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def fresh_aioice_mdns() -> Iterator[None]:
    """aioice keeps one mDNS lock for the whole process, bound to the first event loop
    that met a browser's `.local` ICE candidate (a page's WHEP offer): forgotten after
    each test, so a later test's event loop gets its own (otherwise a WebRTC test after
    a page test fails with "bound to a different event loop")."""
    yield
    state = aioice.ice._mdns
    for name in ("lock", "protocol", "subscribers"):
        if hasattr(state, name):
            delattr(state, name)
