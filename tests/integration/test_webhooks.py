"""Webhooks end to end: real jobs, a real worker, a real HTTP receiver on a loopback port, signatures verified."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import httpx
import msgspec
import pytest

from contracts import Document, PreparedSchema, WebhookAttempt, decode_webhook_payload
from pipeline.errors import ExtractorRefused
from pipeline.extractors.base import Extraction
from pipeline.extractors.heuristic import HeuristicExtractor
from pipeline.jobs import JobService
from pipeline.settings import Settings
from pipeline.store import WEBHOOK_QUEUE
from pipeline.webhooks import SIGNATURE_HEADER, DeliveryFailed, post, verify_signature
from services.api.auth import owner_id
from services.embedded_redis import free_port
from tests.conftest import RunningWorker, follow, wait_for
from tests.fixtures.requests import seed_request
from tests.fixtures.webhooks import Receiver

SECRET = "whsec-integration-7d1f"
BODY = {
    "user_query": "water treatment technologies used in specialty crop production",
    "rows": 3,
    "model_name": "Treatments",
    "field_definitions": [{"name": "technology_name", "type": "str", "description": "Name of a technology"}],
}


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    """Factory of receivers (``statuses``: what the first POSTs are answered); shut down at teardown."""
    made: list[Receiver] = []

    def make(statuses: Sequence[int] = ()) -> Receiver:
        made.append(Receiver(statuses))
        return made[-1]

    yield make
    for one in made:
        one.close()


@pytest.fixture
def hook_settings(settings: Settings) -> Settings:
    """The test's settings with a webhook secret, the loopback receiver allowed, and retries after 0.3 s."""
    return msgspec.structs.replace(
        settings, webhook_secret=SECRET, webhook_hosts=("127.0.0.1",), webhook_retry_s=(0.3, 0.3), webhook_timeout_s=2
    )


def _drain(worker: RunningWorker) -> None:
    """Wait until every webhook message (retries included) has been processed."""
    worker.runtime.broker.join(WEBHOOK_QUEUE, timeout=20_000)


def _attempts(api_url: str, task_id: str, **request: object) -> list[WebhookAttempt]:
    reply = httpx.get(f"{api_url}/api/v1/tasks/{task_id}/webhooks", **request)  # type: ignore[arg-type]
    assert reply.status_code == 200, reply.text
    return msgspec.convert(reply.json()["attempts"], list[WebhookAttempt])


def test_a_completed_job_posts_one_signed_webhook(hook_settings, receiver, serve_api, make_jobs, run_worker):
    api_url = serve_api(hook_settings)
    jobs: JobService = make_jobs(settings_=hook_settings)
    worker = run_worker(settings_=hook_settings)
    hooks = receiver()
    reply = httpx.post(f"{api_url}/api/v1/datasets/generate", json=BODY | {"callback_url": f"{hooks.url}?token=t1"})
    assert reply.status_code == 202, reply.text
    task_id = reply.json()["task_id"]
    events = follow(jobs, task_id)
    assert events[-1].status == "completed"

    (hook,) = hooks.wait(1)
    _drain(worker)
    assert len(hooks.received) == 1  # one POST per terminal event, nothing after it
    assert hook.path == "/hook?token=t1" and hook.headers["content-type"] == "application/json"
    signature = hook.headers[SIGNATURE_HEADER.lower()]
    assert verify_signature(SECRET, signature, hook.body)
    assert not verify_signature(SECRET, signature, hook.body.replace(b'"completed"', b'"cancelled"'))
    signed_at = int(signature.split(",")[0].removeprefix("t="))
    assert abs(signed_at - hook.at) < 5
    assert not verify_signature(SECRET, signature, hook.body, now=signed_at + 301)  # a replay, five minutes on

    sent = decode_webhook_payload(hook.body)
    assert (sent.type, sent.task_id, sent.status, sent.stage) == ("task.completed", task_id, "completed", "done")
    assert sent.event == events[-1]  # the very event WebSocket and SSE clients got
    assert hook.headers["litminer-delivery"] == sent.id and hook.headers["litminer-event"] == "task.completed"
    assert httpx.get(f"{api_url}{sent.status_url}").json()["status"] == "completed"
    assert httpx.get(f"{api_url}{sent.dataset_url}").json()["rows"]

    (attempt,) = _attempts(api_url, task_id)
    assert (attempt.outcome, attempt.status_code, attempt.error, attempt.attempt) == ("delivered", 200, None, 1)
    assert attempt.url == hooks.url and attempt.delivery_id == sent.id  # the token is not shown
    assert attempt.next_try_at is None and attempt.duration_ms > 0


