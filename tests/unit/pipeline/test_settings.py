"""pipeline.settings: Settings read from the environment, their defaults, errors and secrets."""

import pytest

from pipeline.errors import SettingsError
from pipeline.settings import Settings


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


def test_default_sources_are_the_keyless_apis_plus_openalex_with_a_key_plus_local_with_a_corpus():
    assert Settings.from_env({}).default_sources() == ("europepmc", "crossref", "arxiv")
    keyed = Settings.from_env({"OPENALEX_API_KEY": "k", "LITMINER_CORPUS": "/papers"})
    assert keyed.default_sources() == ("europepmc", "crossref", "arxiv", "openalex", "local")
    assert Settings.from_env({"LITMINER_SOURCES": " local , arxiv "}).default_sources() == ("local", "arxiv")


def test_api_keys_and_the_redis_password_stay_out_of_the_repr():
    env = {"OPENALEX_API_KEY": "oa-secret", "SEMANTIC_SCHOLAR_API_KEY": "s2-secret", "REDIS_PASSWORD": "pw-secret"}
    shown = repr(Settings.from_env(env))
    assert "secret" not in shown and "contact_email" in shown


def test_online_source_settings_come_from_the_environment():
    env = {
        "LITMINER_CONTACT_EMAIL": "me@uni.example",
        "LITMINER_OPENALEX_URL": "http://127.0.0.1:9/oa",
        "LITMINER_SEARCH_CACHE_TTL": "60",
        "LITMINER_HTTP_TIMEOUT_S": "2.5",
        "LITMINER_HTTP_RETRIES": "0",
    }
    settings = Settings.from_env(env)
    assert settings.contact_email == "me@uni.example" and settings.openalex_url == "http://127.0.0.1:9/oa"
    assert (settings.search_cache_ttl_s, settings.http_timeout_s, settings.http_retries) == (60, 2.5, 0)
    with pytest.raises(SettingsError, match="LITMINER_HTTP_RETRIES"):
        Settings.from_env({"LITMINER_HTTP_RETRIES": "-1"})


def test_llm_settings_come_from_the_environment_and_the_key_is_never_shown():
    env = {
        "OPENAI_API_KEY": "sk-secret",
        "OPENAI_BASE_URL": "http://127.0.0.1:11434/v1",
        "LITMINER_LLM_MODEL": "llama3",
    }
    settings = Settings.from_env(env | {"LITMINER_LLM_CONCURRENCY": "16", "LITMINER_MAX_TOKENS_PER_JOB": "50000"})
    assert (settings.openai_base_url, settings.llm_model, settings.llm_concurrency) == (
        env["OPENAI_BASE_URL"],
        "llama3",
        16,
    )
    assert settings.max_tokens_per_job == 50_000 and settings.llm_configured
    assert "sk-secret" not in repr(settings) and "llama3" in repr(settings)
    assert not Settings.from_env({}).llm_configured


@pytest.mark.parametrize(
    ("name", "value"),
    [("LITMINER_LLM_CONCURRENCY", "0"), ("LITMINER_GROUNDING_THRESHOLD", "120"), ("LITMINER_EXTRACT_BATCH", "0")],
)
def test_llm_settings_out_of_range_are_errors_naming_the_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})
