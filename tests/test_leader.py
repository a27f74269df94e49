"""One active listener: the expiring PostgreSQL lease, the fencing term, and a real takeover after SIGKILL."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from harness.procs import Proc
from harness.stack import main_checkpoint, start_listener, wait_until
from harness.truth import assert_ledger_matches_truth, start_long_catch_up
from ledger.config import Settings
from ledger.coordination.lease import (
    CheckpointFenced,
    FencedStore,
    Leader,
    Lease,
    LeaseTiming,
    Term,
    TermEnded,
    holder_session_options,
)
from listener.store import PgStore

BLOCK_ID = "ab" * 32


FAST = LeaseTiming(seconds=1.0, renew_deadline=0.6, retry=0.1)


@pytest.fixture
def lease_name() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def leases(clean_db: str) -> Iterator[list[Lease]]:
    made: list[Lease] = []
    yield made
    for lease in made:
        lease.disconnect()


def _lease(leases: list[Lease], url: str, name: str, holder: str, timing: LeaseTiming = FAST) -> Lease:
    lease = Lease(url, name, holder, timing)
    leases.append(lease)
    return lease


def _expires_in(url: str, name: str) -> float:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM expires_at - now()) FROM listener_terms WHERE name = %s", (name,)
        ).fetchone()
    assert row is not None
    return float(row[0])


def test_a_standby_takes_over_once_the_lease_expires_whatever_the_holders_session_does(
    clean_db: str, leases: list[Lease], lease_name: str
) -> None:
    # Given a holder, its session open, and a standby
    a, b = _lease(leases, clean_db, lease_name, "a"), _lease(leases, clean_db, lease_name, "b")
    term = a.acquire()
    assert term is not None
    assert b.acquire() is None
    # While the holder renews, nobody else gets the lease
    for _ in range(3):
        time.sleep(FAST.seconds / 2)
        assert a.renew(term)
        assert b.acquire() is None
    # When it stops renewing (a paused process: its connection stays open)
    stopped = time.monotonic()
    taken = None
    while taken is None and time.monotonic() - stopped < 5:
        taken = b.acquire()
        time.sleep(0.05)
    # Then the standby takes it once it has expired, with the next term, and the old one cannot renew
    assert taken is not None and taken.number == term.number + 1
    assert FAST.seconds - 0.3 <= time.monotonic() - stopped <= FAST.seconds + 1.0
    assert not a.renew(term)


def test_the_holder_stops_acting_at_its_renew_deadline_before_the_lease_can_expire(
    clean_db: str, leases: list[Lease], lease_name: str
) -> None:
    timing = LeaseTiming(seconds=6.0, renew_deadline=4.0, retry=1.0)
    lease = _lease(leases, clean_db, lease_name, "a", timing)
    now = [1000.0]
    term = lease.acquire(clock=lambda: now[0])
    assert term is not None
    # The holder's deadline counts from before it asked; the database's expiry from when it answered
    assert term.remaining() == timing.renew_deadline
    assert _expires_in(clean_db, lease_name) > timing.renew_deadline + 1.5
    now[0] += 3.9
    term.ensure()
    assert lease.renew(term, clock=lambda: now[0])
    assert term.remaining() == timing.renew_deadline
    # When its clock passes the deadline (a pause: no renewal ran), it may no longer act
    now[0] += 4.0
    with pytest.raises(TermEnded):
        term.ensure()
    assert term.stop.is_set() and not term.alive()
    assert term.lost is not None and "renew deadline" in term.lost


def test_a_released_lease_is_taken_at_once(clean_db: str, leases: list[Lease], lease_name: str) -> None:
    slow = LeaseTiming(seconds=60.0, renew_deadline=40.0, retry=1.0)
    a, b = _lease(leases, clean_db, lease_name, "a", slow), _lease(leases, clean_db, lease_name, "b", slow)
    term = a.acquire()
    assert term is not None and b.acquire() is None
    a.release(term)
    taken = b.acquire()
    assert taken is not None and taken.number == term.number + 1


def test_a_holder_paused_inside_its_checkpoint_transaction_does_not_block_a_takeover(
    clean_db: str, leases: list[Lease], lease_name: str
) -> None:
    # Given a holder that stopped in the middle of a transaction holding its checkpoint row, its
    # session open (a takeover updates that row)
    holder = _lease(leases, clean_db, lease_name, "a")
    term = holder.acquire()
    assert term is not None
    store = PgStore(clean_db, name=lease_name, term=term.number, session_options=holder_session_options(FAST))
    store.save_checkpoint(10, BLOCK_ID, 12, 0)
    paused = store._connection()
    paused.execute("BEGIN")
    paused.execute("SELECT 1 FROM listener_checkpoint WHERE name = %s FOR UPDATE", (lease_name,))
    # When its lease expires, a standby takes it over all the same
    standby = _lease(leases, clean_db, lease_name, "b")
    taken = None
    deadline = time.monotonic() + 10
    while taken is None and time.monotonic() < deadline:
        with contextlib.suppress(psycopg.Error):
            taken = standby.acquire()
        time.sleep(0.1)
    assert taken is not None and taken.number == term.number + 1
    store.close()


def test_an_old_term_cannot_advance_the_checkpoint(clean_db: str, leases: list[Lease]) -> None:
    # Given a listener of term t1 that checkpointed, then lost the lease to term t2
    old = _lease(leases, clean_db, "main", "old")
    old_term = old.acquire()
    assert old_term is not None
    old_store = PgStore(clean_db, term=old_term.number)
    old_store.save_checkpoint(100, BLOCK_ID, 120, 101)
    old.release(old_term)
    new = _lease(leases, clean_db, "main", "new")
    new_term = new.acquire()
    assert new_term is not None
    new_store = PgStore(clean_db, term=new_term.number)
    assert new_store.term > old_store.term
    # When the old one, still running, tries to move the checkpoint, it is refused
    with pytest.raises(CheckpointFenced):
        old_store.save_checkpoint(140, BLOCK_ID, 160, 141)
    assert main_checkpoint(clean_db) == 100
    # And the new term advances it from where it was
    assert new_store.load_checkpoint() == (100, BLOCK_ID)
    new_store.save_checkpoint(110, BLOCK_ID, 160, 141)
    assert main_checkpoint(clean_db) == 110
    for store in (old_store, new_store):
        store.close()


def test_first_term_before_any_checkpoint_invents_none(clean_db: str, leases: list[Lease]) -> None:
    lease = _lease(leases, clean_db, "main", "first")
    term = lease.acquire()
    assert term is not None
    store = PgStore(clean_db, term=term.number)
    assert store.load_checkpoint() is None
    store.save_checkpoint(7, BLOCK_ID, 9, 0)  # the first save inserts the row with the term
    assert main_checkpoint(clean_db) == 7
    store.close()


def test_leader_steps_down_when_superseded_and_takes_the_lease_again(clean_db: str, lease_name: str) -> None:
    stop = threading.Event()
    leader = Leader(Lease(clean_db, lease_name, "me", FAST), stop=stop)
    terms: list[int] = []

    def work(term: Term) -> None:
        terms.append(term.number)
        term.stop.wait(30)

    thread = threading.Thread(target=leader.run, args=(work,))
    thread.start()
    try:
        wait_until(lambda: len(terms) == 1, 5, "the first term")
        # Another process bumped the term (as a takeover would): this one must notice and stop.
        with psycopg.connect(clean_db, autocommit=True) as conn:
            conn.execute("UPDATE listener_terms SET term = term + 10 WHERE name = %s", (lease_name,))
        wait_until(lambda: len(terms) == 2, 5, "a step down and a new term")
        assert leader.terms_lost == 1
        assert terms[1] > terms[0] + 10
    finally:
        leader.request_stop()
        thread.join(10)
    assert not thread.is_alive()


def test_a_fenced_checkpoint_ends_the_term(clean_db: str, lease_name: str) -> None:
    # The race the lease cannot close alone: an old holder wrote the first checkpoint row after the
    # new term began. The new holder is then fenced, must step down, and comes back with a term
    # that the checkpoint row carries.
    stop = threading.Event()
    leader = Leader(Lease(clean_db, lease_name, "me", FAST), stop=stop)
    terms: list[int] = []

    class StaleRowStore:
        def save_checkpoint(self, *args: object) -> None:
            if len(terms) == 1:
                raise CheckpointFenced("held by another term")

    def work(term: Term) -> None:
        terms.append(term.number)
        store = FencedStore(StaleRowStore(), term)
        with contextlib.suppress(CheckpointFenced):
            store.save_checkpoint(1, BLOCK_ID, 2, 0)
        term.stop.wait(30)

    thread = threading.Thread(target=leader.run, args=(work,))
    thread.start()
    try:
        wait_until(lambda: len(terms) == 2, 5, "a step down and a new term")
        assert leader.terms_lost == 1
    finally:
        leader.request_stop()
        thread.join(10)
    assert not thread.is_alive()


# -- real processes ----------------------------------------------------------------------------


@pytest.mark.slow
def test_standby_takes_over_from_a_killed_active_listener(
    settings: Settings, clean_db: str, env: dict[str, str], procs: list[Proc]
) -> None:
    # Given a long history, a worker, and two listeners: one active, one standby, on a lease
    # shorter than the default 6 s so that the takeover waits less (within lease + retry + 3 s)
    env = {**env, "LEASE_SECONDS": "3", "LEASE_RENEW_DEADLINE_SECONDS": "2", "LEASE_RETRY_SECONDS": "0.5"}
    sim, env = start_long_catch_up(settings, env, procs)
    head = sim.status()["head"]
    first = start_listener(env)
    procs.append(first)
    first.wait_for(r"active: term \d+", 10)
    second = start_listener(env)
    procs.append(second)
    second.wait_for(r"standby: waiting for the lease", 10)
    # When the active one is SIGKILLed mid-catch-up
    wait_until(lambda: main_checkpoint(clean_db) >= head - 1300, 60, "some progress", interval=0.05)
    first.kill()
    first.popen.wait(10)
    killed_at = time.monotonic()
    at_kill = main_checkpoint(clean_db)
    assert at_kill < head
    # Then the standby takes over within 6.5 s, from the shared checkpoint, and finishes
    second.wait_for(r"active: term \d+", 10)
    assert time.monotonic() - killed_at < 3 + 0.5 + 3
    resumed = int(second.wait_for(r"starting after block (\d+)", 10).group(1))
    assert resumed == at_kill
    wait_until(lambda: main_checkpoint(clean_db) == head, 60, "the new active listener to reach the head")
    assert "Traceback" not in second.output()
    assert_ledger_matches_truth(settings, sim, env)
