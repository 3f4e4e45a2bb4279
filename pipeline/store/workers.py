"""Worker heartbeats: each worker process's last WorkerInfo, and which workers are live."""

from __future__ import annotations

import time
from typing import cast

import msgspec
import redis

from contracts.ops import WorkerInfo
from pipeline.store.keys import Keys

#: a worker whose heartbeat is older than this is not live (/ready, /ops)
LIVE_S = 30.0

_decode_worker = msgspec.json.Decoder(WorkerInfo).decode


class WorkerRegistry:
    """Heartbeats in Redis: a WorkerInfo under ``worker:<id>`` and a score in the ``workers`` sorted set."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    def beat(self, info: WorkerInfo, *, ttl_s: int) -> None:
        """Record a worker's heartbeat for ``ttl_s`` (one round trip); forget heartbeats older than that."""
        with self.client.pipeline(transaction=False) as pipe:
            pipe.set(self.keys.worker(info.worker_id), msgspec.json.encode(info), ex=ttl_s)
            pipe.zadd(self.keys.workers, {info.worker_id: info.last_seen})
            pipe.zremrangebyscore(self.keys.workers, "-inf", info.last_seen - ttl_s)
            pipe.execute()

    def remove(self, worker_id: str) -> None:
        """Forget a worker that stops."""
        with self.client.pipeline(transaction=False) as pipe:
            pipe.zrem(self.keys.workers, worker_id)
            pipe.delete(self.keys.worker(worker_id))
            pipe.execute()

    def live(self) -> list[WorkerInfo]:
        """Workers whose heartbeat is younger than ``LIVE_S``, most recently seen first."""
        now = time.time()
        worker_ids = cast("list[bytes]", self.client.zrevrangebyscore(self.keys.workers, "+inf", now - LIVE_S))
        if not worker_ids:
            return []
        raws = self.client.mget([self.keys.worker(w.decode()) for w in worker_ids])
        infos = [_decode_worker(raw) for raw in raws if raw is not None]
        return [msgspec.structs.replace(info, age_s=round(max(now - info.last_seen, 0.0), 3)) for info in infos]
