from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import uvloop


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The signature verifier's tests run on the stock loop and on uvloop, which the server
    runs on: their process transports differ (uvloop's is not an asyncio.SubprocessTransport)."""
    if item.path.name == "test_verifying.py":
        return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}
