"""One active process among several: a PostgreSQL session advisory lock plus a fencing term.

Used by the listener (lease "main"), backfills and the scheduler (lease "scheduler"). Any number
of processes may run for one lease name; the one holding the lease is active, the others are
standbys that try to take it about once a second. The lease is a session advisory lock
on a dedicated connection, so PostgreSQL releases it the moment the holder's connection closes
(process exit, even SIGKILL), and a standby takes over within a retry interval.

A lock alone cannot stop a holder that *believes* it is still active (a long GC-like stall, a
half-open connection): taking the lease therefore also bumps a fencing term in `listener_terms`
and stamps it on the checkpoint row, whose update only succeeds for the current term
(`PgStore.save_checkpoint` raises `CheckpointFenced` otherwise). An old holder can at worst
re-enqueue a batch (harmless: workers upsert by chain identity); it can never move the checkpoint.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

import psycopg

log = logging.getLogger(__name__)

# pg_try_advisory_lock(int, int): this namespace, then hashtext(name). Two names that collide
# would only exclude each other, which is the safe direction.
LOCK_NAMESPACE = 0x4C53544E  # "LSTN"

# Server-side keepalives on the lease connection: without them PostgreSQL keeps the session, and
# the lock, of a holder whose host vanished (no FIN/RST) for the OS default of about two hours.
# With them a partitioned holder's lock is dropped after about 5 + 3 * 2 = 11 s.
_SERVER_KEEPALIVE = "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3"


class CheckpointFenced(RuntimeError):
    """Another process holds a newer term: this one must stop writing."""


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Lease:
    """A named session advisory lock on its own connection, and the fencing term that goes with it.

    Not thread-safe: one thread at a time (the Leader hands it to its watchdog while active).
    """

    def __init__(self, url: str, name: str, holder: str | None = None) -> None:
        self.url = url
        self.name = name
        self.holder = holder or default_holder()
        self._conn: psycopg.Connection | None = None

    def _connect(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=5,
                application_name=f"lease {self.name}"[:63],
                options=_SERVER_KEEPALIVE + " -c statement_timeout=5000",
                # Client side: a dead network fails our checks within ~10 s instead of hanging.
                keepalives=1,
                keepalives_idle=5,
                keepalives_interval=2,
                keepalives_count=3,
                tcp_user_timeout=10_000,
            )
        return self._conn

    def try_acquire(self) -> bool:
        """Take the lock if it is free; never waits. psycopg.Error if PostgreSQL is unreachable."""
        conn = self._connect()
        row = conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", (LOCK_NAMESPACE, self.name)).fetchone()
        return bool(row and row[0])

    def bump_term(self) -> int:
        """Start a new term (call only while holding the lock) and fence the checkpoint with it."""
        conn = self._connect()
        with conn.transaction():
            # Start above both tables' terms: a checkpoint written before this table existed (or
            # by an old version) may carry a term of its own.
            row = conn.execute(
                "INSERT INTO listener_terms (name, term, holder) VALUES (%(name)s, 1 + greatest("
                "   coalesce((SELECT term FROM listener_terms WHERE name = %(name)s), 0),"
                "   coalesce((SELECT term FROM listener_checkpoint WHERE name = %(name)s), 0)), %(holder)s)"
                " ON CONFLICT (name) DO UPDATE SET term = EXCLUDED.term, holder = EXCLUDED.holder, acquired_at = now()"
                " RETURNING term",
                {"name": self.name, "holder": self.holder},
            ).fetchone()
            assert row is not None
            term = int(row[0])
            # No row yet (first start): nothing to stamp, and inventing a block number would
            # invent a checkpoint. The first save inserts the row with this term.
            conn.execute("UPDATE listener_checkpoint SET term = %s WHERE name = %s", (term, self.name))
        return term

    def check(self, term: int) -> str | None:
        """None while this connection still holds the lock and `term` is current; else why not."""
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            # A new connection would not hold the lock.
            return "lease connection closed"
        try:
            row = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
                "   AND granted AND classid = %s::int4::oid AND objid = hashtext(%s)::oid AND objsubid = 2),"
                " (SELECT term FROM listener_terms WHERE name = %s)",
                (LOCK_NAMESPACE, self.name, self.name),
            ).fetchone()
        except psycopg.Error as exc:
            # Any error on this connection means its session, and so the lock, may be gone.
            return f"lease connection lost ({exc.__class__.__name__}: {str(exc).strip()[:200]})"
        assert row is not None
        held, current = row
        if not held:
            return "advisory lock no longer held"
        if current != term:
            return f"term {term} superseded by term {current}"
        return None

    def holder_info(self) -> str:
        """Who took the lease last, for the standby's log line; best effort."""
        try:
            row = (
                self._connect()
                .execute("SELECT holder, term FROM listener_terms WHERE name = %s", (self.name,))
                .fetchone()
            )
        except psycopg.Error:
            return "unknown"
        return f"{row[0]}, term {row[1]}" if row else "nobody yet"

    def release(self) -> None:
        """Drop the lock by closing its connection (the next try_acquire reconnects)."""
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None


