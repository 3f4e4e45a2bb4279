"""What the batches of one extraction run share in Redis: counters, the document cache, the finish line."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import msgspec
import redis

from pipeline.store.keys import Keys

# Stores batch ARGV[1]'s rows (ARGV[5] in KEYS[3]) and marks it done; returns 1 to the one message that completes
# the set (ARGV[2] batches) and owns the hand-off, also when that very message (ARGV[3]) is redelivered; 0 to every
# other.
_FINISH_BATCH = """
redis.call('SET', KEYS[3], ARGV[5], 'EX', ARGV[4])
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
if redis.call('SCARD', KEYS[1]) < tonumber(ARGV[2]) then return 0 end
local owner = redis.call('GET', KEYS[2])
if not owner then
  redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[4])
  return 1
end
if owner == ARGV[3] then return 1 end
return 0
"""

#: a run's shared state (``Keys.extraction``): batches finished, the hand-off owner, tokens spent, documents done
_RUN_STATE = ("done", "owner", "tokens", "documents_done")

#: what each batch of a run has among the job's outputs: its share of the documents, its rows
_BATCH_OUTPUTS = ("documents", "rows")

#: the counters of a model's usage (``Keys.llm_usage``)
_USAGE = ("runs", "calls", "completion_tokens", "guessed_tokens")


class LlmUsage(msgspec.Struct, kw_only=True, frozen=True):
    """What the recorded extraction runs of one model spent: the completion tokens its replies took, and the
    tokens guessed for the same calls from their schemas (``pipeline.estimate``), so that an estimate can scale
    its guess by how this model really answers."""

    runs: int = 0
    calls: int = 0
    completion_tokens: int = 0
    guessed_tokens: int = 0


def batch_output(run_id: str, index: int, what: str) -> str:
    """The name of the output ``what`` ("documents" or "rows") of batch ``index`` of run ``run_id``."""
    return f"extraction:{run_id}:{index}:{what}"


class ExtractionState:
    """Shared state of extraction runs (each run of the stage has its own id), every key with the result TTL."""

    def __init__(self, client: redis.Redis, keys: Keys, *, ttl_s: int) -> None:
        self.client = client
        self.keys = keys
        self.ttl_s = ttl_s
        self._finish = client.register_script(_FINISH_BATCH)

    def run_keys(self, task_id: str, run_id: str, batches: int) -> Sequence[str]:
        """Every key a run of ``batches`` batches writes: its shared state and each batch's outputs."""
        state = [self.keys.extraction(task_id, run_id, name) for name in _RUN_STATE]
        outputs = [
            self.keys.output(task_id, batch_output(run_id, index, what))
            for index in range(batches)
            for what in _BATCH_OUTPUTS
        ]
        return state + outputs

    def cached(self, digest: str) -> bytes | None:
        """A cached extraction of one document (by extractor, prompt, question, schema and text)."""
        return cast("bytes | None", self.client.get(self.keys.extraction_cache(digest)))

    def cache(self, digest: str, extraction: bytes) -> None:
        self.client.set(self.keys.extraction_cache(digest), extraction, ex=self.ttl_s)

    def tokens_used(self, task_id: str, run_id: str) -> int:
        """Tokens the run's documents have spent so far."""
        return int(cast("bytes | None", self.client.get(self.keys.extraction(task_id, run_id, "tokens"))) or 0)

    def count_document(self, task_id: str, run_id: str, tokens: int) -> tuple[int, int]:
        """Count one more document done and the tokens it spent (one round trip); the run's totals so far."""
        done_key = self.keys.extraction(task_id, run_id, "documents_done")
        tokens_key = self.keys.extraction(task_id, run_id, "tokens")
        with self.client.pipeline() as pipe:
            pipe.incr(done_key)
            pipe.incrby(tokens_key, tokens)
            pipe.expire(done_key, self.ttl_s)
            pipe.expire(tokens_key, self.ttl_s)
            done, spent, *_ = pipe.execute()
        return int(done), int(spent)

    def record_usage(self, model: str, *, calls: int, completion_tokens: int, guessed_tokens: int) -> None:
        """Add one extraction run of ``model`` to its usage (one round trip; kept without a TTL)."""
        key = self.keys.llm_usage(model)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hincrby(key, "runs", 1)
            pipe.hincrby(key, "calls", calls)
            pipe.hincrby(key, "completion_tokens", completion_tokens)
            pipe.hincrby(key, "guessed_tokens", guessed_tokens)
            pipe.execute()

    def usage(self, model: str) -> LlmUsage:
        """The recorded extraction runs of ``model`` (all zero when there are none)."""
        raw = cast("dict[bytes, bytes]", self.client.hgetall(self.keys.llm_usage(model)))
        return LlmUsage(**{name.decode(): int(value) for name, value in raw.items() if name.decode() in _USAGE})

    def finish_batch(
        self, task_id: str, run_id: str, *, index: int, batches: int, message_id: str, result: bytes
    ) -> bool:
        """Store batch ``index``'s ``result`` as its "rows" output (``batch_output``) and mark the batch done.

        True for the one message that completes the run (and so hands the job on), also when that message is
        delivered again; False for every other.
        """
        owner = self._finish(
            keys=[
                self.keys.extraction(task_id, run_id, "done"),
                self.keys.extraction(task_id, run_id, "owner"),
                self.keys.output(task_id, batch_output(run_id, index, "rows")),
            ],
            args=[index, batches, message_id, self.ttl_s, result],
        )
        return bool(owner == 1)
