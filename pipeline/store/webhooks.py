"""Webhooks in Redis: where a job's webhook goes, and every delivery attempt, kept with the job."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import redis

from contracts import JobRecord, WebhookAttempt, decode_webhook_attempt, encode_webhook
from pipeline.settings import Settings
from pipeline.store.keys import Keys

#: attempts kept per job (a job that is re-run and ends again gets another delivery): far more than retries
MAX_ATTEMPTS = 100


def callback_url(job: JobRecord, settings: Settings) -> str | None:
    """Where ``job``'s webhook goes: its request's callback URL, else its owner's default, else anyone's (``*``)."""
    return job.request.callback_url or settings.callback_urls.get(job.owner) or settings.callback_urls.get("*")


class WebhookLog:
    """Records webhook delivery attempts per job: a Redis list with the result TTL, oldest attempt first."""

    def __init__(self, client: redis.Redis, keys: Keys, *, ttl_s: int) -> None:
        self.client = client
        self.keys = keys
        self.ttl_s = ttl_s

    def record(self, attempt: WebhookAttempt) -> None:
        """Append one attempt to its job's list."""
        key = self.keys.webhooks(attempt.task_id)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.rpush(key, encode_webhook(attempt))
            pipe.ltrim(key, -MAX_ATTEMPTS, -1)
            pipe.expire(key, self.ttl_s)
            pipe.execute()

    def attempts(self, task_id: str) -> list[WebhookAttempt]:
        """Every recorded attempt of one job, oldest first."""
        raws = cast("list[bytes]", self.client.lrange(self.keys.webhooks(task_id), 0, -1))
        return [decode_webhook_attempt(raw) for raw in raws]

    def latest(self, task_ids: Sequence[str], *, limit: int) -> list[WebhookAttempt]:
        """The ``limit`` newest attempts of these jobs, newest first (one round trip)."""
        if not task_ids:
            return []
        with self.client.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.lrange(self.keys.webhooks(task_id), -limit, -1)
            lists = cast("list[list[bytes]]", pipe.execute())
        attempts = [decode_webhook_attempt(raw) for raws in lists for raw in raws]
        return sorted(attempts, key=lambda attempt: attempt.at, reverse=True)[:limit]
