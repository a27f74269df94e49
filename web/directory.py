"""Pool account lookup by id or address, remembered in-process.

A cache hit must cost one Redis call, so resolving `pool_account_id` cannot query PostgreSQL on
every request. Accounts are only ever added and their (id, address) never change, so a known
account is remembered for the life of the process; an unknown one for a second only (a short
negative cache that still lets a newly added account appear almost at once). Both bounded, by
cachetools' LRU and TTL caches.
"""

from __future__ import annotations

import threading

from cachetools import LRUCache, TTLCache
from psycopg_pool import ConnectionPool

from ledger.accounts import PoolAccount, find_account, parse_account_key
from web.pg import read_connection


class AccountDirectory:
    def __init__(self, pool: ConnectionPool, *, negative_ttl: float = 1.0, max_entries: int = 10_000) -> None:
        self._pool = pool
        # Keyed by id and by address. Known accounts never change, so LRU only bounds memory;
        # unknown keys (typos, scans) expire after `negative_ttl`.
        self._known: LRUCache[int | str, PoolAccount] = LRUCache(maxsize=max_entries)
        self._unknown: TTLCache[int | str, bool] = TTLCache(maxsize=max_entries, ttl=negative_ttl)
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
