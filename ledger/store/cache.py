"""Redis read-through cache of API responses, invalidated by per-account generation numbers.

Shared by the workers (`invalidate_accounts`, after they commit) and the web app (`PageCache`).

Key layout (in the cache's own Redis DB, `Settings.cache_redis_url`):

- `ledger:ver:<address>` - the account's generation. Never expires (it is a few bytes per
  account); a missing key is seeded with the current time in ms, so a lost key (FLUSHDB, restart
  without persistence, eviction) can never fall back to a number old pages were stored under.
- `ledger:page:<address>:<generation>:<suffix>` - final JSON bytes of one response, with a TTL.
- `ledger:lock:<page key>` - the single-flight fill lock of one page (`SET NX PX`).
- `ledger:stats` - hash of hits, misses and local (in-process micro-cache) hits across every web
  process since the hash was created; `ledger:stats:m:<minute>` - the same per minute of Redis'
  clock, kept two hours, for the monitor's hit rate over a recent window (web/monitor.py).

Invalidation is one INCR per account whatever the number of cached pages (no KEYS/SCAN: a SCAN-based
invalidation is O(keyspace), about 1.1 s at 1 M keys on this kind of machine, against 0.08 ms for INCR); old pages are
never read again and expire by TTL. Page keys are built inside the scripts, so this layout needs a
single Redis (or a primary with replicas), not Redis Cluster.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.connection import Connection
from redis.exceptions import NoScriptError
from redis.retry import Retry

from ledger.clocks import Clock

log = logging.getLogger(__name__)

VERSION_KEY = "ledger:ver:{address}"
PAGE_PREFIX = "ledger:page:"
LOCK_PREFIX = "ledger:lock:"
STATS_KEY = "ledger:stats"

# Current time in ms from Redis itself (one clock for every process), as an integer string.
_NOW_MS = "local t = redis.call('TIME') local now = string.format('%.0f', t[1] * 1000 + math.floor(t[2] / 1000))"

# Bump every given account's generation: seed a missing key with now (ms), then INCR.
_BUMP = (
    _NOW_MS
    + """
for _, key in ipairs(KEYS) do
    redis.call('SET', key, now, 'NX')
    redis.call('INCR', key)
end
return #KEYS
"""
)

# The read path in one round trip. KEYS[1] = version key; ARGV = page prefix, page suffix, lock
# token, lock ms, stats key, lock prefix, local hits since this process's last read (counted here
# rather than with a round trip of their own). Returns {generation, page or false, 1 if this caller holds the fill
# lock}. The generation is read here, before the caller queries PostgreSQL, and the page is later
# written under it: an invalidation in between moves readers to a new generation, so a page built
# from pre-invalidation rows is never served.
_READ = (
    """
local clock = redis.call('TIME')
local minute = ARGV[5] .. ':m:' .. math.floor(clock[1] / 60)
if ARGV[7] ~= '0' then
    redis.call('HINCRBY', ARGV[5], 'local_hits', ARGV[7])
    redis.call('HINCRBY', minute, 'local_hits', ARGV[7])
end
redis.call('EXPIRE', minute, 7200)
local v = redis.call('GET', KEYS[1])
if not v then
"""
    + _NOW_MS
    + """
    redis.call('SET', KEYS[1], now)
    v = now
end
local page_key = ARGV[1] .. v .. ':' .. ARGV[2]
local body = redis.call('GET', page_key)
if body then
    redis.call('HINCRBY', ARGV[5], 'hits', 1)
    redis.call('HINCRBY', minute, 'hits', 1)
    return {v, body, 0}
end
redis.call('HINCRBY', ARGV[5], 'misses', 1)
redis.call('HINCRBY', minute, 'misses', 1)
local locked = redis.call('SET', ARGV[6] .. page_key, ARGV[3], 'NX', 'PX', ARGV[4])
return {v, false, locked and 1 or 0}
"""
)

# Store a filled page and release its lock if this filler still holds it (the lock may have
# expired and been taken by another filler, whose lock must not be dropped).
_STORE = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if redis.call('GET', KEYS[2]) == ARGV[3] then
    redis.call('DEL', KEYS[2])
end
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('DEL', KEYS[1])
end
return 1
"""

_READ_SHA = hashlib.sha1(_READ.encode()).hexdigest()
_STORE_SHA = hashlib.sha1(_STORE.encode()).hexdigest()

# Errors that mean "Redis is not there" (refused, reset, closed): they open the breaker at once.
_DOWN = (redis.ConnectionError, OSError)
# Errors that may only mean "Redis answered late": they open it when nothing else comes back.
_LATE = (redis.TimeoutError, TimeoutError)


