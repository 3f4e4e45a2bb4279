"""API keys, ownership, rate and size limits, strict ids, CORS and secrets, over real HTTP, SSE and WebSockets."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx
import msgspec
import pytest
import redis
from websockets.exceptions import InvalidStatus
from websockets.http11 import Response
from websockets.sync.client import connect as ws_connect

from pipeline.jobs import JobService
from pipeline.settings import Settings
from pipeline.store.keys import Keys
from services.api.auth import owner_id
from services.cli import main
from services.logs import configure_logging
from tests.conftest import follow

KEY_A = "key-a-4c1f0e7d9b2a"
KEY_B = "key-b-93e5d8a6f1c0"
A = {"Authorization": f"Bearer {KEY_A}"}
B = {"Authorization": f"Bearer {KEY_B}"}
FIELDS = [{"name": "technology_name", "type": "str", "description": "Name of a water treatment technology"}]
BODY = {
    "user_query": "water treatment technologies used in specialty crop production",
    "rows": 2,
    "model_name": "Treatments",
    "field_definitions": FIELDS,
}


@pytest.fixture
def secure_settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, api_keys=(KEY_A, KEY_B))


@pytest.fixture
def secure_url(secure_settings: Settings, serve_api: Callable[[Settings], str]) -> str:
    return serve_api(secure_settings)


def generate(url: str, headers: dict[str, str], **changes: object) -> httpx.Response:
    return httpx.post(f"{url}/api/v1/datasets/generate", json=BODY | changes, headers=headers)


def submit(url: str, headers: dict[str, str], **changes: object) -> str:
    reply = generate(url, headers, **changes)
    assert reply.status_code == 202, reply.text
    task_id: str = reply.json()["task_id"]
    return task_id


def ws_url(url: str, path: str) -> str:
    return url.replace("http://", "ws://") + path


def ws_refused(url: str, path: str, headers: dict[str, str] | None = None) -> Response | None:
    """The HTTP response refusing a WebSocket handshake (None when the handshake succeeded)."""
    try:
        with ws_connect(ws_url(url, path), open_timeout=5, additional_headers=headers):
            return None
    except InvalidStatus as refused:
        return refused.response


def refusal(response: Response | None) -> tuple[int, dict[str, object]]:
    """The status and JSON body of a refused handshake."""
    assert response is not None, "the handshake succeeded"
    body: dict[str, object] = json.loads(response.body or b"{}")
    return response.status_code, body


def first_sse_event(url: str, path: str, **kwargs: object) -> dict[str, object]:
    with httpx.stream("GET", f"{url}{path}", timeout=10, **kwargs) as reply:  # type: ignore[arg-type]
        assert reply.status_code == 200, reply.read()
        for line in reply.iter_lines():
            if line.startswith("data: "):
                event: dict[str, object] = json.loads(line.removeprefix("data: "))
                return event
    raise AssertionError(f"{path} sent no event")


# -- API keys -----------------------------------------------------------------------------------------


def test_without_a_key_every_route_is_401_but_health_and_the_pages(secure_url):
    task = str(uuid.uuid4())
    for method, path in [
        ("GET", f"/tasks/{task}"),
        ("POST", f"/tasks/{task}/revoke"),
        ("POST", "/api/v1/datasets/generate"),
        ("GET", f"/api/v1/datasets/{task}"),
        ("GET", "/api/v1/tasks"),
        ("GET", "/api/v1/ops"),
        ("GET", "/metrics"),
        ("GET", "/ready"),
        ("GET", "/schema/openapi.json"),
        ("GET", "/sse/some-client"),
        ("GET", f"/sse/tasks/{task}"),
    ]:
        reply = httpx.request(method, f"{secure_url}{path}")
        assert reply.status_code == 401, (path, reply.text)
        assert reply.headers["www-authenticate"] == "Bearer"
        body = reply.json()
        assert body["status_code"] == 401
        assert "Authorization: Bearer" in body["detail"] and "X-API-Key" in body["detail"]
        assert "?token=" in body["detail"]
    for path in ("/ws/some-client", f"/ws/tasks/{task}"):
        refused = ws_refused(secure_url, path)
        status, body = refusal(refused)
        assert status == 401 and "X-API-Key" in str(body["detail"])
        assert refused is not None and refused.headers["www-authenticate"] == "Bearer"

    assert httpx.get(f"{secure_url}/health").json() == {"status": "ok"}
    for page in ("/", "/ops", "/static/app.js", "/static/common.js"):
        assert httpx.get(f"{secure_url}{page}").status_code == 200, page


def test_a_wrong_key_is_401_however_it_is_sent(secure_url):
    task = str(uuid.uuid4())
    for kwargs in (
        {"headers": {"Authorization": "Bearer not-a-key"}},
        {"headers": {"X-API-Key": "not-a-key"}},
        {"params": {"token": "not-a-key"}},
        {"headers": {"Authorization": f"Basic {KEY_A}"}},  # a key, but not as a Bearer token
    ):
        reply = httpx.get(f"{secure_url}/tasks/{task}", **kwargs)  # type: ignore[arg-type]
        assert reply.status_code == 401, kwargs
        assert "not-a-key" not in reply.text and KEY_A not in reply.text
    assert refusal(ws_refused(secure_url, f"/ws/tasks/{task}?token=not-a-key"))[0] == 401


def test_bearer_x_api_key_and_token_are_each_accepted(secure_url):
    task = submit(secure_url, A)  # Bearer; no worker runs: the job stays queued
    assert httpx.get(f"{secure_url}/tasks/{task}", headers={"X-API-Key": KEY_A}).json()["status"] == "queued"
    assert httpx.get(f"{secure_url}/tasks/{task}", params={"token": KEY_A}).json()["status"] == "queued"
    assert httpx.get(f"{secure_url}/metrics", headers=A).status_code == 200
    assert first_sse_event(secure_url, f"/sse/tasks/{task}", params={"token": KEY_A})["task_id"] == task
    assert first_sse_event(secure_url, f"/sse/tasks/{task}", headers={"X-API-Key": KEY_A})["seq"] == 1
    with ws_connect(ws_url(secure_url, f"/ws/tasks/{task}?token={KEY_A}"), open_timeout=5) as socket:
        assert json.loads(socket.recv(timeout=5))["task_id"] == task
    with ws_connect(ws_url(secure_url, f"/ws/tasks/{task}"), open_timeout=5, additional_headers=A) as socket:
        assert json.loads(socket.recv(timeout=5))["seq"] == 1


# -- ownership ----------------------------------------------------------------------------------------


def test_another_keys_task_is_unknown_to_it_everywhere(secure_settings, secure_url, make_jobs, run_worker):
    jobs: JobService = make_jobs(settings_=secure_settings)
    run_worker(settings_=secure_settings)
    task = submit(secure_url, A, client_id="client-of-a")
    follow(jobs, task)

    raw = jobs.store.client.get(jobs.store.keys.job(task))
    assert raw is not None and KEY_A.encode() not in raw
    assert json.loads(raw)["owner"] == owner_id(KEY_A) and len(owner_id(KEY_A)) == 16

    for method, path in [
        ("GET", f"/tasks/{task}"),
        ("GET", f"/api/v1/datasets/{task}"),
        ("GET", f"/tasks/{task}/revoke"),
        ("POST", f"/tasks/{task}/revoke"),
        ("GET", f"/sse/tasks/{task}"),
    ]:
        reply = httpx.request(method, f"{secure_url}{path}", headers=B)
        assert reply.status_code == 404, (path, reply.text)
        assert reply.json()["detail"] == f"no task with id {task}"
    reply = httpx.post(f"{secure_url}/api/v1/tasks/{task}/reprocess", json={"from_stage": "assembly"}, headers=B)
    assert reply.status_code == 404
    assert refusal(ws_refused(secure_url, f"/ws/tasks/{task}", B))[0] == 404

    assert task not in {t["task_id"] for t in httpx.get(f"{secure_url}/api/v1/tasks", headers=B).json()["tasks"]}
    ops = httpx.get(f"{secure_url}/api/v1/ops", headers=B).json()
    assert task not in {job["task_id"] for job in ops["jobs"]}
    assert ops["queues"] and ops["workers"]  # queues and workers are anyone's to see
    assert task in {t["task_id"] for t in httpx.get(f"{secure_url}/api/v1/tasks", headers=A).json()["tasks"]}
    assert task in {job["task_id"] for job in httpx.get(f"{secure_url}/api/v1/ops", headers=A).json()["jobs"]}

    # A's job was left alone, and A's reprocessed child is A's too
    assert httpx.get(f"{secure_url}/tasks/{task}", headers=A).json()["status"] == "completed"
    child = httpx.post(f"{secure_url}/api/v1/tasks/{task}/reprocess", json={"from_stage": "assembly"}, headers=A)
    assert child.status_code == 202, child.text
    child_id = child.json()["task_id"]
    follow(jobs, child_id)
    assert httpx.get(f"{secure_url}/tasks/{child_id}", headers=A).json()["status"] == "completed"
    assert httpx.get(f"{secure_url}/tasks/{child_id}", headers=B).status_code == 404


def test_a_client_id_belongs_to_the_first_key_that_uses_it(secure_settings, secure_url, make_jobs):
    keys = Keys(secure_settings.key_prefix)
    client = make_jobs(settings_=secure_settings).store.client
    submit(secure_url, A, client_id="shared")
    assert client.get(keys.client_owner("shared")) == owner_id(KEY_A).encode()
    assert 0 < client.ttl(keys.client_owner("shared")) <= secure_settings.result_ttl_s

    refusals = [
        generate(secure_url, B, client_id="shared"),
        httpx.get(f"{secure_url}/api/v1/tasks", params={"client_id": "shared"}, headers=B),
        httpx.get(f"{secure_url}/sse/shared", headers=B),
    ]
    own = submit(secure_url, B, client_id="client-of-b")  # a job of B's own, cancelled, then reprocessed
    assert httpx.post(f"{secure_url}/tasks/{own}/revoke", headers=B).json()["status"] == "cancelled"
    refusals.append(
        httpx.post(
            f"{secure_url}/api/v1/tasks/{own}/reprocess",
            json={"from_stage": "search", "client_id": "shared"},
            headers=B,
        )
    )
    replies = [(reply.status_code, reply.json()) for reply in refusals]
    for status, body in [*replies, refusal(ws_refused(secure_url, "/ws/shared", B))]:
        assert status == 403, body
        assert body["field"] == "client_id" and "shared" in str(body["detail"])
    assert KEY_A not in str(client.keys(f"{secure_settings.key_prefix}*"))

    # merely listening claims an id too, so nobody can listen in on a client id before its owner uses it
    assert httpx.get(f"{secure_url}/api/v1/tasks", params={"client_id": "first-b"}, headers=B).status_code == 200
    assert generate(secure_url, A, client_id="first-b").status_code == 403
    listed = httpx.get(f"{secure_url}/api/v1/tasks", params={"client_id": "shared"}, headers=A).json()["tasks"]
    assert len(listed) == 1
    reply = httpx.get(f"{secure_url}/api/v1/tasks", params={"client_id": "bad*id"}, headers=A)
    assert reply.status_code == 400 and reply.json()["field"] == "client_id"


# -- limits -------------------------------------------------------------------------------------------


def test_starting_jobs_is_rate_limited_per_key(secure_settings, serve_api, make_jobs):
    settings = msgspec.structs.replace(secure_settings, rate_limit_per_minute=2)
    url = serve_api(settings)
    task = submit(url, A)
    submit(url, A)
    limited = generate(url, A)
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert "at most 2" in limited.json()["detail"] and limited.json()["status_code"] == 429
    reply = httpx.post(f"{url}/api/v1/tasks/{task}/reprocess", json={"from_stage": "search"}, headers=A)
    assert reply.status_code == 429  # reprocessing starts jobs too
    assert httpx.get(f"{url}/tasks/{task}", headers=A).status_code == 200  # reading is not limited
    submit(url, B)  # another key has its own count

    counters = [
        k.decode()
        for k in make_jobs(settings_=settings).store.client.scan_iter(f"{Keys(settings.key_prefix).rate_limit}*")
    ]
    assert any(owner_id(KEY_A) in key for key in counters) and not any(KEY_A in key for key in counters)


def test_without_keys_the_rate_limit_counts_per_address(settings, serve_api):
    url = serve_api(msgspec.structs.replace(settings, rate_limit_per_minute=1))
    submit(url, {})
    assert generate(url, {}).status_code == 429


def test_a_body_over_the_limit_is_413_and_stores_nothing(secure_settings, serve_api, make_jobs):
    settings = msgspec.structs.replace(secure_settings, max_body_bytes=2048)
    url = serve_api(settings)
    long_query = "water " * 700
    replies = [
        generate(url, A, user_query=long_query),
        httpx.post(
            f"{url}/api/v1/datasets/generate",
            content=urlencode({"user_query": long_query, "field_definitions_json_str": json.dumps(FIELDS)}),
            headers={**A, "content-type": "application/x-www-form-urlencoded"},
        ),
        httpx.post(  # chunked: no content-length to refuse it by
            f"{url}/api/v1/datasets/generate",
            content=iter([b'{"user_query": "', long_query.encode(), b'"}']),
            headers={**A, "content-type": "application/json"},
        ),
    ]
    assert "content-length" not in replies[2].request.headers
    for reply in replies:
        assert reply.status_code == 413, reply.text
        assert reply.json() == {"status_code": 413, "detail": "request body too large: at most 2048 bytes"}
    jobs: JobService = make_jobs(settings_=settings)
    assert list(jobs.store.client.scan_iter(f"{settings.key_prefix}job*")) == []
    assert jobs.store.client.zcard(jobs.store.keys.jobs) == 0
    submit(url, A)  # a body under the limit is fine


# -- strict ids ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["not-a-task", str(uuid.uuid4()).upper(), "{" + str(uuid.uuid4()) + "}"])
def test_a_malformed_task_id_is_400_naming_task_id(secure_url, bad):
    for method, path in [
        ("GET", "/tasks/{}"),
        ("GET", "/tasks/{}/revoke"),
        ("POST", "/tasks/{}/revoke"),
        ("GET", "/api/v1/datasets/{}"),
        ("POST", "/api/v1/tasks/{}/reprocess"),
        ("GET", "/sse/tasks/{}"),
    ]:
        json_body = {"from_stage": "search"} if method == "POST" else None
        reply = httpx.request(method, f"{secure_url}{path.format(bad)}", headers=A, json=json_body)
        assert reply.status_code == 400, (path, reply.text)
        assert reply.json()["field"] == "task_id"
    status, body = refusal(ws_refused(secure_url, f"/ws/tasks/{bad}", A))
    assert status == 400 and body["field"] == "task_id"


def test_a_huge_or_odd_last_event_id_is_400(secure_url):
    task = submit(secure_url, A, client_id="resumer")
    for value in [b"9" * 10_000, b"1" * 19, b"\xb2", b"-1"]:  # b"\xb2" is "²": isdigit() but not int()
        reply = httpx.get(
            f"{secure_url}/sse/tasks/{task}",
            headers=[(b"Authorization", f"Bearer {KEY_A}".encode()), (b"Last-Event-ID", value)],
        )
        assert reply.status_code == 400, value
        assert reply.json()["field"] == "Last-Event-ID" and len(reply.text) < 500
    for resume in [f"{task}:{'9' * 10_000}", "not-a-task:1", f"{task}:x"]:
        reply = httpx.get(f"{secure_url}/sse/resumer", headers=A | {"Last-Event-ID": resume})
        assert reply.status_code == 400 and reply.json()["field"] == "Last-Event-ID", resume


# -- CORS ---------------------------------------------------------------------------------------------


def test_cors_allows_exactly_the_configured_origins(secure_settings, secure_url, serve_api):
    url = serve_api(msgspec.structs.replace(secure_settings, cors_origins=("https://app.example",)))
    asks = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type"}
    preflight = httpx.options(f"{url}/api/v1/datasets/generate", headers={"Origin": "https://app.example", **asks})
    assert preflight.status_code in (200, 204), preflight.text
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    allowed = {h.strip().lower() for h in preflight.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "x-api-key", "content-type", "last-event-id"} <= allowed

    refused = httpx.options(f"{url}/api/v1/datasets/generate", headers={"Origin": "https://evil.example", **asks})
    assert "access-control-allow-origin" not in refused.headers
    reply = httpx.get(f"{url}/tasks/{uuid.uuid4()}", headers={**A, "Origin": "https://app.example"})
    assert reply.status_code == 404 and reply.headers["access-control-allow-origin"] == "https://app.example"
    reply = httpx.get(f"{url}/tasks/{uuid.uuid4()}", headers={**A, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in reply.headers

    # without LITMINER_CORS_ORIGINS there are no CORS headers at all
    preflight = httpx.options(
        f"{secure_url}/api/v1/datasets/generate", headers={"Origin": "https://app.example", **asks}
    )
    assert "access-control-allow-origin" not in preflight.headers


# -- secrets ------------------------------------------------------------------------------------------


@pytest.fixture
def redis_with_password(redis_url: str) -> Iterator[tuple[str, str]]:
    """The test Redis through a user of its own whose password is a marker to look for: (URL, password)."""
    parsed = urlsplit(redis_url)
    if parsed.password:
        yield redis_url, parsed.password
        return
    user, password = f"litminer-{uuid.uuid4().hex[:8]}", f"redis-secret-{uuid.uuid4().hex}"
    admin = redis.Redis.from_url(redis_url)
    admin.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["*"], channels=["*"], categories=["+@all"])
    try:
        yield urlunsplit(parsed._replace(netloc=f"{user}:{password}@{parsed.hostname}:{parsed.port}")), password
    finally:
        admin.acl_deluser(user)
        admin.close()


@pytest.fixture
def log_output(caplog: pytest.LogCaptureFixture) -> Iterator[io.StringIO]:
    """Every log line as `litminer api` writes it (configure_logging's handler, uvicorn's loggers sent to it).

    caplog keeps the raw records too, before any redaction.
    """
    root = logging.getLogger()
    uvicorn_loggers = [logging.getLogger(name) for name in ("uvicorn", "uvicorn.access", "uvicorn.error")]
    saved = (root.handlers[:], root.level)
    saved_uvicorn = [(lg.handlers[:], lg.level, lg.propagate, lg.filters[:]) for lg in uvicorn_loggers]
    configure_logging("DEBUG")
    output = io.StringIO()
    root.handlers[0].setStream(output)  # type: ignore[attr-defined]
    root.addHandler(caplog.handler)
    yield output
    root.handlers[:], level = saved
    root.setLevel(level)
    for lg, (handlers, lg_level, propagate, filters) in zip(uvicorn_loggers, saved_uvicorn, strict=True):
        lg.handlers[:], lg.propagate, lg.filters[:] = handlers, propagate, filters
        lg.setLevel(lg_level)


def _uvicorn_logs_to_root() -> None:
    """As `litminer api` runs uvicorn (log_config=None): its loggers, access log included, go to the root handler."""
    for name in ("uvicorn", "uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.DEBUG)


def test_secrets_never_reach_logs_events_error_bodies_or_metrics(
    llm_settings, redis_with_password, serve_api, make_jobs, run_worker, caplog, log_output
):
    redis_url, redis_password = redis_with_password
    openai_key = f"sk-secret-{uuid.uuid4().hex}"
    settings = msgspec.structs.replace(
        llm_settings, redis_url=redis_url, openai_api_key=openai_key, api_keys=(KEY_A, KEY_B)
    )
    secrets = [KEY_A, KEY_B, openai_key, redis_password]
    caplog.set_level(logging.DEBUG)
    url = serve_api(settings)
    _uvicorn_logs_to_root()
    jobs: JobService = make_jobs(settings_=settings)
    run_worker(settings_=settings)

    task = submit(url, A, client_id="secretive")
    texts = [f"{event}" for event in follow(jobs, task)]
    texts.append(str(list(jobs.store.events.history(task, after=0))))
    with httpx.stream("GET", f"{url}/sse/tasks/{task}", params={"token": KEY_A}, timeout=10) as stream:
        texts.append(stream.read().decode())
    with ws_connect(ws_url(url, f"/ws/tasks/{task}?token={KEY_A}"), open_timeout=5) as socket:
        texts += [str(message) for message in socket]
    status = httpx.get(f"{url}/tasks/{task}", params={"token": KEY_A}).json()
    assert status["status"] == "completed" and "openai" in json.dumps(status["result"]["stats"])  # the LLM served it
    texts.append(json.dumps(status))
    for method, path, headers in [
        ("GET", f"/api/v1/datasets/{task}?format=csv", A),
        ("GET", "/metrics", A),
        ("GET", "/ready", A),
        ("GET", "/api/v1/ops", A),
        ("GET", f"/tasks/{task}?token=wrong", {}),
        ("GET", f"/tasks/{task}", {"X-API-Key": KEY_A.upper()}),
        ("GET", f"/tasks/{task}", B),
        ("GET", f"/tasks/{task.upper()}", A),
        ("POST", "/api/v1/datasets/generate", A),
        ("GET", "/sse/secretive", B),
    ]:
        texts.append(httpx.request(method, f"{url}{path}", headers=headers).text)

    logged = log_output.getvalue()
    assert f"/sse/tasks/{task}?token=*** HTTP/1.1" in logged  # the access log was captured, redacted
    assert f"/ws/tasks/{task}?token=***" in logged
    for secret in secrets:
        assert secret not in logged, secret
        assert secret not in caplog.text, secret  # not even before redaction
        for text in texts:
            assert secret not in text, (secret, text[:300])


# -- the CLI ------------------------------------------------------------------------------------------


def test_the_cli_sends_litminer_api_key_and_says_when_it_is_missing(
    secure_settings, secure_url, make_jobs, run_worker, monkeypatch, tmp_path, capsys
):
    run_worker(settings_=secure_settings)
    fields = json.dumps(FIELDS)
    out = tmp_path / "rows.csv"
    monkeypatch.setenv("LITMINER_API_KEY", KEY_A)
    query = "water treatment technologies used in specialty crop production"
    assert main(["generate", query, "--rows", "2", "--fields", fields, "--out", str(out), "--api", secure_url]) == 0
    task = capsys.readouterr().out.splitlines()[0].split()[1].rstrip(":")
    assert out.exists()
    assert main(["status", task, "--api", secure_url]) == 0
    assert "status    completed" in capsys.readouterr().out

    monkeypatch.delenv("LITMINER_API_KEY")
    assert main(["status", task, "--api", secure_url]) == 1
    err = capsys.readouterr().err
    assert "needs an API key" in err and "LITMINER_API_KEY" in err and "--api-key" in err
    assert main(["status", task, "--api", secure_url, "--api-key", "not-the-key"]) == 1
    err = capsys.readouterr().err
    assert "refused the API key" in err and "not-the-key" not in err
    assert main(["status", task, "--api", secure_url, "--api-key", KEY_B]) == 1  # a key, but not the owner's
    assert f"no task with id {task}" in capsys.readouterr().err
    assert main(["cancel", task, "--api", secure_url, "--api-key", KEY_A]) == 1  # completed: too late
    assert "already completed" in capsys.readouterr().err
