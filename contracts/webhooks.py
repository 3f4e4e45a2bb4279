"""Webhooks: the body POSTed to a job's callback URL when it ends, and the record of every delivery attempt."""

from __future__ import annotations

from typing import Literal

import msgspec

from contracts.base import Record
from contracts.events import Event
from contracts.jobs import JobStatus, Stage

WebhookType = Literal["task.completed", "task.error", "task.cancelled"]

#: what became of one attempt: accepted (a 2xx), failed with another try scheduled, or failed for good
WebhookOutcome = Literal["delivered", "retrying", "failed"]


class WebhookPayload(Record, frozen=True, kw_only=True):
    """The JSON body of a webhook: how the job ended, and where to read its status and dataset.

    ``id`` is the same on every attempt of one delivery (receivers drop repeats by it) and is also sent as
    the ``Litminer-Delivery`` header; ``created`` is when the job ended (the terminal event's timestamp).
    """

    id: str
    type: WebhookType
    created: float
    task_id: str
    client_id: str
    status: JobStatus
    stage: Stage
    message: str
    error: str | None = None
    #: the job's terminal event, exactly as WebSocket and SSE clients received it
    event: Event
    #: relative to the API's base URL
    status_url: str
    #: set when the job completed
    dataset_url: str | None = None


class WebhookAttempt(Record, frozen=True, kw_only=True):
    """One try at delivering a webhook, as recorded with its job."""

    delivery_id: str
    task_id: str
    type: WebhookType
    #: the callback URL without its query string (which may carry a receiver's token)
    url: str
    #: 1 for the first try
    attempt: int
    #: when the try started (Unix time)
    at: float
    duration_ms: float
    #: the receiver's HTTP status; None when no answer came
    status_code: int | None = None
    #: why the try failed (a connection error, a timeout, a refused address, a non-2xx status)
    error: str | None = None
    outcome: WebhookOutcome
    #: when the next try is due (Unix time), when there is one
    next_try_at: float | None = None


class WebhookDeliveries(Record, frozen=True, kw_only=True):
    """Reply to ``GET /api/v1/tasks/{task_id}/webhooks``: every attempt for the job, oldest first."""

    task_id: str
    attempts: list[WebhookAttempt]


encode_webhook = msgspec.json.Encoder().encode
decode_webhook_payload = msgspec.json.Decoder(WebhookPayload).decode
decode_webhook_attempt = msgspec.json.Decoder(WebhookAttempt).decode
