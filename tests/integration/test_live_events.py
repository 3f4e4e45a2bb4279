"""Live events over real WebSockets and real SSE, from a real API process, worker and Redis."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from urllib.parse import quote

import httpx
import msgspec
import pytest
import redis
from httpx_sse import connect_sse
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

from contracts import (
    TERMINAL_STATUSES,
    Document,
    FieldDefinition,
    GenerateRequest,
    JobRecord,
    PreparedSchema,
    decode_event,
)
from pipeline.extractors.base import Extraction
from pipeline.extractors.heuristic import HeuristicExtractor
from pipeline.settings import Settings
from pipeline.store.events import EventBus, publisher_client
from services.embedded_redis import free_port
from tests.conftest import follow, wait_for
from tests.fixtures.fuzz import TIMEOUT, Tally, bounded, problems

FIELDS = [
    {"name": "technology_name", "type": "str", "description": "Name of a water treatment technology", "required": True},
    {"name": "description", "type": "str", "description": "What it does", "required": False},
]
QUERY = "water treatment technologies used in specialty crop production"


class PacedExtractor(HeuristicExtractor):
    """The heuristic extractor, slowed down so a job is still running while the test acts.

    It sleeps without awaiting, holding the event loop: documents are then read one at a time.
    """

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s

    async def extract(self, query: str, schema: PreparedSchema, document: Document) -> Extraction:
        time.sleep(self.delay_s)  # noqa: ASYNC251 - blocking on purpose, see above
        return await super().extract(query, schema, document)


class Watcher(threading.Thread):
    """Follows one live endpoint in a thread; records every event (raw JSON text and SSE id).

    Stops at the first terminal event (``until_terminal``), after ``limit`` events, when the server
    closes the stream, or when ``stop()`` is called.
    """

    def __init__(
        self, url: str, *, headers: dict[str, str] | None = None, limit: int | None = None, until_terminal: bool = True
    ) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.headers = headers or {}
        self.limit = limit
        self.until_terminal = until_terminal
        self.ready = threading.Event()
        self.payloads: list[str] = []
        self.ids: list[str] = []
        self.closed_by_server = False
        self.error: BaseException | None = None
        self._stop_requested = threading.Event()

    @property
    def seqs(self) -> list[int]:
        return [decode_event(p.encode()).seq for p in self.payloads]

    def _record(self, payload: str, event_id: str = "") -> bool:
        """Keep one event; True when the watcher should stop."""
        self.payloads.append(payload)
        self.ids.append(event_id)
        if self.limit is not None and len(self.payloads) >= self.limit:
            return True
        return self.until_terminal and decode_event(payload.encode()).status in TERMINAL_STATUSES

    def run(self) -> None:
        try:
            if self.url.startswith("ws"):
                self._run_ws()
            else:
                self._run_sse()
        except BaseException as exc:
            self.error = exc
        finally:
            self.ready.set()

    def _run_ws(self) -> None:
        with ws_connect(self.url, open_timeout=10) as socket_:
            self.ready.set()
            while not self._stop_requested.is_set():
                try:
                    message = socket_.recv(timeout=0.2)
                except TimeoutError:
                    continue
                except ConnectionClosed:
                    self.closed_by_server = True
                    return
                assert isinstance(message, str)
                if self._record(message):
                    return

    def _run_sse(self) -> None:
        with httpx.Client(timeout=httpx.Timeout(10, read=30)) as client:
            with connect_sse(client, "GET", self.url, headers=self.headers) as source:
                source.response.raise_for_status()
                self.ready.set()
                for sse in source.iter_sse():
                    if not sse.data:  # httpx-sse also yields the `retry:`-only block; browsers do not
                        continue
                    if self._record(sse.data, sse.id):
                        return
                    if self._stop_requested.is_set():
                        return
            self.closed_by_server = True

    def start_ready(self) -> Watcher:
        """Start and wait until the server has registered this subscriber."""
        self.start()
        assert self.ready.wait(10), f"{self.url} did not open"
        assert self.error is None, self.error
        return self

    def finish(self, timeout: float = 30) -> Watcher:
        self.join(timeout)
        assert not self.is_alive(), f"{self.url} still open after {timeout} s with {len(self.payloads)} events"
        assert self.error is None, repr(self.error)
        return self

    def stop(self) -> None:
        self._stop_requested.set()


def fake_job(client_id: str) -> JobRecord:
    """A job record for publishing events by hand (no worker runs it)."""
    request = GenerateRequest(
        user_query=QUERY, field_definitions=[FieldDefinition(name="name", type="str", description="", required=True)]
    )
    return JobRecord(task_id=str(uuid.uuid4()), client_id=client_id, request=request, created_at=0.0, updated_at=0.0)


def ws_url(api_url: str, path: str) -> str:
    return api_url.replace("http://", "ws://") + path


def submit(api_url: str, client_id: str) -> str:
    body = {"user_query": QUERY, "rows": 3, "field_definitions": FIELDS, "client_id": client_id}
    reply = httpx.post(f"{api_url}/api/v1/datasets/generate", json=body)
    assert reply.status_code == 202, reply.text
    task_id: str = reply.json()["task_id"]
    return task_id


def metric(api_url: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(httpx.get(f"{api_url}/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    raise AssertionError(f"no metric {name} {labels}")


def no_open_connections(api_url: str) -> bool:
    return all(metric(api_url, "litminer_open_connections", protocol=p) == 0 for p in ("websocket", "sse"))


def test_all_four_endpoints_see_the_same_ordered_events(api_url, make_jobs, run_worker):
    run_worker()
    client_id = f"c-{uuid.uuid4().hex[:8]}"
    by_client = [
        Watcher(ws_url(api_url, f"/ws/{client_id}")).start_ready(),
        Watcher(f"{api_url}/sse/{client_id}").start_ready(),
    ]
    task_id = submit(api_url, client_id)
    by_task = [  # these read until the server closes the stream
        Watcher(ws_url(api_url, f"/ws/tasks/{task_id}"), until_terminal=False).start_ready(),
        Watcher(f"{api_url}/sse/tasks/{task_id}", until_terminal=False).start_ready(),
    ]
    watchers = [w.finish() for w in by_client + by_task]

    reference = watchers[0].payloads
    events = [decode_event(p.encode()) for p in reference]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].status == "completed" and events[-1].stage == "done"
    for watcher in watchers[1:]:
        assert watcher.payloads == reference, watcher.url  # byte-identical JSON, same order
    assert all(w.closed_by_server for w in by_task)  # per-task streams end after the terminal event
    assert watchers[1].ids == [f"{task_id}:{e.seq}" for e in events]
    assert watchers[3].ids == [str(e.seq) for e in events]

    # Progress inside the stages: each source, and every tenth of the documents read.
    messages = [e.message for e in events]
    documents = next(e.data["documents"] for e in events if e.message.startswith("Kept "))
    assert isinstance(documents, int) and documents >= 10
    pages = [e.data["documents"] for e in events if e.message.startswith("local: ")]
    assert pages and all(isinstance(n, int) and n >= documents for n in pages)  # a pool, screened down to the kept
    assert len([m for m in messages if m.startswith("Extracted ") and m.endswith(" documents")]) >= 10

    # Every stream is closed now (by the server or by the watcher): the managers hold no connection.
    wait_for(lambda: no_open_connections(api_url), what="every connection to be released")
    assert metric(api_url, "litminer_events_delivered_total", protocol="sse") == 2 * len(events)


def test_two_connections_with_one_client_id_both_receive_every_event(api_url, make_jobs, run_worker):
    run_worker()
    client_id = f"c-{uuid.uuid4().hex[:8]}"
    pair = [Watcher(ws_url(api_url, f"/ws/{client_id}")).start_ready() for _ in range(2)]
    pair += [Watcher(f"{api_url}/sse/{client_id}").start_ready() for _ in range(2)]
    assert metric(api_url, "litminer_open_connections", protocol="websocket") == 2
    assert metric(api_url, "litminer_open_connections", protocol="sse") == 2
    task_id = submit(api_url, client_id)
    for watcher in pair:
        watcher.finish()
    assert pair[0].payloads and all(w.payloads == pair[0].payloads for w in pair)
    assert {decode_event(p.encode()).task_id for p in pair[0].payloads} == {task_id}
    assert pair[0].seqs == list(range(1, len(pair[0].payloads) + 1))
    for watcher in pair:
        watcher.stop()
        watcher.join(5)
    # Closed by the clients: the managers let go of every connection.
    wait_for(lambda: no_open_connections(api_url), what="every connection to be released")


def test_sse_reconnect_with_last_event_id_resumes_without_gap_or_repeat(api_url, make_jobs, run_worker):
    run_worker(extractors={"heuristic": PacedExtractor(0.1)})
    client_id = f"c-{uuid.uuid4().hex[:8]}"
    client_first = Watcher(f"{api_url}/sse/{client_id}", limit=4).start_ready()
    task_id = submit(api_url, client_id)

    first = Watcher(f"{api_url}/sse/tasks/{task_id}", limit=6).start_ready().finish()
    client_first.finish()
    assert httpx.get(f"{api_url}/tasks/{task_id}").json()["status"] not in TERMINAL_STATUSES  # mid-job
    rest = Watcher(f"{api_url}/sse/tasks/{task_id}", headers={"Last-Event-ID": first.ids[-1]}).start_ready().finish()
    client_rest = Watcher(f"{api_url}/sse/{client_id}", headers={"Last-Event-ID": client_first.ids[-1]}).start_ready()
    client_rest.finish()

    seqs = first.seqs + rest.seqs
    assert seqs == list(range(1, len(seqs) + 1))
    assert decode_event(rest.payloads[-1].encode()).status == "completed"
    assert client_first.seqs + client_rest.seqs == seqs
    assert first.payloads + rest.payloads == client_first.payloads + client_rest.payloads


def test_a_late_subscriber_receives_the_full_history(api_url, make_jobs, run_worker):
    jobs = make_jobs()
    run_worker()
    task_id = submit(api_url, f"c-{uuid.uuid4().hex[:8]}")
    history = [e.seq for e in follow(jobs, task_id)]
    for url in (ws_url(api_url, f"/ws/tasks/{task_id}"), f"{api_url}/sse/tasks/{task_id}"):
        late = Watcher(url, until_terminal=False).start_ready().finish()
        assert late.closed_by_server
        assert late.seqs == history == list(range(1, len(history) + 1))
        assert decode_event(late.payloads[-1].encode()).status == "completed"


def test_events_lost_by_the_subscription_are_recovered_from_the_stream(api_url, make_jobs, run_worker, settings):
    run_worker(extractors={"heuristic": PacedExtractor(0.1)})
    client_id = f"c-{uuid.uuid4().hex[:8]}"
    by_client = Watcher(ws_url(api_url, f"/ws/{client_id}")).start_ready()
    task_id = submit(api_url, client_id)
    by_task = Watcher(f"{api_url}/sse/tasks/{task_id}").start_ready()
    wait_for(lambda: len(by_task.payloads) >= 6, what="the job to get going")
    killer = redis.Redis.from_url(settings.redis_url)
    try:  # the API's subscription drops mid-job
        name = f"{settings.key_prefix}events-subscriber"
        ours = [c["id"] for c in killer.client_list() if c["name"] == name]
        assert len(ours) == 1 and killer.client_kill_filter(_id=ours[0]) == 1
    finally:
        killer.close()
    for watcher in (by_task.finish(), by_client.finish()):
        assert watcher.seqs == list(range(1, len(watcher.seqs) + 1))
        assert decode_event(watcher.payloads[-1].encode()).status == "completed"
    assert by_task.payloads == by_client.payloads
    assert metric(api_url, "litminer_event_resubscriptions_total") == 1


def test_a_client_that_stops_reading_is_disconnected_and_others_get_everything(settings, serve_api, make_jobs):
    api_url = serve_api(msgspec.structs.replace(settings, event_queue_size=8, send_timeout_s=2.0))
    jobs = make_jobs()
    client_id = f"c-{uuid.uuid4().hex[:8]}"
    job = fake_job(client_id)
    jobs.store.jobs.create(job)

    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", int(api_url.rsplit(":", 1)[1])))
    stalled.sendall(f"GET /sse/{client_id} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    wait_for(lambda: metric(api_url, "litminer_open_connections", protocol="sse") == 1, what="the stalled client")
    readers = [
        Watcher(ws_url(api_url, f"/ws/{client_id}"), until_terminal=False, limit=200).start_ready(),
        Watcher(f"{api_url}/sse/tasks/{job.task_id}", until_terminal=False, limit=201).start_ready(),
    ]

    bulk = "x" * 60_000  # big events fill the stalled client's socket buffers, then its queue
    for i in range(200):
        jobs.store.events.publish(job, "processing", message=f"{i} {bulk}")
    for reader in readers:
        reader.finish()
    assert readers[0].seqs == list(range(2, 202))  # the client stream: every event since it connected
    assert readers[1].seqs == list(range(1, 202))  # the task stream: its history and every live event
    wait_for(
        lambda: metric(api_url, "litminer_slow_subscribers_disconnected_total", protocol="sse") == 1,
        what="the stalled client to be dropped",
    )
    assert metric(api_url, "litminer_events_dropped_total", protocol="sse") >= 1
    stalled.settimeout(10)
    while stalled.recv(1 << 20):  # the server closed it: the buffered bytes, then end of stream
        pass
    stalled.close()
    wait_for(lambda: no_open_connections(api_url), what="every connection to be released")


def test_unknown_tasks_and_bad_resume_ids_are_refused_before_the_stream_opens(api_url):
    unknown = str(uuid.uuid4())
    reply = httpx.get(f"{api_url}/sse/tasks/{unknown}")
    assert reply.status_code == 404 and unknown in reply.json()["detail"]
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(ws_url(api_url, f"/ws/tasks/{unknown}"), open_timeout=5)
    assert refused.value.response.status_code == 404
    reply = httpx.get(f"{api_url}/sse/tasks/no-such-task")
    assert reply.status_code == 400 and reply.json()["field"] == "task_id"
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(ws_url(api_url, "/ws/tasks/no-such-task"), open_timeout=5)
    assert refused.value.response.status_code == 400

    reply = httpx.get(f"{api_url}/sse/some-client", headers={"Last-Event-ID": "garbage"})
    assert reply.status_code == 400 and reply.json()["field"] == "Last-Event-ID"
    reply = httpx.get(f"{api_url}/sse/bad*client")
    assert reply.status_code == 400 and reply.json()["field"] == "client_id"
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(ws_url(api_url, "/ws/bad*client"), open_timeout=5)
    assert refused.value.response.status_code == 400


def test_an_event_that_cannot_be_published_is_logged_not_raised(settings, make_jobs, caplog):
    jobs = make_jobs()
    dead = publisher_client(Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    bus = EventBus(jobs.store.client, dead, jobs.store.keys, ttl_s=60, maxlen=100)
    job = fake_job("c")
    assert bus.publish(job, "processing", message="nobody hears this") is None  # a stage carries on
    logged = [r.getMessage() for r in caplog.records if r.name == "pipeline.store.events"]
    assert logged[-1] == "event dropped after retries"
    dead.close()


def test_the_documented_subscriber_example_follows_a_real_job(api_url, make_jobs, run_worker, settings, tmp_path):
    import re
    import subprocess
    import sys
    from pathlib import Path

    docs = (Path(__file__).parents[2] / "docs" / "events.md").read_text(encoding="utf-8")
    example = re.search(r"```python\n(.*?)```", docs, re.S)
    assert example, "docs/events.md has no python example"
    script = tmp_path / "follow_task.py"
    script.write_text(example.group(1), encoding="utf-8")

    run_worker()
    task_id = submit(api_url, f"c-{uuid.uuid4().hex[:8]}")
    done = subprocess.run(
        [sys.executable, str(script), task_id],
        env={"REDIS_URL": settings.redis_url, "LITMINER_KEY_PREFIX": settings.key_prefix, "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["seq"] for e in lines] == list(range(1, len(lines) + 1))
    assert lines[-1]["status"] == "completed"


def test_idle_sse_streams_get_a_heartbeat_comment(settings, serve_api):
    api_url = serve_api(msgspec.structs.replace(settings, heartbeat_s=0.2))
    with httpx.stream("GET", f"{api_url}/sse/idle-client", timeout=10) as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        lines = reply.iter_lines()
        assert next(lines) == "retry: 1000"
        assert [next(lines) for _ in range(4)] == ["", ": ping", "", ": ping"]


# -- the endless client stream, fuzzed ------------------------------------------------------------------------

SSE_EXAMPLES = 60
header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


@pytest.mark.timeout(180)
def test_client_event_stream_opens_or_refuses(fuzz_url: str, http: httpx.Client, tally: Tally) -> None:
    """``/sse/{client_id}`` on any id and ``Last-Event-ID``: a stream (closed at once here) or an explained 4xx."""
    label = "GET /sse/{client_id}"
    failures: list[str] = []

    @bounded(SSE_EXAMPLES)
    @given(
        client_id=st.one_of(
            st.text(min_size=1, max_size=140), st.from_regex(r"[A-Za-z0-9_.:-]{1,128}", fullmatch=True)
        ),
        last_event_id=st.one_of(st.none(), header_text, st.from_regex(r"[a-z0-9-]{0,12}:[0-9]{1,4}", fullmatch=True)),
    )
    def stream(client_id: str, last_event_id: str | None) -> None:
        headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
        path = f"{fuzz_url}/sse/{quote(client_id, safe='')}"
        with http.stream("GET", path, headers=headers) as reply:
            tally.record(label, reply.status_code)
            if reply.status_code == 200:
                if not reply.headers["content-type"].startswith("text/event-stream"):
                    failures.append(f"{path}: 200 but {reply.headers['content-type']}")
                return  # closing ends the stream
            found = problems(reply.status_code, reply.read())
            if found:
                failures.append(f"GET {path} Last-Event-ID {last_event_id!r}: {found}")

    try:
        stream()
    finally:
        print(tally.line(label))
    assert not failures, "\n".join(failures[:25])
    assert tally.statuses[label][200] and tally.statuses[label][400]
    # every stream was closed by its client: the server must have let go of all of them
    deadline = time.monotonic() + 3
    while (still_open := open_connections(fuzz_url, "sse")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert still_open == 0, f"{still_open} SSE subscribers outlived their closed connections"


def open_connections(url: str, protocol: str) -> float:
    """``litminer_open_connections{protocol=…}`` from ``/metrics``."""
    for line in httpx.get(f"{url}/metrics", timeout=TIMEOUT).text.splitlines():
        if line.startswith(f'litminer_open_connections{{protocol="{protocol}"}}'):
            return float(line.split()[-1])
    return 0.0
