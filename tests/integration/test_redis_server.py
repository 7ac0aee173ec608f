"""The throwaway/embedded Redis that `make run`, `make demo` and the tests fall back on."""
import redis

from devkit.redis_server import RedisServer, redis_answers


def test_embedded_redis_starts_persists_and_stops(tmp_path):
    with RedisServer(tmp_path, appendonly=True) as server:
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        client.close()
    assert server.process.returncode is not None
    assert not redis_answers(server.url)
    # Append-only file on: the data is there on the next start in the same folder.
    with RedisServer(tmp_path, port=server.port) as again:
        assert redis.Redis.from_url(again.url).get("k") == b"v"
