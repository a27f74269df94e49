"""One active process among several: a lease with a deadline on PostgreSQL's clock, and a fencing term.

Used by the listener (lease "main"), backfills (their checkpoint names) and the scheduler (lease
"scheduler"). Any number of processes may run for one lease name; the one holding the lease is
active, the others are standbys that look every LEASE_RETRY_SECONDS whether it has expired.

The lease is the name's row of `listener_terms`: its term, its holder and `expires_at`, which the
holder pushes to the database's `now() + LEASE_SECONDS` every LEASE_RETRY_SECONDS. A standby takes
the lease once it has expired, whatever became of the holder: dead, partitioned, or stopped without
dying (SIGSTOP, a long GC or swap pause, a VM migration) with its sessions still open, which a lock
held by a session could not tell from a live holder. Taking it starts a new term and stamps it on
the checkpoint row. Only the database's clock decides expiry, so the hosts' clocks may disagree.

The holder stops acting on its own before its lease can have run out: it counts the lease as its
own only until LEASE_RENEW_DEADLINE_SECONDS after it *sent* its last renewal that succeeded
(`Term.ensure`, which every action calls first). The database set that renewal's expiry after it
was sent, so under clocks that run at the same rate the holder's deadline comes LEASE_SECONDS -
LEASE_RENEW_DEADLINE_SECONDS before any standby can take over, and two holders never act at once.
A boot-time clock measures the deadline: it keeps counting while the host is suspended.

A process can still stop between that check and the action it guards, so nothing relies on the
check alone. Every side effect of a term carries the term and is fenced where it lands:
- the checkpoint row, and whatever is written in its transaction, only moves for the current term
  (`listener.store.move_checkpoint` raises CheckpointFenced otherwise);
- a worker applies a message only if its term is still the current one, checked in the transaction
  that applies it under a shared lock that a takeover takes exclusively, so no
  takeover commits between a worker's check and its commit (`check_fence`). A stale message is
  counted and dropped, not dead-lettered: it failed nothing, its term is simply over.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from ledger.clocks import Clock

if TYPE_CHECKING:
    from ledger.config import Settings

log = logging.getLogger(__name__)

# pg_advisory_xact_lock(int, int): this namespace, then hashtext(name). Taken shared by a worker
# applying a message of the lease's term, exclusively by a takeover. Two names that collide would
# only make their takeovers wait for each other's workers, which is harmless.
FENCE_NAMESPACE = 0x4C53544E  # "LSTN"


def _boot_clock() -> float:
    # CLOCK_BOOTTIME goes on counting while the host is suspended (a VM paused or migrated), as
    # the database's clock does; CLOCK_MONOTONIC would not.
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(boottime) if boottime is not None else time.monotonic()


class CheckpointFenced(RuntimeError):
    """Another process holds a newer term: this one must stop writing."""


class TermEnded(CheckpointFenced):
    """This process's term is over (lease lost, not renewed in time, or the process is stopping)."""


class StaleTerm(RuntimeError):
    """A message of a term that is no longer its lease's current one: dropped, never applied."""


@dataclass(frozen=True)
class Fence:
    """The lease term a message is sent under. Carried in the message's kwargs as
    {"lease": name, "term": number}; a worker applies the message only while that term is current."""

    lease: str
    term: int

    def kwargs(self) -> dict[str, Any]:
        return {"lease": self.lease, "term": self.term}

    def __str__(self) -> str:
        return f"term {self.term} of {self.lease!r}"


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class LeaseTiming:
    """LEASE_SECONDS, LEASE_RENEW_DEADLINE_SECONDS, LEASE_RETRY_SECONDS (ledger/config.py checks
    retry < renew_deadline < seconds)."""

    seconds: float = 6.0
    renew_deadline: float = 4.0
    retry: float = 1.0

    @classmethod
    def of(cls, settings: Settings) -> LeaseTiming:
        return cls(settings.lease_seconds, settings.lease_renew_deadline_seconds, settings.lease_retry_seconds)