def test_a_failing_receiver_gets_tried_again_and_the_attempts_show(
    hook_settings, receiver, serve_api, make_jobs, run_worker
):
    api_url = serve_api(hook_settings)
    jobs: JobService = make_jobs(settings_=hook_settings)
    worker = run_worker(settings_=hook_settings)
    hooks = receiver(statuses=[500, 500])
    job = jobs.submit(seed_request(callback_url=hooks.url))
    assert follow(jobs, job.task_id)[-1].status == "completed"

    posts = hooks.wait(3)
    _drain(worker)
    assert len(hooks.received) == 3
    assert len({post.headers["litminer-delivery"] for post in posts}) == 1  # one delivery, three attempts
    assert all(verify_signature(SECRET, post.headers["litminer-signature"], post.body) for post in posts)
    assert posts[1].at - posts[0].at >= 0.3 and posts[2].at - posts[1].at >= 0.3

    attempts = _attempts(api_url, job.task_id)
    assert [a.attempt for a in attempts] == [1, 2, 3]
    assert [a.outcome for a in attempts] == ["retrying", "retrying", "delivered"]
    assert [a.status_code for a in attempts] == [500, 500, 200]
    assert [a.error for a in attempts] == ["HTTP 500", "HTTP 500", None]
    assert all(a.next_try_at is not None and a.next_try_at >= a.at + 0.3 for a in attempts[:2])

    ops = httpx.get(f"{api_url}/api/v1/ops").json()
    shown = msgspec.convert(ops["webhooks"], list[WebhookAttempt])
    assert shown == attempts[::-1]  # newest first
    webhooks_queue = next(q for q in ops["queues"] if q["name"] == WEBHOOK_QUEUE)
    assert webhooks_queue == {"name": "webhooks", "ready": 0, "delayed": 0, "dead": 0}


def test_private_and_malformed_callback_urls_are_refused(settings, receiver, serve_api, make_jobs):
    secured = msgspec.structs.replace(settings, webhook_secret=SECRET)  # no host allowed
    api_url = serve_api(secured)
    loopback = receiver().url

    def refusal(url: str, path: str = "/api/v1/datasets/generate", body: dict[str, object] = BODY) -> str:
        reply = httpx.post(f"{api_url}{path}", json=body | {"callback_url": url})
        assert reply.status_code == 400, reply.text
        assert reply.json()["field"] == "callback_url"
        detail: str = reply.json()["detail"]
        assert detail.startswith("callback_url: ")
        return detail

    assert "a private address (10.1.2.3)" in refusal("http://10.1.2.3/hook")
    assert "LITMINER_WEBHOOK_HOSTS" in refusal(loopback)
    assert "a private address" in refusal("http://169.254.169.254/latest/meta-data/")
    assert "not an http(s) URL" in refusal("file:///etc/passwd")
    assert "user name or password" in refusal("https://me:secret@example.org/hook")
    form = {
        "user_query": BODY["user_query"],
        "field_definitions_json_str": json.dumps(BODY["field_definitions"]),
        "callback_url": "http://10.1.2.3/hook",
    }
    reply = httpx.post(f"{api_url}/api/v1/datasets/generate", data=form)  # the seed's form body
    assert reply.status_code == 400 and reply.json()["field"] == "callback_url"

    # Reprocessing checks its callback_url too (the parent: a job cancelled before it ran).
    jobs: JobService = make_jobs(settings_=secured)
    parent = jobs.submit(seed_request())
    jobs.cancel(parent.task_id)
    assert "a private address" in refusal(
        "http://127.0.0.1/hook", f"/api/v1/tasks/{parent.task_id}/reprocess", {"from_stage": "search"}
    )

    unsigned = serve_api(settings)  # no LITMINER_WEBHOOK_SECRET
    reply = httpx.post(f"{unsigned}/api/v1/datasets/generate", json=BODY | {"callback_url": "https://example.org/h"})
    assert reply.status_code == 400 and reply.json()["field"] == "callback_url"
    assert "LITMINER_WEBHOOK_SECRET" in reply.json()["detail"]


def test_a_job_cancelled_through_the_api_sends_its_webhook(hook_settings, receiver, serve_api, make_jobs, run_worker):
    api_url = serve_api(hook_settings)
    jobs: JobService = make_jobs(settings_=hook_settings)
    hooks = receiver()
    reply = httpx.post(f"{api_url}/api/v1/datasets/generate", json=BODY | {"callback_url": hooks.url})
    task_id = reply.json()["task_id"]
    cancelled = httpx.post(f"{api_url}/tasks/{task_id}/revoke")  # no worker yet: it is still queued
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"

    worker = run_worker(settings_=hook_settings)  # it skips the cancelled job's stage and delivers the webhook
    (hook,) = hooks.wait(1)
    _drain(worker)
    worker.join()
    sent = decode_webhook_payload(hook.body)
    assert (sent.type, sent.status, sent.stage, sent.dataset_url) == ("task.cancelled", "cancelled", "queued", None)
    assert sent.event == follow(jobs, task_id)[-1]
    assert verify_signature(SECRET, hook.headers["litminer-signature"], hook.body)
    assert len(hooks.received) == 1


