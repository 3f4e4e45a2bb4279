"""services/api/server.py and connections.py: connection limits from the open-file limit, trusted proxies."""

from __future__ import annotations

import resource

import pytest
from litestar import Litestar

from pipeline.errors import SettingsError
from pipeline.settings import Settings
from services.api.connections import RESERVED_FILES, GuardedH11Protocol, limits_for, raise_open_file_limit
from services.api.server import server_config


def test_the_cap_leaves_room_for_redis_logs_and_one_accept_burst() -> None:
    limits = limits_for(1024)
    assert limits.backlog == 32  # asyncio accepts up to the backlog at once, before any is counted
    assert limits.max_connections == 1024 - RESERVED_FILES - 4 * 32
    assert limits_for(1_048_576).backlog == 2048  # uvicorn's default, once there is room for it
    assert limits_for(1024, configured=100).max_connections == 100
    assert limits_for(64).max_connections == 16  # a floor, however few files


def test_the_soft_open_file_limit_is_raised_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip(f"hard limit {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        assert raise_open_file_limit() == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_forwarded_headers_are_trusted_from_the_configured_proxies_only() -> None:
    app = Litestar(route_handlers=[])
    default = server_config(app, Settings(), host="127.0.0.1", port=8000, open_files=1024)
    assert default.proxy_headers is False  # uvicorn's default trusts 127.0.0.1
    settings = Settings.from_env({"LITMINER_TRUSTED_PROXIES": "10.0.0.7, 172.16.0.1/12,::1"})
    assert settings.trusted_proxies == ("10.0.0.7", "172.16.0.0/12", "::1")  # a network uvicorn can read
    behind = server_config(app, settings, host="0.0.0.0", port=8000, open_files=1024)
    assert behind.proxy_headers is True and behind.forwarded_allow_ips == ["10.0.0.7", "172.16.0.0/12", "::1"]
    assert issubclass(behind.http, GuardedH11Protocol)  # type: ignore[arg-type]
    assert (behind.backlog, behind.timeout_keep_alive) == (32, 5)


@pytest.mark.parametrize("value", ["proxy.internal", "10.0.0.300", "10.0.0.0/40"])
def test_a_trusted_proxy_that_is_no_address_is_an_error_naming_the_variable(value: str) -> None:
    with pytest.raises(SettingsError, match="LITMINER_TRUSTED_PROXIES"):
        Settings.from_env({"LITMINER_TRUSTED_PROXIES": value})


def test_connection_settings_come_from_the_environment() -> None:
    env = {"LITMINER_HEADER_TIMEOUT_S": "2.5", "LITMINER_KEEP_ALIVE_S": "7", "LITMINER_MAX_CONNECTIONS": "500"}
    settings = Settings.from_env(env)
    assert (settings.header_timeout_s, settings.keep_alive_s, settings.max_connections) == (2.5, 7, 500)
    defaults = Settings.from_env({})
    assert (defaults.header_timeout_s, defaults.keep_alive_s, defaults.max_connections) == (10.0, 5, 0)
    assert defaults.trusted_proxies == ()