class Term:
    """One term of a lease: its number and how long the holder may still act on it."""

    def __init__(
        self,
        name: str,
        number: int,
        deadline: float,
        clock: Clock = _boot_clock,
        wake: threading.Event | None = None,
    ) -> None:
        self.name = name
        self.number = number
        self.stop = threading.Event()  # set when the term ends, for whatever reason
        self.lost: str | None = None  # why it ended, when it did not end by request
        self._deadline = deadline
        self._clock = clock
        self._wake = wake  # set when the term ends, so a loop idling on it notices at once
        # Re-entrant: a signal handler (request_stop) may end the term while this thread holds it.
        self._lock = threading.RLock()

    @property
    def fence(self) -> Fence:
        return Fence(self.name, self.number)

    def renewed(self, sent_at: float, renew_deadline: float) -> None:
        """A renewal sent at `sent_at` (this clock) succeeded."""
        with self._lock:
            self._deadline = max(self._deadline, sent_at + renew_deadline)

    def remaining(self) -> float:
        return self._deadline - self._clock()

    def alive(self) -> bool:
        return not self.stop.is_set() and self.remaining() > 0

    def ensure(self) -> None:
        """Return if this process may still act on the term; else end it and raise TermEnded."""
        if self.stop.is_set():
            raise TermEnded(f"term {self.number} of {self.name!r} is over: {self.lost or 'stopping'}")
        if self.remaining() <= 0:
            self.end("lease not renewed before its renew deadline")
            raise TermEnded(f"term {self.number} of {self.name!r} is over: {self.lost}")

    def end(self, reason: str | None = None) -> None:
        """End the term; `reason` None for a requested stop, else why it was lost (logged once)."""
        with self._lock:
            if self.stop.is_set():
                return
            self.lost = reason
            self.stop.set()
        if self._wake is not None:
            self._wake.set()
        if reason is not None:
            log.error("LOST THE LEASE %s (term %s): %s; stopping as the active one", self.name, self.number, reason)