def test_the_job_completes_when_the_receiver_is_down(hook_settings, serve_api, make_jobs, run_worker):
    api_url = serve_api(hook_settings)
    jobs: JobService = make_jobs(settings_=hook_settings)
    run_worker(settings_=hook_settings)
    down = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    job = jobs.submit(seed_request(callback_url=down))
    assert follow(jobs, job.task_id)[-1].status == "completed"
    assert jobs.status(job.task_id).result is not None

    wait_for(lambda: len(jobs.webhooks(job.task_id).attempts) == 3, timeout=20, what="three attempts")
    attempts = _attempts(api_url, job.task_id)
    assert [a.outcome for a in attempts] == ["retrying", "retrying", "failed"]
    assert all(a.status_code is None and (a.error or "").startswith("connection failed") for a in attempts)
    assert attempts[-1].next_try_at is None


def test_the_address_is_checked_again_at_delivery(hook_settings, receiver, settings, make_jobs, run_worker):
    jobs: JobService = make_jobs(settings_=hook_settings)  # the API allowed the loopback receiver …
    strict = msgspec.structs.replace(hook_settings, webhook_hosts=(), webhook_retry_s=())
    worker = run_worker(settings_=strict)  # … the worker no longer does (as if DNS had changed since)
    hooks = receiver()
    job = jobs.submit(seed_request(callback_url=hooks.url))
    assert follow(jobs, job.task_id)[-1].status == "completed"

    wait_for(lambda: bool(jobs.webhooks(job.task_id).attempts), timeout=20, what="an attempt")
    _drain(worker)
    (attempt,) = jobs.webhooks(job.task_id).attempts
    assert (attempt.outcome, attempt.error) == ("failed", "refused: a private address (127.0.0.1)")
    assert hooks.received == []


class RefusedExtractor(HeuristicExtractor):
    """An extractor whose endpoint refuses the key: the job ends as ``error`` without retries."""

    async def extract(self, query: str, schema: PreparedSchema, document: Document) -> Extraction:
        raise ExtractorRefused("the LLM endpoint refused the key (HTTP 401)")


def test_a_failed_job_of_an_api_key_goes_to_the_keys_default_callback(
    hook_settings, receiver, serve_api, make_jobs, run_worker
):
    hooks = receiver()
    keyed = msgspec.structs.replace(
        hook_settings, api_keys=("hook-key-a", "hook-key-b"), callback_urls={owner_id("hook-key-a"): hooks.url}
    )
    api_url = serve_api(keyed)
    jobs: JobService = make_jobs(settings_=keyed)
    run_worker(settings_=keyed, extractors={"heuristic": RefusedExtractor()})
    a, b = {"X-API-Key": "hook-key-a"}, {"X-API-Key": "hook-key-b"}
    reply = httpx.post(f"{api_url}/api/v1/datasets/generate", json=BODY, headers=a)  # no callback_url of its own
    task_id = reply.json()["task_id"]
    assert follow(jobs, task_id)[-1].status == "error"

    (hook,) = hooks.wait(1)
    sent = decode_webhook_payload(hook.body)
    assert (sent.type, sent.status, sent.stage, sent.dataset_url) == ("task.error", "error", "extraction", None)
    assert sent.error is not None and "refused the key" in sent.error
    assert verify_signature(SECRET, hook.headers["litminer-signature"], hook.body)
    wait_for(lambda: bool(jobs.webhooks(task_id).attempts), what="the attempt recorded")
    assert [a.outcome for a in _attempts(api_url, task_id, headers=a)] == ["delivered"]
    assert httpx.get(f"{api_url}/api/v1/tasks/{task_id}/webhooks", headers=b).status_code == 404
    assert httpx.get(f"{api_url}/api/v1/tasks/{task_id}/webhooks").status_code == 401


class SlowServer:
    """A TCP server on a loopback port that reads a request and then answers one byte every ``pause_s``
    (or never, when ``pause_s`` is None)."""

    def __init__(self, pause_s: float | None) -> None:
        self.pause_s = pause_s
        self.stop = threading.Event()
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}/hook"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        connection, _ = self.socket.accept()
        with connection:
            connection.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n":
                if self.stop.wait(self.pause_s if self.pause_s is not None else 60):
                    return
                connection.sendall(bytes([byte]))

    def close(self) -> None:
        self.stop.set()
        self.socket.close()


@pytest.mark.parametrize("pause_s", [None, 0.2], ids=["silent", "one-byte-at-a-time"])
def test_an_attempt_ends_at_the_timeout_however_the_receiver_stalls(hook_settings, pause_s):
    server = SlowServer(pause_s)
    quick = msgspec.structs.replace(hook_settings, webhook_timeout_s=1.0)
    started = time.monotonic()
    try:
        with pytest.raises(DeliveryFailed, match=r"no answer within 1 s"):
            asyncio.run(post(server.url, b"{}", {"Content-Type": "application/json"}, settings=quick))
    finally:
        server.close()
    assert 0.9 < time.monotonic() - started < 2.5  # each byte came well within the timeout: the total counts
