"""The stage queues: Dramatiq's Redis broker (woken by enqueues), sending by actor name, aborts, queue depths.

Every stage has one name, used for its actor and its queue alike (``search``); extraction batches run as the
``extraction_batch`` actor on the ``extraction`` queue, webhooks as ``deliver_webhook`` on ``webhooks``.
Senders (the API, the CLI) need only these names: they build messages here and never import a stage module or
install worker middleware.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import dramatiq
import msgspec
import redis
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.middleware import Middleware
from dramatiq_abort import Abortable
from dramatiq_abort.backends import RedisBackend

from contracts import STAGES
from contracts.ops import QueueDepth
from pipeline.settings import Settings
from pipeline.store.connections import ReplicaWait
from pipeline.store.fair import FAIR_QUEUE, FairShare
from pipeline.store.keys import Keys
from pipeline.store.outages import passing, until_redis_answers

log = logging.getLogger(__name__)

#: the actor that extracts one batch of a job's documents (several run at once, on any workers)
BATCH_ACTOR = "extraction_batch"
#: the actor that POSTs a job's webhook, on a queue of its own so a slow receiver never holds up a stage
WEBHOOK_ACTOR, WEBHOOK_QUEUE = "deliver_webhook", "webhooks"
#: the actor that copies an ended (or reviewed) job to the PostgreSQL archive, on a queue of its own likewise
ARCHIVE_ACTOR, ARCHIVE_QUEUE = "archive_job", "archive"


def queue_of(actor: str) -> str:
    """The queue an actor's messages go to: its stage's, the webhooks queue or the archive queue."""
    if actor == WEBHOOK_ACTOR:
        return WEBHOOK_QUEUE
    if actor == ARCHIVE_ACTOR:
        return ARCHIVE_QUEUE
    if actor == BATCH_ACTOR:
        return "extraction"
    if actor not in STAGES:
        raise ValueError(f"no actor named {actor!r}")
    return actor


# Run before Dramatiq's own dispatch script: an enqueue (or a requeue at shutdown) leaves a wake-up token for the
# queue's idle consumers, which wait on it with BLPOP instead of polling. A script runs atomically, so a consumer
# woken by the token finds the message. A token goes straight to a consumer already waiting; one is kept for
# the next to wait (its fetch takes every message queued meanwhile), so a busy queue leaves no pile of
# tokens that would each cost an idle consumer an empty fetch.
_WAKE = """
if ARGV[1] == "enqueue" or ARGV[1] == "requeue" then
  local wake = KEYS[1] .. ":__wake__." .. ARGV[3]
  redis.call("lpush", wake, "1")
  redis.call("ltrim", wake, 0, 0)
  redis.call("pexpire", wake, 60000)
end
"""


#: the message option carrying the job record as its hand-off stored it: the next stage's change starts from it
#: (a compare-and-set, so a stale one costs a round trip, never correctness) instead of reading it first
JOB_OPTION = "job"


class MessageEncoder(dramatiq.Encoder):
    """Dramatiq's message encoding (JSON) through msgspec: the same JSON, at a fraction of the CPU."""

    def encode(self, data: dict[str, Any]) -> bytes:
        return msgspec.json.encode(data)

    def decode(self, data: bytes) -> dict[str, Any]:
        decoded: dict[str, Any] = msgspec.json.decode(data)
        return decoded


@dataclass(frozen=True)
class Handover:
    """Queue work done in the same script as a job change (``JobStore.transition``).

    ``send`` gives the body of the next stage's message (``send_id`` its Dramatiq id) for the job record the
    change stores; ``ack_id`` is the message being processed, acknowledged once the change is made. ``keys``:
    the next message's queue, its messages hash and wake-up list, then the ack set and messages hash of the
    acknowledged message's queue.
    """

    keys: tuple[str, str, str, str, str]
    send_id: str = ""
    send: Callable[[bytes], bytes] | None = None
    ack_id: str = ""


class _Ids(msgspec.Struct):
    message_id: str


#: a message as Dramatiq stores it (JSON), read only for its id
_decode_ids = msgspec.json.Decoder(_Ids).decode