class Lease:
    """One process's side of a named lease: take it when it is free, renew it, give it back.

    Not thread-safe: one thread at a time (while a term runs, its keeper thread).
    """

    def __init__(self, url: str, name: str, holder: str | None = None, timing: LeaseTiming | None = None) -> None:
        self.url = url
        self.name = name
        self.holder = holder or default_holder()
        self.timing = timing or LeaseTiming()
        self._conn: psycopg.Connection | None = None

    def _connect(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            # A statement that hangs must not outlast the renew deadline by much: the holder stops
            # acting at its deadline anyway, and a standby retries its look on the next round.
            timeout_ms = max(500, int(self.timing.renew_deadline * 1000 / 2))
            self._conn = psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=max(2, int(self.timing.renew_deadline)),
                application_name=f"lease {self.name}"[:63],
                options=f"-c statement_timeout={timeout_ms} -c lock_timeout={timeout_ms} "
                + holder_session_options(self.timing),
                keepalives=1,
                keepalives_idle=5,
                keepalives_interval=2,
                keepalives_count=3,
                tcp_user_timeout=10_000,
            )
        return self._conn

    def acquire(self, clock: Clock = _boot_clock, wake: threading.Event | None = None) -> Term | None:
        """Take the lease if it is free or has expired, starting a new term (stamped on the
        checkpoint row); None if another holder's lease runs. psycopg.Error if PostgreSQL is away."""
        sent = clock()
        conn = self._connect()
        row = conn.execute(
            "SELECT expires_at IS NULL OR expires_at <= now() FROM listener_terms WHERE name = %s", (self.name,)
        ).fetchone()
        if row is not None and not row[0]:
            return None  # the common case of a standby's look, without the fence lock below
        with conn.transaction():
            # A standby has no deadline of its own: it may wait for the workers' transactions up to
            # a lease time (a renewal must not, hence the connection's shorter timeouts).
            wait_ms = int(self.timing.seconds * 1000)
            conn.execute(f"SET LOCAL statement_timeout = {wait_ms}; SET LOCAL lock_timeout = {wait_ms}")
            # Exclusive: waits for workers still applying messages of the old term and keeps new
            # ones out until the new term is committed (see check_fence).
            conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (FENCE_NAMESPACE, self.name))
            # Start above both tables' terms: a checkpoint row may carry a term of its own. A row
            # with no expiry was taken by a release without expiring leases: free.
            row = conn.execute(
                "INSERT INTO listener_terms (name, term, holder, expires_at) VALUES (%(name)s, 1 + greatest("
                "   coalesce((SELECT term FROM listener_terms WHERE name = %(name)s), 0),"
                "   coalesce((SELECT term FROM listener_checkpoint WHERE name = %(name)s), 0)), %(holder)s,"
                "   now() + make_interval(secs => %(seconds)s))"
                " ON CONFLICT (name) DO UPDATE SET term = EXCLUDED.term, holder = EXCLUDED.holder,"
                "   acquired_at = now(), expires_at = EXCLUDED.expires_at"
                " WHERE listener_terms.expires_at IS NULL OR listener_terms.expires_at <= now()"
                " RETURNING term",
                {"name": self.name, "holder": self.holder, "seconds": self.timing.seconds},
            ).fetchone()
            if row is None:
                return None  # renewed or taken by another standby meanwhile
            number = int(row[0])
            # No row yet (first start): nothing to stamp, and inventing a block number would
            # invent a checkpoint. The first save inserts the row with this term.
            conn.execute("UPDATE listener_checkpoint SET term = %s WHERE name = %s", (number, self.name))
        return Term(self.name, number, sent + self.timing.renew_deadline, clock, wake)

    def renew(self, term: Term, clock: Clock = _boot_clock) -> bool:
        """Push the expiry of `term`'s lease out by LEASE_SECONDS; False if it is no longer this
        term's (superseded, or already expired). psycopg.Error if PostgreSQL cannot be reached."""
        sent = clock()
        row = (
            self._connect()
            .execute(
                "UPDATE listener_terms SET expires_at = now() + make_interval(secs => %s)"
                " WHERE name = %s AND term = %s AND expires_at > now() RETURNING term",
                (self.timing.seconds, self.name, term.number),
            )
            .fetchone()
        )
        if row is None:
            return False
        term.renewed(sent, self.timing.renew_deadline)
        return True

    def holder_info(self) -> str:
        """Who holds the lease, for the standby's log line; best effort."""
        try:
            row = (
                self._connect()
                .execute(
                    "SELECT holder, term, extract(epoch FROM expires_at - now()) FROM listener_terms WHERE name = %s",
                    (self.name,),
                )
                .fetchone()
            )
        except psycopg.Error:
            return "unknown"
        if row is None:
            return "nobody yet"
        holder, number, left = row
        expiry = "" if left is None else f", expires in {float(left):.1f}s" if left > 0 else ", expired"
        return f"{holder}, term {number}{expiry}"

    def release(self, term: Term | None = None) -> None:
        """Give the lease back at once if `term` still holds it (a standby need not wait for it to
        expire), and close the connection (the next call reconnects)."""
        if term is not None and self._conn is not None and not self._conn.closed and not self._conn.broken:
            with contextlib.suppress(psycopg.Error):
                self._conn.execute(
                    "UPDATE listener_terms SET expires_at = now() WHERE name = %s AND term = %s",
                    (self.name, term.number),
                )
        self.disconnect()

    def disconnect(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None


def holder_session_options(timing: LeaseTiming) -> str:
    """Server-side options for the connections a lease holder writes through. A holder stopped in
    the middle of a transaction (SIGSTOP, a long pause) with its session open would keep that
    transaction's row locks, the checkpoint row's among them, and a takeover, which updates that
    row, would wait for it as long as the pause lasts. PostgreSQL ends a session idle in its
    transaction for the renew deadline; by then its holder may no longer act anyway."""
    return f"-c idle_in_transaction_session_timeout={int(timing.renew_deadline * 1000)}"


def check_fence(conn: psycopg.Connection, fence: Fence) -> None:
    """Raise StaleTerm unless `fence`'s term is still its lease's current term. Call it inside the
    transaction whose changes it fences, before them: it holds the lease's fence lock (shared) until
    that transaction ends, so a takeover, which takes the lock exclusively, commits either before
    the check (which then sees the new term) or after the changes.

    One round trip: the SQL function `lease_term_is_current` takes the lock, then reads the term in a
    statement of its own, whose snapshot includes a takeover that committed while it waited."""
    row = conn.execute(
        "SELECT lease_term_is_current(%s, %s, %s)", (FENCE_NAMESPACE, fence.lease, fence.term)
    ).fetchone()
    if not (row and row[0]):
        raise StaleTerm(f"{fence} is no longer current")


def current_fence(conn: psycopg.Connection, name: str) -> Fence | None:
    """The fence of lease `name`'s current term (None before its first), for a process that sends
    on the active holder's behalf (a repair run from outside, the lifecycle job): its messages
    count while that term lasts."""
    row = conn.execute("SELECT term FROM listener_terms WHERE name = %s", (name,)).fetchone()
    return None if row is None else Fence(name, int(row[0]))


def keep(lease: Lease, term: Term, clock: Clock = _boot_clock) -> None:
    """Renew `term`'s lease every LEASE_RETRY_SECONDS until the term ends; end it when a renewal
    finds it superseded or none succeeded before the renew deadline. Run in a thread of its own."""
    failing = False
    while not term.stop.wait(lease.timing.retry):
        if term.remaining() <= 0:  # passed while this thread waited, or while the process was stopped
            term.end("lease not renewed before its renew deadline")
            return
        try:
            renewed = lease.renew(term, clock)
        except psycopg.Error as exc:
            lease.disconnect()
            if not failing:  # once per outage
                log.warning("lease %s: renewal failed: %s; retrying", lease.name, str(exc).strip()[:200])
            failing = True
            continue
        if not renewed:
            term.end(f"lease taken over (holder now {lease.holder_info()})")
            return
        if failing:
            log.info("lease %s: renewed again", lease.name)
        failing = False


@contextlib.contextmanager
def held(lease: Lease) -> Iterator[Term | None]:
    """The lease for a one-off run (a backfill): yields its term, kept renewed until the block
    ends, or None if another holder keeps renewing it. A lease held by a run that died expires
    within LEASE_SECONDS, so it is waited for that long (and a retry) before giving up."""
    give_up = time.monotonic() + lease.timing.seconds + lease.timing.retry
    term = lease.acquire()
    while term is None and time.monotonic() < give_up:
        time.sleep(lease.timing.retry)
        term = lease.acquire()
    if term is None:
        yield None
        return
    keeper = threading.Thread(target=keep, args=(lease, term), name="lease-keeper", daemon=True)
    keeper.start()
    try:
        yield term
    finally:
        term.end()
        keeper.join()
        lease.release(term)


class FencedStore:
    """A store for one term: each call first checks that the term may still act (`Term.ensure`),
    and a CheckpointFenced from any call ends the term.

    Everything is delegated, so methods the store gains later are fenced the same way.
    """

    def __init__(self, store: Any, term: Term) -> None:
        self._store = store
        self._term = term

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def fenced(*args: Any, **kwargs: Any) -> Any:
            self._term.ensure()
            try:
                return attr(*args, **kwargs)
            except TermEnded:
                raise
            except CheckpointFenced as exc:
                self._term.end(f"checkpoint fenced: {exc}")
                raise

        return fenced


class Leader:
    """Standby until the lease is taken, active (running `work`) while its term lasts, then standby again."""

    def __init__(self, lease: Lease, *, stop: threading.Event, wake: threading.Event | None = None) -> None:
        self.lease = lease
        self.stop = stop
        # Set whenever a term ends, so a loop idling on it notices at once.
        self.wake = wake
        self.term: Term | None = None
        self.terms_lost = 0

    def run(self, work: Callable[[Term], None]) -> None:
        """Loop until `stop`: take the lease, run `work(term)` until the term ends."""
        while not self.stop.is_set():
            term = self._wait_for_lease()
            if term is None:
                return
            self._run_term(term, work)

    @property
    def active(self) -> bool:
        """True while a term runs (this process is the active one), for the heartbeat."""
        return self.term is not None and self.term.alive()

    def request_stop(self) -> None:
        """End the current term (if any) and the loop; safe from a signal handler."""
        self.stop.set()
        if self.term is not None:
            self.term.end()
        if self.wake is not None:
            self.wake.set()

    # -- internals -----------------------------------------------------------------------------

    def _wait_for_lease(self) -> Term | None:
        announced = False
        failures = 0
        while not self.stop.is_set():
            try:
                term = self.lease.acquire(wake=self.wake)
                if term is not None:
                    return term
                failures = 0
            except psycopg.Error as exc:
                failures += 1
                self.lease.disconnect()
                if failures == 1:  # once per outage, not once a second
                    log.warning("standby: cannot reach PostgreSQL for the lease: %s", str(exc).strip())
            if not announced and not failures:
                log.info("standby: waiting for the lease (held by %s)", self.lease.holder_info())
                announced = True
            self.stop.wait(self.lease.timing.retry)
        return None

    def _run_term(self, term: Term, work: Callable[[Term], None]) -> None:
        self.term = term
        if self.stop.is_set():  # a stop requested between taking the lease and here
            term.end()
        log.info("active: term %d", term.number)
        keeper = threading.Thread(target=keep, args=(self.lease, term), name="lease-keeper", daemon=True)
        keeper.start()
        try:
            work(term)
        finally:
            term.end()
            keeper.join()
            self.lease.release(term)
        if term.lost is not None:
            self.terms_lost += 1
            log.error("standby again after losing term %d: %s", term.number, term.lost)
        else:
            log.info("term %d ended; lease released", term.number)
