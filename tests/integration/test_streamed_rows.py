"""Rows that stream: each verified candidate row is a ``row_found`` event as soon as its document is read, in seq
order, replayed like every event; the dataset then says what became of each one. Real Redis, workers and API."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict

import httpx
import msgspec
import redis
from httpx_sse import connect_sse

from contracts import (
    TERMINAL_STATUSES,
    CandidateRow,
    Dataset,
    Document,
    Event,
    FieldDefinition,
    GenerateRequest,
    PreparedSchema,
    decode_event,
)
from contracts.progress import DocumentExtracted, ExtractionDone, RowFound, SchemaPrepared, read_data
from pipeline.extractors.base import Extraction
from pipeline.extractors.heuristic import HeuristicExtractor
from pipeline.jobs import JobService
from pipeline.settings import Settings
from pipeline.store.events import EventBus
from pipeline.store.jobs import JobStore
from tests.conftest import follow
from tests.fixtures.requests import seed_request

QUERY = "water treatment technologies used in specialty crop production"
FIELDS = [
    {"name": "technology_id", "type": "str", "description": "Unique identifier for water treatment technology"},
    {"name": "technology_name", "type": "str", "description": "Name of water treatment technology"},
]


class TwiceExtractor(HeuristicExtractor):
    """The heuristic extractor stating each row twice: a document then has two candidate rows of one entity
    (``#0`` and ``#1``), which assembly merges into one row.

    With ``delay_s`` it sleeps that long per document without awaiting, holding the event loop: documents are then
    read one at a time, and a job is still running while the test acts.
    """

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s

    async def extract(self, query: str, schema: PreparedSchema, document: Document) -> Extraction:
        time.sleep(self.delay_s)  # noqa: ASYNC251 - blocking on purpose, see above
        extraction = await super().extract(query, schema, document)
        return msgspec.structs.replace(extraction, rows=extraction.rows * 2)


def row_events(events: list[Event]) -> list[tuple[Event, RowFound]]:
    found = [(event, read_data(event.data)) for event in events]
    return [(event, data) for event, data in found if isinstance(data, RowFound)]


def check_accounted(dataset: Dataset, candidates: list[str]) -> None:
    """Every candidate row is in exactly one dataset row's ``candidates`` or in ``dropped_candidates``."""
    in_rows = [c for row in dataset.rows for c in row.candidates]
    assert len(in_rows) == len(set(in_rows))
    assert not set(in_rows) & set(dataset.stats.dropped_candidates)
    assert sorted(in_rows + list(dataset.stats.dropped_candidates)) == sorted(candidates)


def test_rows_are_sent_as_found_one_publish_per_document_and_the_dataset_accounts_for_each(
    make_jobs, run_worker, settings
):
    small_batches = msgspec.structs.replace(settings, extract_batch_size=3)
    jobs = make_jobs(settings_=small_batches)
    run_worker(settings_=small_batches, extractors={"heuristic": TwiceExtractor()}, threads=3)
    job = jobs.submit(seed_request(rows=3))
    events = follow(jobs, job.task_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))

    rows = row_events(events)
    done = next(i for i, e in enumerate(events) if isinstance(read_data(e.data), ExtractionDone))
    assert rows and all(events.index(event) < done for event, _ in rows)  # all before extraction ends
    assert all(e.status == "processing" and e.stage == "extraction" for e, _ in rows)

    # one event per grounded candidate row, with its values, and nothing else
    stored = jobs.store.jobs.get_output(job.task_id, "candidates", list[CandidateRow])
    assert stored is not None
    assert sorted(data.candidate for _, data in rows) == sorted(c.candidate for c in stored)
    names = [f.name for f in seed_request().field_definitions]
    by_id = {c.candidate: c for c in stored}
    for _, row in rows:
        candidate = by_id[row.candidate]
        assert row.values == {name: candidate.values.get(name) for name in names}
        assert row.document == candidate.source_id and row.candidate.startswith(f"{row.document}#")
        assert row.title and row.title in candidate.citations[0].metadata.title
        assert row.values["technology_name"] is not None

    # a document's rows are one publish: consecutive seqs, in their order; its count follows them
    by_document: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for event, row in rows:
        by_document[row.document].append((event.seq, row.candidate))
    assert any(len(found) == 2 for found in by_document.values())
    for document, found in by_document.items():
        seqs = [seq for seq, _ in found]
        assert seqs == list(range(seqs[0], seqs[0] + len(found))), document
        assert [candidate for _, candidate in found] == [f"{document}#{n}" for n in range(len(found))]
        counted = [
            data
            for e in events[seqs[-1] :]
            if isinstance(data := read_data(e.data), DocumentExtracted) and data.rows == len(found)
        ]
        assert counted, f"no document_extracted with {len(found)} rows after {document}'s rows"

    # assembly says what became of each: merged (the twin rows), kept, or dropped below the rows requested
    dataset = jobs.dataset(job.task_id)
    assert len(dataset.rows) == 3
    check_accounted(dataset, [row.candidate for _, row in rows])
    assert all(len(row.candidates) >= 2 for row in dataset.rows)  # each entity was stated twice
    for row in dataset.rows:
        stated = {by_id[c].values["technology_name"] for c in row.candidates}
        assert row.row["technology_name"] in stated
    dropped = dataset.stats.dropped_candidates
    assert dropped and all("below the 3 rows requested" in why for why in dropped.values())


