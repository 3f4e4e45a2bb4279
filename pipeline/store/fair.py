"""Fair sharing of the extraction queue between owners: batches wait in per-owner lists and are released to
Dramatiq's queue round-robin, a few at a time.

Dramatiq's Redis queues are first in, first out: one owner's 500-document job would put all its batches ahead
of another owner's 5-document job. Here a job's batch messages are *held* (one list per owner, the messages in
one hash) and *released* onto the ``extraction`` queue only while fewer than a window of released batches are
unfinished, the next one taken from the owner whose turn it is (an owner at its cap is passed over). Each
release is one Lua script, so every worker may run it at any time: after holding a job's batches, after each
batch ends, and every few seconds from the reaper.

A batch is *running* from its release until a worker is done with it (the middleware frees its slot) or until
its message leaves Dramatiq's queue some other way (the script checks every running batch against the queue's
messages each time), so a slot never leaks: a batch whose worker died stays running, as it is, until Dramatiq
gives its message to another worker and that one finishes it. A retry is a new message that Dramatiq's delay
queue sends straight to the queue: it runs outside the window.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import cast

import redis

from pipeline.store.keys import Keys
from pipeline.store.workers import WorkerRegistry

#: the queue whose messages are shared fairly
FAIR_QUEUE = "extraction"

#: seconds a process reuses the live workers' thread count as the window (their heartbeats come every 5 s)
_WINDOW_TTL_S = 2.0

# KEYS: owners, held, running, queue, queue's messages, queue's wake-up list, waiting.
# ARGV: window, cap per owner (0: none), the pending lists' key prefix, a finished message id (or ""), an owner
# (or ""), then pairs of message id and message to hold for that owner.
# Releases go onto the queue exactly as Dramatiq's dispatch script enqueues (HSET of the message, RPUSH of its
# id) plus the wake-up token of ``queues._WAKE``. Then ``waiting`` is made as long as ``held`` (a list of
# one-byte tokens: what an autoscaler reading list lengths, KEDA's redis scaler, can count). Returns how many
# messages were released.
_SHARE = """
local owners, held, running, queue, messages, wake = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local waiting = KEYS[7]
local window, cap, prefix = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]

if ARGV[4] ~= "" then redis.call("HDEL", running, ARGV[4]) end

local owner = ARGV[5]
if #ARGV > 5 then
  for i = 6, #ARGV, 2 do
    local id = ARGV[i]
    -- a retried call must not send a message again that it has already released
    if redis.call("HEXISTS", messages, id) == 0 and redis.call("HEXISTS", running, id) == 0 then
      redis.call("HSET", held, id, ARGV[i + 1])
      redis.call("RPUSH", prefix .. owner, id)
    end
  end
  -- a newcomer goes first: it has had no turn yet
  if not redis.call("LPOS", owners, owner) then redis.call("LPUSH", owners, owner) end
end

-- Running: released batches whose message Dramatiq still has (queued, or held by a worker, live or dead).
local total, by_owner = 0, {}
local slots = redis.call("HGETALL", running)
for i = 1, #slots, 2 do
  if redis.call("HEXISTS", messages, slots[i]) == 1 then
    total = total + 1
    by_owner[slots[i + 1]] = (by_owner[slots[i + 1]] or 0) + 1
  else
    redis.call("HDEL", running, slots[i])
  end
end

-- The next held message of an owner (ids whose message was dropped, by a cancel, are skipped), or nil.
local function take(from)
  while true do
    local id = redis.call("LPOP", prefix .. from)
    if not id then return nil end
    local message = redis.call("HGET", held, id)
    if message then
      redis.call("HDEL", held, id)
      return id, message
    end
  end
end

local released, passed = 0, 0
while total < window and passed < redis.call("LLEN", owners) do
  local next_owner = redis.call("LINDEX", owners, 0)
  if cap > 0 and (by_owner[next_owner] or 0) >= cap then
    redis.call("LMOVE", owners, owners, "LEFT", "RIGHT")
    passed = passed + 1
  else
    local id, message = take(next_owner)
    if id then
      redis.call("HSET", messages, id, message)
      redis.call("RPUSH", queue, id)
      redis.call("HSET", running, id, next_owner)
      by_owner[next_owner] = (by_owner[next_owner] or 0) + 1
      total, released, passed = total + 1, released + 1, 0
      redis.call("LMOVE", owners, owners, "LEFT", "RIGHT")
    else
      redis.call("LPOP", owners)
    end
  end