class WakingRedisBroker(RedisBroker):
    """Dramatiq's Redis broker whose idle consumers are woken by new messages instead of polling.

    Dramatiq's consumer sleeps between empty fetches, up to the worker timeout: a message enqueued meanwhile
    waits for the sleep to end, at every stage of a job. Here an empty fetch is followed by a BLPOP on the
    queue's wake-up list (up to the worker timeout), and a full consumer waits for one of its messages to
    be acknowledged instead of sleeping.
    """

    def __init__(self, keys: Keys, replica_wait: ReplicaWait, *, patient: bool = False, **options: Any) -> None:
        super().__init__(namespace=keys.dramatiq_namespace, **options)  # type: ignore[no-untyped-call]
        self.keys = keys
        self.replica_wait = replica_wait
        self.patient = patient
        #: the messages a job change has acknowledged already (``Handover``): their consumer's ack is a no-op
        self.acknowledged: set[str] = set()
        dispatch = self.scripts["dispatch"].script
        assert isinstance(dispatch, bytes)  # Dramatiq reads its scripts as bytes
        self.scripts["dispatch"] = self.client.register_script(_WAKE.encode() + dispatch)

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return _WakingConsumer

    def enqueue(self, message: dramatiq.Message[Any], *, delay: int | None = None) -> dramatiq.Message[Any]:
        """Enqueue ``message``; a ``patient`` broker (a worker's) waits out a Redis outage first.

        A worker's sends must not be lost: a stage's next message (its record already names it), a retry, a
        delayed message whose time has come (Dramatiq's consumer thread moves it to its queue).
        """
        send = super().enqueue
        if not self.patient:
            return send(message, delay=delay)
        context = {"task_id": str(message.args[0]) if message.args else "-", "stage": message.queue_name}
        return until_redis_answers(lambda: send(message, delay=delay), "sending a message", context)

    def maintain(self, queue_name: str) -> None:
        """Run Dramatiq's queue maintenance on ``queue_name`` now: the messages of workers whose heartbeat timed
        out go back on it. (An empty fetch with maintenance on: the dispatch script's own path for it.)"""
        args = [
            "fetch",
            int(time.time() * 1000),
            queue_name,
            self.broker_id,
            self.heartbeat_timeout,
            self.dead_message_ttl,
            1,  # maintenance: always
            self._max_unpack_size(),  # type: ignore[no-untyped-call]
            0,  # messages to fetch: none
        ]
        self.scripts["dispatch"](args=args, keys=[self.namespace])


class _WakingConsumer(_RedisConsumer):
    def __init__(self, broker: WakingRedisBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        # timeout 0: Dramatiq's own consumer never sleeps between fetches; __next__ below waits instead
        super().__init__(broker, queue_name, prefetch, timeout=0)  # type: ignore[no-untyped-call]
        self.wait_s = timeout / 1000
        self.wake_key = broker.keys.wake(queue_name)
        self.freed = threading.Event()
        self.outage = False  # Redis is unavailable: fetches wait

    def ack(self, message: dramatiq.MessageProxy) -> None:
        try:
            with _refusal_as_lost_connection():
                redis_id = message.options["redis_message_id"]
                if redis_id in self.broker.acknowledged:  # by the job change that handed its job on
                    self.broker.acknowledged.discard(redis_id)
                    self.queued_message_ids.discard(message.message_id)
                else:
                    super().ack(message)  # type: ignore[no-untyped-call]
                # With Sentinel: done once a replica holds the acknowledgement. One lost at a failover would leave
                # the message in the in-flight set of a worker that lives on, never run again, and the reaper
                # would count it as carrying its job. A master lost meanwhile raises: Dramatiq acknowledges again.
                self.broker.replica_wait.wait(self.broker.client)
        finally:
            self.freed.set()

    def nack(self, message: dramatiq.MessageProxy) -> None:
        try:
            with _refusal_as_lost_connection():
                self.broker.acknowledged.discard(message.options["redis_message_id"])
                super().nack(message)  # type: ignore[no-untyped-call]
        finally:
            self.freed.set()

    def __next__(self) -> dramatiq.MessageProxy | None:
        try:
            message = self._next()
        except Exception as exc:
            # Waited out here, not by Dramatiq: its consumer thread, on a connection error, forgets the delayed
            # messages it holds, which then stay in flight (never run, never redelivered) while the worker lives.
            if not passing(exc):
                raise
            if not self.outage:
                log.warning("queue %s: Redis unavailable (%s); waiting for it", self.queue_name, exc)
            self.outage = True
            time.sleep(1)
            return None
        if self.outage:
            log.info("queue %s: Redis answers again", self.queue_name)
            self.outage = False
        return message

    def _next(self) -> dramatiq.MessageProxy | None:
        self.freed.clear()  # before looking: an acknowledgement from now on ends the wait below
        full = not self.message_cache and self.outstanding_message_count >= self.prefetch
        message: dramatiq.MessageProxy | None = super().__next__()  # type: ignore[no-untyped-call]
        if message is not None:
            return message
        if full:
            self.freed.wait(self.wait_s)
        else:
            self.broker.client.blpop([self.wake_key], timeout=self.wait_s)
        return None


def _carrying(message: dramatiq.Message[Any], job: bytes) -> bytes:
    """``message`` as stored in its queue: its own id as its Redis id, and the ``job`` record it carries."""
    return message.copy(options={"redis_message_id": message.message_id, JOB_OPTION: job.decode()}).encode()


@contextmanager
def _refusal_as_lost_connection() -> Iterator[None]:
    """Redis refusing writes (out of memory, read-only, MISCONF) or lost raised as a lost connection, which
    Dramatiq waits out: it tries an acknowledgement again every few seconds. Any other error would make it give
    up on the acknowledgement, and the message would stay in flight for as long as the worker lives."""
    try:
        yield
    except (redis.ResponseError, redis.ConnectionError, redis.TimeoutError) as exc:
        if passing(exc):
            raise dramatiq.ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
        raise


class JobAbortable(Abortable):  # type: ignore[misc]
    """dramatiq-abort's middleware without its poll for a cancel before every message (a round trip each).

    A queued message of a cancelled job needs no such signal here: a cancel marks the job cancelled before it
    aborts anything, and the worker skips every message of a finished job.
    """

    closing = False

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.Message[Any]) -> None:
        if self.is_abortable(broker.get_actor(message.actor_name), message):
            self.manager.add_abortable(message.message_id)

    def _get_abort_requests(self) -> None:  # the watcher thread's loop body (dramatiq-abort 1.2)
        try:
            super()._get_abort_requests()
        except redis.ConnectionError:
            if not self.closing:
                raise
            time.sleep(1)  # its connection was closed under it at shutdown: nothing to report


