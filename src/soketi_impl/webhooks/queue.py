"""The durable webhook queue in Redis (``SOKETI_QUEUE_DRIVER=redis``): its keys and scripts.

A *job* is one signed POST, built by the server exactly as the in-memory path
builds it (:meth:`~soketi_impl.webhooks.delivery.Delivery._request_for`): URL,
headers (signature and ``X-Pusher-Idempotency-Key`` included), body, the number
of events and the app id, as one JSON string. It holds no app secret, so a
worker needs no app configuration. Keys, all under
``{SOKETI_DB_REDIS_KEY_PREFIX}soketi#webhooks#``:

``pending``
    list; servers ``LPUSH`` new jobs, workers take the oldest with ``BLMOVE``
    (right end) into their own ``processing#{worker}`` list: a reliable queue.
``processing#{worker}``
    the jobs a worker is sending. A job leaves it only when the receiver answered
    2xx (or its retry time is over), so a worker killed mid-request loses nothing.
``worker#{worker}`` / ``workers``
    a worker's heartbeat (a key that expires after ``lease``) and the set of known
    workers. Any worker whose heartbeat expired has its ``processing#`` list moved
    back to ``pending`` by the others (and by itself when it starts again).
``delayed``
    sorted set of jobs waiting for a retry, scored by the time (ms) they are due;
    workers move due ones back to ``pending``. A dead receiver so never holds a
    worker: other receivers' jobs keep flowing.
``stats``
    hash: ``jobs`` and ``bytes`` not delivered yet (pending, processing, delayed):
    the queue's bound. A new job over ``max_jobs`` or ``max_bytes`` drops the
    oldest pending jobs (as the in-memory queue drops its oldest); when only jobs
    in flight are left, the new one is refused. Either way the server counts the
    events in ``dropped`` and logs it.

At-least-once: a job whose worker dies after the receiver accepted it but before
the acknowledgement is sent again, with the same idempotency key. The scripts
touch keys they do not declare (the reaper walks workers' lists), so this is for
one Redis server (or a primary with replicas), not Redis Cluster.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from ..config import Config
from ..errors import SoketiError

__all__ = ["Job", "QueueUnavailable", "RedisQueue"]


class QueueUnavailable(SoketiError):
    """Redis could not be reached when the queue started (the process exits with 1)."""


@dataclass(slots=True)
class Job:
    """One POST: ``id`` is its idempotency key; ``first_failed_ms`` and ``delay_s``
    carry the retry schedule across workers."""

    id: str
    url: str
    headers: dict[str, str]
    body: bytes
    n_events: int
    app_id: str
    first_failed_ms: int = 0
    delay_s: float = 0.0

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "id": self.id, "url": self.url, "headers": self.headers,
                "body": self.body.decode(), "n": self.n_events, "app": self.app_id,
                "f": self.first_failed_ms, "d": self.delay_s,
            }
        )

    @classmethod
    def decode(cls, raw: bytes) -> Job:
        """Raises ``ValueError`` (or ``KeyError``/``TypeError``) on a malformed job."""
        d = orjson.loads(raw)
        return cls(
            str(d["id"]), str(d["url"]), {str(k): str(v) for k, v in d["headers"].items()},
            str(d["body"]).encode(), int(d["n"]), str(d["app"]), int(d["f"]), float(d["d"]),
        )


# Returns {status, events dropped}: status 1 queued, -1 larger than max_bytes, -2 full
# of jobs in flight (the new job is refused).
_PUSH = """
local size = string.len(ARGV[1])
local max_jobs, max_bytes = tonumber(ARGV[2]), tonumber(ARGV[3])
if size > max_bytes then return {-1, 0} end
local dropped = 0
while true do
  local jobs = tonumber(redis.call('HGET', KEYS[2], 'jobs') or 0)
  local bytes = tonumber(redis.call('HGET', KEYS[2], 'bytes') or 0)
  if jobs + 1 <= max_jobs and bytes + size <= max_bytes then break end
  local old = redis.call('RPOP', KEYS[1])
  if not old then return {-2, dropped} end
  redis.call('HINCRBY', KEYS[2], 'jobs', -1)
  redis.call('HINCRBY', KEYS[2], 'bytes', -string.len(old))
  dropped = dropped + cjson.decode(old)['n']
end
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('HINCRBY', KEYS[2], 'jobs', 1)
redis.call('HINCRBY', KEYS[2], 'bytes', size)
return {1, dropped}
"""

# Done with a job (delivered or given up): 1, or 0 when it was no longer ours.
_ACK = """
local n = redis.call('LREM', KEYS[1], 1, ARGV[1])
if n > 0 then
  redis.call('HINCRBY', KEYS[2], 'jobs', -1)
  redis.call('HINCRBY', KEYS[2], 'bytes', -string.len(ARGV[1]))
end
return n
"""

# A failed attempt: the job (with its new schedule, ARGV[2]) waits in `delayed` until ARGV[3].
_RETRY = """
local n = redis.call('LREM', KEYS[1], 1, ARGV[1])
if n > 0 then
  redis.call('ZADD', KEYS[3], tonumber(ARGV[3]), ARGV[2])
  redis.call('HINCRBY', KEYS[2], 'bytes', string.len(ARGV[2]) - string.len(ARGV[1]))
