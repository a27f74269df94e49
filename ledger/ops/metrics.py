"""Counters every process pushes to Redis, so one scrape of any web process sees all hosts.

Why Redis and not prometheus-client's multiprocess mode: that mode sums the files of the processes
of *one host* (PROMETHEUS_MULTIPROC_DIR); workers run on several hosts and granian forks its own
workers, so the scrape target would have to be every process of every host. Instead each process
adds its increments in memory and flushes them every `FLUSH_SECONDS` to two hashes in the broker's
Redis (which every worker and listener already reaches):

- `ledger:metrics` - totals since the hash was created: one field per sample, the field being the
  sample as Prometheus writes it (`name{label="value",...}`), so the scrape is a plain HGETALL;
- `ledger:metrics:m:<minute>` - the same increments per minute of Redis' clock, kept two hours,
  for rates over a recent window (sync success rate) without a time-series database.

A process that dies loses at most its last `FLUSH_SECONDS` of increments; Prometheus reads the
totals as counters (a Redis flush looks like a counter reset, which `rate()` handles).
Gauges are not pushed: they are computed at scrape time from PostgreSQL and Redis (web/metrics.py).
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import redis

log = logging.getLogger(__name__)

METRICS_KEY = "ledger:metrics"
WINDOW_PREFIX = "ledger:metrics:m:"
WINDOW_TTL_SECONDS = 2 * 3600
FLUSH_SECONDS = 1.0

# Seconds; fits message handling (ms to a minute) and node requests.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# Adds ARGV pairs (field, increment) to KEYS[1] and to the current minute's hash, whose TTL is the
# last ARGV. Redis' own clock decides the minute, so hosts with skewed clocks fill the same buckets.
_FLUSH = """
local t = redis.call('TIME')
local minute = KEYS[2] .. math.floor(t[1] / 60)
for i = 1, #ARGV - 1, 2 do
    redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1])
    redis.call('HINCRBYFLOAT', minute, ARGV[i], ARGV[i + 1])
end
redis.call('EXPIRE', minute, ARGV[#ARGV])
return 1
"""


def sample(name: str, labels: Mapping[str, str] | None = None) -> str:
    """The Prometheus text form of one sample's name and labels (the hash field)."""
    if not labels:
        return name
    inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics_client(url: str) -> redis.Redis:
    """A client for the counters' Redis (REDIS_URL): short timeouts, a flush must never hang."""
    return redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)


class Counters:
    """In-process increments waiting for the next flush. Thread-safe; cheap enough per message."""

    def __init__(self) -> None:
        self._pending: defaultdict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    def inc(self, name: str, labels: Mapping[str, str] | None = None, value: float = 1.0) -> None:
        key = sample(name, labels)
        with self._lock:
            self._pending[key] += value

    def observe(self, name: str, seconds: float, labels: Mapping[str, str] | None = None) -> None:
        """One observation of a histogram `name` (seconds), as cumulative buckets, sum and count."""
        labels = dict(labels or {})
        with self._lock:
            for bound in DURATION_BUCKETS:
                if seconds <= bound:
                    self._pending[sample(name + "_bucket", {**labels, "le": repr(bound)})] += 1
            self._pending[sample(name + "_bucket", {**labels, "le": "+Inf"})] += 1
            self._pending[sample(name + "_sum", labels)] += seconds
            self._pending[sample(name + "_count", labels)] += 1

    def take(self) -> dict[str, float]:
        with self._lock:
            pending, self._pending = dict(self._pending), defaultdict(float)
        return pending

    def give_back(self, pending: Mapping[str, float]) -> None:
        with self._lock:
            for key, value in pending.items():
                self._pending[key] += value

    def flush(self, client: redis.Redis) -> None:
        """Add the pending increments to Redis; on failure they wait for the next flush."""
        pending = self.take()
        if not pending:
            return
        args: list[str] = []
        for key, value in pending.items():
            args += [key, repr(value)]
        try:
            client.eval(_FLUSH, 2, METRICS_KEY, WINDOW_PREFIX, *args, str(WINDOW_TTL_SECONDS))
        except redis.RedisError:
            self.give_back(pending)
            raise


class Flusher:
    """A daemon thread flushing `counters` every `interval` seconds; `stop()` flushes a last time."""

    def __init__(self, counters: Counters, client: redis.Redis, interval: float = FLUSH_SECONDS) -> None:
        self.counters = counters
        self.client = client
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-flush", daemon=True)
        self._failing = False

    def start(self) -> Flusher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._flush()
        self.client.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._flush()

    def _flush(self) -> None:
        try:
            self.counters.flush(self.client)
        except redis.RedisError as exc:
            if not self._failing:  # once per outage
                log.warning("metrics: cannot flush counters to Redis (%s); keeping them", exc)
            self._failing = True
        else:
            self._failing = False


def read_totals(client: redis.Redis) -> dict[str, float]:
    raw: dict[Any, Any] = client.hgetall(METRICS_KEY)
    return {_text(k): float(v) for k, v in raw.items()}


def read_window(client: redis.Redis, minutes: int) -> dict[str, float]:
    """The sum of the last `minutes` minute hashes (the current, partial minute included)."""
    now: Any = client.time()
    current = int(now[0]) // 60
    pipe = client.pipeline(transaction=False)
    for minute in range(current - minutes + 1, current + 1):
        pipe.hgetall(f"{WINDOW_PREFIX}{minute}")
    totals: defaultdict[str, float] = defaultdict(float)
    for bucket in pipe.execute():
        for key, value in bucket.items():
            totals[_text(key)] += float(value)
    return dict(totals)


def sum_samples(values: Mapping[str, float], name: str, match: Iterable[str] = ()) -> float:
    """Sum the samples of metric `name` whose label text contains every string in `match`."""
    wanted = list(match)
    total = 0.0
    for key, value in values.items():
        base, _, labels = key.partition("{")
        if base == name and all(m in labels for m in wanted):
            total += value
    return total


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
