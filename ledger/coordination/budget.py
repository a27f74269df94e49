"""One request budget for the TRON node / TronGrid, shared by every process through Redis.

TronGrid counts requests per API key, not per process: the listener, backfills, reconciliation
jobs and any later fallback all spend the same quota (100,000 requests a day per key, about 15 a
second; beyond that HTTP 403/429/503 and a "suspended for N s" block: developers.tron.network/
reference/rate-limits). So the limiter lives in Redis, where every process sees it:

- a token bucket per second (`TRON_REQUESTS_PER_SECOND`, burst `TRON_REQUESTS_BURST`): over any
  interval of T seconds at most burst + rate * T requests leave, all processes together;
- a counter per UTC day (`TRON_REQUESTS_PER_DAY`): a hard cap, never more in one calendar day;
- a suspension: when one process is told "suspended for N s", it stores the end time here and
  every process waits it out (a request during the suspension extends it).

Callers come in two classes (`Priority`): LIVE, the listener following the head, whose delay is
the ledger's freshness; and BACKGROUND, everything that can wait (reconciliation jobs, backfills,
snapshots taken by a command). Without a class, 1,000 accounts' reconciliation kept the bucket
empty and the listener queued behind it (freshness p99 8.9 s in the 30-minute soak). Now a
background caller may only take a token while the bucket keeps `reserve_fraction` of its burst
after the take, and only while the day's count stays under (1 - `daily_reserve_fraction`) of the
daily cap; a live caller may take down to zero. The reserve does not cost background work its
rate: tokens refill at the same pace and it takes them as they come, only the last ones in the
bucket are left for the live path, which therefore waits at most one token interval (1/rate) for
its next request however many background callers spin. The total across classes is still one
bucket and one daily count, so the bounds above hold for all callers together.

All of it is decided in one Lua script on Redis's own clock (`TIME`), so processes on machines
whose clocks differ still share one bucket. The state is small and soft: losing it (a flush, a
restart) costs at most one burst, which is why it may live in the cache Redis
(`TRON_BUDGET_REDIS_URL`, default `CACHE_REDIS_URL`): the broker may not be Redis at all.

Without a quota (`TRON_REQUESTS_PER_SECOND=0` and `TRON_REQUESTS_PER_DAY=0`: an own node) only
the suspension is shared, and asking Redis about it before every request was a round trip per
request, 10-14 % of a catching-up listener's time. Such a budget keeps a mirror of the suspension
instead (`_SuspensionWatch`): subscribed to the channel every suspension is published on, it reads
the current state once subscribed and pings Redis every second; while it has heard from Redis
lately a request asks the mirror, otherwise it asks Redis. A suspension reaches every process
as fast as a publish travels, not at the next poll.

When that Redis cannot be reached the budget degrades to a limiter in this process at the same
rates (logged once per outage, and on recovery) and tries Redis again every few seconds: keeping
the listener going matters more than exact sharing for the few seconds of an outage.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import redis

from ledger.clocks import Clock
from ledger.coordination.backoff import jittered

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
REDIS_RETRY_SECONDS = 5.0  # while degraded, how often Redis is tried again
WATCH_PING_SECONDS = 1.0  # the suspension watch pings this often; silent for 3x as long = not trusted
MAX_SLEEP = 0.5  # a waiter re-checks at least this often (another process may have suspended us)

# Returns {verdict, wait_ms}: 0 granted; 1 suspended; 2 day used up (for this class); 3 bucket
# empty (down to this class's reserve). ARGV[4]: tokens the take must leave in the bucket; ARGV[5]:
# requests of the day the take must leave unspent (both 0 for the live class).
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local suspended = tonumber(redis.call('GET', KEYS[2]) or '0')
if suspended > now then return {1, suspended - now} end
local rate, burst, per_day = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local keep, keep_day = tonumber(ARGV[4]), tonumber(ARGV[5])
local day = math.floor(now / 86400000)
local day_key = KEYS[3] .. ':' .. day
if per_day > 0 then
  local used = tonumber(redis.call('GET', day_key) or '0')
  if used + keep_day >= per_day then return {2, (day + 1) * 86400000 - now} end
end
if rate > 0 then
  local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
  local tokens, ts = tonumber(b[1]), tonumber(b[2])
  if tokens == nil or ts == nil then tokens, ts = burst, now end
  tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
  if tokens < 1 + keep then
    -- Not stored: a refused caller must not move the refill clock.
    return {3, math.ceil((1 + keep - tokens) * 1000 / rate)}
  end
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens - 1), 'ts', tostring(now))
  redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
end
if per_day > 0 then
  redis.call('INCR', day_key)
  redis.call('PEXPIRE', day_key, 2 * 86400000)
end
return {0, 0}
"""

