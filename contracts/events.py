"""Progress events: what WebSocket and SSE clients receive."""

from __future__ import annotations

from typing import Literal

import msgspec

from contracts.base import EventValue, Record
from contracts.jobs import Stage

EventStatus = Literal["started", "processing", "retrying", "completed", "error", "cancelled"]


class Event(Record, frozen=True, kw_only=True):
    """One job state change; ``seq`` increases by one per task."""

    task_id: str
    client_id: str
    seq: int
    status: EventStatus
    stage: Stage
    message: str
    progress: int
    total: int = 100
    timestamp: float
    data: dict[str, EventValue] = {}


encode_event = msgspec.json.Encoder().encode
decode_event = msgspec.json.Decoder(Event).decode
