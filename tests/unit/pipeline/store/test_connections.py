"""pipeline.store.connections: which client each configuration makes, with which options (no Redis needed:
redis-py connects on the first command)."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as aiosentinel
import redis.sentinel

from pipeline.errors import StoreUnavailable
from pipeline.settings import Settings
from pipeline.store import connections, require_redis
from services.embedded_redis import free_port

SENTINELS = (("10.0.0.1", 26379), ("10.0.0.2", 26380))


def test_without_sentinels_a_client_goes_to_the_url() -> None:
    client = connections.sync_client(Settings(redis_url="redis://:pw@cache:6380/2"), socket_timeout=3)
    pool = client.connection_pool
    assert not isinstance(pool, redis.sentinel.SentinelConnectionPool)
    kwargs = pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["password"]) == ("cache", 6380, 2, "pw")
    assert kwargs["socket_timeout"] == 3
    connections.close(client)


def test_with_sentinels_a_client_asks_them_for_the_master_with_the_urls_password_and_database() -> None:
    settings = Settings(
        redis_url="redis://:master-pw@ignored:1/3",
        redis_sentinels=SENTINELS,
        redis_sentinel_master="main",
        redis_sentinel_password="sentinel-pw",
    )
    client = connections.sync_client(settings, socket_timeout=2, socket_connect_timeout=1, client_name="x")
    pool = client.connection_pool
    assert isinstance(pool, redis.sentinel.SentinelConnectionPool)
    assert pool.service_name == "main" and pool.is_master
    kwargs = pool.connection_kwargs
    assert (kwargs["password"], kwargs["db"], kwargs["socket_timeout"], kwargs["client_name"]) == (
        "master-pw",
        3,
        2,
        "x",
    )
    assert "host" not in kwargs and "port" not in kwargs  # the Sentinels say where the master is
    sentinels = [s.connection_pool.connection_kwargs for s in pool.sentinel_manager.sentinels]
    assert [(s["host"], s["port"]) for s in sentinels] == list(SENTINELS)
    assert all(s["password"] == "sentinel-pw" and s["socket_connect_timeout"] == 1 for s in sentinels)
    assert all(s.get("client_name") is None for s in sentinels)  # the name is the master connections'
    connections.close(client)


def test_sentinels_without_a_password_of_their_own_get_none() -> None:
    client = connections.sync_client(Settings(redis_url="redis://:master-pw@x:1/0", redis_sentinels=SENTINELS))
    pool = client.connection_pool
    assert isinstance(pool, redis.sentinel.SentinelConnectionPool)
    assert all(s.connection_pool.connection_kwargs.get("password") is None for s in pool.sentinel_manager.sentinels)
    connections.close(client)


def test_rediss_means_tls_to_the_master_and_to_the_sentinels_with_the_urls_ssl_options() -> None:
    settings = Settings(redis_url="rediss://:pw@x:1/0?ssl_ca_certs=/ca.pem", redis_sentinels=SENTINELS)
    client = connections.sync_client(settings)
    pool = client.connection_pool
    assert isinstance(pool, redis.sentinel.SentinelConnectionPool)
    assert issubclass(pool.connection_class, redis.sentinel.SentinelManagedSSLConnection)
    assert pool.connection_kwargs["ssl_ca_certs"] == "/ca.pem"
    for sentinel in pool.sentinel_manager.sentinels:
        assert issubclass(sentinel.connection_pool.connection_class, redis.SSLConnection)
        assert sentinel.connection_pool.connection_kwargs["ssl_ca_certs"] == "/ca.pem"
    connections.close(client)


@pytest.mark.parametrize("sentinels", [(), SENTINELS])
def test_an_async_client_with_a_pool_size_waits_for_a_free_connection(sentinels: tuple[tuple[str, int], ...]) -> None:
    settings = Settings(redis_url="redis://:pw@cache:6380/2", redis_sentinels=sentinels)
    client = connections.async_client(settings, pool_size=7, pool_timeout_s=4.0, socket_connect_timeout=5)
    pool = client.connection_pool
    assert isinstance(pool, aioredis.BlockingConnectionPool)
    assert pool.max_connections == 7 and pool.timeout == 4.0
    assert isinstance(pool, aiosentinel.SentinelConnectionPool) == bool(sentinels)
    asyncio.run(connections.aclose(client))


def test_an_async_client_through_sentinels_follows_the_master() -> None:
    settings = Settings(redis_url="redis://:pw@x:1/4", redis_sentinels=SENTINELS, redis_sentinel_master="main")
    client = connections.async_client(settings, socket_connect_timeout=5)
    pool = client.connection_pool
    assert isinstance(pool, aiosentinel.SentinelConnectionPool)
    assert not isinstance(pool, aioredis.BlockingConnectionPool)
    assert pool.service_name == "main" and pool.connection_kwargs["db"] == 4
    asyncio.run(connections.aclose(client))


def test_where_never_shows_a_password() -> None:
    assert connections.where(Settings(redis_url="redis://:s3cret@cache:6379/0")) == "redis://:***@cache:6379/0"
    shown = connections.where(Settings(redis_url="redis://:s3cret@x:1/0", redis_sentinels=SENTINELS))
    assert shown == "the master 'mymaster' of the Sentinels 10.0.0.1:26379,10.0.0.2:26380"


def test_replicas_are_waited_for_only_with_sentinels_and_a_limit() -> None:
    assert not connections.ReplicaWait(Settings()).active
    assert not connections.ReplicaWait(Settings(redis_sentinels=SENTINELS, replica_wait_ms=0)).active
    wait = connections.ReplicaWait(Settings(redis_sentinels=SENTINELS, key_prefix="p:"))
    assert wait.active and wait.timeout_ms == 1000 and wait.counter_key == "p:stats:replica_waits"


def test_sentinels_that_do_not_answer_are_one_line_naming_the_variables_and_no_password() -> None:
    settings = Settings(
        redis_url="redis://:master-pw@x:1/0",
        redis_sentinels=(("127.0.0.1", free_port()),),
        redis_sentinel_password="sentinel-pw",
    )
    with pytest.raises(StoreUnavailable) as raised:
        require_redis(settings, timeout_s=1)
    message = str(raised.value)
    assert message.startswith("no Redis answers as the master 'mymaster' of the Sentinels 127.0.0.1:")
    assert "REDIS_SENTINELS" in message and "pw" not in message and "\n" not in message
