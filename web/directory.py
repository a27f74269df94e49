"""Pool account lookup by id or address, remembered in-process.

A cache hit must cost one Redis call, so resolving `pool_account_id` cannot query PostgreSQL on
every request. Accounts are only ever added and their (id, address) never change, so a known
account is remembered for the life of the process; an unknown one for a second only (a short
negative cache that still lets a newly added account appear almost at once).
"""

from __future__ import annotations

import threading
import time

from psycopg_pool import ConnectionPool

from ledger.accounts import PoolAccount, find_account, parse_account_key
from web.pg import read_connection


class AccountDirectory:
    def __init__(self, pool: ConnectionPool, *, negative_ttl: float = 1.0, max_entries: int = 10_000) -> None:
        self._pool = pool
        self._negative_ttl = negative_ttl
        self._max_entries = max_entries
        self._known: dict[int | str, PoolAccount] = {}
        self._unknown: dict[int | str, float] = {}
        self._lock = threading.Lock()

    def resolve(self, key: str) -> PoolAccount | None:
        """The account for an id or address (hex or base58); None if not tracked.

        Raises AccountKeyError when `key` is neither.
        """
        normal = parse_account_key(key)
        account = self._known.get(normal)
        if account is not None:
            return account
        expires = self._unknown.get(normal)
        if expires is not None and time.monotonic() < expires:
            return None
        with read_connection(self._pool) as conn:
            account = find_account(conn, normal)
        with self._lock:
            if len(self._known) + len(self._unknown) >= self._max_entries:
                self._unknown.clear()  # unknown keys are the ones a scan can make numerous
            if account is None:
                self._unknown[normal] = time.monotonic() + self._negative_ttl
            else:
                self._known[account.id] = account
                self._known[account.address] = account
                self._unknown.pop(normal, None)
        return account
