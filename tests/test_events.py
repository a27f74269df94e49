"""The event log: operation events written with the change (triggers), and the sequencer's order.

The trigger tests run in the `db` fixture's rolled-back transaction; the sequencer's tests need
committed rows seen from several connections (`clean_db`).
"""

from __future__ import annotations

import threading
from typing import Any

import orjson
import psycopg
import pytest

from ledger.store.events import (
    LOCK_ENDED,
    OPERATION_CONFIRMED,
    OPERATION_ORPHANED,
    OPERATION_PENDING,
    event_json,
    read_events,
    record_event,
    sequence,
)
from tests.test_persist import ALICE, BOB, CAROL, make_op, persist
from web.queries import fetch_records
from web.responses import dumps
from workers.persist import confirm_blocks, persist_operations, revert_blocks


def add_pool(conn: psycopg.Connection, *addresses: str) -> None:
    for address in addresses:
        conn.execute("INSERT INTO pool_accounts (address) VALUES (%s) ON CONFLICT DO NOTHING", (address,))


def events(conn: psycopg.Connection, account: str | None = None) -> list[tuple[str, str | None, int, str, str]]:
    """(type, account, block, tx_id, status) of every event written, in write order."""
    rows = conn.execute(
        "SELECT type, account, block_num, payload->'record'->>'tx_id', payload->'record'->>'status'"
        " FROM events WHERE %(a)s::text IS NULL OR account = %(a)s ORDER BY id",
        {"a": account},
    ).fetchall()
    return [tuple(row) for row in rows]


def test_a_record_emits_an_event_per_status_in_the_api_native_shape(db: psycopg.Connection) -> None:
    # Given a pool account
    add_pool(db, ALICE)
    op = make_op("freeze", 100)
    # When its freeze is stored pending, then confirmed
    persist(db, op)
    first = db.execute(
        "SELECT 1 AS seq, type, account, block_num, block_time, created_at, payload FROM events"
    ).fetchall()
    confirm_blocks(db, 100, unfreeze_delay_seconds=30)
    # Then there is one event per status, each on the record's block
    assert events(db) == [
        (OPERATION_PENDING, ALICE, 100, op.tx_id, "pending"),
        (OPERATION_CONFIRMED, ALICE, 100, op.tx_id, "confirmed"),
    ]
    # And the record in the event is the API's row as it was then, byte for byte
    page = fetch_records(db, "stake", ALICE, 10)
    row = dict(page.rows[0], status="pending")
    shown = event_json(
        dict(zip(("seq", "type", "account", "block_num", "block_time", "created_at", "payload"), first[0], strict=True))
    )
    assert orjson.loads(dumps(row)) == orjson.loads(dumps(shown["data"]["record"]))
    # And a replay of the same message changes nothing, so it emits nothing
    persist(db, op)
    persist_operations(db, [op], unfreeze_delay_seconds=30)
    assert len(events(db)) == 2


def test_a_delegation_emits_for_each_pool_account_it_belongs_to(db: psycopg.Connection) -> None:
    add_pool(db, ALICE, BOB)
    persist(db, make_op("delegate", 100, receiver_address=BOB, lock=True, lock_period=10))
    persist(db, make_op("delegate", 101, receiver_address=CAROL))  # CAROL is no pool account
    got = [(t, a, b) for t, a, b, _, _ in events(db)]
    assert sorted(got) == sorted(
        [(OPERATION_PENDING, ALICE, 100), (OPERATION_PENDING, ALICE, 101), (OPERATION_PENDING, BOB, 100)]
    )
    record = db.execute("SELECT payload->'record' FROM events WHERE account = %s", (BOB,)).fetchone()
    assert record is not None
    assert record[0]["receiver_address"] == BOB and record[0]["lock"] is True and record[0]["lock_expire_time"]


def test_records_of_other_accounts_emit_nothing(db: psycopg.Connection) -> None:
    persist(db, make_op("freeze", 100))  # ALICE is not a pool account here
    assert events(db) == []


def test_a_fork_emits_orphaned_for_exactly_the_records_of_the_blocks_that_left(db: psycopg.Connection) -> None:
    add_pool(db, ALICE)
    kept, gone = make_op("freeze", 100), make_op("freeze", 101)
    persist_operations(db, [kept, gone], unfreeze_delay_seconds=30)
    revert_blocks(db, [[101, gone.block_id]])
    assert sorted(events(db)) == [
        (OPERATION_ORPHANED, ALICE, 101, gone.tx_id, "orphaned"),
        (OPERATION_PENDING, ALICE, 100, kept.tx_id, "pending"),
        (OPERATION_PENDING, ALICE, 101, gone.tx_id, "pending"),
    ]
    assert events(db)[-1][0] == OPERATION_ORPHANED


