import csv
import io
import time

import msgspec

from contracts import (
    Citation,
    CitationMetadata,
    Dataset,
    DatasetRow,
    DatasetStats,
    Event,
    FieldDefinition,
    GenerateRequest,
    JobRecord,
    decode_event,
    encode_event,
)
from pipeline.export import to_csv, to_jsonl
from pipeline.worker.middleware import StageRetries


def dataset() -> Dataset:
    fields = [FieldDefinition(name="name"), FieldDefinition(name="tags", type="list[str]", required=False)]
    citation = Citation(source_id="s1", field="name", text_span="=cmd quoted", metadata=CitationMetadata(title="T"))
    rows = [DatasetRow(row={"name": "=HYPERLINK(1)", "tags": ["a", "b"]}, citations=[citation])]
    return Dataset(
        task_id="t",
        model_name="M",
        query="q",
        schema=fields,
        rows=rows,
        stats=DatasetStats(requested_rows=1, returned_rows=1),
    )


def test_csv_has_schema_columns_then_sources_and_evidence_and_is_formula_safe():
    reader = list(csv.reader(io.StringIO(to_csv(dataset()))))
    assert reader[0] == ["name", "tags", "sources", "evidence"]
    assert reader[1][0] == "'=HYPERLINK(1)"
    assert reader[1][1] == '["a","b"]'
    assert reader[1][2] == "s1"
    assert reader[1][3] == "name: =cmd quoted"


def test_jsonl_has_one_row_per_line():
    lines = to_jsonl(dataset()).splitlines()
    assert len(lines) == 1
    assert msgspec.json.decode(lines[0])["row"]["name"] == "=HYPERLINK(1)"


def test_event_round_trip_keeps_field_order_of_the_design():
    event = Event(
        task_id="t", client_id="c", seq=7, status="processing", stage="search", message="Found 42 papers",
        progress=35, timestamp=1764331200.12, data={"documents": 42},
    )  # fmt: skip
    raw = encode_event(event)
    assert raw.startswith(b'{"task_id":"t","client_id":"c","seq":7,"status":"processing","stage":"search"')
    assert decode_event(raw) == event


def test_job_record_tolerates_unknown_fields_from_newer_workers():
    request = GenerateRequest(user_query="q", field_definitions=[FieldDefinition(name="a")])
    job = JobRecord(task_id="t", client_id="c", request=request, created_at=time.time(), updated_at=time.time())
    raw = msgspec.json.encode(job)[:-1] + b',"added_later":1}'
    assert msgspec.json.decode(raw, type=JobRecord) == job


def test_backoff_follows_the_seed_schedule_and_caps():
    retries = StageRetries(max_retries=3, min_backoff_ms=30_000, max_backoff_ms=120_000, jitter=False, permanent=())
    assert [retries.backoff_ms(n) for n in range(4)] == [30_000, 60_000, 120_000, 120_000]


def test_jitter_is_opt_in_and_bounded():
    retries = StageRetries(max_retries=3, min_backoff_ms=1000, max_backoff_ms=120_000, jitter=True, permanent=())
    delays = {retries.backoff_ms(0) for _ in range(50)}
    assert all(1000 <= d <= 2000 for d in delays) and len(delays) > 1