end
if released > 0 then
  redis.call("LPUSH", wake, "1")
  redis.call("LTRIM", wake, 0, 0)
  redis.call("PEXPIRE", wake, 60000)
end
local want, have = redis.call("HLEN", held), redis.call("LLEN", waiting)
if want == 0 then
  redis.call("DEL", waiting)
elseif have > want then
  redis.call("LTRIM", waiting, 0, want - 1)
else
  for _ = have + 1, want do redis.call("RPUSH", waiting, "1") end
end
return released
"""


class FairShare:
    """Holds extraction batch messages per owner and releases them onto the queue in turn, ``window`` at a time.

    ``window`` 0 means the threads of the live workers (from their heartbeats, read again every 2 s), less
    ``reserve`` each: threads kept for the other stages, so that a new job's schema, search and assembly do not
    wait for a batch to end. ``owner_cap`` 0 means no cap per owner.
    """

    def __init__(self, client: redis.Redis, keys: Keys, *, window: int, reserve: int = 0, owner_cap: int = 0) -> None:
        self.client = client
        self.keys = keys
        self.fixed_window = window
        self.reserve = reserve
        self.owner_cap = owner_cap
        self.workers = WorkerRegistry(client, keys)
        self._share = client.register_script(_SHARE)
        self._window = (0, 0.0)  # the live workers' threads, and when they were counted (monotonic)

    def hold(self, owner: str, messages: Sequence[tuple[str, bytes]]) -> int:
        """Hold ``messages`` (id, message as Dramatiq stores it) behind ``owner``'s earlier ones; release what
        the window allows. Returns how many messages were released."""
        return self._run(owner=owner, messages=messages)

    def finished(self, message_id: str) -> int:
        """Free the slot of a batch a worker is done with (its Redis message id; nothing if it held none), and
        release what the window allows. Returns how many messages were released."""
        return self._run(finished=message_id)

    def release(self) -> int:
        """Release what the window allows (slots of vanished messages are freed first)."""
        return self._run()

    def drop(self, message_ids: Sequence[str]) -> int:
        """Forget the held messages among ``message_ids`` (a cancelled job's); returns how many were held."""
        if not message_ids:
            return 0
        dropped = int(self.client.hdel(self.keys.fair_held, *message_ids))
        if dropped:
            self.release()  # (which also shortens the waiting list)
        return dropped

    def held(self) -> set[str]:
        """The ids of every message waiting for its turn."""
        return {raw.decode() for raw in cast("list[bytes]", self.client.hkeys(self.keys.fair_held))}

    def waiting(self) -> int:
        """How many messages wait for their turn."""
        return int(self.client.hlen(self.keys.fair_held))

    def running(self) -> dict[str, str]:
        """Message id → owner of every batch released and not finished."""
        raw = cast("dict[bytes, bytes]", self.client.hgetall(self.keys.fair_running))
        return {key.decode(): value.decode() for key, value in raw.items()}

    def window(self) -> int:
        """Batches that may be running at once: the setting, else the threads of the live workers less the
        reserve (at least 1 each, and 1 in all)."""
        if self.fixed_window:
            return self.fixed_window
        threads, counted = self._window
        if time.monotonic() - counted > _WINDOW_TTL_S:
            threads = sum(max(worker.threads - self.reserve, 1) for worker in self.workers.live())
            self._window = (threads, time.monotonic())
        return max(threads, 1)

    def _run(self, *, finished: str = "", owner: str = "", messages: Sequence[tuple[str, bytes]] = ()) -> int:
        keys = self.keys
        pairs = [part for message_id, message in messages for part in (message_id, message)]
        released = self._share(
            keys=[
                keys.fair_owners,
                keys.fair_held,
                keys.fair_running,
                keys.queue(FAIR_QUEUE),
                keys.messages(FAIR_QUEUE),
                keys.wake(FAIR_QUEUE),
                keys.fair_waiting,
            ],
            args=[self.window(), self.owner_cap, keys.fair_pending(""), finished, owner, *pairs],
        )
        return int(cast("int", released))
