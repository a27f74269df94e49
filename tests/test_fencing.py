"""Term-fenced side effects: a worker applies a message of a lease term only while that term is
current, checked in the transaction that applies it, and a takeover cannot commit in between."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from harness.stack import wait_until
from ledger.coordination.lease import Fence, Lease, LeaseTiming, StaleTerm
from tests.test_persist import ALICE, make_op
from workers.persist import confirm_blocks, persist_operations, revert_blocks

DELAY = 30


def _current_term(conn: psycopg.Connection, name: str, term: int) -> None:
    conn.execute(
        "INSERT INTO listener_terms (name, term, holder, expires_at) VALUES (%s, %s, 'test', now() + interval '1 hour')"
        " ON CONFLICT (name) DO UPDATE SET term = EXCLUDED.term",
        (name, term),
    )


def _status(conn: psycopg.Connection, tx_id: str) -> str | None:
    row = conn.execute("SELECT status FROM stake_records WHERE tx_id = %s", (tx_id,)).fetchone()
    return None if row is None else str(row[0])


def test_messages_of_a_term_no_longer_current_change_nothing(db: psycopg.Connection) -> None:
    # Given lease "main" at term 5
    _current_term(db, "main", 5)
    old, current = Fence("main", 4), Fence("main", 5)
    op = make_op("freeze", 100)
    # A persist of term 4 is refused and writes nothing; one of term 5 lands
    with pytest.raises(StaleTerm):
        persist_operations(db, [op], unfreeze_delay_seconds=DELAY, fence=old)
    assert _status(db, op.tx_id) is None
    assert persist_operations(db, [op], unfreeze_delay_seconds=DELAY, fence=current) == {ALICE}
    assert _status(db, op.tx_id) == "pending"
    # A confirmation and a revert of term 4 change nothing either
    with pytest.raises(StaleTerm):
        confirm_blocks(db, 200, fence=old)
    with pytest.raises(StaleTerm):
        revert_blocks(db, [[100, op.block_id]], fence=old)
    assert _status(db, op.tx_id) == "pending"
    assert db.execute("SELECT count(*) FROM orphaned_blocks").fetchone() == (0,)
    confirm_blocks(db, 200, fence=current)
    assert _status(db, op.tx_id) == "confirmed"
    # A lease that was never taken has no current term: nothing of it applies
    with pytest.raises(StaleTerm):
        persist_operations(db, [make_op("freeze", 101)], unfreeze_delay_seconds=DELAY, fence=Fence("other", 1))


def test_a_takeover_waits_for_a_worker_applying_the_old_term(clean_db: str) -> None:
    # Given a holder of term t whose lease has just expired, and a worker applying a message of t
    timing = LeaseTiming(seconds=2.0, renew_deadline=1.2, retry=0.1)
    old = Lease(clean_db, "main", "old", timing)
    term = old.acquire()
    assert term is not None
    op = make_op("freeze", 100)
    taken: list[float] = []
    with psycopg.connect(clean_db, autocommit=True) as worker:
        worker.execute("BEGIN")
        persist_operations(worker, [op], unfreeze_delay_seconds=DELAY, fence=term.fence)
        with psycopg.connect(clean_db, autocommit=True) as other:  # expired, on the database's clock
            other.execute("UPDATE listener_terms SET expires_at = now() WHERE name = 'main'")
        standby = Lease(clean_db, "main", "new", timing)

        def take_over() -> None:
            new = standby.acquire()
            assert new is not None and new.number == term.number + 1
            taken.append(time.monotonic())

        thread = threading.Thread(target=take_over)
        thread.start()
        # When the standby takes over while the worker's transaction is open, it waits for it
        time.sleep(0.5)
        assert not taken
        committed = time.monotonic()
        worker.execute("COMMIT")
        thread.join(5)
        assert taken and taken[0] >= committed
        # And a message of the old term that comes after the takeover is refused
        with pytest.raises(StaleTerm):
            persist_operations(worker, [make_op("freeze", 101)], unfreeze_delay_seconds=DELAY, fence=term.fence)
        wait_until(lambda: _status(worker, op.tx_id) == "pending", 5, "the old term's row, committed before")
    old.disconnect()
    standby.disconnect()
