"""Every Redis key litminer uses, Dramatiq's included; each starts with the configured prefix."""

from __future__ import annotations


class Keys:
    """Builds the Redis keys and channels of litminer under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def job(self, task_id: str) -> str:
        return f"{self.prefix}job:{task_id}"

    def output(self, task_id: str, name: str) -> str:
        return f"{self.prefix}job:{task_id}:{name}"

    def output_keys(self, task_id: str) -> str:
        """The keys of a job's stored outputs (a set), so that the job's changes renew their TTLs."""
        return f"{self.prefix}job:{task_id}:outputs"

    @property
    def active_jobs(self) -> str:
        """Jobs not finished (sorted set of task id → time of their last change), for the reaper."""
        return f"{self.prefix}jobs:active"

    def seq(self, task_id: str) -> str:
        return f"{self.prefix}job:{task_id}:seq"

    def task_stream(self, task_id: str) -> str:
        return f"{self.prefix}stream:task:{task_id}"

    def client_stream(self, client_id: str) -> str:
        return f"{self.prefix}stream:client:{client_id}"

    def channel(self, task_id: str) -> str:
        return f"{self.prefix}events:{task_id}"

    def extraction(self, task_id: str, run_id: str, name: str) -> str:
        """Shared state of one extraction run: finished batches, the hand-off owner, counters."""
        return f"{self.prefix}job:{task_id}:extraction:{run_id}:{name}"

    def extraction_cache(self, digest: str) -> str:
        """A cached extraction of one document (by extractor, prompt, question, schema and text)."""
        return f"{self.prefix}extraction:cache:{digest}"

    def llm_usage(self, model: str) -> str:
        """What this deployment's extraction runs of one model spent (a hash of counters, no TTL): cost estimates
        take the completion tokens to expect from it."""
        return f"{self.prefix}usage:llm:{model}"

    def search_cache(self, source: str, digest: str) -> str:
        """A cached answer of an online source (the response body)."""
        return f"{self.prefix}search:cache:{source}:{digest}"

    def source_rate(self, source: str) -> str:
        """When the next request to a source may start (ms, Redis clock), shared by every worker."""
        return f"{self.prefix}search:rate:{source}"

    def source_leases(self, source: str) -> str:
        """Requests to a source in flight (sorted set of lease → expiry), shared by every worker."""
        return f"{self.prefix}search:leases:{source}"

    def llm_calls(self, provider: str) -> str:
        """Calls to an LLM provider (base URL and model, hashed) in its rate window (sorted set of grant id →
        time granted, ms), shared by every worker."""
        return f"{self.prefix}llm:{provider}:calls"

    def llm_tokens(self, provider: str) -> str:
        """The tokens each call in an LLM provider's rate window counts for (hash of grant id → tokens), and their
        sum (field ``total``)."""
        return f"{self.prefix}llm:{provider}:tokens"

    def llm_limits(self, provider: str) -> str:
        """An LLM provider's limits as its x-ratelimit-* headers said (hash: ``rpm``, ``tpm``)."""
        return f"{self.prefix}llm:{provider}:limits"

    def llm_blocked(self, provider: str) -> str:
        """Until when (ms, Redis clock) no call may go to an LLM provider: its last 429's Retry-After."""
        return f"{self.prefix}llm:{provider}:blocked"

    @property
    def jobs(self) -> str:
        """Every recent job (sorted set of task id → creation time), for the task list and /ops."""
        return f"{self.prefix}jobs"

    def client_jobs(self, client_id: str) -> str:
        """The recent jobs of one client (sorted set of task id → creation time)."""
        return f"{self.prefix}client:{client_id}:jobs"

    def client_owner(self, client_id: str) -> str:
        """The owner id of the API key that claimed a client id (with keys, the first key to use it)."""
        return f"{self.prefix}client:{client_id}:owner"

    def owner_jobs(self, owner: str) -> str:
        """The recent jobs of one API key, by its owner id (sorted set of task id → creation time)."""
        return f"{self.prefix}owner:{owner}:jobs"

    @property
    def rate_limit(self) -> str:
        """Namespace of the API's per-key request counters (Litestar's rate-limit store)."""
        return f"{self.prefix}ratelimit"

    @property
    def workers(self) -> str:
        """Live worker processes (sorted set of worker id → last heartbeat time)."""
        return f"{self.prefix}workers"

    def worker(self, worker_id: str) -> str:
        """A worker's last heartbeat (its WorkerInfo as JSON), expiring when the worker goes quiet."""
        return f"{self.prefix}worker:{worker_id}"

    @property
    def channel_pattern(self) -> str:
        """Matches the channel of every task."""
        return f"{self.prefix}events:*"

    @property
    def events_published(self) -> str:
        """Counter of every event published, across all processes (exposed at /metrics)."""
        return f"{self.prefix}stats:events_published"

    def webhooks(self, task_id: str) -> str:
        """Every delivery attempt of a job's webhooks (list of WebhookAttempt JSON, oldest first)."""
        return f"{self.prefix}job:{task_id}:webhooks"

    def deliveries(self, task_id: str) -> str:
        """How often each enqueued message of a job was delivered (hash of delivery id → count), and how often
        the reaper sent its stage again (field ``reaped``)."""
        return f"{self.prefix}job:{task_id}:deliveries"

    @property
    def replica_waits(self) -> str:
        """How many times a process waited for a replica to hold its writes (a counter, no TTL): what each wait
        writes first, so that ``WAIT`` has a write of its own connection to count (``connections.ReplicaWait``)."""
        return f"{self.prefix}stats:replica_waits"

    @property
    def fair_owners(self) -> str:
        """Owners with extraction batches waiting for their turn (a list, in turn order: the head goes next)."""
        return f"{self.prefix}fair:owners"

    def fair_pending(self, owner: str) -> str:
        """The ids of one owner's extraction batches waiting for their turn (a list, oldest first)."""
        return f"{self.prefix}fair:pending:{owner}"

    @property
    def fair_held(self) -> str:
        """Extraction batch messages waiting for their turn (hash of message id → the message as Dramatiq stores it)."""
        return f"{self.prefix}fair:held"

    @property
    def fair_waiting(self) -> str:
        """As many one-byte tokens as extraction batches wait for their turn (a list: an autoscaler that reads
        list lengths, as KEDA's redis scaler does, sees the backlog held back from the ``extraction`` queue)."""
        return f"{self.prefix}fair:waiting"

    @property
    def fair_running(self) -> str:
        """Extraction batches released to their queue and not finished (hash of message id → owner)."""
        return f"{self.prefix}fair:running"

    @property
    def reaper_turn(self) -> str:
        """Held (with an expiry) by the worker whose reaper looks for lost jobs this round."""
        return f"{self.prefix}reaper"

    @property
    def maintenance_turn(self) -> str:
        """Held (with an expiry) by the worker whose reaper runs Dramatiq's queue maintenance this round."""
        return f"{self.prefix}reaper:maintenance"

    @property
    def dramatiq_namespace(self) -> str:
        """Prefix of Dramatiq's own keys (its queues, delay queues, dead letters, broker heartbeats)."""
        return f"{self.prefix}dramatiq"

    def queue(self, name: str) -> str:
        """A queue's ready messages (Dramatiq's list of message ids)."""
        return f"{self.dramatiq_namespace}:{name}"

    def messages(self, name: str) -> str:
        """A queue's messages, queued or in flight (Dramatiq's hash of id → message), until acknowledged."""
        return f"{self.dramatiq_namespace}:{name}.msgs"

    def delayed_messages(self, name: str) -> str:
        """The messages waiting in a queue's delay queue (retries and delayed sends), by id."""
        return f"{self.dramatiq_namespace}:{name}.DQ.msgs"

    def dead_letters(self, name: str) -> str:
        """A queue's dead-lettered messages (sorted set by time of death)."""
        return f"{self.dramatiq_namespace}:{name}.XQ"

    def acks(self, broker_id: str, name: str) -> str:
        """The messages of queue ``name`` a worker's broker holds in flight (Dramatiq's ack set), until acknowledged."""
        return f"{self.dramatiq_namespace}:__acks__.{broker_id}.{name}"

    def wake(self, name: str) -> str:
        """A queue's wake-up list: an enqueue pushes a token, idle consumers BLPOP it."""
        return f"{self.dramatiq_namespace}:__wake__.{name}"

    @property
    def abort_namespace(self) -> str:
        """Prefix of dramatiq-abort's keys (abort requests per message id)."""
        return f"{self.prefix}aborts:"