def _read_sse(url: str, *, last_event_id: str | None = None, stop_after_rows: int | None = None) -> list[Event]:
    """Events of a task's SSE stream until it ends (or after ``stop_after_rows`` row events: a dropped connection)."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
    events: list[Event] = []
    with (
        httpx.Client(timeout=httpx.Timeout(10, read=30)) as client,
        connect_sse(client, "GET", url, headers=headers) as source,
    ):
        source.response.raise_for_status()
        for sse in source.iter_sse():
            if not sse.data:
                continue
            event = decode_event(sse.data.encode())
            assert sse.id == str(event.seq)
            events.append(event)
            if stop_after_rows is not None and len(row_events(events)) >= stop_after_rows:
                break
    return events


def test_a_page_reconnecting_mid_job_gets_every_row_once_with_last_event_id(api_url, make_jobs, run_worker):
    run_worker(extractors={"heuristic": TwiceExtractor(delay_s=0.15)})
    body = {"user_query": QUERY, "rows": 3, "field_definitions": FIELDS, "client_id": f"c-{uuid.uuid4().hex[:8]}"}
    reply = httpx.post(f"{api_url}/api/v1/datasets/generate", json=body)
    assert reply.status_code == 202, reply.text
    task_id = reply.json()["task_id"]
    url = f"{api_url}/sse/tasks/{task_id}"

    first = _read_sse(url, stop_after_rows=3)  # the connection drops after the third row
    assert httpx.get(f"{api_url}/tasks/{task_id}").json()["status"] not in TERMINAL_STATUSES  # mid-job
    rest = _read_sse(url, last_event_id=str(first[-1].seq))
    seqs = [e.seq for e in first + rest]
    assert seqs == list(range(1, len(seqs) + 1))  # no gap, no repeat
    assert rest[-1].status == "completed"

    candidates = [data.candidate for _, data in row_events(first + rest)]
    assert len(candidates) == len(set(candidates)) >= 4
    replay = _read_sse(url)  # a page opened after the end replays the same events, byte for byte
    assert [msgspec.json.encode(e) for e in replay] == [msgspec.json.encode(e) for e in first + rest]

    dataset = msgspec.json.decode(httpx.get(f"{api_url}/api/v1/datasets/{task_id}").content, type=Dataset)
    check_accounted(dataset, candidates)


class CountingRedis(redis.Redis):
    """A real Redis client that records the commands it sends (a script call is one round trip)."""

    sent: list[str]

    def execute_command(self, *args: object, **options: object) -> object:
        self.sent.append(str(args[0]))
        return super().execute_command(*args, **options)  # type: ignore[no-untyped-call]


def test_rows_and_their_report_are_one_round_trip_in_order_and_nothing_after_the_job_ends(
    make_jobs, settings: Settings
):
    jobs: JobService = make_jobs()
    request = GenerateRequest(user_query=QUERY, field_definitions=[FieldDefinition(name="name", type="str")])
    job = jobs.submit(request)
    client = CountingRedis(connection_pool=redis.ConnectionPool.from_url(settings.redis_url))
    client.sent = []
    keys = jobs.store.keys
    store = JobStore(client, keys, EventBus(client, client, keys, ttl_s=60, maxlen=1000), ttl_s=60)
    rows = [
        (f"row {n}", RowFound(candidate=f"d#{n}", document="d", title="T", values={"name": f"n{n}"})) for n in range(4)
    ]
    report = DocumentExtracted(documents_done=1, documents=1, rows=4, tokens=0)
    try:
        store.load(job.task_id)  # the version the change is computed on, and the script loaded by a first change
        store.transition(job.task_id, status="processing", message="started")
        client.sent.clear()
        changed = store.transition(job.task_id, status="processing", message="Extracted 1/1", data=report, events=rows)
        assert client.sent == ["EVALSHA"]
        assert changed is not None and changed.message == "Extracted 1/1"
        stream = [decode_event(raw) for raw in jobs.store.events.history(job.task_id)]
        assert [e.seq for e in stream] == list(range(1, 8))
        assert [e.message for e in stream[2:]] == [message for message, _ in rows] + ["Extracted 1/1"]
        assert [read_data(e.data) for e in stream[2:]] == [data for _, data in rows] + [report]

        jobs.cancel(job.task_id)
        assert store.transition(job.task_id, status="processing", message="late", events=rows) is None
        assert [decode_event(raw).status for raw in jobs.store.events.history(job.task_id)][-1] == "cancelled"
    finally:
        client.close()


def test_a_job_without_rows_sends_no_row_events(make_jobs, run_worker):
    jobs = make_jobs()
    run_worker()
    job = jobs.submit(seed_request(user_query="CRISPR off-target detection methods"))
    events = follow(jobs, job.task_id)
    assert events[-1].status == "completed"
    assert any(isinstance(read_data(e.data), SchemaPrepared) for e in events)
    assert not row_events(events)
    dataset = jobs.dataset(job.task_id)
    assert not dataset.rows and not dataset.stats.dropped_candidates