# Extends (never shortens) the shared suspension to now + ARGV[1] ms.
_SUSPEND = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local target = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if target > current then
  redis.call('SET', KEYS[1], tostring(target), 'PX', tonumber(ARGV[1]) + 1000)
end
redis.call('PUBLISH', KEYS[1], tostring(target - now))
return target
"""

# The shared suspension's remaining ms (0 for none), on Redis's clock.
_REMAINING = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
return math.max(0, current - now)
"""


class BudgetExhausted(RuntimeError):
    """Waiting for the budget would take longer than the caller allows (the day is used up, or a
    long suspension); `retry_after` says when to try again."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Priority(Enum):
    """Who is asking: LIVE (the listener following the head) may spend the whole budget;
    BACKGROUND (reconciliation, backfills, snapshots) leaves the reserves to it."""

    LIVE = "live"
    BACKGROUND = "background"


@dataclass(frozen=True)
class BudgetLimits:
    per_second: float = 10.0  # 0 = no per-second limit
    burst: float = 5.0  # tokens the bucket holds: 10/s + 5 stays under TronGrid's 15 in any second
    per_day: int = 100_000  # 0 = no daily cap
    # Shares kept for the live class: of the bucket's burst (headroom: it costs background no rate)
    # and of the daily cap (a real share: background stops at (1 - it) * per_day).
    reserve_fraction: float = 0.4
    daily_reserve_fraction: float = 0.4

    def __post_init__(self) -> None:
        for name in ("reserve_fraction", "daily_reserve_fraction"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(f"{name} must be in [0, 1), not {value!r}")

    @property
    def unlimited(self) -> bool:
        return self.per_second <= 0 and self.per_day <= 0

    def reserve(self, priority: Priority) -> tuple[float, int]:
        """(tokens, requests of the day) a caller of this class must leave unspent."""
        if priority is Priority.LIVE:
            return 0.0, 0
        return max(1.0, self.burst) * self.reserve_fraction, int(self.per_day * self.daily_reserve_fraction)


class _LocalBucket:
    """The same rules in one process: the fallback while Redis is away, and for tests without it."""

    def __init__(self, limits: BudgetLimits, clock: Clock = time.monotonic) -> None:
        self._limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = max(1.0, limits.burst)
        self._at = clock()
        self._suspended_until = 0.0
        self._day = -1
        self._used = 0

    def acquire(self, priority: Priority = Priority.LIVE) -> float:
        """0 when granted, else seconds to wait."""
        limits = self._limits
        keep, keep_day = limits.reserve(priority)
        with self._lock:
            now = self._clock()
            if self._suspended_until > now:
                return self._suspended_until - now
            wall_ms = time.time() * 1000
            day = int(wall_ms // DAY_MS)
            if day != self._day:
                self._day, self._used = day, 0
            if limits.per_day > 0 and self._used + keep_day >= limits.per_day:
                return ((day + 1) * DAY_MS - wall_ms) / 1000
            if limits.per_second > 0:
                burst = max(1.0, limits.burst)
                self._tokens = min(burst, self._tokens + (now - self._at) * limits.per_second)
                self._at = now
                if self._tokens < 1 + keep:
                    return (1 + keep - self._tokens) / limits.per_second
                self._tokens -= 1
            self._used += 1
            return 0.0

    def suspend(self, seconds: float) -> None:
        with self._lock:
            self._suspended_until = max(self._suspended_until, self._clock() + seconds)


class _SuspensionWatch:
    """This process's mirror of the shared suspension, kept by a subscription to the channel the
    suspend script publishes on (a daemon thread). Trusted only while it hears from Redis: the
    subscription confirmed, then the state read, then a pong at least every second."""

    def __init__(self, client: redis.Redis, key: str, remaining: Any) -> None:
        self._client = client
        self._key = key
        self._remaining = remaining
        self._lock = threading.Lock()
        self._until = 0.0  # monotonic end of the newest suspension heard of
        self._heard_at: float | None = None  # monotonic; None while not subscribed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="budget-watch", daemon=True)
        self._thread.start()

    def suspended_for(self) -> float | None:
        """Seconds the shared suspension lasts (0: none); None when the mirror is not trusted."""
        now = time.monotonic()
        with self._lock:
            heard, until = self._heard_at, self._until
        if heard is None or now - heard > 3 * WATCH_PING_SECONDS:
            return None
        return max(0.0, until - now)

    def extend(self, seconds: float) -> None:
        with self._lock:
            self._until = max(self._until, time.monotonic() + seconds)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2 * WATCH_PING_SECONDS)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._watch()
            except (redis.RedisError, OSError, ValueError) as exc:
                log.debug("request budget: suspension watch lost (%s); asking Redis per request", exc)
            with self._lock:
                self._heard_at = None
            self._stop.wait(REDIS_RETRY_SECONDS)

    def _watch(self) -> None:
        pubsub = self._client.pubsub()
        try:
            pubsub.subscribe(self._key)
            deadline = time.monotonic() + 5.0
            while (message := pubsub.get_message(timeout=0.5)) is None or message["type"] != "subscribe":
                if time.monotonic() > deadline:
                    raise redis.TimeoutError("no subscription confirmed")
            # Subscribed first, then read: a suspension published in between is in the channel.
            self.extend(int(self._remaining(keys=[self._key])) / 1000)
            pinged = time.monotonic()
            self._heard(pinged)
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=WATCH_PING_SECONDS / 2)
                now = time.monotonic()
                if message is not None:
                    if message["type"] == "message":
                        self.extend(int(message["data"]) / 1000)
                    self._heard(now)
                if now - pinged >= WATCH_PING_SECONDS:
                    pubsub.ping()
                    pinged = now
        finally:
            pubsub.close()

    def _heard(self, at: float) -> None:
        with self._lock:
            self._heard_at = at


class RequestBudget:
    """`acquire()` before every request; `suspend(s)` when the node says "suspended for s".

    Thread-safe; one per process (it holds a Redis connection pool)."""

    def __init__(
        self,
        limits: BudgetLimits,
        client: redis.Redis | None,
        *,
        name: str = "tron",
        max_wait: float = 30.0,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.limits = limits
        # The waits, the local limiter and the retry of a Redis that failed; what the processes
        # share is decided on Redis's clock.
        self._clock = clock
        self._sleep = sleep
        self.max_wait = max_wait
        self._client = client
        self._keys = [f"budget:{name}:bucket", f"budget:{name}:suspended", f"budget:{name}:day"]
        self._acquire_script = client.register_script(_ACQUIRE) if client is not None else None
        self._suspend_script = client.register_script(_SUSPEND) if client is not None else None
        # Only the suspension to share (no quota): a mirror answers instead of a round trip each.
        self._watch = (
            _SuspensionWatch(client, self._keys[1], client.register_script(_REMAINING))
            if client is not None and limits.unlimited
            else None
        )
        self._local = _LocalBucket(limits, clock)
        self._degraded_since: float | None = None
        self._lock = threading.Lock()
        self.waited = 0.0  # seconds spent waiting for the budget, for progress lines and tests

    def acquire(self, priority: Priority) -> None:
        """Wait for one request's worth of budget, as a caller of class `priority` (no default:
        every caller says which it is); BudgetExhausted past `max_wait`."""
        deadline = self._clock() + self.max_wait
        while True:
            verdict, wait = self._try(priority)
            if verdict == 0:
                return
            if self._clock() + wait > deadline:
                why = {
                    1: "suspended by the node",
                    2: f"the daily request budget ({priority.value} share) is used up",
                }.get(verdict, "busy")
                raise BudgetExhausted(f"request budget: {why} for {wait:.0f}s more", retry_after=wait)
            # Jitter: waiters of several processes must not all come back in the same millisecond.
            pause = jittered(min(wait, MAX_SLEEP), (1.0, 1.2))
            self.waited += pause
            self._sleep(pause)

    @property
    def mirrored(self) -> bool:
        """True while requests ask this process's mirror of the suspension, not Redis."""
        return self._watch is not None and self._watch.suspended_for() is not None

    def suspend(self, seconds: float) -> None:
        """Every process waits `seconds` from now before its next request (never shortens one)."""
        self._local.suspend(seconds)
        if self._watch is not None:
            self._watch.extend(seconds)
        if self._suspend_script is None or self._use_local():
            return
        try:
            self._suspend_script(keys=[self._keys[1]], args=[int(seconds * 1000)])
        except redis.RedisError as exc:
            self._degrade(exc)

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
        if self._client is not None:
            self._client.close()

    # -- internals -----------------------------------------------------------------------------

    def _try(self, priority: Priority) -> tuple[int, float]:
        if self._watch is not None:
            # No quota (so no reserve to keep either): only a suspension can hold a caller.
            remaining = self._watch.suspended_for()
            if remaining is not None:
                return (0, 0.0) if remaining <= 0 else (1, remaining)
        if self._acquire_script is None or self._use_local():
            wait = self._local.acquire(priority)
            return (0, 0.0) if wait <= 0 else (3, wait)
        keep, keep_day = self.limits.reserve(priority)
        limits = self.limits
        try:
            verdict, wait_ms = self._acquire_script(
                keys=self._keys, args=[limits.per_second, limits.burst, limits.per_day, keep, keep_day]
            )
        except redis.RedisError as exc:
            self._degrade(exc)
            wait = self._local.acquire(priority)
            return (0, 0.0) if wait <= 0 else (3, wait)
        self._recovered()
        return int(verdict), int(wait_ms) / 1000

    def _use_local(self) -> bool:
        with self._lock:
            since = self._degraded_since
        return since is not None and self._clock() - since < REDIS_RETRY_SECONDS

    def _degrade(self, exc: Exception) -> None:
        with self._lock:
            first = self._degraded_since is None
            self._degraded_since = self._clock()
        if first:
            log.warning(
                "request budget: Redis unreachable (%s); limiting this process alone at %g/s until it answers",
                exc.__class__.__name__,
                self.limits.per_second,
            )

    def _recovered(self) -> None:
        if self._degraded_since is None:
            return
        with self._lock:
            was, self._degraded_since = self._degraded_since, None
        if was is not None:
            log.warning("request budget: Redis answers again; the budget is shared again")


def create_budget(
    url: str,
    limits: BudgetLimits,
    *,
    name: str = "tron",
    max_wait: float = 30.0,
    clock: Clock = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> RequestBudget:
    """The process's budget on the Redis at `url` ("" = this process alone); `max_wait`: seconds
    `acquire()` may wait before BudgetExhausted (0: never wait, e.g. while a client waits)."""
    if not url:
        return RequestBudget(limits, None, name=name, max_wait=max_wait, clock=clock, sleep=sleep)
    # Short timeouts: a hung Redis must cost the listener a fraction of a second, then the local limiter.
    client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    return RequestBudget(limits, client, name=name, max_wait=max_wait, clock=clock, sleep=sleep)
