"""contracts/progress.py: typed event data on the wire and back, and the progress scale."""

from __future__ import annotations

import itertools

import pytest

from contracts import STAGES, Event, EventValue, decode_event, encode_event
from contracts.progress import (
    STAGE_START,
    DocumentExtracted,
    ExtractionPlanned,
    JobCompleted,
    SchemaPrepared,
    SearchDone,
    StageRetrying,
    read_data,
    stage_end,
    stage_progress,
)


def _through_an_event(data: dict[str, EventValue]) -> dict[str, EventValue]:
    """``data`` as a client receives it: inside an event, encoded and decoded."""
    event = Event(
        task_id="t", client_id="c", seq=1, status="processing", stage="search", message="m", progress=1,
        timestamp=1.0, data=data,
    )  # fmt: skip
    return dict(decode_event(encode_event(event)).data)


@pytest.mark.parametrize(
    "data",
    [
        SchemaPrepared(fields=2, key_field="technology_name"),
        StageRetrying(retry=1, delay_ms=30_000, error="upstream unavailable"),
        ExtractionPlanned(
            extractor="openai", provider="openai", base_url="http://x/v1", model="m", documents=8, batches=2
        ),
        DocumentExtracted(documents_done=3, documents=8, rows=1, tokens=120),
        JobCompleted(rows=4, requested_rows=5, shortfall="only 4 distinct rows"),
    ],
)
def test_event_data_reads_back_as_the_struct_it_was(data) -> None:
    assert read_data(_through_an_event(data.as_data())) == data


def test_data_names_its_kind_and_leaves_out_defaults() -> None:
    data = DocumentExtracted(documents_done=1, documents=2, rows=0, tokens=0).as_data()
    assert data["kind"] == "document_extracted" and "warning" not in data and "document" not in data
    skipped = DocumentExtracted(documents_done=1, documents=2, rows=0, tokens=0, warning="bad reply", document="d1")
    assert skipped.as_data()["warning"] == "bad reply"


def test_search_done_carries_one_flat_key_per_source() -> None:
    done = SearchDone(
        documents=3, found=5, duplicates=1, without_text=1, sources="openalex,crossref",
        found_by_source={"openalex": 4, "crossref": 1}, failures={"arxiv": "HTTP 500"},
        screened=5, excluded=2, excluded_by={"off topic": 1, "meets an exclusion criterion": 1},
    )  # fmt: skip
    data = _through_an_event(done.as_data())
    assert data["found_openalex"] == 4 and data["found_crossref"] == 1 and data["failed_arxiv"] == "HTTP 500"
    assert data["excluded_off_topic"] == 1 and data["excluded_meets_an_exclusion_criterion"] == 1
    assert all(not isinstance(value, dict) for value in data.values())  # flat: every client decoder can read it
    read = read_data(data)
    assert isinstance(read, SearchDone) and (read.documents, read.found) == (3, 5)


def test_data_without_a_kind_or_of_an_unknown_kind_is_none() -> None:
    assert read_data({}) is None
    assert read_data({"documents": 3}) is None
    assert read_data({"kind": "from_a_newer_version", "x": 1}) is None


def test_each_stage_ends_where_the_next_starts_and_progress_stays_inside_it() -> None:
    for stage, following in itertools.pairwise(STAGES):
        assert stage_end(stage) == STAGE_START[following]
    assert stage_end("assembly") == 100
    for stage in STAGES:
        assert stage_progress(stage, 0) == STAGE_START[stage]
        assert STAGE_START[stage] <= stage_progress(stage, 1.0) < stage_end(stage)
        assert stage_progress(stage, 7.0) == stage_progress(stage, 1.0)  # never beyond the stage
