"""Scaled out, with traffic running: kill -9 of a web process, kill -9 of the ledger
writer, and a restart of redis-server (without persistence, and with AOF), each held a
few seconds; then the same invariants as embedded, and what docs/operations.md promises
for each fault."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import RedisServer
from tests.faults.scenarios import Shape, scaled_rounds
from tests.faults.test_crash_embedded import SEED_VARIABLE, fault_seed
from tests.support import require_binary

pytestmark = pytest.mark.redis


def private_redis(tmp_path_factory: pytest.TempPathFactory, *options: str) -> RedisServer:
    server = RedisServer(require_binary("redis-server"), tmp_path_factory.mktemp("redis"), options)
    server.start()
    return server


@pytest.mark.parametrize("fault", ["kill -9 web", "kill -9 writer"])
async def test_a_killed_process_loses_nothing(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, fault: str
) -> None:
    seed = fault_seed()
    redis_server = private_redis(tmp_path_factory)
    try:
        rounds = await scaled_rounds(
            tmp_path, redis_server, [fault], seed, Shape(hold_s=(2, 2.5), after_s=1.5)
        )
    finally:
        redis_server.stop()
    problems = [f"{r.fault}: {p}" for r in rounds for p in r.problems]
    assert not problems, f"{SEED_VARIABLE}={seed}\n" + "\n".join(problems[:40])


@pytest.mark.parametrize(
    "persistence",
    [(), ("--appendonly", "yes", "--appendfsync", "always")],
    ids=["no persistence", "aof"],
)
async def test_a_redis_restart_loses_nothing(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, persistence: tuple[str, ...]
) -> None:
    seed = fault_seed()
    redis_server = private_redis(tmp_path_factory, *persistence)
    try:
        rounds = await scaled_rounds(
            tmp_path, redis_server, ["restart redis"], seed, Shape(hold_s=(2, 2.5), after_s=1.5)
        )
    finally:
        redis_server.stop()
    problems = [f"{r.fault}: {p}" for r in rounds for p in r.problems]
    assert not problems, f"{SEED_VARIABLE}={seed}\n" + "\n".join(problems[:40])
