"""The event that ends a live stream whose job vanished: its record expired or was deleted while followed.

Nothing publishes such an event (the job is gone, so no worker or store call can), yet a follower would
otherwise wait on heartbeats for ever. The API makes it up for the one stream that notices.
"""

from __future__ import annotations

import time

import msgspec

from contracts import Event, decode_event, encode_event


def vanished_event(task_id: str, *, seq: int, last: bytes, ttl_s: int) -> bytes:
    """An ``error`` event numbered ``seq`` saying the job no longer exists, as JSON.

    It keeps the client id, stage and progress of ``last`` (the last event the stream sent; empty when it
    sent none), so a page's progress bar stays where it was.
    """
    message = f"Job no longer exists: its record expired (LITMINER_RESULT_TTL is {ttl_s} s) or was deleted"
    try:
        previous = decode_event(last) if last else None
    except msgspec.DecodeError:  # an event of a newer version (a stage this one does not know)
        previous = None
    if previous is None:
        event = Event(
            task_id=task_id,
            client_id="",
            seq=seq,
            status="error",
            stage="queued",
            message=message,
            progress=0,
            timestamp=time.time(),
        )
    else:
        event = msgspec.structs.replace(
            previous, seq=seq, status="error", message=message, timestamp=time.time(), data={}
        )
    return encode_event(event)