class Queues:
    """Sends stage messages by actor name, aborts running ones, and tells how full each stage queue is.

    ``broker`` has no middleware: it only sends. A worker builds its own with ``new_broker``, with a
    ``JobAbortable`` on ``abort_backend`` to receive the aborts sent here. Extraction batches go through
    ``fair`` (``send_batches``): they wait there for their owner's turn.
    """

    def __init__(self, client: redis.Redis, keys: Keys, settings: Settings) -> None:
        self.client = client
        self.keys = keys
        self.settings = settings
        self.replica_wait = ReplicaWait(settings)
        dramatiq.set_encoder(MessageEncoder())  # process-wide; the same JSON either way
        self.broker = self.new_broker(middleware=[])
        self.abort_backend = RedisBackend(client=client, namespace=keys.abort_namespace)
        self.fair = FairShare(
            client,
            keys,
            window=settings.fair_window,
            reserve=settings.fair_reserve,
            owner_cap=settings.owner_max_batches,
        )
        # dramatiq-abort sends aborts through its middleware object; this one is never installed in a broker
        self._aborts = Abortable(backend=self.abort_backend)

    def new_broker(self, middleware: list[Middleware], *, patient: bool = False) -> WakingRedisBroker:
        """A broker on this store's connection with ``middleware`` (a worker's runs actors, and is ``patient``).

        A worker killed mid-message never acknowledges it: once its broker heartbeat is older than the timeout,
        queue maintenance (run by a share of every broker's commands) moves its messages back onto the queue.
        """
        return WakingRedisBroker(
            self.keys,
            self.replica_wait,
            client=self.client,
            middleware=middleware,
            patient=patient,
            heartbeat_timeout=self.settings.broker_heartbeat_timeout_ms,
            maintenance_chance=self.settings.broker_maintenance_chance,
        )

    def message(self, actor: str, *args: str | int) -> dramatiq.Message[Any]:
        """A message for ``actor`` (its id is known before it is sent)."""
        return dramatiq.Message(queue_name=queue_of(actor), actor_name=actor, args=args, kwargs={}, options={})

    def handover(
        self,
        broker: WakingRedisBroker,
        *,
        send: dramatiq.Message[Any] | None = None,
        ack: dramatiq.Message[Any] | None = None,
    ) -> Handover:
        """The queue work of a hand-off, for ``JobStore.transition`` to do with the job change: enqueue ``send``
        (on ``broker``'s namespace, as Dramatiq's ``enqueue`` stores it, its own id as its Redis id and the job
        record in its ``JOB_OPTION``) and acknowledge ``ack``, a message ``broker``'s worker is processing."""
        queue = queue_of(send.actor_name) if send is not None else ""
        acked = ack.queue_name if ack is not None else ""
        keys = (
            self.keys.queue(queue),
            self.keys.messages(queue),
            self.keys.wake(queue),
            self.keys.acks(broker.broker_id, acked),
            self.keys.messages(acked),
        )
        if send is None:
            return Handover(keys, ack_id=ack.options["redis_message_id"] if ack is not None else "")
        return Handover(
            keys,
            send_id=send.message_id,
            send=lambda job: _carrying(send, job),
            ack_id=ack.options["redis_message_id"] if ack is not None else "",
        )

    def send_in(self, pipe: redis.client.Pipeline, message: dramatiq.Message[Any], job: bytes) -> None:
        """Add the enqueueing of ``message`` to ``pipe``, as ``handover`` does it (its own id as its Redis id, the
        ``job`` record in its ``JOB_OPTION``, an idle consumer woken)."""
        queue = queue_of(message.actor_name)
        pipe.hset(self.keys.messages(queue), message.message_id, _carrying(message, job))
        pipe.rpush(self.keys.queue(queue), message.message_id)
        pipe.lpush(self.keys.wake(queue), "1")
        pipe.ltrim(self.keys.wake(queue), 0, 0)
        pipe.pexpire(self.keys.wake(queue), 60_000)

    def send(
        self, message: dramatiq.Message[Any], broker: dramatiq.Broker | None = None, *, delay_ms: int | None = None
    ) -> None:
        """Enqueue ``message`` (through ``broker`` when given: a worker sends through its own), after ``delay_ms``.

        (With Sentinel, a caller about to tell a client of the send waits for a replica: ``Store.replicated``.)
        """
        (broker or self.broker).enqueue(message, delay=delay_ms)

    def send_batches(
        self, owner: str, messages: Sequence[dramatiq.Message[Any]], broker: WakingRedisBroker | None = None
    ) -> None:
        """Hold extraction batch ``messages`` for ``owner``'s turn (``fair``); a worker's ``broker`` (patient)
        waits out a Redis outage first, as its sends do.

        Each is stored as Dramatiq's ``enqueue`` would store it, under its own id as its Redis message id (ids
        are unique, and a retry gets a new one from Dramatiq): a cancel can then drop it by its id.
        """
        held = [
            (message.message_id, message.copy(options={"redis_message_id": message.message_id}).encode())
            for message in messages
        ]
        if not held:
            return
        context = {"task_id": str(messages[0].args[0]), "stage": FAIR_QUEUE}
        if broker is not None and broker.patient:
            until_redis_answers(lambda: self.fair.hold(owner or "-", held), "holding extraction batches", context)
        else:
            self.fair.hold(owner or "-", held)

    def abort(self, message_ids: Sequence[str]) -> None:
        """Drop these messages where they wait for their turn; ask whichever worker runs them to stop them (and
        any worker to skip them)."""
        self.fair.drop(message_ids)
        for message_id in message_ids:
            self._aborts.abort(message_id)

    def live_messages(self) -> set[str]:
        """The ids of every stage message queued, delayed, in flight (held by a worker, live or dead, until
        acknowledged) or waiting for its owner's turn: what still carries a job on."""
        live = self.fair.held()
        for queue in STAGES:
            for key in (self.keys.messages(queue), self.keys.delayed_messages(queue)):
                live.update(_decode_ids(raw).message_id for _, raw in self.client.hscan_iter(key, count=500))
        return live

    def maintain(self, broker: WakingRedisBroker) -> None:
        """Run queue maintenance on every queue and delay queue now (through a worker's ``broker``)."""
        for queue in self._queues():
            broker.maintain(queue)
            broker.maintain(f"{queue}.DQ")

    def _queues(self) -> list[str]:
        """Every queue: the stages', the webhooks', and the archive's when there is an archive."""
        return [*STAGES, WEBHOOK_QUEUE, *([ARCHIVE_QUEUE] if self.settings.database_url else [])]

    def take_turn(self, key: str, ttl_ms: int) -> bool:
        """Whether this process takes the turn ``key`` for ``ttl_ms`` (no other process has it)."""
        return bool(self.client.set(key, b"1", nx=True, px=ttl_ms))

    def depths(self) -> list[QueueDepth]:
        """Messages waiting in each stage queue (and the webhooks and archive queues; extraction's include the
        batches waiting for their owner's turn), in its delay queue, and dead-lettered (one round trip)."""
        queues = self._queues()
        with self.client.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.llen(self.keys.queue(queue))
                pipe.hlen(self.keys.delayed_messages(queue))
                pipe.zcard(self.keys.dead_letters(queue))
            pipe.hlen(self.keys.fair_held)
            *counts, held = pipe.execute()
        # batches waiting for their owner's turn are as ready as those in the queue
        return [
            QueueDepth(
                name=queue,
                ready=counts[3 * i] + (held if queue == FAIR_QUEUE else 0),
                delayed=counts[3 * i + 1],
                dead=counts[3 * i + 2],
            )
            for i, queue in enumerate(queues)
        ]
