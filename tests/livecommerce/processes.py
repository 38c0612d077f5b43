"""Server processes for scale-out tests: `python -m livecommerce serve` as a user runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

from tests.support import ROOT, free_port, wait_for_port


class _ManagedProcess:
    """A child process with its output in a log file: read the log, stop it, or SIGKILL it."""

    process: subprocess.Popen[bytes]
    log_path: Path
    _log: BinaryIO

    _log_offset = 0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_since_start(self) -> str:
        """This run's part of the log (a restarted process appends to the same file)."""
        with self.log_path.open("rb") as file:
            file.seek(self._log_offset)
            return file.read().decode(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self._log.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()


class ServerProcess(_ManagedProcess):
    """`python -m livecommerce serve`. `port` restarts a server where it was (a free port
    otherwise); `environment` adds `LIVECOMMERCE_*` settings; `demo` passes --demo."""

    def __init__(
        self,
        data_dir: Path,
        redis_url: str = "",
        log_path: Path | None = None,
        environment: Mapping[str, str] | None = None,
        port: int | None = None,
        demo: bool = False,
    ) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        self.port = port or free_port()
        self.http = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.port}"
        self.log_path = log_path or data_dir / f"server-{self.port}.log"
        command = [sys.executable, "-m", "livecommerce", "serve", "--port", str(self.port)]
        command += ["--data", str(data_dir)]
        if redis_url:
            command += ["--redis", redis_url]
        if demo:
            command += ["--demo"]
        # Appended to: a restart on the same port keeps one log per place.
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._log = self.log_path.open("ab")
        variables = {**os.environ, **(environment or {}), "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            command, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env=variables
        )
        try:
            wait_for_port("127.0.0.1", self.port, timeout_s=30)
        except TimeoutError:
            self.stop()
            raise AssertionError(f"server did not start:\n{self.log()}") from None


class WriterProcess(_ManagedProcess):
    """`python -m livecommerce ledger-writer`: the one process that appends to the ledger."""

    def __init__(
        self,
        data_dir: Path,
        redis_url: str,
        log_path: Path | None = None,
        serve_ledger: bool = False,
        environment: Mapping[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        self.log_path = log_path or data_dir / "writer.log"
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        command = [sys.executable, "-m", "livecommerce", "ledger-writer"]
        command += ["--redis", redis_url, "--data", str(data_dir)]
        # With serve_ledger, the log is served at `self.ledger_url` (checkpoint, tiles...).
        self.ledger_url = ""
        self.port = 0
        if serve_ledger:
            self.port = port or free_port()
            command += ["--port", str(self.port)]
            self.ledger_url = f"http://127.0.0.1:{self.port}/ledger"
        self._log = self.log_path.open("ab")
        variables = {**os.environ, **(environment or {}), "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            command, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env=variables
        )
        deadline = time.monotonic() + 30
        while "ledger writer ready" not in self.log_since_start():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"ledger writer did not start:\n{self.log()}")
            time.sleep(0.05)
