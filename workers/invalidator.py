"""Cache invalidation that a dead or hung cache Redis cannot slow down.

Invalidation is best effort on the cache, never on the ledger: the rows are committed before it
runs. Before this, a hung cache made every message wait a 2-s socket timeout and then retried it
(ingest fell from ~700 to 4 operations/s). Now one short attempt fails, the breaker opens, the
accounts of every later message are only remembered, and one thread retries the bump of the
remembered accounts every `probe_interval`: when it succeeds the cache is up again, nothing skipped
during the outage is left stale, and the breaker closes. A page cached before the outage can be
served for at most `probe_interval` after the cache returns.

What is remembered lives in this process: a worker killed during a cache outage loses its list,
and those accounts' pages are then bounded by their TTLs (CACHE_TTL_*) instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

import redis

from ledger.store.cache import invalidate_accounts

log = logging.getLogger(__name__)


class Invalidator:
    def __init__(self, client: redis.Redis, *, probe_interval: float = 0.5) -> None:
        self.client = client
        self.probe_interval = probe_interval
        self._lock = threading.Lock()
        self._pending: set[str] = set()
        self._down = False
        self._since = 0.0
        self._stop = threading.Event()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def invalidate(self, addresses: Iterable[str]) -> None:
        accounts = set(addresses)
        if not accounts:
            return
        with self._lock:
            if self._down:
                self._pending.update(accounts)
                return
        try:
            invalidate_accounts(self.client, accounts)
        except redis.RedisError as exc:
            self._open(accounts, exc)

    def close(self) -> None:
        """Stop probing; a last attempt to bump what is still pending."""
        self._stop.set()
        with self._lock:
            down = self._down
        if down:
            self._flush()

    def _open(self, accounts: set[str], exc: redis.RedisError) -> None:
        with self._lock:
            self._pending.update(accounts)
            if self._down:
                return
            self._down = True
            self._since = time.monotonic()
        log.warning(
            "cache unavailable (%s: %s); invalidations are remembered and made when it answers",
            type(exc).__name__,
            exc,
        )
        threading.Thread(target=self._probe, name="invalidator-probe", daemon=True).start()

    def _probe(self) -> None:
        while not self._stop.wait(self.probe_interval):
            if self._flush():
                return

    def _flush(self) -> bool:
        """Bump every pending account; True (breaker closed) once nothing is pending."""
        with self._lock:
            batch = set(self._pending)
        try:
            if batch:
                invalidate_accounts(self.client, batch)
            else:
                self.client.ping()
        except redis.RedisError:
            return False
        with self._lock:
            self._pending -= batch
            if self._pending:
                return False  # more came in meanwhile: the next round takes them
            self._down = False
        log.warning(
            "cache answering again after %.1f s; %d skipped invalidation(s) made",
            time.monotonic() - self._since,
            len(batch),
        )
        return True
