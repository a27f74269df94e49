"""One active listener: the PostgreSQL lease, the fencing term, and a real takeover after SIGKILL."""

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
from ledger.coordination.lease import CheckpointFenced, Leader, Lease
from listener.store import PgStore

BLOCK_ID = "ab" * 32


@pytest.fixture
def lease_name() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def leases(clean_db: str) -> Iterator[list[Lease]]:
    made: list[Lease] = []
    yield made
    for lease in made:
        lease.release()


def _lease(leases: list[Lease], url: str, name: str, holder: str) -> Lease:
    lease = Lease(url, name, holder)
    leases.append(lease)
    return lease


def test_only_one_holder_and_the_lock_goes_with_the_connection(
    clean_db: str, leases: list[Lease], lease_name: str
) -> None:
    a, b = _lease(leases, clean_db, lease_name, "a"), _lease(leases, clean_db, lease_name, "b")
    assert a.try_acquire()
    assert not b.try_acquire()
    term = a.bump_term()
    assert a.check(term) is None
    # The holder's session ends as after a SIGKILL: the server drops the lock with it.
    pid = a._conn.info.backend_pid  # type: ignore[union-attr]
    with psycopg.connect(clean_db, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    assert a.check(term) is not None
    wait_until(b.try_acquire, 5, "the standby to take the lock")
    assert b.bump_term() == term + 1


def test_an_old_term_cannot_advance_the_checkpoint(clean_db: str, leases: list[Lease]) -> None:
    # Given a listener of term t1 that checkpointed, then lost the lease to term t2
    old = _lease(leases, clean_db, "main", "old")
    assert old.try_acquire()
    old_store = PgStore(clean_db, term=old.bump_term())
    old_store.save_checkpoint(100, BLOCK_ID, 120, 101)
    old.release()
    new = _lease(leases, clean_db, "main", "new")
    assert new.try_acquire()
    new_store = PgStore(clean_db, term=new.bump_term())
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
    assert lease.try_acquire()
    term = lease.bump_term()
    store = PgStore(clean_db, term=term)
    assert store.load_checkpoint() is None
    store.save_checkpoint(7, BLOCK_ID, 9, 0)  # the first save inserts the row with the term
    assert main_checkpoint(clean_db) == 7
    store.close()


def test_leader_steps_down_when_superseded_and_takes_the_lease_again(clean_db: str, lease_name: str) -> None:
    stop = threading.Event()
    leader = Leader(Lease(clean_db, lease_name, "me"), stop=stop, retry_seconds=0.1, check_seconds=0.1)
    terms: list[int] = []

    def work(term: int, term_stop: threading.Event) -> None:
        terms.append(term)
        term_stop.wait(30)

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
    # The race the lock cannot close alone: an old holder wrote the first checkpoint row after the
    # new term began. The new holder is then fenced, must step down, and comes back with a term
    # that the checkpoint row carries.
    stop = threading.Event()
    leader = Leader(Lease(clean_db, lease_name, "me"), stop=stop, retry_seconds=0.1, check_seconds=0.1)
    terms: list[int] = []

    class StaleRowStore:
        def save_checkpoint(self, *args: object) -> None:
            if len(terms) == 1:
                raise CheckpointFenced("held by another term")

    def work(term: int, term_stop: threading.Event) -> None:
        terms.append(term)
        store = leader.fenced_store(StaleRowStore())
        with contextlib.suppress(CheckpointFenced):
            store.save_checkpoint(1, BLOCK_ID, 2, 0)
        term_stop.wait(30)

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
    # Given a long history, a worker, and two listeners: one active, one standby
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
    # Then the standby takes over within 10 s, from the shared checkpoint, and finishes
    second.wait_for(r"active: term \d+", 10)
    assert time.monotonic() - killed_at < 10
    resumed = int(second.wait_for(r"starting after block (\d+)", 10).group(1))
    assert resumed == at_kill
    wait_until(lambda: main_checkpoint(clean_db) == head, 60, "the new active listener to reach the head")
    assert "Traceback" not in second.output()
    assert_ledger_matches_truth(settings, sim, env)
