"""Followers of a job whose record vanishes (expired or deleted) get a terminal event, and their stream ends."""

from __future__ import annotations

import uuid

import httpx
import msgspec

from contracts import decode_event, encode_event
from tests.conftest import wait_for
from tests.integration.test_live_events import Watcher, fake_job, no_open_connections, ws_url

#: short, so the existence check (made on each heartbeat) comes soon after the record is deleted
HEARTBEAT_S = 0.2
#: how long a follower may take to notice: a coarse bound, the point of the test being that it ends at all
NOTICE_S = 15


def test_followers_of_a_deleted_job_get_an_error_event_and_their_streams_end(settings, serve_api, make_jobs):
    api_url = serve_api(msgspec.structs.replace(settings, heartbeat_s=HEARTBEAT_S))
    jobs = make_jobs()
    client_id = f"c-{uuid.uuid4().hex[:8]}"
    job = msgspec.structs.replace(fake_job(client_id), stage="search", progress=35)
    jobs.store.jobs.create(job)  # seq 1: started
    jobs.store.events.publish(job, "processing", message="Searching")  # seq 2
    followers = [
        Watcher(f"{api_url}/sse/tasks/{job.task_id}", until_terminal=False).start_ready(),
        Watcher(ws_url(api_url, f"/ws/tasks/{job.task_id}"), until_terminal=False).start_ready(),
    ]
    wait_for(lambda: all(len(f.payloads) == 2 for f in followers), what="both followers to get the history")

    jobs.store.client.delete(jobs.store.keys.job(job.task_id))

    for follower in followers:
        follower.finish(timeout=NOTICE_S)
        assert follower.closed_by_server, follower.url
        assert follower.seqs == [1, 2, 3]
        last = decode_event(follower.payloads[-1].encode())
        assert last.status == "error"
        assert last.message.startswith("Job no longer exists: its record expired (LITMINER_RESULT_TTL")
        assert (last.task_id, last.client_id, last.stage, last.progress, last.data) == (
            job.task_id,
            client_id,
            "search",
            35,
            {},
        )
    assert followers[0].ids == ["1", "2", "3"]  # the SSE id counts on: Last-Event-ID stays a seq
    # a follower coming back finds no job rather than a stream that never ends
    assert httpx.get(f"{api_url}/sse/tasks/{job.task_id}", headers={"Last-Event-ID": "3"}).status_code == 404
    wait_for(lambda: no_open_connections(api_url), what="every connection to be released")


def test_a_terminal_event_in_the_stream_wins_over_the_vanished_job_event(settings, serve_api, make_jobs):
    """The job ended, then its record went, before its last event reached the API live (say the subscription
    dropped it): the follower gets the job's own terminal event from the stream, not a made-up one."""
    api_url = serve_api(msgspec.structs.replace(settings, heartbeat_s=HEARTBEAT_S))
    jobs = make_jobs()
    job = fake_job(f"c-{uuid.uuid4().hex[:8]}")
    jobs.store.jobs.create(job)  # seq 1: started
    follower = Watcher(f"{api_url}/sse/tasks/{job.task_id}", until_terminal=False).start_ready()
    wait_for(lambda: len(follower.payloads) == 1, what="the follower to get the first event")

    completed = msgspec.structs.replace(
        decode_event(follower.payloads[0].encode()), seq=2, status="completed", stage="done", message="Dataset ready"
    )
    with jobs.store.client.pipeline() as pipe:  # stored in the task stream, never published
        pipe.xadd(jobs.store.keys.task_stream(job.task_id), {"event": encode_event(completed)}, id="2-0")
        pipe.delete(jobs.store.keys.job(job.task_id))
        pipe.execute()

    follower.finish(timeout=NOTICE_S)
    assert follower.closed_by_server
    assert follower.seqs == [1, 2]
    assert decode_event(follower.payloads[-1].encode()) == completed
