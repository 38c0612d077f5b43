"""Server processes for scale-out tests: `python -m livecommerce serve` as a user runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT, free_port, wait_for_port


class ServerProcess:
    def __init__(self, data_dir: Path, redis_url: str = "", log_path: Path | None = None) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.http = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.port}"
        self.log_path = log_path or data_dir / f"server-{self.port}.log"
        command = [sys.executable, "-m", "livecommerce", "serve", "--port", str(self.port)]
        command += ["--data", str(data_dir)]
        if redis_url:
            command += ["--redis", redis_url]
        self._log = self.log_path.open("wb")
        environment = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            command, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env=environment
        )
        try:
            wait_for_port("127.0.0.1", self.port, timeout_s=30)
        except TimeoutError:
            self.stop()
            raise AssertionError(f"server did not start:\n{self.log()}") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

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
