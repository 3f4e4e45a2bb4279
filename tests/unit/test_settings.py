import pytest

from pipeline.settings import Settings, SettingsError


def test_defaults_follow_the_design():
    settings = Settings.from_env({})
    assert settings.redis_url == "redis://redis:6379/0"
    assert (settings.retry_min_backoff_ms, settings.retry_max_backoff_ms, settings.max_retries) == (30_000, 120_000, 3)
    assert settings.result_ttl_s == 7 * 24 * 3600 and settings.max_rows == 100 and settings.key_prefix == "litminer:"


def test_redis_url_wins_over_host_and_port():
    env = {"REDIS_URL": "redis://elsewhere:1234/5", "REDIS_HOST": "ignored"}
    assert Settings.from_env(env).redis_url == "redis://elsewhere:1234/5"


def test_redis_url_is_built_from_host_port_db_and_quoted_password():
    env = {"REDIS_HOST": "cache", "REDIS_PORT": "6380", "REDIS_DB": "2", "REDIS_PASSWORD": "p@ss/word"}
    assert Settings.from_env(env).redis_url == "redis://:p%40ss%2Fword@cache:6380/2"


def test_retry_settings_come_from_the_environment():
    env = {"LITMINER_RETRY_MIN_BACKOFF_MS": "5", "LITMINER_RETRY_MAX_BACKOFF_MS": "20", "LITMINER_MAX_RETRIES": "1"}
    settings = Settings.from_env(env)
    assert (settings.retry_min_backoff_ms, settings.retry_max_backoff_ms, settings.max_retries) == (5, 20, 1)


def test_a_non_integer_is_an_error_naming_the_variable():
    with pytest.raises(SettingsError, match="LITMINER_MAX_ROWS"):
        Settings.from_env({"LITMINER_MAX_ROWS": "lots"})
