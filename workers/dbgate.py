"""PostgreSQL down: the worker's threads wait for it, instead of spending retries on it.

Without it, each message that met a dead PostgreSQL would fail (after the pool's 5-s wait), use
up one of its retries and be retried with a growing backoff, so a long outage would dead-letter
messages and the workers would come back tens of seconds after PostgreSQL did. Instead the first
failure that looks like "the server is not there" closes the gate: one thread probes PostgreSQL with a
fresh connection every `probe_interval`, every worker thread waits at the gate before its next
message (`wait`, called by the middleware before Dramatiq's time limit starts), and the message
that met the failure waits in `call` and runs again when the gate opens. A retry is spent only by
a message that was already running when the outage began and found it still going on after
`budget` seconds (under the actor time limit); the next attempt then waits at the gate.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

log = logging.getLogger(__name__)

T = TypeVar("T")

# SQLSTATE classes that mean the server went away, not that the statement was wrong: 08
# (connection exception) and 57P01-57P03 (admin/crash shutdown, cannot connect now). Deadlocks and
# serialization failures are OperationalErrors too, but they are retried like any other error.
_GONE_STATES = ("08", "57P01", "57P02", "57P03")


def is_unavailable(exc: BaseException) -> bool:
    """True for the errors of a PostgreSQL that cannot be reached (not of a bad statement)."""
    if isinstance(exc, PoolTimeout):
        return True
    if isinstance(exc, psycopg.OperationalError):
        return exc.sqlstate is None or exc.sqlstate.startswith(_GONE_STATES)
    return False


class DbGate:
    def __init__(self, conninfo: str, pool: ConnectionPool | None = None, *, probe_interval: float = 0.25) -> None:
        self.conninfo = conninfo
        self.pool = pool
        self.probe_interval = probe_interval
        self._open = threading.Event()
        self._open.set()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._since = 0.0

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block while PostgreSQL is known to be down; False if `timeout` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._open.is_set() and not self._stopping.is_set():
            left = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if left <= 0:
                return False
            self._open.wait(left)
        return True

    def call(self, fn: Callable[[], T], *, budget: float) -> T:
        """Run `fn`; while it fails because PostgreSQL is away, wait for it (up to `budget` s) and rerun."""
        deadline = time.monotonic() + budget
        while True:
            try:
                return fn()
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                self.close(exc)
                if not self.wait(deadline - time.monotonic()) or self._stopping.is_set():
                    raise

    def close(self, exc: BaseException) -> None:
        """PostgreSQL looks down: hold the workers and probe until it answers."""
        with self._lock:
            if not self._open.is_set():
                return
            self._open.clear()
            self._since = time.monotonic()
        first_line = (str(exc).strip().splitlines() or [""])[0]
        log.warning("PostgreSQL unavailable (%s: %s); workers pause until it answers", type(exc).__name__, first_line)
        threading.Thread(target=self._probe, name="dbgate-probe", daemon=True).start()

    def stop(self) -> None:
        """Release the waiters (worker shutdown): they fail fast and their messages are retried."""
        self._stopping.set()

    def _probe(self) -> None:
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self.conninfo, connect_timeout=2, autocommit=True) as conn:
                    conn.execute("SELECT 1")
            except psycopg.Error:
                time.sleep(self.probe_interval)
                continue
            break
        if self.pool is not None:
            # The pooled connections died with the server: replace them now rather than fail one
            # message per dead connection.
            try:
                self.pool.check()
            except psycopg.Error as exc:  # pragma: no cover - the server went again at once
                log.warning("pool check after the outage failed: %s", exc)
        log.warning("PostgreSQL answering again after %.1f s; workers resume", time.monotonic() - self._since)
        self._open.set()
