from __future__ import annotations

import redis

from tests.conftest import RedisServer


def test_redis_fixture_is_a_real_server(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.set("fixture-check", "1")
        assert client.incr("fixture-check") == 2
        assert int(client.info("server")["tcp_port"]) == redis_server.port
    finally:
        client.close()
