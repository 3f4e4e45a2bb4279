"""pipeline.settings: the Redis Sentinel settings (REDIS_SENTINELS and the rest)."""

import pytest

from pipeline.errors import SettingsError
from pipeline.settings import Settings


def test_no_sentinels_by_default() -> None:
    settings = Settings.from_env({})
    assert settings.redis_sentinels == () and settings.redis_sentinel_master == "mymaster"
    assert settings.redis_sentinel_password is None and settings.replica_wait_ms == 1000


def test_sentinels_are_host_port_pairs_ipv6_in_brackets() -> None:
    env = {
        "REDIS_SENTINELS": " s1:26379, 10.0.0.2:26380,,[::1]:5000 ",
        "REDIS_SENTINEL_MASTER": "main",
        "REDIS_SENTINEL_PASSWORD": "sentinel-pw",
        "LITMINER_REPLICA_WAIT_MS": "250",
    }
    settings = Settings.from_env(env)
    assert settings.redis_sentinels == (("s1", 26379), ("10.0.0.2", 26380), ("::1", 5000))
    assert (settings.redis_sentinel_master, settings.redis_sentinel_password) == ("main", "sentinel-pw")
    assert settings.replica_wait_ms == 250


@pytest.mark.parametrize("value", ["s1", "s1:", ":26379", "s1:port", "s1:0", "s1:65536", "s1:26379,s2"])
def test_a_malformed_sentinel_list_is_an_error_naming_the_variable(value: str) -> None:
    with pytest.raises(SettingsError, match="REDIS_SENTINELS takes host:port pairs"):
        Settings.from_env({"REDIS_SENTINELS": value})


def test_a_negative_replica_wait_is_an_error_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match="LITMINER_REPLICA_WAIT_MS"):
        Settings.from_env({"LITMINER_REPLICA_WAIT_MS": "-1"})


def test_the_sentinel_password_is_not_in_the_settings_repr() -> None:
    settings = Settings.from_env({"REDIS_SENTINELS": "s1:26379", "REDIS_SENTINEL_PASSWORD": "sentinel-pw"})
    assert "sentinel-pw" not in repr(settings) and "26379" in repr(settings)