class FencedStore:
    """A store for one term: a `CheckpointFenced` from any of its calls ends the term.

    Everything is delegated, so methods the store gains later are fenced the same way.
    """

    def __init__(self, store: Any, on_fenced: Callable[[CheckpointFenced], None]) -> None:
        self._store = store
        self._on_fenced = on_fenced

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def fenced(*args: Any, **kwargs: Any) -> Any:
            try:
                return attr(*args, **kwargs)
            except CheckpointFenced as exc:
                self._on_fenced(exc)
                raise

        return fenced


class Leader:
    """Standby until the lease is taken, active (running `work`) while it is held, then standby again."""

    def __init__(
        self,
        lease: Lease,
        *,
        stop: threading.Event,
        wake: threading.Event | None = None,
        retry_seconds: float = 1.0,
        check_seconds: float = 1.0,
    ) -> None:
        self.lease = lease
        self.stop = stop
        # Set whenever a term ends, so a streamer idling on it notices at once.
        self.wake = wake
        self.retry_seconds = retry_seconds
        self.check_seconds = check_seconds
        self.term: int | None = None
        self.terms_lost = 0
        self._term_stop = threading.Event()
        self._lost: str | None = None
        self._lock = threading.Lock()

    def run(self, work: Callable[[int, threading.Event], None]) -> None:
        """Loop until `stop`: take the lease, run `work(term, term_stop)` until the term ends."""
        while not self.stop.is_set():
            if not self._wait_for_lease():
                return
            try:
                term = self.lease.bump_term()
            except psycopg.Error as exc:
                log.warning("took the lock but could not start a term: %s; retrying", exc)
                self.lease.release()
                self.stop.wait(self.retry_seconds)
                continue
            self._run_term(term, work)

    @property
    def active(self) -> bool:
        """True while a term runs (this process indexes), for the heartbeat."""
        return self.term is not None and not self._term_stop.is_set()

    def request_stop(self) -> None:
        """End the current term (if any) and the loop; safe from a signal handler."""
        self.stop.set()
        self._term_stop.set()
        if self.wake is not None:
            self.wake.set()

    def step_down(self, reason: str) -> None:
        """Stop being active (lease lost or fenced); the loop goes back to standby."""
        with self._lock:
            if self._term_stop.is_set():
                return
            self._lost = reason
            self._term_stop.set()
        if self.wake is not None:
            self.wake.set()
        log.error("LOST THE LEASE %s (term %s): %s; stopping as the active one", self.lease.name, self.term, reason)

    def fenced_store(self, store: Any) -> FencedStore:
        return FencedStore(store, lambda exc: self.step_down(f"checkpoint fenced: {exc}"))

    # -- internals -----------------------------------------------------------------------------

    def _wait_for_lease(self) -> bool:
        announced = False
        failures = 0
        while not self.stop.is_set():
            try:
                if self.lease.try_acquire():
                    return True
                failures = 0
            except psycopg.Error as exc:
                failures += 1
                self.lease.release()
                if failures == 1:  # once per outage, not once a second
                    log.warning("standby: cannot reach PostgreSQL for the lease: %s", str(exc).strip())
            if not announced and not failures:
                log.info("standby: waiting for the lease (held by %s)", self.lease.holder_info())
                announced = True
            self.stop.wait(self.retry_seconds)
        return False

    def _run_term(self, term: int, work: Callable[[int, threading.Event], None]) -> None:
        with self._lock:
            self.term, self._lost = term, None
            self._term_stop = threading.Event()
            term_stop = self._term_stop
        if self.stop.is_set():  # a stop requested between taking the lock and here
            term_stop.set()
        log.info("active: term %d", term)
        watchdog = threading.Thread(target=self._watch, args=(term, term_stop), name="lease-watchdog", daemon=True)
        watchdog.start()
        try:
            work(term, term_stop)
        finally:
            term_stop.set()
            watchdog.join()
            self.lease.release()
        if self._lost is not None:
            self.terms_lost += 1
            log.error("standby again after losing term %d: %s", term, self._lost)
        else:
            log.info("term %d ended; lease released", term)

    def _watch(self, term: int, term_stop: threading.Event) -> None:
        # Checked from a thread rather than once per cycle: it also covers a long catch-up batch
        # and an idle wait, and the streamer itself needs no knowledge of leases.
        while not term_stop.wait(self.check_seconds):
            problem = self.lease.check(term)
            if problem is not None:
                self.step_down(problem)
                return
