"""Pool account lookup by id, address or the platform's external id, remembered in-process.

A cache hit must cost one Redis call, so resolving `pool_account_id` cannot query PostgreSQL on
every request. An account's (id, address) never change, so an account found by either is
remembered for the life of the process; an unknown key for a second only (a short negative cache
that still lets a newly added account appear almost at once). Both bounded, by cachetools' LRU and
TTL caches.

External ids can change (`ledger accounts import --replace` moves one to another account), so an
external id's account is remembered for `external_ttl` seconds only (one PostgreSQL query per id
per process per `external_ttl`): a change reaches every web process within that time. While
PostgreSQL is unreachable an expired mapping is still used, so cached pages keep being served.
For the same reason, the `external_id` of an account found by id or address may be old: views read
external ids through `resolve_external` only.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import psycopg
import redis
from cachetools import LRUCache, TTLCache
from psycopg_pool import ConnectionPool, PoolTimeout

from ledger.clocks import Clock
from ledger.store.accounts import PoolAccount, find_account, find_by_external_id, parse_account_key
from web.pg import read_connection

EXTERNAL_TTL = 5.0


class AccountDirectory:
    def __init__(
        self,
        pool: ConnectionPool,
        *,
        negative_ttl: float = 1.0,
        external_ttl: float = EXTERNAL_TTL,
        max_entries: int = 10_000,
        clock: Clock = time.monotonic,
    ) -> None:
        self._pool = pool
        self._clock = clock
        # Keyed by id and by address. Known accounts never change, so LRU only bounds memory;
        # unknown keys (typos, scans) expire after `negative_ttl`.
        self._known: LRUCache[int | str, PoolAccount] = LRUCache(maxsize=max_entries)
        self._unknown: TTLCache[int | str, bool] = TTLCache(maxsize=max_entries, ttl=negative_ttl, timer=clock)
        # external id -> (expiry on `clock`, account or None). Not a TTLCache: an expired entry is
        # still wanted when PostgreSQL cannot be asked again.
        self._external: LRUCache[str, tuple[float, PoolAccount | None]] = LRUCache(maxsize=max_entries)
        self._negative_ttl = negative_ttl
        self._external_ttl = external_ttl
        self._lock = threading.Lock()  # cachetools caches are not thread-safe

    def resolve(self, key: str) -> PoolAccount | None:
        """The account for an id or address (hex or base58); None if not tracked.

        Raises AccountKeyError when `key` is neither.
        """
        normal = parse_account_key(key)
        with self._lock:
            account = self._known.get(normal)
            if account is not None or normal in self._unknown:
                return account
        with read_connection(self._pool) as conn:
            account = find_account(conn, normal)
        with self._lock:
            if account is None:
                self._unknown[normal] = True
            else:
                self._known[account.id] = account
                self._known[account.address] = account
                self._unknown.pop(normal, None)
        return account

    def resolve_external(self, external_id: str) -> PoolAccount | None:
        """The account bound to the platform's `external_id` (already validated); None if none is.

        At most `external_ttl` seconds old; older while PostgreSQL is unreachable (then the last
        known account is returned, and an id never seen raises the database error).
        """
        now = self._clock()
        with self._lock:
            entry = self._external.get(external_id)
        if entry is not None and entry[0] > now:
            return entry[1]
        try:
            with read_connection(self._pool) as conn:
                account = find_by_external_id(conn, external_id)
        except (psycopg.OperationalError, PoolTimeout):
            if entry is not None and entry[1] is not None:
                return entry[1]
            raise
        ttl = self._external_ttl if account is not None else self._negative_ttl
        with self._lock:
            self._external[external_id] = (now + ttl, account)
        return account


# -- the directory published for a PostgreSQL outage --------------------------------------------------
#
# The fallback (web/paths.py) answers from TronGrid while PostgreSQL is away, for pool accounts only:
# for any other address it would spend the operator's TronGrid budget for whoever asks. A process
# that never resolved an account before the outage (a fresh one, or an account not asked for yet)
# learns from this copy whether a key names a pool account: every pool account by id, address and
# external id, in a hash on the broker Redis (REDIS_URL, up in that case, unlike the cache Redis),
# written by every web process every PUBLISH_SECONDS when it differs.

PUBLISHED = "ledger:pool-directory"
PUBLISH_SECONDS = 60.0
_CHUNK = 5_000


def publish_directory(pool: ConnectionPool, client: redis.Redis, last: int | None = None) -> int | None:
    """Write every pool account to the published hash unless unchanged since `last` (the value this
    returned the time before); returns the directory's fingerprint."""
    with read_connection(pool, timeout=1.0) as conn:
        rows = conn.execute("SELECT id, address, external_id FROM pool_accounts ORDER BY id").fetchall()
    fingerprint = hash(tuple(rows))
    if fingerprint == last and client.exists(PUBLISHED):
        return fingerprint
    staging = f"{PUBLISHED}:new:{os.getpid()}"
    pipe = client.pipeline(transaction=False)
    pipe.delete(staging)
    for start in range(0, len(rows), _CHUNK):
        mapping: dict[Any, Any] = {}  # redis-py types its keys and values wider than str
        for account_id, address, external_id in rows[start : start + _CHUNK]:
            value = f"{account_id} {address}"
            mapping[f"id:{account_id}"] = mapping[f"address:{address}"] = value
            if external_id is not None:
                mapping[f"external:{external_id}"] = value
        pipe.hset(staging, mapping=mapping)
    if rows:
        pipe.rename(staging, PUBLISHED)
        pipe.delete(f"{PUBLISHED}:empty")
    else:
        pipe.delete(PUBLISHED)
        pipe.set(f"{PUBLISHED}:empty", 1)
    pipe.execute()
    return fingerprint


class NotPublished(Exception):
    """The published directory cannot be read (never written, or its Redis is away)."""


def published_address(client: redis.Redis, key: str, *, external: bool = False) -> str | None:
    """The address of the pool account a key names (an id or address; with `external`, an external
    id) according to the published directory; None if it names none. NotPublished when that cannot
    be told. AccountKeyError when `key` is neither an id nor an address."""
    try:
        if external:
            field = f"external:{key.strip()}"
        else:
            normal = parse_account_key(key)
            field = f"id:{normal}" if isinstance(normal, int) else f"address:{normal}"
        pipe = client.pipeline(transaction=False)
        pipe.hget(PUBLISHED, field)
        pipe.exists(PUBLISHED, f"{PUBLISHED}:empty")
        value, published = pipe.execute()
    except redis.RedisError as exc:
        raise NotPublished(type(exc).__name__) from None
    if value is None:
        if not published:
            raise NotPublished("no directory has been published")
        return None
    return str(value.decode().split(" ", 1)[1])
