"""Positions kept incrementally in PostgreSQL: folded at the solidified head, the pending tail
replayed on read, late records and forks (workers.persist + ledger.store.positions, no Dramatiq)."""

from __future__ import annotations

import psycopg

from ledger.domain import Operation
from ledger.positions import Position, replay
from ledger.store import positions
from ledger.store.positions import load_rows
from tests.test_persist import ALICE, BOB, DELAY, block_time_ms, make_op
from workers.persist import confirm_blocks, persist_operations, revert_blocks

DELAY_MS = DELAY * 1000


def persist(db: psycopg.Connection, *ops: Operation) -> None:
    for op in ops:
        persist_operations(db, [op], unfreeze_delay_seconds=DELAY)


def confirm(db: psycopg.Connection, solid: int) -> None:
    confirm_blocks(db, solid, unfreeze_delay_seconds=DELAY)


def folded(db: psycopg.Connection) -> int | None:
    row = db.execute("SELECT block_num FROM positions WHERE address = %s", (ALICE,)).fetchone()
    return None if row is None else int(row[0])


def from_scratch(db: psycopg.Connection) -> Position:
    return replay(Position(), load_rows(db, ALICE, -1), DELAY_MS)


def add_pool_account(db: psycopg.Connection) -> None:
    db.execute("INSERT INTO pool_accounts (address) VALUES (%s)", (ALICE,))


def test_fold_then_tail_equals_a_replay_from_scratch(db: psycopg.Connection) -> None:
    add_pool_account(db)
    persist(
        db,
        make_op("freeze", 100, amount=1000, parent_time_ms=block_time_ms(99)),
        make_op("delegate", 101, amount=300, lock=True, lock_period=5, parent_time_ms=block_time_ms(100)),
        make_op("unfreeze", 102, amount=100, parent_time_ms=block_time_ms(101)),
    )
    confirm(db, 101)
    assert folded(db) == 101
    state = db.execute("SELECT state::text FROM positions WHERE address = %s", (ALICE,)).fetchone()
    assert state is not None and Position.from_json(state[0]).staked["ENERGY"] == 700  # block 102 not in it
    persist(db, make_op("undelegate", 110, amount=50, parent_time_ms=block_time_ms(109)))  # lock ended at t(105)
    now = positions.current(db, ALICE, DELAY_MS)
    assert now.staked == from_scratch(db).staked == {"BANDWIDTH": 0, "ENERGY": 650, "TRON_POWER": 0}
    assert now.pairs == from_scratch(db).pairs
    assert now.pairs[(BOB, "ENERGY")].unlocked == 250 and now.pairs[(BOB, "ENERGY")].locked == 0


def test_a_late_record_below_the_folded_block_drops_it_and_the_next_fold_rebuilds(db: psycopg.Connection) -> None:
    add_pool_account(db)
    persist(db, make_op("freeze", 100, amount=1000), make_op("freeze", 105, amount=5))
    confirm(db, 110)
    assert folded(db) == 110
    # A message for block 103 arrives after block 110 was folded (workers run in any order).
    persist(db, make_op("freeze", 103, amount=20))
    assert folded(db) is None
    assert positions.current(db, ALICE, DELAY_MS).staked["ENERGY"] == 1025
    confirm(db, 111)
    assert folded(db) == 111
    assert positions.current(db, ALICE, DELAY_MS).staked["ENERGY"] == 1025


def test_a_fork_only_changes_the_tail(db: psycopg.Connection) -> None:
    add_pool_account(db)
    persist(db, make_op("freeze", 100, amount=1000))
    confirm(db, 100)
    gone = make_op("delegate", 102, amount=400)
    persist(db, gone)
    assert positions.current(db, ALICE, DELAY_MS).staked["ENERGY"] == 600
    revert_blocks(db, [[102, gone.block_id]])
    assert positions.current(db, ALICE, DELAY_MS).staked["ENERGY"] == 1000
    assert positions.current(db, ALICE, DELAY_MS).pairs == {}
    assert folded(db) == 100


def test_an_opening_state_replaces_the_history_before_its_block(db: psycopg.Connection) -> None:
    add_pool_account(db)
    persist(db, make_op("unfreeze", 100, amount=579), make_op("freeze", 120, amount=10))
    confirm(db, 110)
    opening = Position(block_num=110)
    opening.staked["ENERGY"] = 5000
    positions.store_opening(db, ALICE, opening)
    assert folded(db) is None
    now = positions.current(db, ALICE, DELAY_MS)
    assert now.staked["ENERGY"] == 5010 and now.shortfall == {} and now.lots == []
    confirm(db, 125)
    assert folded(db) == 125 and positions.current(db, ALICE, DELAY_MS).staked["ENERGY"] == 5010


def test_a_fold_only_replays_accounts_with_new_records(db: psycopg.Connection) -> None:
    add_pool_account(db)
    persist(db, make_op("freeze", 100, amount=1000))
    assert positions.fold(db, 100, DELAY_MS) == [ALICE]
    assert positions.fold(db, 150, DELAY_MS) == []  # nothing in 101..150: only the block moves
    assert folded(db) == 150
    persist(db, make_op("freeze", 120, amount=7))  # late, inside the range moved over
    assert folded(db) is None
    assert positions.current(db, ALICE, DELAY_MS).staked["ENERGY"] == 1007
    assert positions.fold(db, 151, DELAY_MS) == [ALICE]
    assert positions.current(db, ALICE, DELAY_MS).staked["ENERGY"] == 1007
