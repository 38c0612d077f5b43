"""What tests share: the strict switch that turns skips into failures, and free ports."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

# `.ci/run` sets this so that a missing Redis, Chromium, Go or vector folder fails the
# run instead of quietly skipping the tests that need it.
STRICT_ENVIRONMENT_VARIABLE = "LIVECOMMERCE_TEST_STRICT"
ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT.parent / "shared" / "vectors"


def strict() -> bool:
    return os.environ.get(STRICT_ENVIRONMENT_VARIABLE, "") == "1"


def require(condition: bool, reason: str) -> None:
    """Skip with `reason` when `condition` is false; fail instead under strict mode."""
    if condition:
        return
    if strict():
        pytest.fail(f"{reason} ({STRICT_ENVIRONMENT_VARIABLE}=1 makes this a failure)")
    pytest.skip(reason)


def require_binary(name: str) -> str:
    path = shutil.which(name)
    require(path is not None, f"`{name}` is not on PATH")
    assert path is not None
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(host: str, port: int, timeout_s: float) -> None:
    """Poll until something accepts on host:port, or raise TimeoutError."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nothing listening on {host}:{port} after {timeout_s} s"
                ) from None
            time.sleep(0.02)
