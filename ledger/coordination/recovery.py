"""Messages held by a dead worker, put back in the queue within seconds.

Dramatiq's Redis broker (dramatiq/brokers/redis.py and its dispatch.lua) keeps, in the broker's
Redis:

- `<ns>:__heartbeats__`, a sorted set of broker ids scored by the time (client ms) of their last
  broker command;
- `<ns>:__acks__.<broker id>.<queue>`, one set per (worker process, queue) of the message ids it
  fetched and has not acked yet;
- `<ns>:<queue>` (list of ids) and `<ns>:<queue>.msgs` (hash id -> message).

Out of the box a worker's heartbeat is only refreshed when its consumers talk to Redis (a worker
busy with a full prefetch sends nothing), a worker counts as dead after 60 s without one, and the
dead worker's ack sets are only moved back by a "maintenance" pass that runs on 0.1 % of commands,
for one queue at a time: the issue measured 252-499 s before a killed worker's messages came back.

Here each worker process beats from a thread of its own every `timeout / 5`, so a live worker is
never mistaken for a dead one whatever its actors do, and the same thread moves the ack sets of
workers silent for longer than `timeout` back to the head of their queues (they are the oldest
messages, and waiting behind a backlog would delay them by the whole backlog). `ledger recover`
runs the same function once, on demand.

Times are the processes' own clocks, as in Dramatiq itself: the workers and whoever runs the
recovery must agree on the time to well under `timeout` (NTP does).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import redis

log = logging.getLogger(__name__)

DEFAULT_NAMESPACE = "dramatiq"  # RedisBroker's default, which the project keeps

# KEYS[1] = namespace; ARGV[1] = cutoff (ms): workers whose last heartbeat is at or before it are
# dead. Returns a flat list: queue, messages put back, queue, messages put back, ...
# (KEYS is what dispatch.lua uses for the same walk; the broker's database holds only queues.)
_RECOVER = """
local ns = KEYS[1]
local heartbeats = ns .. ":__heartbeats__"
local dead = redis.call("zrangebyscore", heartbeats, 0, ARGV[1])
local out = {}
for _, worker in ipairs(dead) do
    local prefix = ns .. ":__acks__." .. worker .. "."
    for _, acks in ipairs(redis.call("keys", prefix .. "*")) do
        local queue = string.sub(acks, #prefix + 1)
        local messages = ns .. ":" .. queue .. ".msgs"
        local n = 0
        for _, id in ipairs(redis.call("smembers", acks)) do
            -- An id whose message is gone was acked by another worker after an earlier recovery.
            if redis.call("hexists", messages, id) == 1 then
                redis.call("lpush", ns .. ":" .. queue, id)
                n = n + 1
            end
        end
        redis.call("del", acks)
        table.insert(out, queue)
        table.insert(out, n)
    end
    redis.call("zrem", heartbeats, worker)
end
return out
"""


@dataclass(frozen=True)
class Recovered:
    dead_workers: int
    by_queue: dict[str, int]

    @property
    def messages(self) -> int:
        return sum(self.by_queue.values())

    def to_dict(self) -> dict[str, int | dict[str, int]]:
        return {"dead_workers": self.dead_workers, "by_queue": dict(self.by_queue), "messages": self.messages}


def recover_stranded(
    client: redis.Redis, *, timeout: float, namespace: str = DEFAULT_NAMESPACE, now: float | None = None
) -> Recovered:
    """Put back in their queues the messages held by workers silent for more than `timeout` seconds."""
    now_ms = int((time.time() if now is None else now) * 1000)
    cutoff = now_ms - int(timeout * 1000)
    dead = int(client.zcount(f"{namespace}:__heartbeats__", 0, cutoff))
    flat = client.eval(_RECOVER, 1, namespace, cutoff)
    by_queue: dict[str, int] = {}
    for queue, count in zip(flat[::2], flat[1::2], strict=True):
        name = queue.decode() if isinstance(queue, bytes) else str(queue)
        by_queue[name] = by_queue.get(name, 0) + int(count)
    return Recovered(dead_workers=dead, by_queue=by_queue)


def beat(client: redis.Redis, broker_id: str, *, namespace: str = DEFAULT_NAMESPACE) -> None:
    """Record that the worker `broker_id` is alive (the same entry dispatch.lua writes)."""
    client.zadd(f"{namespace}:__heartbeats__", {broker_id: int(time.time() * 1000)})


class Heartbeat:
    """A worker process's heartbeat and dead-worker reaper, on one daemon thread."""

    def __init__(
        self, client: redis.Redis, broker_id: str, *, timeout: float, namespace: str = DEFAULT_NAMESPACE
    ) -> None:
        self.client = client
        self.broker_id = broker_id
        self.timeout = timeout
        self.namespace = namespace
        self.interval = timeout / 5
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.interval + 5)

    def _run(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                beat(self.client, self.broker_id, namespace=self.namespace)
                found = recover_stranded(self.client, timeout=self.timeout, namespace=self.namespace)
                if found.messages:
                    log.warning(
                        "put back %d message(s) held by %d dead worker(s): %s",
                        found.messages,
                        found.dead_workers,
                        found.by_queue,
                    )
                if failing:
                    log.info("heartbeat: broker answering again")
                failing = False
            except redis.RedisError as exc:
                if not failing:  # one line per outage; the consumers report the broker's state too
                    log.warning("heartbeat: broker unavailable (%s: %s)", type(exc).__name__, exc)
                failing = True
            self._stop.wait(self.interval)
