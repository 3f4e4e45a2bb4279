"""services.api.vanished: the event ending the stream of a job whose record is gone."""

from __future__ import annotations

from contracts import TERMINAL_STATUSES, Event, decode_event, encode_event
from services.api.vanished import vanished_event

TASK = "3aea995c-0d1e-4b5a-9c6f-2f1e4d5c6b7a"


def test_it_keeps_where_the_last_event_left_the_job():
    last = Event(
        task_id=TASK,
        client_id="c1",
        seq=7,
        status="processing",
        stage="extraction",
        message="Extracted 3/10 documents",
        progress=52,
        timestamp=1.0,
        data={"kind": "document_extracted", "documents_done": 3},
    )
    event = decode_event(vanished_event(TASK, seq=8, last=encode_event(last), ttl_s=60))
    assert event.status in TERMINAL_STATUSES and event.status == "error"
    assert (event.task_id, event.client_id, event.seq, event.stage, event.progress) == (TASK, "c1", 8, "extraction", 52)
    assert event.message == "Job no longer exists: its record expired (LITMINER_RESULT_TTL is 60 s) or was deleted"
    assert event.data == {} and event.timestamp > last.timestamp


def test_without_a_last_event_or_with_one_it_cannot_read_it_starts_from_nothing():
    newer = encode_event(Event(task_id=TASK, client_id="c1", seq=1, status="started", stage="queued",
                               message="", progress=0, timestamp=1.0)).replace(b'"queued"', b'"review"')  # fmt: skip
    for last in (b"", newer):
        event = decode_event(vanished_event(TASK, seq=1, last=last, ttl_s=60))
        assert (event.task_id, event.client_id, event.seq, event.status, event.stage) == (
            TASK,
            "",
            1,
            "error",
            "queued",
        )
