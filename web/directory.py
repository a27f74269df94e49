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

import threading
import time

import psycopg
from cachetools import LRUCache, TTLCache
from psycopg_pool import ConnectionPool, PoolTimeout

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
    ) -> None:
        self._pool = pool
        # Keyed by id and by address. Known accounts never change, so LRU only bounds memory;
        # unknown keys (typos, scans) expire after `negative_ttl`.
        self._known: LRUCache[int | str, PoolAccount] = LRUCache(maxsize=max_entries)
        self._unknown: TTLCache[int | str, bool] = TTLCache(maxsize=max_entries, ttl=negative_ttl)
        # external id -> (monotonic expiry, account or None). Not a TTLCache: an expired entry is
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
        now = time.monotonic()
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
