"""What the Redis broker holds, read from Dramatiq's own structures (dramatiq/brokers/redis/dispatch.lua):

- `<ns>:<queue>` - list of message ids ready to be fetched; `<ns>:<queue>.msgs` - their bodies;
- `<ns>:<queue>.DQ` - delayed messages (retries with backoff) not fetched yet; a worker fetches them
  early and holds them in memory until their eta, acked under `<queue>.DQ`;
- `<ns>:__acks__.<worker id>.<queue>` - ids a worker fetched and has not acked: in flight;
- `<ns>:__heartbeats__` - sorted set of worker ids by last contact (ms); a worker that has not
  called the broker for `heartbeat_timeout` (60 s by default) is dead, and its acks go back to the
  queue only at a later maintenance pass;
- `<ns>:<queue>.XQ` - dead-lettered ids by time; `.XQ.msgs` their bodies.

Recovering messages held by dead workers is ledger.coordination.recovery's (`recover` below calls it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

NAMESPACE = "dramatiq"
HEARTBEAT_TIMEOUT_MS = 60_000  # RedisBroker's default heartbeat_timeout


@dataclass(frozen=True)
class QueueDepths:
    ready: int
    delayed: int
    in_flight: int | None  # None: the broker does not say (RabbitMQ without its management API)
    dead: int


@dataclass
class HeldMessage:
    message_id: str
    redis_message_id: str
    queue: str
    actor: str | None
    args: list[Any] | None  # None: the body is gone (acked meanwhile) or unreadable


@dataclass
class WorkerHold:
    worker_id: str
    last_seen_ms_ago: int
    alive: bool
    messages: list[HeldMessage] = field(default_factory=list)


def is_redis_broker(broker: dramatiq.Broker) -> bool:
    """Whether `broker` keeps its queues in Redis (the structures this module reads)."""
    return isinstance(broker, RedisBroker)


def queue_depths(client: redis.Redis, queue: str, namespace: str = NAMESPACE) -> QueueDepths:
    ns = namespace
    r: Any = client  # redis-py's stubs type replies as unions of every possible reply
    workers = [_text(w) for w in r.zrange(f"{ns}:__heartbeats__", 0, -1)]
    pipe = r.pipeline(transaction=False)
    pipe.llen(f"{ns}:{queue}")
    pipe.llen(f"{ns}:{queue}.DQ")
    pipe.zcard(f"{ns}:{queue}.XQ")
    for worker in workers:
        pipe.scard(f"{ns}:__acks__.{worker}.{queue}")
        pipe.scard(f"{ns}:__acks__.{worker}.{queue}.DQ")
    ready, delayed_queued, dead, *acks = pipe.execute()
    in_flight = sum(acks[0::2])
    delayed_held = sum(acks[1::2])
    return QueueDepths(ready=ready, delayed=delayed_queued + delayed_held, in_flight=in_flight, dead=dead)


def other_depths(broker: Any, queue: str) -> QueueDepths:
    """Depths from a broker that counts its own queues (Dramatiq's RabbitmqBroker does, by passive
    declares: ready, delayed and dead; messages in flight are not in those counts)."""
    counts = getattr(broker, "get_queue_message_counts", None)
    if counts is None:
        raise TypeError(f"cannot read queue depths from {type(broker).__name__}")
    ready, delayed, dead = counts(queue)
    return QueueDepths(ready=int(ready), delayed=int(delayed), in_flight=None, dead=int(dead))


def held_messages(
    client: redis.Redis,
    queue: str,
    namespace: str = NAMESPACE,
    heartbeat_timeout_ms: int = HEARTBEAT_TIMEOUT_MS,
    limit_per_worker: int = 100,
) -> list[WorkerHold]:
    """Messages fetched and not acked, per worker (alive or not), newest contact first."""
    ns = namespace
    r: Any = client
    now_s, now_us = r.time()
    now_ms = int(now_s) * 1000 + int(now_us) // 1000
    beats = r.zrange(f"{ns}:__heartbeats__", 0, -1, withscores=True)
    holds = []
    for raw_id, score in sorted(beats, key=lambda b: -b[1]):
        worker_id = _text(raw_id)
        age = max(0, now_ms - int(score))
        hold = WorkerHold(worker_id=worker_id, last_seen_ms_ago=age, alive=age < heartbeat_timeout_ms)
        for q in (queue, f"{queue}.DQ"):
            ids = sorted(_text(i) for i in r.smembers(f"{ns}:__acks__.{worker_id}.{q}"))
            ids = ids[:limit_per_worker]
            bodies = r.hmget(f"{ns}:{q}.msgs", ids) if ids else []
            for redis_id, body in zip(ids, bodies, strict=True):
                hold.messages.append(_held(redis_id, q, body))
        holds.append(hold)
    return holds


def _held(redis_id: str, queue: str, body: bytes | None) -> HeldMessage:
    if body is None:
        return HeldMessage(message_id="", redis_message_id=redis_id, queue=queue, actor=None, args=None)
    try:
        message = dramatiq.Message.decode(body)
    except dramatiq.DecodeError:
        return HeldMessage(message_id="", redis_message_id=redis_id, queue=queue, actor=None, args=None)
    return HeldMessage(
        message_id=message.message_id,
        redis_message_id=redis_id,
        queue=queue,
        actor=message.actor_name,
        args=list(message.args),
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