def create_cache_client(url: str, socket_timeout: float) -> redis.Redis:
    """A client for the cache: short timeouts, no client-side retries (a miss is cheaper than a wait)."""
    return redis.Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


def invalidate_accounts(client: redis.Redis, addresses: Iterable[str]) -> None:
    """Make every cached page of these accounts stale: O(1) per account, one round trip in all.

    Call it after the transaction that changed their rows has committed. Raises redis errors, so a
    worker retries the message (its upsert is idempotent) rather than leave stale pages behind.
    """
    keys = [VERSION_KEY.format(address=a) for a in sorted(set(addresses))]
    if keys:
        client.eval(_BUMP, len(keys), *keys)


LOCAL_PAGES_MAX = 4096
# Expired micro-cache entries are dropped once this many are held. Live entries are only the pages
# read in the last `local_ttl` (0.25 s), a few hundred at most; without the sweep, every page ever
# read stayed until the 4,096 cap, and the 30-minute soak's web processes grew 13 % on such bodies.
LOCAL_PAGES_SWEEP = 256


@dataclass(frozen=True)
class Fill:
    """What a loader built on a miss: the body to answer with now and the one to store."""

    response: bytes  # returned to this caller (says source "database")
    stored: bytes | None  # cached for later callers (says source "cache"); None = do not cache
    ttl: int  # seconds


@dataclass
class CacheCounters:
    """This process's view; Redis holds hits/misses across processes in `ledger:stats`."""

    # hits + misses = lookups that reached Redis (what `ledger:stats` counts across processes)
    hits: int = 0  # the page was there
    misses: int = 0  # it was not: filled, or coalesced, or a fallback
    errors: int = 0  # Redis failed; answered from PostgreSQL
    bypassed: int = 0  # Redis skipped while the circuit breaker was open
    local_hits: int = 0  # served from this process's micro-cache, no Redis call at all
    fills: int = 0  # misses this process queried and stored as the single-flight filler
    coalesced: int = 0  # misses answered from Redis after waiting for another caller's fill
    fallbacks: int = 0  # misses whose wait timed out and went to PostgreSQL


class Breaker:
    """When a process stops asking the cache Redis, and for how long.

    A refused or dropped connection means Redis is down: the breaker opens at once. A timeout alone
    does not: on a host whose CPUs are all busy, Redis (or the reading process) is off the CPU for
    tens of ms now and then, one read in such a stall times out and the next one succeeds. Opened by
    that, the breaker sent every read to PostgreSQL, the most expensive path, exactly when the host
    had the least to spare. So timeouts open it only when nothing but timeouts came back for
    `hung_seconds` (and at least `hung_after` of them): a hung Redis (stopped, swapping, stuck in a
    long command), not a slow one. Once opened, Redis is suspect until a call succeeds: the first
    failure after the pause opens the breaker again at once, so a cache that stays hung costs one
    timeout a pause, not `hung_seconds` of them.
    """

    def __init__(
        self, open_seconds: float, hung_seconds: float, hung_after: int, clock: Clock = time.monotonic
    ) -> None:
        self.open_seconds = open_seconds
        self.hung_seconds = hung_seconds
        self.hung_after = hung_after
        self._clock = clock
        self._lock = threading.Lock()
        self._open_until = 0.0
        self._suspect = False  # opened, and no call has succeeded since
        self._timeouts = 0  # timeouts since the last success
        self._first_timeout = 0.0  # when the first of them came

    def is_open(self, now: float) -> bool:
        return now < self._open_until

    def succeeded(self) -> None:
        if self._timeouts or self._suspect:  # read unlocked: the hit path stays free of the lock
            with self._lock:
                self._timeouts = 0
                self._suspect = False

    def failed(self, exc: BaseException) -> bool:
        """Count a failed call; True when it opened the breaker (it was closed)."""
        now = self._clock()
        with self._lock:
            if isinstance(exc, _LATE) and not self._suspect:
                if self._timeouts == 0:
                    self._first_timeout = now
                self._timeouts += 1
                if self._timeouts < self.hung_after or now - self._first_timeout < self.hung_seconds:
                    return False
            elif not isinstance(exc, _DOWN + _LATE):
                return False
            was_closed = now >= self._open_until
            self._open_until = now + self.open_seconds
            self._suspect = True
            return was_closed