end
return n
"""

# Due retries back to the taking end of `pending`.
_PROMOTE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 100)
for _, job in ipairs(due) do
  redis.call('ZREM', KEYS[1], job)
  redis.call('RPUSH', KEYS[2], job)
end
return #due
"""

# Every worker whose heartbeat expired (or ARGV[2], leaving): its jobs back to `pending`.
_REAP = """
local moved = 0
for _, w in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if w == ARGV[2] or redis.call('EXISTS', ARGV[1] .. 'worker#' .. w) == 0 then
    local list = ARGV[1] .. 'processing#' .. w
    while redis.call('LMOVE', list, KEYS[2], 'LEFT', 'RIGHT') do moved = moved + 1 end
    redis.call('SREM', KEYS[1], w)
    if w == ARGV[2] then redis.call('DEL', ARGV[1] .. 'worker#' .. w) end
  end
end
return moved
"""


class RedisQueue:
    """The queue's Redis commands for one process (a server, a worker or both).

    ``client`` is a ``redis.asyncio.Redis``; ``base`` the key prefix (see the module).
    Every method may raise ``redis.exceptions.RedisError`` or ``OSError``.
    """

    def __init__(self, client: Any, base: str, *, max_jobs: int, max_bytes: int) -> None:
        self.client = client
        self.base = base
        self.max_jobs = max_jobs
        self.max_bytes = max_bytes
        self.pending = base + "pending"
        self.stats_key = base + "stats"
        self.delayed = base + "delayed"
        self.workers = base + "workers"
        self._push = client.register_script(_PUSH)
        self._ack = client.register_script(_ACK)
        self._retry = client.register_script(_RETRY)
        self._promote = client.register_script(_PROMOTE)
        self._reap = client.register_script(_REAP)

    @staticmethod
    def base_for(config: Config) -> str:
        return f"{config.redis_key_prefix}soketi#webhooks#"

    @staticmethod
    def client_for(config: Config, socket_timeout: float = 10.0) -> Any:
        """A client on SOKETI_DB_REDIS_*; connections open lazily (one per blocked consumer)."""
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        return aioredis.Redis(
            host=config.redis_host, port=config.redis_port, db=config.redis_db,
            username=config.redis_username, password=config.redis_password,
            socket_connect_timeout=3.0, socket_timeout=socket_timeout, socket_keepalive=True,
            # the sender and the worker retry themselves, without stalling their caller
            retry=Retry(NoBackoff(), 0), client_name="soketi-impl-webhooks",
        )

    def processing(self, worker: str) -> str:
        return f"{self.base}processing#{worker}"

    async def push(self, jobs: list[bytes]) -> list[tuple[int, int]]:
        """Queue ``jobs`` (one round trip); per job ``(status, older events dropped)``."""
        pipe = self.client.pipeline(transaction=False)
        for raw in jobs:
            await self._push(
                keys=[self.pending, self.stats_key],
                args=[raw, self.max_jobs, self.max_bytes], client=pipe,
            )
        return [(int(a), int(b)) for a, b in await pipe.execute()]

    async def take(self, worker: str, timeout_s: float) -> bytes | None:
        """The oldest pending job, now in ``worker``'s list; ``None`` after ``timeout_s``."""
        raw = await self.client.execute_command(
            "BLMOVE", self.pending, self.processing(worker), "RIGHT", "LEFT", timeout_s
        )
        return None if raw is None else bytes(raw)

    async def ack(self, worker: str, raw: bytes) -> bool:
        keys = [self.processing(worker), self.stats_key]
        return bool(await self._ack(keys=keys, args=[raw]))

    async def retry(self, worker: str, raw: bytes, job: Job, due_s: float) -> bool:
        keys = [self.processing(worker), self.stats_key, self.delayed]
        return bool(await self._retry(keys=keys, args=[raw, job.encode(), int(due_s * 1000)]))

    async def promote(self) -> int:
        """Move due retries to ``pending`` (100 a script run, at most 1000); how many."""
        moved = 0
        for _ in range(10):
            n = int(await self._promote(keys=[self.delayed, self.pending], args=[int(time.time() * 1000)]))
            moved += n
            if n < 100:
                break
        return moved

    async def beat(self, worker: str, lease_ms: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.set(f"{self.base}worker#{worker}", b"1", px=lease_ms)
        pipe.sadd(self.workers, worker)
        await pipe.execute()

    async def reap(self, leaving: str = "") -> int:
        """Give the jobs of dead workers (and of ``leaving``) back to ``pending``; how many."""
        return int(await self._reap(keys=[self.workers, self.pending], args=[self.base, leaving]))

    async def totals(self) -> tuple[int, int]:
        """``(jobs, bytes)`` not delivered yet, over every worker and server."""
        jobs, size = await self.client.hmget(self.stats_key, "jobs", "bytes")
        return int(jobs or 0), int(size or 0)

    @staticmethod
    def new_worker_id() -> str:
        return uuid.uuid4().hex[:16]