@pytest.mark.parametrize("revert_first", [True, False])
def test_a_transaction_re_packed_after_a_fork_emits_the_same_events_in_either_message_order(
    db: psycopg.Connection, revert_first: bool
) -> None:
    # Given a record pending in block 101, whose block leaves the chain; its transaction is
    # re-packed in block 103 of the new branch
    add_pool(db, ALICE)
    old = make_op("freeze", 101)
    new = make_op("freeze", 103, tx_id=old.tx_id)
    persist(db, old)
    db.execute("INSERT INTO orphaned_blocks (block_num, block_id) VALUES (101, %s)", (old.block_id,))
    # When the revert and the new block's message are handled in either order
    if revert_first:
        revert_blocks(db, [[101, old.block_id]])
        persist(db, new)
    else:
        persist(db, new)
        revert_blocks(db, [[101, old.block_id]])
    # Then the events are the same: pending in 101, orphaned there, pending in 103
    assert [(t, b, s) for t, _, b, _, s in events(db)] == [
        (OPERATION_PENDING, 101, "pending"),
        (OPERATION_ORPHANED, 101, "orphaned"),
        (OPERATION_PENDING, 103, "pending"),
    ]


def test_once_keys_write_an_event_once(db: psycopg.Connection) -> None:
    assert record_event(db, LOCK_ENDED, ALICE, {"x": 1}, once_key="k")
    assert not record_event(db, LOCK_ENDED, ALICE, {"x": 2}, once_key="k")
    assert db.execute("SELECT count(*) FROM events").fetchone() == (1,)
    with pytest.raises(ValueError, match="unknown event type"):
        record_event(db, "nope", ALICE, {})


# -- the sequencer: commit order, not write order ------------------------------------------------------


def test_an_event_committed_after_a_later_written_one_is_not_skipped_by_a_cursor(clean_db: str) -> None:
    # Given two transactions writing events: the first written commits last
    with psycopg.connect(clean_db, autocommit=True) as seqconn, psycopg.connect(clean_db) as slow:
        record_event(slow, LOCK_ENDED, ALICE, {"n": "slow"})  # id 1, left uncommitted
        with psycopg.connect(clean_db) as fast:
            record_event(fast, LOCK_ENDED, ALICE, {"n": "fast"})  # id 2, committed
            fast.commit()
        # When the relay numbers what has committed, and a reader takes it
        assert sequence(seqconn) == 1
        seen = read_events(seqconn, after=0, limit=10)
        assert [e["data"]["n"] for e in seen] == ["fast"]
        cursor = seen[-1]["id"]
        # And the slow one commits, and the relay runs again
        slow.commit()
        assert sequence(seqconn) == 1
        # Then the reader's next page from its cursor has it: nothing was skipped
        assert [e["data"]["n"] for e in read_events(seqconn, after=cursor, limit=10)] == ["slow"]


def test_concurrent_sequencers_number_each_event_once_with_no_gap(clean_db: str) -> None:
    with psycopg.connect(clean_db, autocommit=True) as conn, conn.transaction():
        for n in range(500):
            record_event(conn, LOCK_ENDED, ALICE, {"n": n})
    counts: list[int] = []

    def run() -> None:
        with psycopg.connect(clean_db, autocommit=True) as conn:
            counts.append(sum(sequence(conn, limit=7) for _ in range(100)))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with psycopg.connect(clean_db) as conn:
        rows: list[Any] = conn.execute("SELECT seq, (payload->>'n')::int FROM events ORDER BY id").fetchall()
    assert sum(counts) == 500
    assert [seq for seq, _ in rows] == list(range(1, 501))  # write order kept, no gap, no repeat


def test_a_new_drift_emits_drift_detected_once_while_it_stays_open(db: psycopg.Connection) -> None:
    from workers.reconcile import record_drift

    record_drift(db, ALICE, 500, {"frozen:ENERGY": 10}, {"frozen:ENERGY": 7})
    record_drift(db, ALICE, 520, {"frozen:ENERGY": 11}, {"frozen:ENERGY": 7})  # still open: no new event
    record_drift(db, ALICE, 540, {"frozen:ENERGY": 7}, {"frozen:ENERGY": 7})  # resolved
    record_drift(db, ALICE, 560, {"frozen:ENERGY": 2**70}, {"frozen:ENERGY": 7})  # opened again
    rows = db.execute("SELECT type, account, block_num, payload FROM events ORDER BY id").fetchall()
    assert [(t, a, b) for t, a, b, _ in rows] == [("drift.detected", ALICE, 500), ("drift.detected", ALICE, 560)]
    assert rows[0][3] == {
        **rows[0][3],
        "what": "frozen:ENERGY",
        "chain_amount": 10,
        "ledger_amount": 7,
        "difference": 3,
    }
    assert rows[1][3]["chain_amount"] == 2**70  # exact past 64 bits