class PageCache:
    """Read-through cache of final response bytes, one Redis round trip per hit.

    Thread-safe. Each thread keeps its own Redis connection and talks to it directly: redis-py's
    pooled `execute_command` costs about twice the CPU of the call itself, and on a cache hit that
    call is most of the request's work.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        lock_ms: int = 2_000,
        wait_seconds: float = 0.25,
        poll_seconds: float = 0.005,
        breaker_seconds: float = 1.5,
        hung_seconds: float = 0.5,
        hung_after: int = 3,
        local_ttl: float = 0.0,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.client = client
        self.clock = clock  # the breaker's pause, the in-process pages' expiry, a waiter's patience
        self._sleep = sleep  # a waiter's polls for another caller's fill
        # Releases are rare (a failed fill): redis-py's Script (EVALSHA, reloading the script after
        # a Redis restart) on the pooled client is plenty. A fill, once per miss, goes on this
        # thread's connection as a read does (`_script`): a route whose requests are mostly misses
        # (an uncached summary page) pays no pooled checkout and its readiness check per miss.
        self._release_lock = client.register_script(_RELEASE)
        # A page just read from Redis is kept in-process for `local_ttl` seconds: a hot page
        # polled by many dashboards then costs no round trip at all. The price is that an
        # invalidation reaches this process up to `local_ttl` late (0 turns it off).
        self.local_ttl = local_ttl
        self._local_pages: dict[tuple[str, str], tuple[float, bytes]] = {}
        self.lock_ms = str(lock_ms)
        self.wait_seconds = wait_seconds
        self.poll_seconds = poll_seconds
        self.breaker_seconds = breaker_seconds
        self.hung_seconds = hung_seconds
        self._breaker = Breaker(breaker_seconds, hung_seconds, hung_after, clock)
        self.counters = CacheCounters()
        self._local_unreported = 0  # local hits not yet added to Redis' counts
        self._counter_lock = threading.Lock()
        self._local = threading.local()
        self._tokens = itertools.count()
        self._token_prefix = f"{os.getpid()}-{id(self):x}-"
        # Connections of all threads, weakly: a thread that ends takes its connection with it.
        self._connections: weakref.WeakSet[Connection] = weakref.WeakSet()

    # -- public -------------------------------------------------------------------------------

    def fetch(self, address: str, suffix: str, load: Callable[[], Fill]) -> tuple[bytes, bool]:
        """The page `suffix` of `address`: (body, True) from Redis, or (body, False) from `load`.

        Never raises a Redis error: Redis down or late is a miss answered by `load`, and once it is
        down or hung (`Breaker`) Redis is skipped for `breaker_seconds` so requests do not each
        wait a timeout.
        """
        now = self.clock()
        if self.local_ttl:
            entry = self._local_pages.get((address, suffix))
            if entry is not None and entry[0] > now:
                self.note_local_hit()
                return entry[1], True
        if self._breaker.is_open(now):
            self._count("bypassed")
            return load().response, False
        token = self._token_prefix + str(next(self._tokens))
        version_key = VERSION_KEY.format(address=address)
        with self._counter_lock:
            local_hits, self._local_unreported = self._local_unreported, 0
        try:
            version, body, locked = self._read(
                [version_key],
                [PAGE_PREFIX + address + ":", suffix, token, self.lock_ms, STATS_KEY, LOCK_PREFIX, str(local_hits)],
            )
        except redis.RedisError as exc:
            with self._counter_lock:
                self._local_unreported += local_hits  # reported with a later read
            self._failed(exc)
            return load().response, False
        if body is not None:
            self._count("hits")
            if self.local_ttl:
                self._remember(address, suffix, body, now)
            return body, True
        self._count("misses")
        page_key = f"{PAGE_PREFIX}{address}:{version.decode()}:{suffix}"
        if locked:
            return self._fill(page_key, token, load), False
        return self._wait_or_load(page_key, load)

    def note_local_hit(self) -> None:
        """Count a page answered from this process's memory (also by web.hot, in front of the views)."""
        with self._counter_lock:
            self.counters.local_hits += 1
            self._local_unreported += 1

    def local_expiry(self, address: str, suffix: str) -> float | None:
        """Until when (`self.clock`) this process keeps the page in memory; None if it does not."""
        entry = self._local_pages.get((address, suffix))
        return entry[0] if entry is not None and entry[0] > self.clock() else None

    def _remember(self, address: str, suffix: str, body: bytes, now: float) -> None:
        pages = self._local_pages
        if len(pages) >= LOCAL_PAGES_SWEEP:
            # A new dict swapped in whole: other request threads read the old one meanwhile, safely.
            pages = {key: entry for key, entry in list(pages.items()) if entry[0] > now}
            if len(pages) >= LOCAL_PAGES_MAX:
                pages = {}  # more live pages than the cap: start again; hot pages come back at once
            self._local_pages = pages
        pages[(address, suffix)] = (now + self.local_ttl, body)

    def stats(self) -> dict[str, int | None]:
        """Hits, local hits and misses of all processes from Redis (None when Redis cannot be read)."""
        try:
            raw = self._call("HMGET", STATS_KEY, "hits", "misses", "local_hits")
        except redis.RedisError as exc:
            self._failed(exc)
            return {"hits": None, "misses": None, "local_hits": None}
        assert isinstance(raw, list)
        return {"hits": int(raw[0] or 0), "misses": int(raw[1] or 0), "local_hits": int(raw[2] or 0)}

    def close(self) -> None:
        for conn in list(self._connections):
            conn.disconnect()
        self.client.close()

    # -- miss path ------------------------------------------------------------------------------

    def _fill(self, page_key: str, token: str, load: Callable[[], Fill]) -> bytes:
        try:
            fill = load()
        except BaseException:
            self._release(page_key, token)  # let a waiter's retry or the next request fill it
            raise
        self._count("fills")
        if fill.stored is not None:
            try:
                self._script(
                    _STORE_SHA, _STORE, [page_key, LOCK_PREFIX + page_key], [fill.stored, str(max(1, fill.ttl)), token]
                )
            except redis.RedisError as exc:
                self._failed(exc)
        else:
            self._release(page_key, token)
        return fill.response

    def _wait_or_load(self, page_key: str, load: Callable[[], Fill]) -> tuple[bytes, bool]:
        """Another caller is filling this page: poll for it briefly, then give up and query."""
        deadline = self.clock() + self.wait_seconds
        while self.clock() < deadline:
            self._sleep(self.poll_seconds)
            try:
                body = self._call("GET", page_key)
            except redis.RedisError as exc:
                self._failed(exc)
                break
            if isinstance(body, bytes):
                self._count("coalesced")
                return body, True
        self._count("fallbacks")
        return load().response, False

    def _release(self, page_key: str, token: str) -> None:
        try:
            self._release_lock(keys=[LOCK_PREFIX + page_key], args=[token])
        except redis.RedisError as exc:
            self._failed(exc)

    # -- plumbing -------------------------------------------------------------------------------

    def _connection(self) -> Connection:
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            pool = self.client.connection_pool  # only for its settings (host, db, timeouts, TLS)
            conn = pool.connection_class(**pool.connection_kwargs)
            self._local.conn = conn
            self._connections.add(conn)
        return conn

    def _call(self, *args: object) -> object:
        conn = self._connection()
        try:
            conn.send_command(*args)
            reply = conn.read_response()
        except redis.ResponseError:
            raise  # the connection is still in step with the server
        except BaseException:
            # A timeout can leave a reply in flight; never read it as the next command's reply.
            conn.disconnect()
            raise
        self._breaker.succeeded()
        return reply

    def _read(self, keys: list[str], args: list[object]) -> list[Any]:
        reply = self._script(_READ_SHA, _READ, keys, args)
        assert isinstance(reply, list)
        return reply

    def _script(self, sha: str, source: str, keys: list[str], args: list[object]) -> object:
        # On this thread's own connection (see the class docstring), so it cannot go through
        # redis-py's `Script`, which calls the pooled client. Same fallback as Script.
        try:
            return self._call("EVALSHA", sha, len(keys), *keys, *args)
        except NoScriptError:
            # First use after a Redis restart or SCRIPT FLUSH: EVAL loads it for next time.
            return self._call("EVAL", source, len(keys), *keys, *args)

    def _failed(self, exc: redis.RedisError) -> None:
        self._count("errors")
        if self._breaker.failed(exc):
            log.warning(
                "cache unavailable (%s: %s); using PostgreSQL only for %.1f s",
                type(exc).__name__,
                exc,
                self.breaker_seconds,
            )
        elif not isinstance(exc, _DOWN + _LATE):
            log.warning("cache error %s: %s", type(exc).__name__, exc)

    def _count(self, name: str) -> None:
        with self._counter_lock:
            setattr(self.counters, name, getattr(self.counters, name) + 1)


def read_cache_window(client: redis.Redis, minutes: int) -> dict[str, int]:
    """Hits, local hits and misses of every web process over the last `minutes` minutes (Redis' clock)."""
    now: Any = client.time()
    current = int(now[0]) // 60
    pipe = client.pipeline(transaction=False)
    for minute in range(current - minutes + 1, current + 1):
        pipe.hmget(f"{STATS_KEY}:m:{minute}", "hits", "local_hits", "misses")
    totals = {"hits": 0, "local_hits": 0, "misses": 0}
    for hits, local_hits, misses in pipe.execute():
        totals["hits"] += int(hits or 0)
        totals["local_hits"] += int(local_hits or 0)
        totals["misses"] += int(misses or 0)
    return totals
